// Each diffusers scheduler class's own `set_timesteps` rules (diffusers 0.27.2): which spacing it defaults to, how it
// applies steps_offset, where σ come from, what is float32. Pure numbers, no tfjs. See shared/fixtures/README.md
// §20-§25 and the sched_* fixtures for the numbers these reproduce.
import { noiseSchedule } from './betas.js';
import type { SchedulerConfig, TimestepSpacing } from './config.js';
import { f32, sqrtf } from './float32.js';
import {
  interpolateSigmas,
  karrasSigmas,
  leadingTimesteps,
  linspaceTimesteps,
  logSigmas,
  npArange,
  npLinspace,
  roundHalfEven,
  sigmaToTimestep,
  trailingTimesteps,
} from './timesteps.js';

/** The timesteps of a sampler, its σ (σ-based samplers) and the scale of its initial noise. */
export interface SamplerSchedule {
  /** One per model call, in order. Integers except Euler's 'linspace' (float32, possibly fractional). */
  timesteps: number[];
  /** float32 σ per model call plus the final one (0): σ-based samplers only. */
  sigmas?: number[];
  /** `init_noise_sigma`: txt2img multiplies the N(0, 1) initial latents by it. */
  initNoiseSigma: number;
}

function checkSteps(n: number, cfg: SchedulerConfig): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`the number of steps must be a positive integer, got ${n}`);
  if (n > cfg.num_train_timesteps) {
    throw new RangeError(`${n} steps exceed the ${cfg.num_train_timesteps} training timesteps of the schedule`);
  }
}

/** The integer grid of DDIM and DDPM (class default 'leading'), descending. */
export function ddimTimesteps(cfg: SchedulerConfig, n: number): number[] {
  checkSteps(n, cfg);
  const spacing: TimestepSpacing = cfg.timestep_spacing ?? 'leading';
  const T = cfg.num_train_timesteps;
  if (spacing === 'leading') return leadingTimesteps(n, T, cfg.steps_offset);
  if (spacing === 'trailing') return trailingTimesteps(n, T);
  return linspaceTimesteps(n, T, true);
}

/**
 * PNDM with `skip_prk_steps` (PLMS): the DDIM grid with its second timestep repeated (901, 801, 801, 701, ... for 10
 * steps), i.e. n + 1 model calls for n steps.
 */
export function plmsTimesteps(cfg: SchedulerConfig, n: number): number[] {
  const grid = ddimTimesteps(cfg, n);
  return grid.length < 2 ? grid : [grid[0]!, grid[1]!, ...grid.slice(1)];
}


/**
 * EulerDiscreteScheduler / EulerAncestralDiscreteScheduler (class default 'linspace': float timesteps
 * `linspace(0, T-1, n)`): σ interpolated linearly in t from the training σ, optionally replaced by a Karras ramp
 * between the ends of those σ (and the timesteps then read back by log-σ interpolation), then a final σ = 0.
 * `init_noise_sigma` is σ_max, or sqrt(σ_max² + 1) for 'leading' spacing.
 */
export function eulerSchedule(cfg: SchedulerConfig, n: number, karras = false): SamplerSchedule {
  checkSteps(n, cfg);
  const spacing: TimestepSpacing = cfg.timestep_spacing ?? 'linspace';
  const T = cfg.num_train_timesteps;
  let timesteps =
    spacing === 'linspace' ? linspaceTimesteps(n, T, false) : spacing === 'leading' ? leadingTimesteps(n, T, cfg.steps_offset) : trailingTimesteps(n, T);
  const train = noiseSchedule(cfg, { sigmaSafeZeroSnr: true }).sigmas;
  let sigmas = interpolateSigmas(timesteps, train);
  if (karras) {
    sigmas = karrasSigmas(n, cfg.sigma_min ?? sigmas[sigmas.length - 1]!, cfg.sigma_max ?? sigmas[0]!);
    const logs = logSigmas(train);
    timesteps = sigmas.map((s) => f32(sigmaToTimestep(s, logs)));
  }
  const sig = [...sigmas.map(f32), 0];
  const max = Math.max(...sig);
  return { timesteps, sigmas: sig, initNoiseSigma: spacing === 'leading' ? sqrtf(f32(f32(max * max) + 1)) : max };
}

/**
 * DPMSolverMultistepScheduler (class default 'linspace' over n + 1 points: `linspace(0, T-1, n+1).round()[::-1][:-1]`,
 * integer timesteps): σ interpolated from the training σ, or a Karras ramp between the training σ's ends with
 * timesteps = the *rounded* log-σ interpolation (duplicates possible); then the final σ: 0 (`final_sigmas_type`
 * 'zero', the default) or the smallest training σ. `init_noise_sigma` is 1.
 */
export function dpmSolverSchedule(cfg: SchedulerConfig, n: number, karras = false): SamplerSchedule {
  checkSteps(n, cfg);
  const spacing: TimestepSpacing = cfg.timestep_spacing ?? 'linspace';
  const T = cfg.num_train_timesteps; // lambda_min_clipped = -inf: nothing is clipped, the last timestep is T
  let timesteps: number[];
  if (spacing === 'linspace') {
    timesteps = npLinspace(0, T - 1, n + 1).map(roundHalfEven).reverse().slice(0, n);
  } else if (spacing === 'leading') {
    const ratio = Math.floor(T / (n + 1));
    timesteps = Array.from({ length: n }, (_, i) => (n - i) * ratio + cfg.steps_offset);
  } else {
    timesteps = npArange(T, 0, -T / n).map((t) => roundHalfEven(t) - 1);
  }
  const train = noiseSchedule(cfg, { sigmaSafeZeroSnr: true }).sigmas;
  let sigmas: number[];
  if (karras) {
    sigmas = karrasSigmas(n, cfg.sigma_min ?? train[0]!, cfg.sigma_max ?? train[T - 1]!);
    const logs = logSigmas(train);
    timesteps = sigmas.map((s) => roundHalfEven(sigmaToTimestep(s, logs)));
  } else {
    sigmas = interpolateSigmas(timesteps, train);
  }
  const last = (cfg.final_sigmas_type ?? 'zero') === 'zero' ? 0 : train[0]!;
  return { timesteps, sigmas: [...sigmas, last].map(f32), initNoiseSigma: 1 };
}
