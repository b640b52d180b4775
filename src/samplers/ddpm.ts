// DDPM ancestral sampling (Ho et al. 2020, eq. 6-7) over a shortened schedule, as diffusers' DDPMScheduler (0.27.2):
// https://github.com/huggingface/diffusers/blob/v0.27.2/src/diffusers/schedulers/scheduling_ddpm.py
import * as tf from '@tensorflow/tfjs';
import type { DdpmVarianceType, SchedulerConfig } from '../schedules/config.js';
import { expf, f32, logf, sqrtf } from '../schedules/float32.js';
import { ddimTimesteps } from '../schedules/sampler_schedules.js';
import { alphaAt, predictX0 } from './add_noise.js';
import { BaseSampler } from './base.js';
import type { NoiseSource, SamplerOptions } from './types.js';

/**
 * x_prev = posterior mean μ(x0, x_t) + σ·z with the posterior variance β̃ = (1-ᾱ_prev)/(1-ᾱ_t)·β_t ('fixed_small',
 * the default), its log-space form, or β_t ('fixed_large'). The previous timestep is t - T/n (ᾱ = 1 before t = 0).
 * Noise is drawn at every step with t > 0 (with steps_offset 1 that includes the last step, t = 1).
 */
export class DdpmSampler extends BaseSampler {
  readonly name = 'ddpm' as const;
  private readonly varianceType: DdpmVarianceType;
  private readonly clip: boolean;

  constructor(config: SchedulerConfig, opts: SamplerOptions) {
    super(config, opts, { timesteps: ddimTimesteps(config, opts.steps), initNoiseSigma: 1 });
    if (config.variance_type === null) throw new RangeError("DDPM needs a variance_type ('fixed_small', 'fixed_small_log' or 'fixed_large'), got null");
    this.varianceType = config.variance_type ?? 'fixed_small';
    this.clip = config.clip_sample ?? true;
  }

  step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D, noise?: NoiseSource): tf.Tensor4D {
    this.currentIndex(t, 0);
    const ac = this.schedule.alphasCumprod;
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const a = alphaAt(ac, t);
    const aPrev = prevT >= 0 ? alphaAt(ac, prevT) : 1;
    const beta = f32(1 - a);
    const betaPrev = f32(1 - aPrev);
    const alphaT = f32(a / aPrev);
    const betaT = f32(1 - alphaT);

    let x0 = predictX0(this.predictionType, x, modelOutput, a);
    if (this.clip) x0 = tf.clipByValue(x0, -this.config.clip_sample_range, this.config.clip_sample_range);
    const x0Coeff = f32(f32(sqrtf(aPrev) * betaT) / beta);
    const xCoeff = f32(f32(sqrtf(alphaT) * betaPrev) / beta);
    let prev: tf.Tensor4D = tf.add(tf.mul(x0, x0Coeff), tf.mul(x, xCoeff));

    if (t > 0) {
      const z = this.drawNoise(x, noise);
      // `_get_variance`, clamped away from 0 as diffusers does before any log
      const variance = Math.max(f32(f32(betaPrev / beta) * betaT), f32(1e-20));
      let std: number;
      if (this.varianceType === 'fixed_small') std = sqrtf(variance);
      else if (this.varianceType === 'fixed_small_log') std = expf(f32(0.5 * logf(variance)));
      else std = sqrtf(betaT);
      prev = tf.add(prev, tf.mul(z, std));
    }
    this.advance();
    return prev;
  }
}

export function createDdpm(config: SchedulerConfig, opts: SamplerOptions): DdpmSampler {
  return new DdpmSampler(config, opts);
}
