// What every sampler shares: the schedule it was built for, the step counter diffusers keeps (`_step_index`,
// `_begin_index`), and drawing step noise from the injected source. The algorithms are in one file each.
import * as tf from '@tensorflow/tfjs';
import { noiseSchedule, type NoiseSchedule } from '../schedules/betas.js';
import type { PredictionType, SchedulerConfig } from '../schedules/config.js';
import type { SamplerSchedule } from '../schedules/sampler_schedules.js';
import { indexForTimestep } from '../schedules/timesteps.js';
import { addNoise } from './add_noise.js';
import type { NoiseSource, Sampler, SamplerName, SamplerOptions } from './types.js';

export abstract class BaseSampler implements Sampler {
  abstract readonly name: SamplerName;
  readonly predictionType: PredictionType;
  readonly numInferenceSteps: number;
  readonly timesteps: readonly number[];
  readonly sigmas: readonly number[] | undefined;
  readonly initNoiseSigma: number;
  readonly order: number = 1;
  protected readonly schedule: NoiseSchedule;
  protected readonly noise: NoiseSource | undefined;
  private index: number | undefined;
  private beginIndex: number | undefined;

  constructor(
    readonly config: SchedulerConfig,
    opts: SamplerOptions,
    plan: SamplerSchedule,
    /** Euler and DPM-Solver floor a zero terminal ᾱ (zero-SNR schedules) at 2^-24. */
    sigmaSafeZeroSnr = false,
  ) {
    this.predictionType = config.prediction_type;
    this.numInferenceSteps = opts.steps;
    this.timesteps = Object.freeze([...plan.timesteps]);
    this.sigmas = plan.sigmas ? Object.freeze([...plan.sigmas]) : undefined;
    this.initNoiseSigma = plan.initNoiseSigma;
    this.schedule = noiseSchedule(config, { sigmaSafeZeroSnr });
    this.noise = opts.noise;
  }

  get stepIndex(): number | undefined {
    return this.index;
  }

  setBeginIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.timesteps.length) {
      throw new RangeError(`begin index ${index} is outside the ${this.timesteps.length} timesteps`);
    }
    this.beginIndex = index;
  }

  /**
   * The index of the current step: on the first call the begin index, or where t sits in the schedule (diffusers'
   * `_init_step_index`; `fallback` for a timestep not in it), afterwards the counter.
   */
  protected currentIndex(t: number, fallback?: number): number {
    this.index ??= this.beginIndex ?? indexForTimestep(this.timesteps, t, fallback);
    return this.index;
  }

  /** Called at the end of `step`. */
  protected advance(): void {
    this.index = (this.index ?? 0) + 1;
  }

  /** The σ of step i and of the one after it. */
  protected sigmaPair(i: number): [number, number] {
    const s = this.sigmas;
    if (!s || i + 1 >= s.length) throw new RangeError(`${this.name}: no step ${i} in a schedule of ${this.timesteps.length} steps`);
    return [s[i]!, s[i + 1]!];
  }

  /** The σ diffusers' `add_noise` uses: the begin index's when set (img2img), else that of t's place in the schedule. */
  protected sigmaForAddNoise(t: number, fallback?: number): number {
    const i = this.beginIndex ?? indexForTimestep(this.timesteps, t, fallback);
    if (!this.sigmas) throw new Error(`${this.name} has no σ table`);
    return this.sigmas[i]!;
  }

  /** N(0, 1) noise shaped like x, from the step's or the sampler's noise source. */
  protected drawNoise(like: tf.Tensor4D, override: NoiseSource | undefined): tf.Tensor4D {
    const source = override ?? this.noise;
    if (!source) throw new Error(`${this.name} is stochastic here and needs a noise source (SamplerOptions.noise or step(..., noise))`);
    const n = source(like.shape);
    if (n.shape.join() !== like.shape.join()) {
      throw new Error(`${this.name}: the noise source returned shape [${n.shape.join(', ')}], expected [${like.shape.join(', ')}]`);
    }
    return (n.dtype === 'float32' ? n : tf.cast(n, 'float32')) as tf.Tensor4D;
  }

  scaleModelInput(x: tf.Tensor4D, _t: number): tf.Tensor4D {
    return x;
  }

  abstract step(modelOutput: tf.Tensor4D, t: number, x: tf.Tensor4D, noise?: NoiseSource): tf.Tensor4D;

  /** The α-based forward process (DDPM's `add_noise`); σ-based samplers override it. */
  addNoise(x0: tf.Tensor4D, noise: tf.Tensor4D, t: number): tf.Tensor4D {
    return addNoise(x0, noise, t, this.schedule.alphasCumprod);
  }

  dispose(): void {}
}

/** ᾱ "before" timestep 0 for DDIM/PNDM: 1 with `set_alpha_to_one` (the class default), else ᾱ_0 (SD configs). */
export function finalAlphaCumprod(config: SchedulerConfig, alphasCumprod: Float32Array): number {
  return (config.set_alpha_to_one ?? true) ? 1 : alphasCumprod[0]!;
}
