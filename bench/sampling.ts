// Sampling benchmark: seconds per sampling step (U-Net with classifier-free guidance: one image, U-Net batch 2) and per
// image (text encoding + N steps + VAE decode), for
//   - the tiny model (shared/fixtures/tiny-sd1 if present, else the bundled checkpoints/tiny-shapes) at its native
//     size, N = 20 steps, plus a leak check: the tensor count after N images equals the count after the first;
//   - the full-size SD 1.5 architecture (random N(0, 0.02) weights) at 512×512: 1 step is timed and the image is
//     extrapolated to 20 steps (+ one timed decode), on the backend `auto` picks for the job's memory estimate.
//
//   import { benchSampling } from './sampling.js';  const r = await benchSampling();
//
// Each model runs in its own child process (`node dist/bench/sampling.js --child '<json>'`): isolated peaks, and a
// wasm out-of-memory abort cannot take the benchmark down.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { explainBackendError, useBackend, type BackendRequest } from '../src/backend/backend.js';
import { estimateJob } from '../src/backend/memory.js';
import { loadDiffusersFolder } from '../src/checkpoints/diffusers_folder.js';
import { deriveConfigs } from '../src/checkpoints/derive_config.js';
import { buildPipeline, type Pipeline, type PipelineConfigs } from '../src/checkpoints/pipeline.js';
import { loadSingleFile } from '../src/checkpoints/single_file.js';
import { withSource, openSource } from '../src/checkpoints/sources.js';
import { parseClipTextConfig } from '../src/models/clip_text.js';
import { parseUNetConfig } from '../src/models/unet.js';
import { parseVaeConfig } from '../src/models/vae.js';
import { SD15 } from '../src/models/presets.js';
import { namedParams } from '../src/nn/module.js';
import { packagePath } from '../src/paths.js';
import { createSampler, runSampler, type SamplerName } from '../src/samplers/index.js';
import { parseSchedulerConfig, SD_SCHEDULER_CONFIG, type SchedulerConfig } from '../src/schedules/config.js';
import { peakRss, trackTensorMemory } from './memtrack.js';

export const SHARED_TINY = '/work/shared/fixtures/tiny-sd1';

