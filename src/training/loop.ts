// The one training loop every method uses (minGPT's Trainer: "nothing in this file is about GPT"). Per optimizer
// step: k = gradient_accumulation_steps micro-batches, each drawn from the source, noised (micro_batch.ts) and turned
// into a loss by the method; their gradients (of loss / k) are summed, clipped by global norm, and applied by the
// optimizer at the scheduled learning rate. Around that: resume, loss.jsonl + loss.png, checkpoints, previews, events.
//
// Run folder: config.resolved.yaml (at start), loss.jsonl (a line per step), loss.png (at checkpoints and the end),
// checkpoints/step-<n>/ (every save_every_n_steps, on abort and at the end; see checkpoint.ts), and the method's
// final files (e.g. <name>.safetensors / <name>.pt) when the run finishes.
//
// Memory (style.md §3.3): tensors of a micro-batch live from prepareMicroBatch to its dispose(); gradients are
// disposed after the update; `await` happens only between micro-batches and steps. tf.memory().numTensors is the
// same after every step (tested).
import * as tf from '@tensorflow/tfjs';
import { mkdir } from 'node:fs/promises';
import type { ResolvedSource } from '../config/load_config.js';
import { condDropoutSchedule, rateAt } from '../config/schedules.js';
import type { EmbedConfig } from '../config/schema.js';
import { ConfigError, SdtrainError } from '../errors.js';
import type { AutoencoderKL } from '../models/vae.js';
import { TorchGenerator } from '../random/torch_rng.js';
import { noiseSchedule } from '../schedules/betas.js';
import type { SchedulerConfig } from '../schedules/config.js';
import { findLatestCheckpoint, readCheckpoint, TRAINER_STATE_FILE, writeCheckpoint, type LoadedTrainerState, type TrainerState } from './checkpoint.js';
import { learningRateAt } from './lr.js';
import { prepareMicroBatch } from './micro_batch.js';
import { createOptimizer, type Optimizer } from './optimizers.js';
import { appendLossRecord, truncateLossLog, writeLossPlot, writeResolvedConfig } from './run_files.js';
import type { BatchSource, DiffusionSetup, StopReason, TrainEvent, TrainingMethod, TrainSummary } from './types.js';

/** The `training` section (the same shape for every method). */
export type TrainingSection = EmbedConfig['training'];

/** What the loop reads from a run config: the seed and the `training` section (the whole config may be passed). */
export interface TrainLoopConfig {
  seed: number;
  training: TrainingSection;
}

export interface TrainOptions {
  /** The run folder: config.resolved.yaml, loss.jsonl, loss.png, checkpoints/, the final files. */
  runDir: string;
  diffusion: DiffusionSetup;
  /** Ctrl-C: checked between optimizer steps; the loop saves a checkpoint and returns with reason 'aborted'. */
  signal?: AbortSignal;
  onEvent?: (e: TrainEvent) => void;
  /** Continue from this checkpoint folder, or 'latest' (the newest under runDir/checkpoints; an error if none). */
  resume?: string;
  /** Renders preview images for these prompts at this step (the sampler is the caller's); returns the files written. */
  preview?: (step: number, prompts: string[]) => Promise<string[]>;
  /** Where the config came from, for the header of config.resolved.yaml. */
  configSource?: ResolvedSource;
}

/** A NaN or infinite loss/gradient: training stops; nothing is saved for the bad step. */
export class TrainingDivergedError extends SdtrainError {
  constructor(
    readonly step: number,
    readonly what: 'loss' | 'gradient norm',
    readonly value: number,
    readonly lastCheckpoint: string | undefined,
  ) {
    super(
      `training diverged at step ${step}: the ${what} is ${value}. Stopped without saving this step; ` +
        (lastCheckpoint ? `the last good checkpoint is ${lastCheckpoint} (resume from it, e.g. with a lower learning rate)` : 'no checkpoint had been written yet'),
    );
  }
}

/** The DiffusionSetup of a loaded model: its training schedule, prediction type and VAE. */
export function diffusionSetup(vae: AutoencoderKL, scheduler: SchedulerConfig): DiffusionSetup {
  return {
    alphasCumprod: noiseSchedule(scheduler).alphasCumprod,
    predictionType: scheduler.prediction_type,
    scalingFactor: vae.scalingFactor,
    encodeImages: (pixels) => vae.encode(pixels),
  };
}

const TAIL = 1000;

