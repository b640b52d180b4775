// DDIM (Song et al. 2021, eq. 12 and 16), as diffusers' DDIMScheduler (0.27.2):
// https://github.com/huggingface/diffusers/blob/v0.27.2/src/diffusers/schedulers/scheduling_ddim.py
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from '../schedules/config.js';
import { f32, sqrtf } from '../schedules/float32.js';
import { ddimTimesteps } from '../schedules/sampler_schedules.js';
import { alphaAt, epsFromV, x0FromEpsilon, x0FromV } from './add_noise.js';
import { BaseSampler, finalAlphaCumprod } from './base.js';
import type { NoiseSource, SamplerOptions } from './types.js';

/**
 * DDIM with η: x_prev = sqrt(ᾱ_prev)·x0 + sqrt(1 - ᾱ_prev - σ_t²)·ε + σ_t·z, σ_t = η·sqrt((1-ᾱ_prev)/(1-ᾱ_t)·(1-ᾱ_t/ᾱ_prev)).
 * The previous timestep is t - T/n; before t = 0, ᾱ is 1 or ᾱ_0 (`set_alpha_to_one`). Draws noise only when η > 0.
 */
export class DdimSampler extends BaseSampler {
  readonly name = 'ddim' as const;
  readonly eta: number;
  private readonly finalAlpha: number;
  private readonly clip: boolean;

  constructor(config: SchedulerConfig, opts: SamplerOptions) {
    const timesteps = ddimTimesteps(config, opts.steps);
    super(config, opts, { timesteps, initNoiseSigma: 1 });
    this.eta = opts.eta ?? 0;
    if (!(this.eta >= 0)) throw new RangeError(`DDIM eta must be >= 0, got ${this.eta}`);
    this.finalAlpha = finalAlphaCumprod(config, this.schedule.alphasCumprod);
    this.clip = config.clip_sample ?? true;
  }

  step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D, noise?: NoiseSource): tf.Tensor4D {
    this.currentIndex(t, 0);
    const ac = this.schedule.alphasCumprod;
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const a = alphaAt(ac, t);
    const aPrev = prevT >= 0 ? alphaAt(ac, prevT) : this.finalAlpha;

    let x0: tf.Tensor4D;
    let eps: tf.Tensor4D;
    if (this.predictionType === 'epsilon') {
      x0 = x0FromEpsilon(x, modelOutput, a);
      eps = modelOutput;
    } else {
      x0 = x0FromV(x, modelOutput, a);
      eps = epsFromV(x, modelOutput, a);
    }
    if (this.clip) x0 = tf.clipByValue(x0, -this.config.clip_sample_range, this.config.clip_sample_range);

    const variance = f32(f32(f32(1 - aPrev) / f32(1 - a)) * f32(1 - f32(a / aPrev)));
    const std = f32(f32(this.eta) * sqrtf(variance));
    const direction = tf.mul(eps, sqrtf(f32(f32(1 - aPrev) - f32(std * std))));
    let prev: tf.Tensor4D = tf.add(tf.mul(x0, sqrtf(aPrev)), direction);
    if (this.eta > 0) prev = tf.add(prev, tf.mul(this.drawNoise(x, noise), std));
    this.advance();
    return prev;
  }
}

export function createDdim(config: SchedulerConfig, opts: SamplerOptions): DdimSampler {
  return new DdimSampler(config, opts);
}
