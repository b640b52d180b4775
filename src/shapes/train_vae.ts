// The VAE stage of the tiny-shapes model: an AutoencoderKL trained from scratch on images held in memory, with
//   loss = mean |decode(z) − x| + kl_weight · mean KL(N(μ, σ²) ‖ N(0, 1)),   z = μ + σ·ε
// (reconstruction + KL, as LDM's autoencoder without its perceptual and adversarial terms: flat-colour shapes need
// neither; `reconstruction: mse` squares the error instead). A small dedicated loop, because the shared loop (training/loop.ts) is about diffusion (noise, timesteps,
// conditioning); it reuses its parts: AdamW (optimizers.ts), the learning-rate schedules (lr.ts), the epoch
// permutation of MemoryBatchSource, atomic run-folder checkpoints with exact resume (checkpoint.ts) and
// loss.jsonl / loss.png (run_files.ts). Library code: reports through `onEvent`, never prints.
import * as tf from '@tensorflow/tfjs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SdtrainError } from '../errors.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { vaeScaleFactor, type AutoencoderKL } from '../models/vae.js';
import { TorchGenerator } from '../random/torch_rng.js';
import { findLatestCheckpoint, readCheckpoint, writeCheckpoint } from '../training/checkpoint.js';
import { learningRateAt } from '../training/lr.js';
import { epochPermutation } from '../training/memory_source.js';
import { AdamW } from '../training/optimizers.js';
import { appendLossRecord, truncateLossLog, writeLossPlot } from '../training/run_files.js';
import type { DataCursor, TrainingMethod } from '../training/types.js';
import type { VaeTrainingConfig } from './config.js';
import { makeTrainable, moduleStateDict } from './variables.js';

/** Images in memory: `count` × size × size × 3 floats in [-1, 1], NHWC. */
export interface ImageSet {
  data: Float32Array;
  count: number;
  size: number;
}

export type VaeEvent =
  | { kind: 'start'; step: number; maxSteps: number; params: number; resumedFrom?: string }
  | { kind: 'step'; step: number; loss: number; rec: number; kl: number; lr: number; gradNorm: number; seconds: number }
  | { kind: 'log'; step: number; loss: number; rec: number; kl: number; lr: number; stepsPerSecond: number }
  | { kind: 'checkpoint'; step: number; dir: string }
  | { kind: 'done'; steps: number; seconds: number; reason: 'finished' | 'aborted' };

export interface VaeTrainOptions {
  /** Run folder: loss.jsonl, loss.png, checkpoints/step-<n>/ (vae/ + trainer_state.safetensors), vae/ at the end. */
  runDir: string;
  seed: number;
  signal?: AbortSignal;
  onEvent?: (e: VaeEvent) => void;
  /** A checkpoint folder, or 'latest' under runDir (an error if there is none). */
  resume?: string;
}

export interface VaeTrainSummary {
  steps: number;
  seconds: number;
  reason: 'finished' | 'aborted';
  firstLoss?: number;
  recentLoss?: number;
  recentRec?: number;
}

/** Writes `<dir>/config.json` and `<dir>/diffusion_pytorch_model.safetensors` (float32) of a VAE. */
export async function writeVaeFolder(dir: string, vae: AutoencoderKL): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'config.json');
  const weights = join(dir, 'diffusion_pytorch_model.safetensors');
  await writeFile(config, `${JSON.stringify({ _class_name: 'AutoencoderKL', ...vae.config }, null, 2)}\n`);
  await writeSafetensors(weights, moduleStateDict(vae), { format: 'pt' });
  return [config, weights];
}

/** The ELBO-style loss of one batch: { loss, rec, kl } scalars (inside a gradient scope). */
export function vaeLoss(vae: AutoencoderKL, x: tf.Tensor4D, eps: tf.Tensor4D, klWeight: number, reconstruction: 'l1' | 'mse' = 'l1'): { loss: tf.Scalar; rec: tf.Scalar; kl: tf.Scalar } {
  const { mean, logvar } = vae.encode(x);
  const z = vae.sample(mean, logvar, eps);
  const y = vae.decode(z);
  const err = y.sub(x);
  const rec = (reconstruction === 'l1' ? err.abs() : err.square()).mean() as tf.Scalar;
  const kl = mean.square().add(logvar.exp()).sub(1).sub(logvar).mul(0.5).mean() as tf.Scalar;
  return { loss: rec.add(kl.mul(klWeight)) as tf.Scalar, rec, kl };
}

