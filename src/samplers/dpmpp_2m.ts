// DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, data prediction, midpoint form), plain or with Karras σ, as
// diffusers' DPMSolverMultistepScheduler(algorithm_type='dpmsolver++', solver_order=2) (0.27.2):
// https://github.com/huggingface/diffusers/blob/v0.27.2/src/diffusers/schedulers/scheduling_dpmsolver_multistep.py
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from '../schedules/config.js';
import { expf, f32, logf } from '../schedules/float32.js';
import { dpmSolverSchedule } from '../schedules/sampler_schedules.js';
import { addNoiseDpm, dpmAlphaSigma } from './add_noise.js';
import { BaseSampler } from './base.js';
import type { SamplerOptions } from './types.js';


/** λ = log α_t - log σ_t of a σ (+∞ at σ = 0). */
function lambdaOf(sigma: number): { alphaT: number; sigmaT: number; lambda: number } {
  const [alphaT, sigmaT] = dpmAlphaSigma(sigma);
  return { alphaT, sigmaT, lambda: f32(logf(alphaT) - logf(sigmaT)) };
}

/**
 * Every step converts the model output to x0 (x0 = (x - σ_t·ε)/α_t, or α_t·x - σ_t·v) and keeps it; the update is
 * x_next = (σ_t/σ_s)·x - α_t(e^-h - 1)·(D0 + D1/2) with D0 = x0, D1 = (x0 - x0_prev)/r0 (r0 = h_prev/h), first order
 * (D1 = 0) on the first step and on the last (final σ 0, or `lower_order_final` with < 15 steps, or `euler_at_final`).
 * Keeps the previous x0 between steps (`dispose()` frees it).
 */
export class Dpmpp2mSampler extends BaseSampler {
  readonly name: 'dpmpp_2m' | 'dpmpp_2m_karras';
  private prevX0: tf.Tensor4D | undefined;
  private lowerOrderNums = 0;

  constructor(config: SchedulerConfig, opts: SamplerOptions & { karras?: boolean }) {
    const karras = opts.karras ?? config.use_karras_sigmas ?? false;
    if (config.variance_type) throw new RangeError(`DPM++ 2M does not use a learned variance (variance_type ${config.variance_type})`);
    super(config, opts, dpmSolverSchedule(config, opts.steps, karras), true);
    this.name = karras ? 'dpmpp_2m_karras' : 'dpmpp_2m';
  }

  step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D): tf.Tensor4D {
    const n = this.timesteps.length;
    const i = this.currentIndex(t, n - 1);
    const lowerOrderFinal =
      i === n - 1 && ((this.config.euler_at_final ?? false) || ((this.config.lower_order_final ?? true) && n < 15) || (this.config.final_sigmas_type ?? 'zero') === 'zero');

    const [sigmaS, sigmaNext] = this.sigmaPair(i);
    const s = lambdaOf(sigmaS);
    const x0: tf.Tensor4D =
      this.predictionType === 'epsilon'
        ? tf.div(tf.sub(x, tf.mul(modelOutput, s.sigmaT)), s.alphaT)
        : tf.sub(tf.mul(x, s.alphaT), tf.mul(modelOutput, s.sigmaT));

    const next = lambdaOf(sigmaNext);
    const h = f32(next.lambda - s.lambda);
    const c = f32(next.alphaT * f32(expf(-h) - 1)); // α_t(e^-h - 1); -α_t when σ_next = 0 (h = ∞)
    let prev: tf.Tensor4D = tf.sub(tf.mul(x, f32(next.sigmaT / s.sigmaT)), tf.mul(x0, c));
    if (this.prevX0 && this.lowerOrderNums >= 1 && !lowerOrderFinal) {
      const h0 = f32(s.lambda - lambdaOf(this.sigmas![i - 1]!).lambda);
      const r0 = f32(h0 / h);
      const d1 = tf.mul(tf.sub(x0, this.prevX0), f32(1 / r0));
      prev = tf.sub(prev, tf.mul(d1, f32(0.5 * c)));
    }

    this.prevX0?.dispose();
    this.prevX0 = tf.keep(x0);
    if (this.lowerOrderNums < 2) this.lowerOrderNums++;
    this.advance();
    return prev;
  }

  override addNoise(x0: tf.Tensor4D, noise: tf.Tensor4D, t: number): tf.Tensor4D {
    return addNoiseDpm(x0, noise, this.sigmaForAddNoise(t, this.timesteps.length - 1));
  }

  override dispose(): void {
    this.prevX0?.dispose();
    this.prevX0 = undefined;
  }
}

export function createDpmpp2m(config: SchedulerConfig, opts: SamplerOptions & { karras?: boolean }): Dpmpp2mSampler {
  return new Dpmpp2mSampler(config, opts);
}
