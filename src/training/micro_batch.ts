// One micro-batch of the diffusion objective, method-independent: conditioning dropout, timesteps, posterior samples
// and noise drawn from the run's generator, then x_t = addNoise(x0, ε, t), the target (ε or v) and the loss function
// (MSE, optionally min-SNR-γ weighted). Everything is drawn PER SAMPLE, in a fixed order (dropout u, t, posterior ε,
// noise, offset noise), so a sample gets the same numbers whether it is trained in a batch of 2 or as 2 micro-batches
// of 1 (that makes gradient accumulation testable exactly) and whatever the dropout rate is.
import * as tf from '@tensorflow/tfjs';
import type { PredictionType } from '../schedules/config.js';
import { addNoise, trainingTarget } from '../samplers/add_noise.js';
import type { TorchGenerator } from '../random/torch_rng.js';
import type { DiffusionSetup, LatentDistribution, StepContext, TrainBatch } from './types.js';

export interface MicroBatchOptions {
  step: number;
  micro: number;
  /** Probability of replacing each caption by "" (the schedule's rate at this step). */
  dropRate: number;
  /** diffusers --noise_offset: ε += offset · N(0, 1) per sample and channel. 0 = off. */
  noiseOffset: number;
  /** Min-SNR-γ loss weighting (Hang et al. 2023); undefined = plain MSE. */
  minSnrGamma?: number;
  attentionSliceSize?: number;
}

/** A prepared micro-batch: the context for `method.loss`, and `dispose()` for everything made here and the batch. */
export interface MicroBatch {
  ctx: StepContext;
  dispose(): void;
}

/** The numbers one sample needs; `u` decides dropout. */
interface Draws {
  u: number;
  t: number;
  eps?: Float32Array;
  noise: Float32Array;
  offset?: Float32Array;
}

function batchSize(batch: TrainBatch): number {
  const ref = batch.latents ?? batch.latentDist?.mean ?? batch.pixels;
  if (!ref) throw new Error('training batch has neither latents, latentDist nor pixels');
  if (ref.shape[0] !== batch.captions.length) throw new Error(`training batch has ${ref.shape[0]} images but ${batch.captions.length} captions`);
  return ref.shape[0];
}

/** Min-SNR-γ weights (diffusers train_text_to_image): min(SNR, γ) / SNR for ε, / (SNR + 1) for v; SNR = ᾱ / (1 − ᾱ). */
export function minSnrWeights(timesteps: readonly number[], alphasCumprod: Float32Array, gamma: number, predictionType: PredictionType): number[] {
  return timesteps.map((t) => {
    const a = alphasCumprod[t]!;
    const snr = a / (1 - a);
    return Math.min(snr, gamma) / (predictionType === 'epsilon' ? snr : snr + 1);
  });
}

/**
 * Draws the randomness of one micro-batch and builds its tensors. Pixels are encoded (and posteriors sampled) here,
 * outside any gradient. The batch's tensors are disposed with the micro-batch.
 */
