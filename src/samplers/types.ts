// The sampler contract (diffusers' scheduler contract, k-diffusion's injected noise): a sampler knows the noise
// schedule, never the U-Net. A pipeline loop drives it as
//
//   x = initialNoise * sampler.initNoiseSigma                  // txt2img
//   for (const t of sampler.timesteps) {
//     const xIn = sampler.scaleModelInput(x, t);               // what the U-Net sees
//     const out = denoise(xIn, t);                             // U-Net + classifier-free guidance: eps or v
//     x = sampler.step(out, t, x);                             // x at the next timestep
//   }
//
// with each iteration in `tf.tidy` (the caller disposes the x it replaces); `runSampler` in loop.ts is that loop.
// Latents are NHWC `Tensor4D` [B, H, W, C].
import type * as tf from '@tensorflow/tfjs';
import type { SAMPLERS as SAMPLER_NAME_LIST } from '../config/schema_common.js';
import type { PredictionType, SchedulerConfig } from '../schedules/config.js';

/** The samplers, by their A1111 names in snake_case (`euler_a` = "Euler a", `dpmpp_2m_karras` = "DPM++ 2M Karras"). */
export type SamplerName = (typeof SAMPLER_NAME_LIST)[number];

/**
 * N(0, 1) noise of the given NHWC shape, for the stochastic samplers (DDIM with η > 0, Euler a, DDPM). Each call is a
 * fresh draw; the sampler owns (and disposes) the tensor it gets. `torchNoise` (noise.ts) reproduces torch's CPU
 * generator, so that a seed gives diffusers' numbers.
 */
export type NoiseSource = (shape: readonly number[]) => tf.Tensor;

/**
 * The model as the sampler loop sees it: the (scaled) latents at timestep t → the model output (ε or v, with
 * classifier-free guidance applied). Called inside the step's `tf.tidy`.
 */
export type Denoiser = (x: tf.Tensor4D, t: number) => tf.Tensor4D;

export interface SamplerOptions {
  /** `num_inference_steps`. */
  steps: number;
  /** DDIM's η (0: deterministic DDIM, 1: DDPM-like variance). Default 0. */
  eta?: number;
  /** Where stochastic samplers draw their step noise (a `step` call may also pass its own). */
  noise?: NoiseSource;
}

/** A sampler over one schedule of `steps` steps (diffusers' scheduler after `set_timesteps(steps)`). */
export interface Sampler {
  readonly name: SamplerName;
  readonly config: SchedulerConfig;
  readonly predictionType: PredictionType;
  /** `num_inference_steps` as asked for (PLMS makes one more model call than that). */
  readonly numInferenceSteps: number;
  /** The timestep of each model call, in order (Euler's may be fractional; PLMS repeats its second one). */
  readonly timesteps: readonly number[];
  /** σ of each model call plus the final one, for the σ-based samplers (Euler, Euler a, DPM++); else undefined. */
  readonly sigmas: readonly number[] | undefined;
  /** Scale of the initial noise for txt2img (σ_max for Euler, 1 for the others). */
  readonly initNoiseSigma: number;
  /** diffusers' `scheduler.order`: model calls per timestep of `timesteps` (1 for all of these). */
  readonly order: number;
  /** Index in `timesteps` of the next step; undefined before the first `step`/`scaleModelInput`. */
  readonly stepIndex: number | undefined;
  /** Start at `timesteps[index]` instead of locating the first timestep (img2img; see `img2imgTimesteps`). */
  setBeginIndex(index: number): void;
  /** The U-Net input for latents x at timestep t (x itself for the α-based samplers; x / sqrt(σ²+1) for Euler). */
  scaleModelInput(x: tf.Tensor4D, t: number): tf.Tensor4D;
  /**
   * One step from timestep t to the next: the latents after it. Synchronous tensor math: call it inside `tf.tidy`.
   * `noise` overrides the sampler's noise source for this step (stochastic samplers only draw).
   */
  step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D, noise?: NoiseSource): tf.Tensor4D;
  /**
   * The forward process at timestep t as this sampler sees it (img2img, legacy inpainting): sqrt(ᾱ)·x0 +
   * sqrt(1-ᾱ)·noise for the α-based samplers, x0 + σ·noise for Euler, α_σ·x0 + σ_σ·noise for DPM++.
   */
  addNoise(x0: tf.Tensor4D, noise: tf.Tensor4D, t: number): tf.Tensor4D;
  /** Frees the history tensors a multistep sampler keeps (PLMS, DPM++ 2M); a no-op for the others. */
  dispose(): void;
}

/** What the sampler loop reports after every step. */
export interface SamplerStepEvent {
  /** 1-based. */
  step: number;
  total: number;
  /** The timestep just taken. */
  t: number;
  /** The latents after the step: valid until the next step (clone to keep). */
  latents: tf.Tensor4D;
}

export type SamplerFactory = (config: SchedulerConfig, opts: SamplerOptions) => Sampler;
