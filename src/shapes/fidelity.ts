// Prompt fidelity of a model in the shapes world: sample images for "a <colour> <shape> on a <background> background"
// prompts and let the pixel classifier (classify.ts) say whether each shows what its prompt asked for.
import sharp from 'sharp';
import { generate } from '../pipelines/generate.js';
import type { SdModel } from '../pipelines/model.js';
import type { SamplerName } from '../samplers/index.js';
import { classifyImage, judge, type Classification, type Expected } from './classify.js';
import { allowed, BACKGROUND_COLOURS, caption, SHAPE_COLOURS, type Combo, type ShapeName } from './render.js';

export interface EvalPrompt {
  prompt: string;
  expected: Expected;
  /** The colour×shape pair was held out of training. */
  heldOut: boolean;
}

/**
 * Every colour×shape pair of `shapes`: held-in pairs once, with the backgrounds taken in turn (skipping the shape's
 * own colour), held-out pairs once per background.
 */
export function evalPrompts(shapes: readonly ShapeName[], holdOut: readonly Combo[]): EvalPrompt[] {
  const out: EvalPrompt[] = [];
  let k = 0;
  for (const shape of shapes) {
    for (const colour of SHAPE_COLOURS) {
      const heldOut = holdOut.some((h) => h.colour === colour && h.shape === shape);
      const bgs = BACKGROUND_COLOURS.filter((b) => b !== colour);
      const chosen = heldOut ? bgs : [bgs[k++ % bgs.length]!];
      for (const background of chosen) {
        if (!heldOut && !allowed({ shape, colour, background }, holdOut)) continue;
        const expected = { shape, colour, background };
        out.push({ prompt: caption(expected), expected, heldOut });
      }
    }
  }
  return out;
}

export interface SampleJudgement {
  seed: number;
  classification: Pick<Classification, 'shape' | 'colour' | 'background'>;
  ok: { shape: boolean; colour: boolean; background: boolean; all: boolean };
  png: Buffer;
}

export interface PromptResult extends EvalPrompt {
  samples: SampleJudgement[];
}

export interface Accuracy {
  images: number;
  all: number;
  shape: number;
  colour: number;
  background: number;
}

export interface FidelityOptions {
  samplesPerPrompt: number;
  steps: number;
  cfgScale: number;
  sampler: SamplerName;
  /** Seed of prompt i's first image: seed + i · samplesPerPrompt. */
  seed: number;
  imageSize: number;
  onPrompt?: (r: PromptResult, index: number, total: number) => void;
  signal?: AbortSignal;
}

/** Fraction of images right on each attribute and on all three. */
export function accuracyOf(results: readonly PromptResult[]): Accuracy {
  const s = results.flatMap((r) => r.samples);
  const frac = (k: 'all' | 'shape' | 'colour' | 'background') => (s.length === 0 ? 0 : s.filter((x) => x.ok[k]).length / s.length);
  return { images: s.length, all: frac('all'), shape: frac('shape'), colour: frac('colour'), background: frac('background') };
}

/** Samples and judges every prompt (txt2img at imageSize², one batch of samplesPerPrompt per prompt). */
export async function measureFidelity(model: SdModel, prompts: readonly EvalPrompt[], o: FidelityOptions): Promise<PromptResult[]> {
  const results: PromptResult[] = [];
  for (const [i, p] of prompts.entries()) {
    if (o.signal?.aborted) break;
    const images = await generate(
      model,
      { prompt: p.prompt, sampler: o.sampler, steps: o.steps, cfgScale: o.cfgScale, width: o.imageSize, height: o.imageSize, seed: o.seed + i * o.samplesPerPrompt, batchSize: o.samplesPerPrompt },
      { rgb: true, hashes: false },
    );
    const samples = images.map((img) => {
      const c = classifyImage(img.rgb!, img.width, img.height);
      return { seed: img.seed, classification: { shape: c.shape, colour: c.colour, background: c.background }, ok: judge(c, p.expected), png: img.png };
    });
    const r = { ...p, samples };
    results.push(r);
    o.onPrompt?.(r, i, prompts.length);
  }
  return results;
}

/** Images of one size in a grid (row by row, `cols` per row), each scaled up `scale`× with nearest-neighbour. */
export async function pixelGrid(pngs: readonly Buffer[], cols: number, scale = 4, gap = 2): Promise<Buffer> {
  const meta = await sharp(pngs[0]!).metadata();
  const w = meta.width! * scale;
  const h = meta.height! * scale;
  const rows = Math.ceil(pngs.length / cols);
  const tiles = await Promise.all(pngs.map((p) => sharp(p).resize(w, h, { kernel: 'nearest' }).png().toBuffer()));
  return sharp({ create: { width: cols * (w + gap) - gap, height: rows * (h + gap) - gap, channels: 3, background: '#404040' } })
    .composite(tiles.map((input, i) => ({ input, left: (i % cols) * (w + gap), top: Math.floor(i / cols) * (h + gap) })))
    .png({ compressionLevel: 9 })
    .toBuffer();
}
