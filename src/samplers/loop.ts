// The denoising loop over a sampler (what diffusers' pipelines unroll), and img2img's partial schedule.
import * as tf from '@tensorflow/tfjs';
import type { Denoiser, NoiseSource, Sampler, SamplerStepEvent } from './types.js';

export interface RunSamplerOptions {
  /** Start at `sampler.timesteps[beginIndex]` (img2img: `img2imgTimesteps(...).beginIndex`). Default 0. */
  beginIndex?: number;
  /** Step noise for the stochastic samplers (overrides the sampler's own source). */
  noise?: NoiseSource;
  /**
   * Runs inside each step's tidy, after `sampler.step`, with the step's index in `sampler.timesteps`: may return
   * replacement latents (legacy inpainting re-imposes the noised image outside the mask here).
   */
  afterStep?: (latents: tf.Tensor4D, index: number) => tf.Tensor4D;
}

/**
 * Runs the whole schedule: for each timestep t, `step(denoise(scaleModelInput(x, t), t), t, x)`, one `tf.tidy` per
 * step, yielding after every step; returns the final latents (owned by the caller; `latents` stays the caller's too).
 * Yielded latents are valid until the next step. The sampler's history tensors are freed when the loop ends.
 */
export function* runSampler(
  sampler: Sampler,
  denoise: Denoiser,
  latents: tf.Tensor4D,
  opts: RunSamplerOptions = {},
): Generator<SamplerStepEvent, tf.Tensor4D> {
  const begin = opts.beginIndex ?? 0;
  if (begin > 0) sampler.setBeginIndex(begin);
  const timesteps = sampler.timesteps.slice(begin);
  let x = latents;
  try {
    for (const [k, t] of timesteps.entries()) {
      const next = tf.tidy(() => {
        const modelOutput = denoise(sampler.scaleModelInput(x, t), t);
        const y = sampler.step(modelOutput, t, x, opts.noise);
        return opts.afterStep ? opts.afterStep(y, begin + k) : y;
      });
      if (x !== latents) x.dispose();
      x = next;
      yield { step: k + 1, total: timesteps.length, t, latents: x };
    }
  } finally {
    sampler.dispose();
  }
  return x === latents ? latents.clone() : x;
}

/** Where img2img starts in a sampler's schedule. */
export interface Img2imgStart {
  /** The timesteps still to run. */
  timesteps: number[];
  /** Index of the first of them in `sampler.timesteps` (already set on the sampler as its begin index). */
  beginIndex: number;
  /** The timestep to noise the image latents at: `sampler.addNoise(x0, noise, latentTimestep)`. */
  latentTimestep: number;
}

/**
 * diffusers' img2img `get_timesteps`: `init_timestep = min(int(steps * strength), steps)`, `t_start = steps -
 * init_timestep`, the schedule from `t_start * order` on; sets the sampler's begin index there (so the σ-based
 * samplers' `addNoise` and first step use it). strength 1 runs the whole schedule from pure noise.
 */
export function img2imgTimesteps(sampler: Sampler, strength: number): Img2imgStart {
  if (!(strength >= 0 && strength <= 1)) throw new RangeError(`strength must lie in [0, 1], got ${strength}`);
  const n = sampler.numInferenceSteps;
  const initTimestep = Math.min(Math.floor(n * strength), n);
  const tStart = Math.max(n - initTimestep, 0);
  const beginIndex = tStart * sampler.order;
  const timesteps = sampler.timesteps.slice(beginIndex);
  if (timesteps.length === 0 || initTimestep === 0) {
    throw new RangeError(`strength ${strength} with ${n} steps leaves no denoising step (need steps x strength >= 1)`);
  }
  sampler.setBeginIndex(beginIndex);
  return { timesteps, beginIndex, latentTimestep: timesteps[0]! };
}