/** The tiny model to benchmark: the shared fixture if present, else the bundled checkpoint; undefined if neither. */
export function tinyModelPath(): string | undefined {
  for (const p of [SHARED_TINY, packagePath('checkpoints', 'tiny-shapes')]) {
    if (existsSync(join(p, 'model_index.json'))) return p;
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  return undefined;
}

export interface SamplingRun {
  model: 'tiny' | 'sd15';
  /** Where the weights came from. */
  source: string;
  backend: string;
  /** `auto`'s notes (why it skipped a backend). */
  notes: string[];
  width: number;
  height: number;
  sampler: SamplerName;
  /** Steps actually timed per image. */
  stepsTimed: number;
  /** Steps per image the per-image time is for (= stepsTimed unless extrapolated). */
  stepsPerImage: number;
  extrapolated: boolean;
  /** Mean seconds per step (U-Net on batch 2 + sampler update). */
  secondsPerStep: number;
  textSeconds: number;
  decodeSeconds: number;
  /** text + stepsPerImage × secondsPerStep + decode. */
  secondsPerImage: number;
  /** Images generated (the leak check compares the first and the last). */
  images: number;
  tensorsAfterFirst: number;
  tensorsAfterLast: number;
  /** Peak of live backend buffers over the whole run (weights included), bytes. */
  peakTensorBytes: number;
  peakRssBytes: number;
  weightBytes: number;
  /** Our estimate for the job (the figure `auto` decided on), bytes. */
  estimateBytes: number;
  setupSeconds: number;
}

export interface SamplingAttempt {
  model: 'tiny' | 'sd15';
  run?: SamplingRun;
  error?: string;
  skipped?: string;
}

interface ChildArgs {
  model: 'tiny' | 'sd15';
  path?: string;
  backend: BackendRequest;
  steps: number;
  stepsTimed: number;
  images: number;
  sampler: SamplerName;
  attentionSliceSize?: number;
}

// "a photo of a cat" as CLIP ids, and the empty prompt: [BOS, ..., EOS, EOS padding to 77]
const BOS = 49406;
const EOS = 49407;
const ids = (tokens: number[]): number[] => [BOS, ...tokens, ...Array<number>(76 - tokens.length).fill(EOS)];
const PROMPT_IDS = ids([320, 1125, 539, 320, 2368]);
const EMPTY_IDS = ids([]);

interface Loaded {
  pipe: Pick<Pipeline, 'unet' | 'vae' | 'textEncoder' | 'configs'>;
  scheduler: SchedulerConfig;
  source: string;
  weightBytes: number;
}

async function loadTiny(path: string): Promise<Loaded> {
  const p = statSync(path).isFile() ? await loadSingleFile(path) : await loadDiffusersFolder(path);
  const scheduler = p.schedulerConfig ? parseSchedulerConfig(p.schedulerConfig) : SD_SCHEDULER_CONFIG;
  return { pipe: p, scheduler, source: path, weightBytes: tf.memory().numBytes };
}

/** The tiny model's configs without loading its weights (for the estimate that picks the backend). */
async function tinyConfigs(path: string): Promise<PipelineConfigs> {
  if (statSync(path).isFile()) return withSource(openSource(path), async (src) => deriveConfigs(src.shapes, path).configs);
  const json = (c: string): unknown => JSON.parse(readFileSync(join(path, c, 'config.json'), 'utf8'));
  return { unet: parseUNetConfig(json('unet')), vae: parseVaeConfig(json('vae')), text_encoder: parseClipTextConfig(json('text_encoder')) };
}

function randomSd15(): Loaded {
  const pipe = buildPipeline({ unet: SD15.unet, vae: SD15.vae, text_encoder: SD15.text_encoder });
  let weightBytes = 0;
  for (const m of [pipe.unet, pipe.vae, pipe.textEncoder]) {
    for (const [name, p] of namedParams(m)) {
      p.set(tf.randomNormal([...p.shape], 0, 0.02), name);
      weightBytes += p.size * 4;
    }
  }
  return { pipe, scheduler: SD_SCHEDULER_CONFIG, source: 'SD 1.5 architecture, random weights', weightBytes };
}

const secondsSince = (t: number): number => (performance.now() - t) / 1000;

/** One image: encode both prompts, run the sampler (the first `stepsTimed` steps), decode. Returns timings. */
function generateImage(
  m: Loaded,
  a: ChildArgs,
  size: { width: number; height: number },
  seed: number,
): { textSeconds: number; stepSeconds: number[]; decodeSeconds: number } {
  const { unet, vae, textEncoder } = m.pipe;
  const t0 = performance.now();
  const context = tf.tidy(() => {
    const input = tf.tensor2d([EMPTY_IDS, PROMPT_IDS], [2, 77], 'int32');
    return textEncoder.forward(input).lastHiddenState; // [2, 77, C]: uncond, cond
  });
  context.dataSync();
  const textSeconds = secondsSince(t0);

  const f = 2 ** (vae.config.block_out_channels.length - 1);
  const [h, w] = [Math.floor(size.height / f), Math.floor(size.width / f)];
  const sampler = createSampler(a.sampler, m.scheduler, { steps: a.steps });
  const noise = tf.tidy(() => tf.randomNormal([1, h, w, unet.config.in_channels], 0, 1, 'float32', seed).mul(sampler.initNoiseSigma)) as tf.Tensor4D;
  const guidance = 7.5;
  const denoise = (x: tf.Tensor4D, t: number): tf.Tensor4D => {
    const out = unet.forward(tf.concat([x, x], 0), t, context, { attentionSliceSize: a.attentionSliceSize }); // [2, h, w, c]
    const [u, c] = tf.split(out, 2, 0) as [tf.Tensor4D, tf.Tensor4D];
    return u.add(c.sub(u).mul(guidance));
  };
  const stepSeconds: number[] = [];
  const loop = runSampler(sampler, denoise, noise);
  let latents: tf.Tensor4D | undefined;
  let t = performance.now();
  for (;;) {
    const r = loop.next();
    if (r.done) {
      latents = r.value;
      break;
    }
    r.value.latents.dataSync();
    stepSeconds.push(secondsSince(t));
    t = performance.now();
    if (stepSeconds.length >= a.stepsTimed && a.stepsTimed < a.steps) {
      // stop early (full size): take over these latents (the loop would free them at its next step) and end the
      // loop, which frees the sampler's history
      latents = r.value.latents;
      loop.return(latents);
      break;
    }
  }
  noise.dispose();
  context.dispose();

  const t2 = performance.now();
  const image = tf.tidy(() => vae.decode(tf.div(latents!, vae.scalingFactor) as tf.Tensor4D, { attentionSliceSize: a.attentionSliceSize }));
  image.dataSync();
  const decodeSeconds = secondsSince(t2);
  image.dispose();
  latents.dispose();
  return { textSeconds, stepSeconds, decodeSeconds };
}

/** Runs one model's measurement in this process (the child side). */
export async function measureSampling(a: ChildArgs): Promise<SamplingRun> {
  // the estimate decides the backend, as the CLI's `--backend auto` does
  const t0 = performance.now();
  const configs = a.model === 'tiny' ? await tinyConfigs(a.path!) : { unet: SD15.unet, vae: SD15.vae, text_encoder: SD15.text_encoder };
  const f = 2 ** (configs.vae.block_out_channels.length - 1);
  const width = a.model === 'tiny' ? (configs.unet.sample_size ?? 8) * f : 512; // the tiny model's native size
  const height = width;
  const estimate = estimateJob({ kind: 'sample', configs, width, height, batch: 1, cfg: true, attentionSliceSize: a.attentionSliceSize });
  const choice = await useBackend(a.backend, { estimatedBytes: estimate.total });
  const tracker = trackTensorMemory();
  const loaded = a.model === 'tiny' ? await loadTiny(a.path!) : randomSd15();
  const setupSeconds = secondsSince(t0);

  let tensorsAfterFirst = 0;
  let first: ReturnType<typeof generateImage> | undefined;
  const steps: number[] = [];
  for (let i = 0; i < a.images; i++) {
    const r = generateImage(loaded, a, { width, height }, 1234 + i);
    if (i === 0) {
      first = r;
      tensorsAfterFirst = tf.memory().numTensors;
    }
    steps.push(...r.stepSeconds.slice(i === 0 && a.images > 1 ? 1 : 0)); // the first step of the first image warms up
  }
  const tensorsAfterLast = tf.memory().numTensors;
  tracker.stop();
  const secondsPerStep = steps.reduce((x, y) => x + y, 0) / steps.length;
  const extrapolated = a.stepsTimed < a.steps;
  return {
    model: a.model,
    source: loaded.source,
    backend: choice.backend,
    notes: choice.notes,
    width,
    height,
    sampler: a.sampler,
    stepsTimed: a.stepsTimed,
    stepsPerImage: a.steps,
    extrapolated,
    secondsPerStep,
    textSeconds: first!.textSeconds,
    decodeSeconds: first!.decodeSeconds,
    secondsPerImage: first!.textSeconds + a.steps * secondsPerStep + first!.decodeSeconds,
    images: a.images,
    tensorsAfterFirst,
    tensorsAfterLast,
    peakTensorBytes: tracker.peak,
    peakRssBytes: peakRss(),
    weightBytes: loaded.weightBytes,
    estimateBytes: estimate.total,
    setupSeconds,
  };
}

const self = fileURLToPath(import.meta.url);

function runChild(a: ChildArgs): Promise<SamplingAttempt> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [self, '--child', JSON.stringify(a)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const line = out.trim().split('\n').pop() ?? '';
      try {
        const r = JSON.parse(line) as { run?: SamplingRun; error?: string };
        if (r.run || r.error) return resolve({ model: a.model, ...r });
      } catch {
        // no JSON: the child died
      }
      const lastErr = err.trim().split('\n').filter((l) => l.trim() !== '').slice(-3).join(' | ');
      resolve({ model: a.model, error: `child exited with ${signal ?? `code ${code}`}${lastErr ? `: ${lastErr.slice(0, 300)}` : ''}` });
    });
  });
}

