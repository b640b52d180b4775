// DreamBooth class images ("prior preservation"): when the class folder holds fewer than `count` images, the missing
// ones are generated with the base model, before any weight changes (diffusers train_dreambooth.py does the same).
//
// Files: `class_NNNN.png` (with the A1111 infotext of how it was made) and `class_NNNN.txt` (the class prompt, so the
// folder also works as an ordinary captioned dataset). Image k is drawn with seed `seed + k`, so the set is a pure
// function of (model, prompt, sampler settings, seed): generation is resumable (an interrupted run leaves
// class_0000 … class_000j; the next run counts them and makes only the rest, the same images an uninterrupted run
// makes) and cached (a folder that already has enough images is left alone). Each PNG is written atomically and its
// caption first, so a half-written image never counts. Images already in the folder (any name, found recursively like
// the dataset scan) count towards `count`; generated names skip numbers that exist.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import fg from 'fast-glob';
import { mkdir } from 'node:fs/promises';
import { writeFileAtomic } from '../formats/atomic.js';
import { IMAGE_EXTENSIONS } from '../data/images.js';
import { generate, type GenerateRequest } from '../pipelines/generate.js';
import type { SdModel } from '../pipelines/model.js';
import type { SamplerName } from '../samplers/index.js';

export interface ClassImageOptions {
  /** The class folder (created if missing). */
  dir: string;
  /** The class prompt, e.g. "a photo of a dog". */
  prompt: string;
  /** How many images the folder should hold (num_class_images). */
  count: number;
  /** Image k is generated with seed `seed + k`. */
  seed: number;
  width: number;
  height: number;
  sampler: SamplerName;
  steps: number;
  cfgScale: number;
  negativePrompt?: string;
  attentionSliceSize?: number;
  /** Checked between images and sampler steps. */
  signal?: AbortSignal;
  /** After each generated image. */
  onProgress?: (p: { done: number; total: number; file: string }) => void;
  onWarning?: (message: string) => void;
}

export interface ClassImageReport {
  /** Images that were already in the folder. */
  existing: number;
  /** Files written now (PNG paths). */
  generated: string[];
}

export const classImageName = (k: number): string => `class_${String(k).padStart(4, '0')}`;

/** Image files in `dir` (recursively, as the dataset scan finds them); none if the folder does not exist. */
export async function listImages(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const files = await fg('**/*', { cwd: dir, onlyFiles: true, dot: false, followSymbolicLinks: true, suppressErrors: true });
  return files.filter((f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase())).sort();
}

/** Makes sure `dir` holds at least `count` images, generating the missing ones with `model` (see the file comment). */
export async function ensureClassImages(model: SdModel, o: ClassImageOptions): Promise<ClassImageReport> {
  await mkdir(o.dir, { recursive: true });
  const present = await listImages(o.dir);
  await warnOnOtherPrompt(o, present);
  const missing = Math.max(0, o.count - present.length);
  const generated: string[] = [];
  for (let k = 0; generated.length < missing; k++) {
    if (o.signal?.aborted) throw o.signal.reason ?? new Error('aborted');
    const stem = classImageName(k);
    const png = join(o.dir, `${stem}.png`);
    if (existsSync(png)) continue;
    const request: GenerateRequest = {
      prompt: o.prompt,
      negativePrompt: o.negativePrompt ?? '',
      sampler: o.sampler,
      steps: o.steps,
      cfgScale: o.cfgScale,
      width: o.width,
      height: o.height,
      seed: o.seed + k,
      ...(o.attentionSliceSize !== undefined ? { attentionSliceSize: o.attentionSliceSize } : {}),
    };
    const [image] = await generate(model, request, { signal: o.signal });
    await writeFileAtomic(join(o.dir, `${stem}.txt`), (fh) => fh.writeFile(`${o.prompt}\n`));
    await writeFileAtomic(png, (fh) => fh.writeFile(image!.png));
    generated.push(png);
    o.onProgress?.({ done: generated.length, total: missing, file: png });
  }
  return { existing: present.length, generated };
}

/** A class folder generated for another prompt would train the prior on the wrong images: say so. */
async function warnOnOtherPrompt(o: ClassImageOptions, present: readonly string[]): Promise<void> {
  if (!o.onWarning) return;
  const others = new Set<string>();
  for (const f of present) {
    const m = /^(class_\d{4,})\.png$/.exec(f);
    if (!m) continue;
    const txt = join(o.dir, `${m[1]}.txt`);
    if (!existsSync(txt)) continue;
    const text = (await readFile(txt, 'utf8')).trim();
    if (text !== o.prompt.trim()) others.add(text);
  }
  if (others.size > 0) {
    o.onWarning(
      `${o.dir} holds class images generated for ${[...others].map((t) => JSON.stringify(t)).join(', ')}, not for the class prompt ` +
        `${JSON.stringify(o.prompt)}; they are used as they are (empty the folder to regenerate them)`,
    );
  }
}