/** Trains `vae` (its parameters must be filled, e.g. by initModule) on `images`; the VAE keeps the trained weights. */
export async function trainVae(vae: AutoencoderKL, images: ImageSet, cfg: VaeTrainingConfig, opts: VaeTrainOptions): Promise<VaeTrainSummary> {
  const emit = (e: VaeEvent) => opts.onEvent?.(e);
  const { runDir } = opts;
  await mkdir(runDir, { recursive: true });
  const vars = makeTrainable(vae, 'sdtrain/vae');
  const optimizer = new AdamW({ betas: [0.9, 0.999], weightDecay: cfg.weight_decay, eps: 1e-8 });
  const rng = new TorchGenerator(opts.seed);
  const lrAt = learningRateAt({ learningRate: cfg.learning_rate, scheduler: 'cosine', warmupSteps: cfg.warmup_steps, totalSteps: cfg.steps });
  const { size, count } = images;
  const lc = vae.config.latent_channels;
  const f = vaeScaleFactor(vae.config);
  const per = size * size * 3;
  const B = cfg.batch_size;
  let cursor: DataCursor = { epoch: 0, index: 0 };
  let order = epochPermutation(count, opts.seed, 0);
  const method: TrainingMethod = {
    name: 'vae',
    trainableVariables: () => vars,
    loss: () => {
      throw new Error('not used');
    },
    save: (dir) => writeVaeFolder(join(dir, 'vae'), vae),
  };

  let step = 0;
  let elapsedBefore = 0;
  let history: Array<{ step: number; loss: number; rec: number; kl: number }> = [];
  let resumedFrom: string | undefined;
  try {
    if (opts.resume !== undefined) {
      const dir = opts.resume === 'latest' ? await findLatestCheckpoint(runDir) : opts.resume;
      if (dir === undefined) throw new SdtrainError(`cannot resume: ${runDir} has no checkpoint`);
      const s = await readCheckpoint(dir);
      if (s.method !== 'vae' || s.params.length !== vars.length) throw new SdtrainError(`${dir}: not a checkpoint of this VAE run`);
      s.params.forEach((p, i) => {
        const t = tf.tensor(p.data, p.shape, 'float32');
        vars[i]!.assign(t);
        t.dispose();
      });
      optimizer.setState(s.optimizer);
      rng.setState(s.rng);
      cursor = s.cursor;
      order = epochPermutation(count, opts.seed, cursor.epoch);
      step = s.step;
      elapsedBefore = s.elapsedSeconds;
      history = (await truncateLossLog(runDir, step)).map((r) => ({ step: r.step, loss: r.loss, rec: r.rec ?? r.loss, kl: r.kl ?? 0 })); // (files without the parts: the loss is nearly all reconstruction)
      resumedFrom = dir;
    } else {
      await truncateLossLog(runDir, 0);
    }
    emit({ kind: 'start', step, maxSteps: cfg.steps, params: vars.reduce((n, v) => n + v.size, 0), ...(resumedFrom ? { resumedFrom } : {}) });

    const started = performance.now();
    const seconds = () => elapsedBefore + (performance.now() - started) / 1000;
    const checkpoint = async () => {
      const { dir } = await writeCheckpoint(runDir, method, {
        step,
        method: 'vae',
        seed: opts.seed,
        params: await Promise.all(vars.map(async (v) => ({ name: v.name, shape: [...v.shape], data: Float32Array.from((await v.data()) as Float32Array) }))),
        optimizer: optimizer.getState(),
        rng: rng.getState(),
        cursor,
        elapsedSeconds: seconds(),
        lossTail: { steps: history.slice(-1000).map((h) => h.step), losses: history.slice(-1000).map((h) => h.loss) },
        settings: { batch_size: B, max_train_steps: cfg.steps, learning_rate: String(cfg.learning_rate) },
      });
      await writeLossPlot(runDir, history, 'VAE loss');
      emit({ kind: 'checkpoint', step, dir });
    };

    const batch = new Float32Array(B * per);
    let lastLog = performance.now();
    let savedAt = resumedFrom !== undefined ? step : -1;
    let reason: 'finished' | 'aborted' = 'finished';
    while (step < cfg.steps) {
      if (opts.signal?.aborted) {
        reason = 'aborted';
        break;
      }
      for (let k = 0; k < B; k++) {
        const i = order[cursor.index]!;
        batch.set(images.data.subarray(i * per, (i + 1) * per), k * per);
        cursor = { ...cursor, index: cursor.index + 1 };
        if (cursor.index === count) {
          cursor = { epoch: cursor.epoch + 1, index: 0 };
          order = epochPermutation(count, opts.seed, cursor.epoch);
        }
      }
      const eps = rng.randn([B, size / f, size / f, lc]);
      const lr = lrAt(step);
      const x = tf.tensor4d(batch, [B, size, size, 3]);
      const e = tf.tensor4d(eps, [B, size / f, size / f, lc]);
      let parts: { rec: tf.Scalar; kl: tf.Scalar } | undefined;
      const { value, grads } = tf.variableGrads(() => {
        const r = vaeLoss(vae, x, e, cfg.kl_weight, cfg.reconstruction);
        parts = { rec: tf.keep(r.rec), kl: tf.keep(r.kl) };
        return r.loss;
      }, vars);
      const g = vars.map((v) => grads[v.name] ?? tf.zerosLike(v));
      const normT = tf.tidy(() => tf.sqrt(tf.addN(g.map((t) => tf.sum(tf.square(t))))));
      const [loss, rec, kl, gradNorm] = await Promise.all([value.data(), parts!.rec.data(), parts!.kl.data(), normT.data()]).then((a) => a.map((d) => d[0]!));
      tf.dispose([x, e, value, normT, parts!.rec, parts!.kl]);
      if (!Number.isFinite(loss!) || !Number.isFinite(gradNorm!)) {
        tf.dispose(g);
        throw new SdtrainError(`VAE training diverged at step ${step + 1} (loss ${loss}, gradient norm ${gradNorm}); lower vae.learning_rate`);
      }
      const coef = cfg.max_grad_norm > 0 ? Math.min(1, cfg.max_grad_norm / (gradNorm! + 1e-6)) : 1;
      const clipped = coef < 1 ? g.map((t) => tf.mul(t, coef)) : g;
      optimizer.step(vars, clipped, lr);
      tf.dispose(g);
      if (clipped !== g) tf.dispose(clipped);
      step += 1;
      history.push({ step, loss: loss!, rec: rec!, kl: kl! });
      const time = seconds();
      await appendLossRecord(runDir, { step, loss: loss!, lr, time, rec: rec!, kl: kl! });
      emit({ kind: 'step', step, loss: loss!, rec: rec!, kl: kl!, lr, gradNorm: gradNorm!, seconds: time });
      if (step % cfg.log_every_n_steps === 0) {
        const recent = history.slice(-cfg.log_every_n_steps);
        const now = performance.now();
        const m = (k: 'loss' | 'rec' | 'kl') => recent.reduce((a, h) => a + h[k], 0) / recent.length;
        emit({ kind: 'log', step, loss: m('loss'), rec: m('rec'), kl: m('kl'), lr, stepsPerSecond: (recent.length * 1000) / Math.max(1, now - lastLog) });
        lastLog = now;
      }
      if (cfg.save_every_n_steps > 0 && step % cfg.save_every_n_steps === 0 && step < cfg.steps) {
        await checkpoint();
        savedAt = step;
      }
    }
    if (savedAt !== step && step > 0) await checkpoint();
    if (reason === 'finished') await writeVaeFolder(join(runDir, 'vae'), vae);
    await writeLossPlot(runDir, history, 'VAE loss');
    const tail = history.slice(-cfg.log_every_n_steps);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    emit({ kind: 'done', steps: step, seconds: seconds(), reason });
    return {
      steps: step,
      seconds: seconds(),
      reason,
      ...(history[0] ? { firstLoss: history[0].loss } : {}),
      ...(tail.length > 0 ? { recentLoss: mean(tail.map((h) => h.loss)), recentRec: mean(tail.map((h) => h.rec)) } : {}),
    };
  } finally {
    optimizer.dispose();
  }
}