/** Trains `method` on `source` as `config.training` says. Resolves with a summary; throws on divergence or errors. */
export async function train(method: TrainingMethod, source: BatchSource, config: TrainLoopConfig, opts: TrainOptions): Promise<TrainSummary> {
  const t = config.training;
  const emit = (e: TrainEvent): void => opts.onEvent?.(e);
  const { runDir } = opts;
  await mkdir(runDir, { recursive: true });
  await writeResolvedConfig(runDir, config, opts.configSource);

  const vars = method.trainableVariables();
  // Per-variable learning-rate multipliers (parameter groups); undefined when the method has none.
  const lrScales = method.lrScale ? vars.map((_, i) => method.lrScale!(i)) : undefined;
  const o = t.optimizer;
  const optimizer = createOptimizer(o.type, { betas: o.betas, weightDecay: o.weight_decay, eps: o.eps, momentum: o.momentum });
  const rng = new TorchGenerator(config.seed);
  const lrAt = learningRateAt({ learningRate: t.learning_rate, scheduler: t.lr_scheduler, warmupSteps: t.lr_warmup_steps, totalSteps: t.max_train_steps, numCycles: t.lr_num_cycles });
  const dropout = condDropoutSchedule(t.cond_dropout);
  const setup: DiffusionSetup = { ...opts.diffusion, predictionType: t.prediction_type ?? opts.diffusion.predictionType };
  const settings = {
    batch_size: t.batch_size,
    gradient_accumulation_steps: t.gradient_accumulation_steps,
    learning_rate: String(t.learning_rate),
    lr_scheduler: t.lr_scheduler,
    max_train_steps: t.max_train_steps,
    prediction_type: setup.predictionType,
    ...(source.fingerprint !== undefined ? { data_fingerprint: source.fingerprint } : {}),
  };

  let step = 0;
  let elapsedBefore = 0;
  let history: Array<{ step: number; loss: number }> = [];
  let lastCheckpoint: string | undefined;
  let resumedFrom: string | undefined;
  try {
    if (opts.resume !== undefined) {
      const dir = opts.resume === 'latest' ? await findLatestCheckpoint(runDir) : opts.resume;
      if (dir === undefined) throw new SdtrainError(`cannot resume: ${runDir} has no checkpoint (checkpoints/step-<n>/${TRAINER_STATE_FILE})`);
      const s = await readCheckpoint(dir);
      restore(s, dir, method, vars, optimizer, rng, source);
      for (const [k, v] of Object.entries(settings)) {
        if (s.settings[k] !== undefined && s.settings[k] !== v) {
          const what = k === 'data_fingerprint' ? 'the training data (files, captions, buckets, seed or batch size) changed since the checkpoint' : `training.${k} was ${s.settings[k]} in the checkpoint and is ${v} now`;
          emit({ kind: 'warning', step: s.step, message: `${what}: the resumed run will not match an uninterrupted one` });
        }
      }
      step = s.step;
      elapsedBefore = s.elapsedSeconds;
      const logged = await truncateLossLog(runDir, step);
      history = logged.length > 0 ? logged.map((r) => ({ step: r.step, loss: r.loss })) : s.lossTail.steps.map((st, i) => ({ step: st, loss: s.lossTail.losses[i]! }));
      lastCheckpoint = resumedFrom = dir;
    } else {
      await truncateLossLog(runDir, 0);
    }
    const trainableParams = vars.reduce((n, v) => n + v.size, 0);
    emit({ kind: 'start', step, maxSteps: t.max_train_steps, runDir, ...(resumedFrom ? { resumedFrom } : {}), trainableParams, method: method.name });

    const started = performance.now();
    const seconds = (): number => elapsedBefore + (performance.now() - started) / 1000;
    let savedAt = resumedFrom !== undefined ? step : -1;
    const checkpoint = async (): Promise<void> => {
      const state: TrainerState = {
        step,
        method: method.name,
        seed: config.seed,
        params: await Promise.all(vars.map(async (v) => ({ name: v.name, shape: [...v.shape], data: Float32Array.from((await v.data()) as Float32Array) }))),
        optimizer: optimizer.getState(),
        rng: rng.getState(),
        cursor: source.cursor(),
        elapsedSeconds: seconds(),
        lossTail: { steps: history.slice(-TAIL).map((h) => h.step), losses: history.slice(-TAIL).map((h) => h.loss) },
        settings,
        ...(method.stateDict ? { methodState: method.stateDict() } : {}),
      };
      const { dir, files } = await writeCheckpoint(runDir, method, state);
      lastCheckpoint = dir;
      savedAt = step;
      await writeLossPlot(runDir, history, `${method.name} loss`);
      emit({ kind: 'checkpoint', step, dir, files });
    };

    let reason: StopReason = 'finished';
    let lastLog = performance.now();
    while (step < t.max_train_steps) {
      if (opts.signal?.aborted) {
        reason = 'aborted';
        break;
      }
      const lr = lrAt(step);
      const { loss, gradNorm } = await optimizerStep(step, lr);
      step += 1;
      history.push({ step, loss });
      const time = seconds();
      await appendLossRecord(runDir, { step, loss, lr, time });
      emit({ kind: 'step', step, loss, lr, gradNorm, seconds: time, cursor: source.cursor() });
      if (step % t.log_every_n_steps === 0) {
        const recent = history.slice(-t.log_every_n_steps);
        const now = performance.now();
        emit({ kind: 'log', step, loss: mean(recent.map((h) => h.loss)), lr, stepsPerSecond: (recent.length * 1000) / Math.max(1, now - lastLog) });
        lastLog = now;
      }
      if (t.save_every_n_steps > 0 && step % t.save_every_n_steps === 0 && step < t.max_train_steps) await checkpoint();
      if (opts.preview && t.preview.every_n_steps > 0 && step % t.preview.every_n_steps === 0) {
        const prompts = method.previewPrompts?.(t.preview.prompts) ?? [...t.preview.prompts];
        try {
          emit({ kind: 'preview', step, files: await opts.preview(step, prompts) });
        } catch (err) {
          emit({ kind: 'warning', step, message: `preview at step ${step} failed: ${(err as Error).message}` });
        }
      }
    }
    if (savedAt !== step && step > 0) await checkpoint();
    const files = reason === 'finished' ? await method.save(runDir, step, 'final') : [];
    if (history.length > 0) await writeLossPlot(runDir, history, `${method.name} loss`);
    const summary: TrainSummary = {
      reason,
      steps: step,
      firstLoss: history[0]?.loss,
      recentLoss: history.length > 0 ? mean(history.slice(-t.log_every_n_steps).map((h) => h.loss)) : undefined,
      seconds: seconds(),
      checkpointDir: lastCheckpoint,
      files,
    };
    emit({ kind: 'done', summary });
    return summary;
  } finally {
    optimizer.dispose();
  }

  /** k micro-batches, summed gradients of loss/k, norm clipping, one optimizer update. */
  async function optimizerStep(at: number, lr: number): Promise<{ loss: number; gradNorm: number }> {
    const k = t.gradient_accumulation_steps;
    const dropRate = rateAt(dropout, at);
    let acc: tf.Tensor[] | undefined;
    let loss = 0;
    try {
      for (let micro = 0; micro < k; micro++) {
        const batch = await source.next();
        const mb = prepareMicroBatch(batch, rng, setup, {
          step: at,
          micro,
          dropRate,
          noiseOffset: t.noise_offset,
          ...(t.min_snr_gamma !== undefined ? { minSnrGamma: t.min_snr_gamma } : {}),
          ...(t.attention_slice_size !== undefined ? { attentionSliceSize: t.attention_slice_size } : {}),
        });
        try {
          const { value, grads } = tf.variableGrads(() => tf.div(method.loss(batch, mb.ctx), k) as tf.Scalar, vars);
          const g = vars.map((v) => grads[v.name] ?? tf.zerosLike(v));
          if (!acc) acc = g;
          else {
            const sum = acc.map((a, i) => tf.add(a, g[i]!));
            tf.dispose([...acc, ...g]);
            acc = sum;
          }
          loss += (await value.data())[0]!;
          value.dispose();
        } finally {
          mb.dispose();
        }
      }
      const grads = acc!;
      const normT = tf.tidy(() => tf.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g))))));
      const gradNorm = (await normT.data())[0]!;
      normT.dispose();
      if (!Number.isFinite(loss)) throw new TrainingDivergedError(at + 1, 'loss', loss, lastCheckpoint);
      if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(at + 1, 'gradient norm', gradNorm, lastCheckpoint);
      // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1
      const coef = t.max_grad_norm > 0 ? t.max_grad_norm / (gradNorm + 1e-6) : 1;
      if (coef < 1) {
        const clipped = grads.map((g) => tf.mul(g, coef));
        tf.dispose(grads);
        acc = clipped;
      }
      optimizer.step(vars, acc!, lr, lrScales);
      method.afterStep?.(at + 1);
      return { loss, gradNorm };
    } finally {
      if (acc) tf.dispose(acc);
    }
  }
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** Puts a checkpoint's state back: variables, optimizer, generator, data position, method extras. */
function restore(s: LoadedTrainerState, dir: string, method: TrainingMethod, vars: tf.Variable[], optimizer: Optimizer, rng: TorchGenerator, source: BatchSource): void {
  if (s.method !== method.name) throw new SdtrainError(`${dir}: this checkpoint is from a ${s.method} run, not ${method.name}`);
  const shapes = (xs: Array<{ shape: readonly number[] }>) => xs.map((x) => `[${x.shape.join(', ')}]`).join(' ');
  if (s.params.length !== vars.length || s.params.some((p, i) => p.shape.join() !== vars[i]!.shape.join())) {
    throw new SdtrainError(`${dir}: the checkpoint's trainable tensors ${shapes(s.params)} do not match this run's ${shapes(vars)} (e.g. a different num_vectors or model)`);
  }
  if (s.optimizer.type !== optimizer.type) {
    throw new ConfigError(`training.optimizer.type: the checkpoint ${dir} was trained with ${s.optimizer.type}, the config says ${optimizer.type}; an exact resume needs the same optimizer`);
  }
  s.params.forEach((p, i) => {
    const value = tf.tensor(p.data, p.shape, 'float32');
    vars[i]!.assign(value);
    value.dispose();
  });
  optimizer.setState(s.optimizer);
  rng.setState(s.rng);
  source.seek(s.cursor);
  if (method.loadState && s.methodState.size > 0) method.loadState(s.methodState);
}