export interface SamplingBenchOptions {
  /** Backend request for both runs (default 'auto': the memory estimate decides). */
  backend?: BackendRequest;
  /** Tiny model: steps per image (default 20) and images for the leak check (default 3). */
  steps?: number;
  images?: number;
  sampler?: SamplerName;
  /** Full-size run: steps timed (default 1; the image is extrapolated to `steps`). false skips it. */
  full?: false | { stepsTimed?: number; attentionSliceSize?: number };
  onStart?: (what: string) => void;
}

/** Runs the benchmark (from compiled JS: each model in its own process). */
export async function benchSampling(opts: SamplingBenchOptions = {}): Promise<SamplingAttempt[]> {
  if (!self.endsWith('.js')) throw new Error('benchSampling runs its measurements in child processes: run it from the compiled dist/bench');
  const steps = opts.steps ?? 20;
  const sampler = opts.sampler ?? 'euler';
  const backend = opts.backend ?? 'auto';
  const out: SamplingAttempt[] = [];
  const tiny = tinyModelPath();
  if (tiny) {
    opts.onStart?.(`sampling: tiny model (${tiny})`);
    out.push(await runChild({ model: 'tiny', path: tiny, backend, steps, stepsTimed: steps, images: opts.images ?? 3, sampler }));
  } else {
    out.push({ model: 'tiny', skipped: `no tiny model (${SHARED_TINY} or checkpoints/tiny-shapes)` });
  }
  if (opts.full !== false) {
    const full = opts.full ?? {};
    opts.onStart?.('sampling: SD 1.5 architecture at 512×512 (random weights)');
    out.push(
      await runChild({
        model: 'sd15',
        backend,
        steps,
        stepsTimed: full.stepsTimed ?? 1,
        images: 1,
        sampler,
        attentionSliceSize: full.attentionSliceSize,
      }),
    );
  }
  return out;
}

if (process.argv[2] === '--child' && process.argv[3] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = JSON.parse(process.argv[3]) as ChildArgs;
  try {
    const run = await measureSampling(args);
    process.stdout.write(`${JSON.stringify({ run })}\n`);
  } catch (e) {
    const explained = explainBackendError(e);
    const msg = explained instanceof Error ? explained.message : String(explained);
    process.stdout.write(`${JSON.stringify({ error: msg.split('\n')[0] })}\n`);
    process.exitCode = 2;
  }
}
