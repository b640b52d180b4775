// PLMS: the pseudo linear multistep method of PNDM (Liu et al. 2022, eq. 9 and 12) without the Runge-Kutta warm-up,
// as diffusers' PNDMScheduler with skip_prk_steps=True (0.27.2):
// https://github.com/huggingface/diffusers/blob/v0.27.2/src/diffusers/schedulers/scheduling_pndm.py
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from '../schedules/config.js';
import { f32, sqrtf } from '../schedules/float32.js';
import { plmsTimesteps } from '../schedules/sampler_schedules.js';
import { alphaAt, epsFromV } from './add_noise.js';
import { BaseSampler, finalAlphaCumprod } from './base.js';
import type { SamplerOptions } from './types.js';

/**
 * n + 1 model calls for n steps (the second timestep is repeated). Call 0 steps t0 → t1 with e0; call 1 (at t1)
 * redoes t0 → t1 from the original sample with (e0 + e1) / 2, and e1 is not kept; later calls use the Adams-Bashforth
 * combinations of the kept outputs: (3e₋₁ - e₋₂)/2, (23e₋₁ - 16e₋₂ + 5e₋₃)/12, (55e₋₁ - 59e₋₂ + 37e₋₃ - 9e₋₄)/24.
 * Keeps up to four model outputs and the first sample between steps (`dispose()` frees them).
 */
export class PlmsSampler extends BaseSampler {
  readonly name = 'plms' as const;
  private readonly finalAlpha: number;
  /** Kept model outputs, oldest first (diffusers' `ets`). */
  private ets: tf.Tensor4D[] = [];
  private curSample: tf.Tensor4D | undefined;
  private counter = 0;

  constructor(config: SchedulerConfig, opts: SamplerOptions) {
    super(config, opts, { timesteps: plmsTimesteps(config, opts.steps), initNoiseSigma: 1 });
    this.finalAlpha = finalAlphaCumprod(config, this.schedule.alphasCumprod);
  }

  step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D): tf.Tensor4D {
    this.currentIndex(t, 0);
    const ratio = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    let from = t;
    let to = t - ratio;
    if (this.counter !== 1) {
      this.ets.push(tf.keep(modelOutput.clone()));
      if (this.ets.length > 4) this.ets.shift()!.dispose();
    } else {
      // the repeated timestep: redo the first step, from the first sample
      to = t;
      from = t + ratio;
    }

    const e = this.ets;
    let sample = x;
    let eps: tf.Tensor4D;
    if (e.length === 1 && this.counter === 0) {
      eps = modelOutput;
      this.curSample = tf.keep(x.clone());
    } else if (e.length === 1 && this.counter === 1) {
      eps = tf.div(tf.add(modelOutput, e[0]!), 2);
      sample = this.curSample!;
    } else if (e.length === 2) {
      eps = tf.div(tf.sub(tf.mul(e[1]!, 3), e[0]!), 2);
    } else if (e.length === 3) {
      eps = tf.div(tf.add(tf.sub(tf.mul(e[2]!, 23), tf.mul(e[1]!, 16)), tf.mul(e[0]!, 5)), 12);
    } else {
      const sum = tf.sub(tf.add(tf.sub(tf.mul(e[3]!, 55), tf.mul(e[2]!, 59)), tf.mul(e[1]!, 37)), tf.mul(e[0]!, 9));
      eps = tf.mul(sum, f32(1 / 24));
    }
    const prev = this.prevSample(sample, from, to, eps);
    if (this.counter === 1) {
      // diffusers drops its reference; the tensor may still be in use by the caller's tidy, so dispose it only here
      this.curSample!.dispose();
      this.curSample = undefined;
    }
    this.counter++;
    this.advance();
    return prev;
  }

  /** PNDM's transfer x_t → x_prev for an ε (eq. 9); v-predictions are converted with the ᾱ of `from`. */
  private prevSample(x: tf.Tensor4D, from: number, to: number, modelOutput: tf.Tensor4D): tf.Tensor4D {
    const ac = this.schedule.alphasCumprod;
    const a = alphaAt(ac, from);
    const aPrev = to >= 0 ? alphaAt(ac, to) : this.finalAlpha;
    const beta = f32(1 - a);
    const betaPrev = f32(1 - aPrev);
    const eps = this.predictionType === 'v_prediction' ? epsFromV(x, modelOutput, a) : modelOutput;
    const sampleCoeff = sqrtf(f32(aPrev / a));
    const denom = f32(f32(a * sqrtf(betaPrev)) + sqrtf(f32(f32(a * beta) * aPrev)));
    return tf.sub(tf.mul(x, sampleCoeff), tf.div(tf.mul(eps, f32(aPrev - a)), denom));
  }

  override dispose(): void {
    for (const t of this.ets) t.dispose();
    this.ets = [];
    this.curSample?.dispose();
    this.curSample = undefined;
  }
}

export function createPlms(config: SchedulerConfig, opts: SamplerOptions): PlmsSampler {
  return new PlmsSampler(config, opts);
}
