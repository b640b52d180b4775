// Euler's method on the probability-flow ODE in σ (Karras et al. 2022, Algorithm 2 with S_churn = 0), as diffusers'
// EulerDiscreteScheduler (0.27.2):
// https://github.com/huggingface/diffusers/blob/v0.27.2/src/diffusers/schedulers/scheduling_euler_discrete.py
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from '../schedules/config.js';
import { f32 } from '../schedules/float32.js';
import { eulerSchedule } from '../schedules/sampler_schedules.js';
import { addNoiseSigma, x0FromSigmaPrediction } from './add_noise.js';
import { BaseSampler } from './base.js';
import type { SamplerOptions } from './types.js';

/** Euler's `scale_model_input`: x / sqrt(σ² + 1) (the U-Net was trained on unit-variance inputs). */
export function scaleBySigma(x: tf.Tensor4D, sigma: number): tf.Tensor4D {
  return tf.div(x, f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
}

/**
 * d = (x - x0)/σ, x_next = x + d·(σ_next - σ). Deterministic: diffusers draws (and ignores) noise every step when
 * s_churn = 0; this sampler does not draw. `karras` (or `use_karras_sigmas` in the config) uses the Karras σ ramp.
 */
export class EulerSampler extends BaseSampler {
  readonly name = 'euler' as const;

  constructor(config: SchedulerConfig, opts: SamplerOptions & { karras?: boolean }) {
    super(config, opts, eulerSchedule(config, opts.steps, opts.karras ?? config.use_karras_sigmas ?? false), true);
  }

  override scaleModelInput(x: tf.Tensor4D, t: number): tf.Tensor4D {
    return scaleBySigma(x, this.sigmaPair(this.currentIndex(t))[0]);
  }

  step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D): tf.Tensor4D {
    const [sigma, sigmaNext] = this.sigmaPair(this.currentIndex(t));
    const x0 = x0FromSigmaPrediction(this.predictionType, x, modelOutput, sigma);
    const d = tf.div(tf.sub(x, x0), sigma); // dx/dσ
    const prev: tf.Tensor4D = tf.add(x, tf.mul(d, f32(sigmaNext - sigma)));
    this.advance();
    return prev;
  }

  /** x0 + σ(t)·noise, σ of the begin index when set (img2img), else of t's place in the schedule. */
  override addNoise(x0: tf.Tensor4D, noise: tf.Tensor4D, t: number): tf.Tensor4D {
    return addNoiseSigma(x0, noise, this.sigmaForAddNoise(t));
  }
}

export function createEuler(config: SchedulerConfig, opts: SamplerOptions & { karras?: boolean }): EulerSampler {
  return new EulerSampler(config, opts);
}
