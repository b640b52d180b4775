import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { estimateJob } from '../../backend/memory.js';
import { parseConfig, loadConfig, type ConfigOptions } from '../../config/load_config.js';
import { SAMPLERS, SampleConfigSchema, splitStrength, type SampleConfig } from '../../config/schema.js';
import { generateImages, type GenerateRequest } from '../../pipelines/generate.js';
import { makeGrid } from '../../pipelines/grid.js';
import { loadModel, readModelConfigs } from '../../pipelines/model.js';
import { nativeImageSize } from '../../checkpoints/pipeline.js';
import { chooseBackend } from '../backend_choice.js';
import { createProgress } from '../progress.js';
import { UsageError } from '../usage.js';

interface Args {
  config?: string;
  set?: string[];
  model?: string;
  vae?: string;
  prompt?: string;
  'negative-prompt'?: string;
  steps?: number;
  'cfg-scale'?: number;
  sampler?: string;
  width?: number;
  height?: number;
  'batch-size'?: number;
  'n-iter'?: number;
  seed?: number;
  'clip-skip'?: number;
  'init-image'?: string;
  strength?: number;
  mask?: string;
  'mask-blur'?: number;
  outpaint?: string;
  embeddings?: string[];
  hypernetwork?: string[];
  lora?: string[];
  out?: string;
  grid?: boolean;
  json?: boolean;
  'attention-slice-size'?: number;
  backend?: string;
}

/** Flag → config key (the dotted key the loader overrides), so the flags are just the config's keys (flags > file). */
const FLAG_KEYS: Array<[keyof Args, string]> = [
  ['model', 'model'],
  ['vae', 'vae'],
  ['prompt', 'prompt'],
  ['negative-prompt', 'negative_prompt'],
  ['steps', 'steps'],
  ['cfg-scale', 'cfg_scale'],
  ['sampler', 'sampler'],
  ['width', 'width'],
  ['height', 'height'],
  ['batch-size', 'batch_size'],
  ['n-iter', 'n_iter'],
  ['seed', 'seed'],
  ['clip-skip', 'clip_skip'],
  ['init-image', 'init_image'],
  ['strength', 'strength'],
  ['mask', 'mask'],
  ['mask-blur', 'mask_blur'],
  ['embeddings', 'embeddings'],
  ['hypernetwork', 'hypernetworks'],
  ['lora', 'loras'],
  ['out', 'out'],
  ['grid', 'grid'],
];

const SCALAR_FLAGS = FLAG_KEYS.map(([f]) => f).filter((f) => !['embeddings', 'hypernetwork', 'lora'].includes(f));

