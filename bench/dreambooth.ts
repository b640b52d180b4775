// DreamBooth benchmark:
//   1. the memory estimate (src/backend/memory.ts) of full-size SD 1.5 DreamBooth at 512×512, batch 1 with prior
//      preservation (the U-Net sees 2 images), with and without gradient checkpointing, and the 12/16/24 GB table of
//      docs/dreambooth.md (every batch × checkpointing × optimizer × train_text_encoder combination);
//   2. seconds per optimizer step of the tiny model (shared/fixtures/tiny-sd1, 64×64) on the chosen backend (default
//      wasm), for plain / checkpointed / text encoder trained / prior preservation (U-Net batch 2), and the measured
//      peak tensor bytes of one forward + backward with and without checkpointing (tf.profile).
//
//   node dist/bench/dreambooth.js [--backend wasm|cpu|node|gpu] [--steps N] [--model DIR] [--table]
//   import { benchDreambooth, formatDreamboothBench } from './dreambooth.js';   // from bench/run.ts
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { formatBytes, parseBackendRequest, useBackend } from '../src/backend/backend.js';
import { estimateJob, type OptimizerName, type TrainingJob } from '../src/backend/memory.js';
import { loadDiffusersFolder } from '../src/checkpoints/diffusers_folder.js';
import { disposePipeline, type PipelineConfigs } from '../src/checkpoints/pipeline.js';
import { DreamboothConfigSchema } from '../src/config/schema.js';
import { SD15 } from '../src/models/presets.js';
import { noiseSchedule } from '../src/schedules/betas.js';
import { parseSchedulerConfig } from '../src/schedules/config.js';
import { CLIPTokenizer } from '../src/tokenizer/clip_tokenizer.js';
import { DreamBooth } from '../src/training/dreambooth.js';
import { train } from '../src/training/loop.js';
import { buildStepContext } from '../src/training/micro_batch.js';
import { MemoryBatchSource, type MemoryItem } from '../src/training/memory_source.js';
import type { DiffusionSetup } from '../src/training/types.js';

export const TINY_SD1 = '/work/shared/fixtures/tiny-sd1';

// ---------------------------------------------------------------------------------------------------------------
// 1. Full-size estimates

export const SD15_CONFIGS: PipelineConfigs = { unet: SD15.unet, vae: SD15.vae, text_encoder: SD15.text_encoder };

/** SD 1.5 DreamBooth at 512 (latents cached: the VAE encoder is not part of the step). */
export function sd15Job(o: Partial<TrainingJob> = {}): TrainingJob {
  return { configs: SD15_CONFIGS, method: 'dreambooth', batch: 2, resolution: 512, optimizer: 'adamw', latentsCached: true, ...o };
}

export interface EstimateRow {
  label: string;
  /** U-Net batch (instance + class images with prior preservation). */
  unetBatch: number;
  checkpointing: boolean;
  optimizer: OptimizerName;
  trainTextEncoder: boolean;
  bytes: number;
  parts: Record<string, number>;
}

function estimateRow(label: string, o: Partial<TrainingJob>): EstimateRow {
  const job = sd15Job(o);
  const e = estimateJob({ kind: 'train', ...job });
  return {
    label,
    unetBatch: job.batch,
    checkpointing: job.gradientCheckpointing ?? false,
    optimizer: job.optimizer,
    trainTextEncoder: job.trainTextEncoder ?? false,
    bytes: e.total,
    parts: e.parts,
  };
}

/** The two headline estimates: batch 1 with prior preservation (U-Net batch 2), without and with checkpointing. */
export function headlineEstimates(): EstimateRow[] {
  return [
    estimateRow('SD1.5 512, batch 1 + prior (U-Net batch 2), AdamW', { batch: 2 }),
    estimateRow('  … with gradient checkpointing', { batch: 2, gradientCheckpointing: true }),
    estimateRow('SD1.5 512, batch 1, no prior (U-Net batch 1), AdamW', { batch: 1 }),
    estimateRow('  … with gradient checkpointing', { batch: 1, gradientCheckpointing: true }),
  ];
}

