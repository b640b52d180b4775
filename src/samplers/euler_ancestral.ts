// Euler ancestral sampling (k-diffusion `sample_euler_ancestral`, η = 1), as diffusers'
// EulerAncestralDiscreteScheduler (0.27.2):
// https://github.com/huggingface/diffusers/blob/v0.27.2/src/diffusers/schedulers/scheduling_euler_ancestral_discrete.py
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from '../schedules/config.js';
import { f32, sqrtf } from '../schedules/float32.js';
import { eulerSchedule } from '../schedules/sampler_schedules.js';
import { addNoiseSigma, x0FromSigmaPrediction } from './add_noise.js';
import { BaseSampler } from './base.js';
import { scaleBySigma } from './euler.js';
import type { NoiseSource, SamplerOptions } from './types.js';

/**
 * Each step goes deterministically down to σ_down and adds fresh noise of scale σ_up, with
 * σ_up = sqrt(σ_to²(σ_from² - σ_to²)/σ_from²) and σ_down = sqrt(σ_to² - σ_up²): x = x + d·(σ_down - σ) + z·σ_up.
 * Draws noise at every step (the last one with σ_up = 0 included, as diffusers does).
 */
export class EulerAncestralSampler extends BaseSampler {
  readonly name = 'euler_a' as const;

  constructor(config: SchedulerConfig, opts: SamplerOptions) {
    if (config.use_karras_sigmas) throw new RangeError('Euler a has no Karras σ variant (diffusers 0.27 neither): set use_karras_sigmas to false');
    super(config, opts, eulerSchedule(config, opts.steps, false), true);
  }

  override scaleModelInput(x: tf.Tensor4D, t: number): tf.Tensor4D {
    return scaleBySigma(x, this.sigmaPair(this.currentIndex(t))[0]);
  }

  step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D, noise?: NoiseSource): tf.Tensor4D {
    const [from, to] = this.sigmaPair(this.currentIndex(t));
    const x0 = x0FromSigmaPrediction(this.predictionType, x, modelOutput, from);
    const from2 = f32(from * from);
    const to2 = f32(to * to);
    const sigmaUp = sqrtf(f32(f32(to2 * f32(from2 - to2)) / from2));
    const sigmaDown = sqrtf(f32(to2 - f32(sigmaUp * sigmaUp)));
    const d = tf.div(tf.sub(x, x0), from);
    const prev: tf.Tensor4D = tf.add(x, tf.mul(d, f32(sigmaDown - from)));
    const z = this.drawNoise(x, noise);
    this.advance();
    return tf.add(prev, tf.mul(z, sigmaUp));
  }

  override addNoise(x0: tf.Tensor4D, noise: tf.Tensor4D, t: number): tf.Tensor4D {
    return addNoiseSigma(x0, noise, this.sigmaForAddNoise(t));
  }
}

export function createEulerAncestral(config: SchedulerConfig, opts: SamplerOptions): EulerAncestralSampler {
  return new EulerAncestralSampler(config, opts);
}