/** `left:128,right:0` → {left: 128, right: 0}. */
export function parseOutpaint(s: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(left|right|top|bottom)\s*[:=]\s*(\d+)$/.exec(part);
    if (!m) throw new UsageError(`--outpaint: '${part}' is not side:pixels (sides: left, right, top, bottom; e.g. --outpaint left:128,right:64)`);
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

async function resolveConfig(argv: Args): Promise<SampleConfig> {
  const overrides: Record<string, unknown> = {};
  const labels: Record<string, string> = {};
  for (const [flag, key] of FLAG_KEYS) {
    const v = argv[flag];
    if (v === undefined) continue;
    overrides[key] = flag === 'hypernetwork' || flag === 'lora' ? (v as string[]).map((f) => splitStrength(f)) : v;
    labels[key] = `--${flag}`;
  }
  if (argv.outpaint !== undefined) {
    overrides.outpaint = parseOutpaint(argv.outpaint);
    labels.outpaint = '--outpaint';
  }
  const opts: ConfigOptions = { overrides, overrideLabels: labels, set: argv.set ?? [] };
  if (argv.config) return (await loadConfig(argv.config, SampleConfigSchema, opts)).config;
  if (argv.prompt === undefined && !(argv.set ?? []).some((s) => s.startsWith('prompt='))) {
    throw new UsageError('give a prompt: sdtrain sample --prompt "a red circle" (or --config sample.yaml)');
  }
  return parseConfig('', '<command line>', SampleConfigSchema, { ...opts, baseDir: process.cwd() }).config;
}

/** The next free A1111-style image number in `dir` (files are NNNNN-<seed>.png). */
async function nextImageNumber(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const numbers = names.map((n) => /^(\d{5,})-/.exec(n)?.[1]).filter((x): x is string => x !== undefined).map(Number);
  return numbers.length ? Math.max(...numbers) + 1 : 0;
}

export const sample: CommandModule<object, Args> = {
  command: 'sample',
  describe: 'Generate images: txt2img, img2img (--init-image), inpainting (--mask), outpainting (--outpaint)',
  builder: (y) =>
    y
      .option('config', { type: 'string', describe: 'a sample config (YAML); flags override its keys' })
      .option('set', { type: 'string', array: true, describe: 'override a config key: --set steps=30' })
      .option('model', { type: 'string', describe: 'diffusers folder or .safetensors/.ckpt (default: the bundled checkpoints/tiny-shapes)' })
      .option('vae', { type: 'string', describe: "a VAE to use instead of the model's" })
      .option('prompt', { type: 'string', alias: 'p', describe: 'what to draw; A1111 syntax: (word:1.2), [word], BREAK, AND, [from:to:when]' })
      .option('negative-prompt', { type: 'string', alias: 'n', describe: 'what to steer away from' })
      .option('steps', { type: 'number', describe: 'sampling steps (default 20)' })
      .option('cfg-scale', { type: 'number', describe: 'classifier-free guidance scale (default 7; 1 = no guidance)' })
      .option('sampler', { choices: SAMPLERS, describe: 'sampler (default euler_a)' })
      .option('width', { type: 'number', alias: 'W', describe: "width in pixels, a multiple of 8 (default: the model's native size, 512 for SD 1.x)" })
      .option('height', { type: 'number', alias: 'H', describe: "height in pixels, a multiple of 8 (default: the model's native size, like --width)" })
      .option('batch-size', { type: 'number', describe: 'images per batch (default 1)' })
      .option('n-iter', { type: 'number', describe: 'batches (default 1)' })
      .option('seed', { type: 'number', describe: 'seed of the first image; image i uses seed+i; -1 = random (default)' })
      .option('clip-skip', { type: 'number', describe: 'use the n-th last text-encoder layer (default 1)' })
      .option('init-image', { type: 'string', describe: 'img2img: start from this image' })
      .option('strength', { type: 'number', describe: 'img2img denoising strength 0..1 (default 0.75)' })
      .option('mask', { type: 'string', describe: 'inpainting mask for --init-image: white = repaint' })
      .option('mask-blur', { type: 'number', describe: 'mask blur in pixels (default 4)' })
      .option('outpaint', { type: 'string', describe: 'extend --init-image: left:128,right:0,top:0,bottom:64 (multiples of 8)' })
      .option('embeddings', { type: 'string', array: true, describe: 'textual-inversion files or folders; the file name is the prompt keyword' })
      .option('hypernetwork', { type: 'string', array: true, describe: 'FILE[:strength] (repeatable)' })
      .option('lora', { type: 'string', array: true, describe: 'FILE[:weight] (repeatable; kohya or diffusers layout)' })
      .option('out', { type: 'string', describe: 'output folder (default outputs/)' })
      .option('grid', { type: 'boolean', describe: 'also write a grid of all images' })
      .option('attention-slice-size', { type: 'number', describe: 'attention maps computed at a time (less memory, same result)' })
      .option('json', { type: 'boolean', describe: 'print the results as JSON (one object per image)' })
      // A flag given twice: the last one wins (as in most CLIs), instead of yargs turning it into a list.
      .coerce(SCALAR_FLAGS, (v: unknown) => (Array.isArray(v) ? v.at(-1) : v))
      .example('$0 sample --prompt "a blue star on a black background" --seed 42', '')
      .example('$0 sample --model sd15.safetensors -p "a cat" --lora cat.safetensors:0.8 --steps 30', ''),
  handler: async (argv) => {
    const cfg = await resolveConfig(argv);
    const seed = cfg.seed === -1 ? Math.floor(Math.random() * 2 ** 32) : cfg.seed;
    if (cfg.seed === -1) process.stderr.write(`seed: ${seed}\n`);

    const configs = await readModelConfigs(cfg.model);
    const native = nativeImageSize(configs);
    const width = cfg.width ?? native;
    const height = cfg.height ?? native;
    const estimate = estimateJob({
      kind: 'sample',
      configs,
      width: width + (cfg.outpaint ? cfg.outpaint.left + cfg.outpaint.right : 0),
      height: height + (cfg.outpaint ? cfg.outpaint.top + cfg.outpaint.bottom : 0),
      batch: cfg.batch_size,
      cfg: cfg.cfg_scale !== 1,
      attentionSliceSize: argv['attention-slice-size'],
    });
    await chooseBackend(argv.backend, cfg.backend, estimate.total);

    const model = await loadModel(cfg.model, { vae: cfg.vae });
    for (const a of model.assumed) process.stderr.write(`assumed: ${a}\n`);
    const req: GenerateRequest = {
      prompt: cfg.prompt,
      negativePrompt: cfg.negative_prompt,
      sampler: cfg.sampler,
      steps: cfg.steps,
      cfgScale: cfg.cfg_scale,
      width,
      height,
      seed,
      batchSize: cfg.batch_size,
      nIter: cfg.n_iter,
      clipSkip: cfg.clip_skip,
      initImage: cfg.init_image,
      strength: cfg.strength,
      mask: cfg.mask,
      maskBlur: cfg.mask_blur,
      outpaint: cfg.outpaint,
      attentionSliceSize: argv['attention-slice-size'],
      embeddings: cfg.embeddings,
      loras: cfg.loras.map((l) => ({ path: l.path, weight: l.strength })),
      hypernetworks: cfg.hypernetworks.map((h) => ({ path: h.path, strength: h.strength })),
    };

    const out = resolve(cfg.out);
    await mkdir(out, { recursive: true });
    let n = await nextImageNumber(out);
    const progress = createProgress();
    const results: Array<{ file: string; seed: number; width: number; height: number; infotext: string }> = [];
    const pngs: Buffer[] = [];
    const abort = new AbortController();
    const onSigint = () => abort.abort();
    process.once('SIGINT', onSigint);
    try {
      for await (const image of generateImages(model, req, {
        signal: abort.signal,
        onEvent: (e) => {
          if (e.type === 'step') {
            if (e.step === 1) progress.start(e.total, `batch ${e.iteration + 1}/${cfg.n_iter} (seed ${e.seeds.join(',')})`);
            progress.update(e.step);
          } else if (e.type === 'warning') progress.log(`warning: ${e.message}`);
        },
      })) {
        const file = join(out, `${String(n++).padStart(5, '0')}-${image.seed}.png`);
        await writeFile(file, image.png);
        pngs.push(image.png);
        results.push({ file, seed: image.seed, width: image.width, height: image.height, infotext: image.infotext });
        if (!argv.json) progress.log(`wrote ${file}`);
      }
    } finally {
      progress.stop();
      process.off('SIGINT', onSigint);
      model.dispose();
    }
    if (cfg.grid && pngs.length > 1) {
      const file = join(out, `grid-${String(n).padStart(5, '0')}-${seed}.png`);
      await writeFile(file, await makeGrid(pngs, { infotext: results[0]?.infotext }));
      if (!argv.json) process.stderr.write(`wrote ${file}\n`);
    }
    if (argv.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  },
};