export const GPU_GIB = [12, 16, 24] as const;
const GiB = 2 ** 30;
/** Optimizers by state size: AdamW (2 slots), Lion / SGD with momentum (1 slot), Adafactor (factored). */
export const TABLE_OPTIMIZERS = ['adamw', 'lion', 'adafactor'] as const;

export interface FitRow {
  resolution: number;
  /** Images per U-Net call: training.batch_size, × 2 with prior preservation. */
  unetBatch: number;
  checkpointing: boolean;
  /** Bytes per optimizer (TABLE_OPTIMIZERS order), text encoder frozen and trained. */
  frozenTe: number[];
  trainedTe: number[];
}

/** The estimate for every resolution × U-Net batch × checkpointing × optimizer × train_text_encoder. */
export function fitTable(resolutions: readonly number[] = [256, 384, 512], batches: readonly number[] = [1, 2, 4]): FitRow[] {
  const rows: FitRow[] = [];
  for (const resolution of resolutions) {
    for (const unetBatch of batches) {
      for (const checkpointing of [false, true]) {
        const est = (optimizer: OptimizerName, trainTextEncoder: boolean) =>
          estimateJob({ kind: 'train', ...sd15Job({ resolution, batch: unetBatch, gradientCheckpointing: checkpointing, optimizer, trainTextEncoder }) }).total;
        rows.push({
          resolution,
          unetBatch,
          checkpointing,
          frozenTe: TABLE_OPTIMIZERS.map((o) => est(o, false)),
          trainedTe: TABLE_OPTIMIZERS.map((o) => est(o, true)),
        });
      }
    }
  }
  return rows;
}

/** The smallest GPU (of 12/16/24 GiB) the estimate fits, or '—'. */
const smallestGpu = (bytes: number): string => {
  const g = GPU_GIB.find((n) => bytes <= n * GiB);
  return g === undefined ? '' : ` (${g})`;
};