export function prepareMicroBatch(batch: TrainBatch, rng: TorchGenerator, setup: DiffusionSetup, o: MicroBatchOptions): MicroBatch {
  const b = batchSize(batch);
  let dist: LatentDistribution | undefined = batch.latentDist;
  let encoded: LatentDistribution | undefined;
  if (!batch.latents && !dist) {
    if (!setup.encodeImages) throw new Error('the batch holds pixels but no encodeImages (VAE) was given to the training loop');
    encoded = setup.encodeImages(batch.pixels!);
    dist = encoded;
  }
  const [, h, w, c] = batch.latents ? batch.latents.shape : dist!.mean.shape;
  const T = setup.alphasCumprod.length;
  const draws: Draws[] = [];
  for (let i = 0; i < b; i++) {
    const u = rng.rand([1])[0]!;
    const t = rng.randint(0, T, [1])[0]!;
    const eps = batch.latents ? undefined : rng.randn([h, w, c]);
    const noise = rng.randn([h, w, c]);
    const offset = o.noiseOffset > 0 ? rng.randn([c]) : undefined;
    draws.push({ u, t, eps, noise, offset });
  }
  const dropped = draws.map((d) => d.u < o.dropRate);
  const timesteps = draws.map((d) => d.t);
  const stack = (parts: Float32Array[]) => {
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) (out.set(p, at), (at += p.length));
    return out;
  };
  const tensors = tf.tidy(() => {
    const x0 = batch.latents
      ? batch.latents.clone()
      : dist!.mean.add(tf.exp(dist!.logvar.mul(0.5)).mul(tf.tensor4d(stack(draws.map((d) => d.eps!)), [b, h, w, c]))).mul(setup.scalingFactor);
    let noise = tf.tensor4d(stack(draws.map((d) => d.noise)), [b, h, w, c]);
    if (o.noiseOffset > 0) noise = noise.add(tf.tensor4d(stack(draws.map((d) => d.offset!)), [b, 1, 1, c]).mul(o.noiseOffset));
    return { x0: x0 as tf.Tensor4D, noise };
  });
  let built: MicroBatch;
  try {
    built = buildStepContext({ ...tensors, timesteps, captions: batch.captions, dropped, ...(batch.lossWeights ? { lossWeights: batch.lossWeights } : {}) }, setup, o);
  } finally {
    tf.dispose([tensors.x0, tensors.noise]);
  }
  return {
    ctx: built.ctx,
    dispose() {
      built.dispose();
      tf.dispose([batch.latents, batch.latentDist?.mean, batch.latentDist?.logvar, batch.pixels].filter((x): x is tf.Tensor4D => x !== undefined));
      if (encoded) tf.dispose([encoded.mean, encoded.logvar]);
    },
  };
}

/** The inputs of one micro-batch once its random numbers are drawn. */
export interface StepInputs {
  /** U-Net latents (scaled) [B, h, w, c]. */
  x0: tf.Tensor4D;
  /** ε [B, h, w, c] (offset noise included). */
  noise: tf.Tensor4D;
  timesteps: number[];
  captions: readonly string[];
  dropped?: readonly boolean[];
  lossWeights?: readonly number[];
}

/**
 * x_t, the target and the loss function of given inputs (no randomness): what prepareMicroBatch ends with, and what
 * a test with fixed noise and timesteps (the gradient fixture) calls. The inputs stay the caller's.
 */
export function buildStepContext(inp: StepInputs, setup: DiffusionSetup, o: Pick<MicroBatchOptions, 'step' | 'micro' | 'minSnrGamma' | 'attentionSliceSize'>): MicroBatch {
  const b = inp.x0.shape[0];
  const { predictionType, alphasCumprod } = setup;
  const dropped = inp.dropped ? [...inp.dropped] : Array<boolean>(b).fill(false);
  const weights = [...(inp.lossWeights ?? Array<number>(b).fill(1))];
  if (o.minSnrGamma !== undefined) minSnrWeights(inp.timesteps, alphasCumprod, o.minSnrGamma, predictionType).forEach((x, i) => (weights[i]! *= x));
  const weighted = weights.some((x) => x !== 1);
  const noisy = addNoise(inp.x0, inp.noise, inp.timesteps, alphasCumprod);
  const target = trainingTarget(predictionType, inp.x0, inp.noise, inp.timesteps, alphasCumprod);
  const weightT = weighted ? tf.tensor1d(weights) : undefined;
  const ctx: StepContext = {
    step: o.step,
    micro: o.micro,
    captions: inp.captions.map((cap, i) => (dropped[i] ? '' : cap)),
    dropped,
    noisyLatents: noisy,
    timesteps: [...inp.timesteps],
    target,
    predictionType,
    ...(o.attentionSliceSize !== undefined ? { attentionSliceSize: o.attentionSliceSize } : {}),
    lossOf(prediction) {
      const se = prediction.sub(target).square(); // [B, h, w, c]
      if (!weightT) return se.mean() as tf.Scalar; // F.mse_loss(reduction="mean") over every element
      return se.mean([1, 2, 3]).mul(weightT).mean() as tf.Scalar;
    },
  };
  return { ctx, dispose: () => tf.dispose([noisy, target, ...(weightT ? [weightT] : [])]) };
}