/** The posterior of every image: mean and logvar [count, h, w, latent_channels] as flat arrays (encoded in batches). */
export function encodePosteriors(vae: AutoencoderKL, images: ImageSet, batchSize = 64): { mean: Float32Array; logvar: Float32Array; shape: [number, number, number] } {
  const f = vaeScaleFactor(vae.config);
  const h = images.size / f;
  const lc = vae.config.latent_channels;
  const per = images.size * images.size * 3;
  const lat = h * h * lc;
  const mean = new Float32Array(images.count * lat);
  const logvar = new Float32Array(images.count * lat);
  for (let i = 0; i < images.count; i += batchSize) {
    const b = Math.min(batchSize, images.count - i);
    const out = tf.tidy(() => {
      const x = tf.tensor4d(images.data.subarray(i * per, (i + b) * per), [b, images.size, images.size, 3]);
      const d = vae.encode(x);
      return [d.mean, d.logvar];
    });
    mean.set(out[0]!.dataSync(), i * lat);
    logvar.set(out[1]!.dataSync(), i * lat);
    tf.dispose(out);
  }
  return { mean, logvar, shape: [h, h, lc] };
}

/**
 * The latent scaling factor as LDM chose SD's 0.18215: 1 / std of posterior samples z = μ + σ·ε over the data (so the
 * U-Net sees unit-variance latents). `seed` fixes ε.
 */
export function latentScalingFactor(post: { mean: Float32Array; logvar: Float32Array }, seed: number): number {
  const eps = new TorchGenerator(seed).randn([post.mean.length]);
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < post.mean.length; i++) {
    const z = post.mean[i]! + Math.exp(0.5 * post.logvar[i]!) * eps[i]!;
    s += z;
    s2 += z * z;
  }
  const n = post.mean.length;
  const variance = s2 / n - (s / n) ** 2;
  return 1 / Math.sqrt(variance);
}