export function formatEstimates(headline: EstimateRow[], table: FitRow[]): string {
  const out: string[] = ['Memory estimate (src/backend/memory.ts), SD 1.5 DreamBooth at 512×512, fp32, latents cached:'];
  for (const r of headline) {
    const parts = Object.entries(r.parts).map(([k, v]) => `${k} ${formatBytes(v)}`).join(', ');
    out.push(`  ${r.label.padEnd(52)} ${formatBytes(r.bytes).padStart(9)}  (${parts})`);
  }
  out.push(
    '',
    'Estimates in GiB for SD 1.5; "(16)" = the smallest of 12/16/24 GiB it fits in. U-Net batch = training.batch_size, ×2 with prior preservation.',
    'lion = also SGD with momentum (one state slot).',
    '',
    '| resolution | U-Net batch | checkpointing | adamw | lion | adafactor | adamw +TE | lion +TE | adafactor +TE |',
    '|---|---|---|---|---|---|---|---|---|',
  );
  for (const r of table) {
    const cells = [...r.frozenTe, ...r.trainedTe].map((b) => `${(b / GiB).toFixed(1)}${smallestGpu(b)}`);
    out.push(`| ${r.resolution} | ${r.unetBatch} | ${r.checkpointing ? 'yes' : 'no'} | ${cells.join(' | ')} |`);
  }
  out.push('');
  // per GPU and resolution: the largest U-Net batch that fits, and with which settings
  for (const gpu of GPU_GIB) {
    const parts: string[] = [];
    for (const res of [...new Set(table.map((r) => r.resolution))]) {
      const ok = (r: FitRow) =>
        TABLE_OPTIMIZERS.flatMap((o, i) => [
          ...(r.frozenTe[i]! <= gpu * GiB ? [`${r.checkpointing ? 'ckpt+' : ''}${o}`] : []),
          ...(r.trainedTe[i]! <= gpu * GiB ? [`${r.checkpointing ? 'ckpt+' : ''}${o}+TE`] : []),
        ]);
      const rows = table.filter((r) => r.resolution === res && ok(r).length > 0);
      if (rows.length === 0) {
        parts.push(`${res} px: nothing`);
        continue;
      }
      const best = Math.max(...rows.map((r) => r.unetBatch));
      parts.push(`${res} px: U-Net batch ${best} (${rows.filter((r) => r.unetBatch === best).flatMap(ok).join(', ')})`);
    }
    out.push(`${gpu} GiB — ${parts.join('; ')}`);
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Tiny-model timing

export interface TimingRow {
  label: string;
  unetBatch: number;
  /** Median and fastest seconds per optimizer step (the first step, with kernel warm-up, left out). */
  secondsPerStep: number;
  fastest: number;
  steps: number;
}

export interface DreamboothBenchResult {
  backend: string;
  model: string;
  headline: EstimateRow[];
  table: FitRow[];
  timing: TimingRow[];
  /** tf.profile peak bytes of one forward + backward (U-Net batch 2, 64×64), without and with checkpointing. */
  peakBytes?: { plain: number; checkpointed: number };
}

async function loadTinySetup(dir: string) {
  const model = await loadDiffusersFolder(dir);
  const sched = parseSchedulerConfig(JSON.parse(readFileSync(join(dir, 'scheduler', 'scheduler_config.json'), 'utf8')));
  const setup: DiffusionSetup = {
    alphasCumprod: noiseSchedule(sched).alphasCumprod,
    predictionType: sched.prediction_type,
    scalingFactor: model.vae.scalingFactor,
  };
  const tokenizer = existsSync(join(dir, 'tokenizer')) ? await CLIPTokenizer.fromDiffusersFolder(join(dir, 'tokenizer')) : await CLIPTokenizer.fromBundled();
  return { model, setup, tokenizer };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchDreambooth(opts: { model?: string; steps?: number; timing?: boolean } = {}): Promise<DreamboothBenchResult> {
  const result: DreamboothBenchResult = { backend: tf.getBackend(), model: opts.model ?? TINY_SD1, headline: headlineEstimates(), table: fitTable(), timing: [] };
  const dir = opts.model ?? TINY_SD1;
  if (opts.timing === false || !existsSync(join(dir, 'model_index.json'))) return result;
  const steps = opts.steps ?? 8;
  const { model, setup, tokenizer } = await loadTinySetup(dir);
  const lat = model.unet.config.sample_size ?? 8;
  const items: MemoryItem[] = ['a photo of sks ball', 'a photo of a ball'].map((caption, i) => ({
    caption,
    latents: tf.randomNormal([lat, lat, model.vae.config.latent_channels], 0, 0.8, 'float32', 7 + i) as tf.Tensor3D,
  }));
  const runDir = mkdtempSync(join(tmpdir(), 'sdtrain-bench-db-'));
  try {
    const variants: Array<{ label: string; batch: number; dreambooth: Record<string, unknown>; warmUp?: boolean }> = [
      { label: 'warm-up', batch: 2, dreambooth: { train_text_encoder: true, gradient_checkpointing: true }, warmUp: true },
      { label: 'U-Net only', batch: 1, dreambooth: {} },
      { label: 'U-Net only, gradient checkpointing', batch: 1, dreambooth: { gradient_checkpointing: true } },
      { label: 'U-Net + text encoder', batch: 1, dreambooth: { train_text_encoder: true } },
      { label: 'prior preservation (U-Net batch 2)', batch: 2, dreambooth: {} },
      { label: 'prior preservation, checkpointing', batch: 2, dreambooth: { gradient_checkpointing: true } },
    ];
    for (const v of variants) {
      const cfg = DreamboothConfigSchema.parse({
        data: { datasets: [{ path: '/unused' }], resolution: lat * 8 },
        training: { max_train_steps: v.warmUp ? 2 : steps + 1, batch_size: v.batch, learning_rate: 1e-5, save_every_n_steps: 0, preview: { every_n_steps: 0 }, cond_dropout: 0 },
        dreambooth: { ...v.dreambooth, export: { diffusers: false, single_file: false } },
      });
      const m = new DreamBooth({ ...model, tokenizer }, { dreambooth: cfg.dreambooth, learningRate: cfg.training.learning_rate });
      const times: number[] = [];
      let last = 0;
      await train(m, new MemoryBatchSource(items, { batchSize: v.batch, seed: 0 }), cfg, {
        runDir: join(runDir, String(result.timing.length)),
        diffusion: setup,
        onEvent: (e) => {
          if (e.kind !== 'step') return;
          if (e.step > 1) times.push(e.seconds - last);
          last = e.seconds;
        },
      });
      m.release();
      if (!v.warmUp) result.timing.push({ label: v.label, unetBatch: v.batch, secondsPerStep: median(times), fastest: Math.min(...times), steps });
    }
    // peak tensor bytes of one step's forward + backward, U-Net batch 2
    const cfg = DreamboothConfigSchema.parse({ data: { datasets: [{ path: '/unused' }] }, dreambooth: {} });
    const m = new DreamBooth({ ...model, tokenizer }, { dreambooth: cfg.dreambooth });
    const x0 = tf.randomNormal([2, lat, lat, 4], 0, 0.8, 'float32', 1) as tf.Tensor4D;
    const noise = tf.randomNormal([2, lat, lat, 4], 0, 1, 'float32', 2) as tf.Tensor4D;
    const peak = async (checkpointing: boolean): Promise<number> => {
      const mb = buildStepContext({ x0, noise, timesteps: [500, 700], captions: ['a photo of sks ball', 'a photo of a ball'] }, setup, { step: 0, micro: 0 });
      const info = await tf.profile(() => {
        m.opts.dreambooth.gradient_checkpointing = checkpointing;
        const { value, grads } = tf.variableGrads(() => mb.ctx.lossOf(m.predict(mb.ctx)), m.trainableVariables());
        tf.dispose([value, ...Object.values(grads)]);
      });
      mb.dispose();
      return info.peakBytes;
    };
    result.peakBytes = { plain: await peak(false), checkpointed: await peak(true) };
    m.release();
    tf.dispose([x0, noise]);
  } finally {
    for (const it of items) it.latents?.dispose();
    disposePipeline(model);
    rmSync(runDir, { recursive: true, force: true });
  }
  return result;
}

export function formatDreamboothBench(r: DreamboothBenchResult): string {
  const out = [formatEstimates(r.headline, r.table)];
  if (r.timing.length > 0) {
    out.push('', `Seconds per optimizer step, ${r.model} at 64×64 on ${r.backend} (${r.timing[0]!.steps} steps after a warm-up step; median, fastest):`);
    for (const t of r.timing) out.push(`  ${t.label.padEnd(40)} ${t.secondsPerStep.toFixed(3)}  ${t.fastest.toFixed(3)} s/step`);
  }
  if (r.peakBytes) {
    out.push(
      '',
      `Peak tensor bytes of one forward + backward (tf.profile, U-Net batch 2): ${formatBytes(r.peakBytes.plain)} without, ` +
        `${formatBytes(r.peakBytes.checkpointed)} with gradient checkpointing (the weights included)`,
    );
  }
  return out.join('\n');
}

// Run directly: node dist/bench/dreambooth.js
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const flag = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  await useBackend(parseBackendRequest(flag('--backend') ?? process.env['SDTRAIN_BACKEND'] ?? 'wasm', '--backend'));
  const steps = flag('--steps');
  const r = await benchDreambooth({ model: flag('--model'), ...(steps ? { steps: Number(steps) } : {}), timing: !argv.includes('--table') });
  process.stdout.write(`${formatDreamboothBench(r)}\n`);
}
