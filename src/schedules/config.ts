// `scheduler/scheduler_config.json` of a diffusers folder → a typed config. Stable Diffusion ships a PNDMScheduler
// config and every sampler is built from it (`<Class>.from_config(json)`), so keys a class has its own default for
// stay `undefined` here when the file lacks them and each sampler applies its class's default (e.g. DDIM/PNDM/DDPM
// space timesteps 'leading', Euler and DPM-Solver 'linspace'; see shared/fixtures/README.md §20).
// Keys that select what the sampler *is* (`solver_order`, `algorithm_type`, `solver_type`, `skip_prk_steps`, the
// class name) are not read: the sampler name decides. Keys for features we do not implement must hold their default.
import { ConfigError } from '../errors.js';
import { ConfigReader } from '../models/diffusers_config.js';
import { SD_SCHEDULER } from '../models/presets.js';
import type { BetaConfig, BetaSchedule } from './betas.js';

export type TimestepSpacing = 'leading' | 'linspace' | 'trailing';
export type PredictionType = 'epsilon' | 'v_prediction';
/** DDPM's posterior variance choice (`variance_type`); the learned ones need a 2x-channel U-Net. */
export type DdpmVarianceType = 'fixed_small' | 'fixed_small_log' | 'fixed_large';
export type FinalSigmasType = 'zero' | 'sigma_min';

export interface SchedulerConfig extends BetaConfig {
  prediction_type: PredictionType;
  /** Added to 'leading' timesteps (SD: 1, so 50 steps end at t = 1). */
  steps_offset: number;
  clip_sample_range: number;
  /** Class default when absent: 'leading' (DDIM, PNDM, DDPM) or 'linspace' (Euler, Euler a, DPM-Solver). */
  timestep_spacing: TimestepSpacing | undefined;
  /** DDIM/PNDM: alphas_cumprod "before" t = 0 is 1 (true, the class default) or alphas_cumprod[0]. */
  set_alpha_to_one: boolean | undefined;
  /** DDIM/DDPM: clamp the predicted x0 to ±clip_sample_range (class default true; SD configs say false). */
  clip_sample: boolean | undefined;
  /** DDPM (default 'fixed_small'); DPM-Solver requires it absent/null. */
  variance_type: DdpmVarianceType | null | undefined;
  /** Euler / DPM-Solver (default false); the `_karras` sampler names force it on. */
  use_karras_sigmas: boolean | undefined;
  /** Karras ramp ends; null = the training sigmas' ends. */
  sigma_min: number | null;
  sigma_max: number | null;
  /** DPM-Solver: the σ appended after the last step (default 'zero' since diffusers 0.26). */
  final_sigmas_type: FinalSigmasType | undefined;
  /** DPM-Solver: first-order last step(s) when fewer than 15 steps (default true). */
  lower_order_final: boolean | undefined;
  /** DPM-Solver: always a first-order last step (default false). */
  euler_at_final: boolean | undefined;
}

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

function oneOf<T extends string>(r: ConfigReader, key: string, allowed: readonly T[], fallback: T): T;
function oneOf<T extends string>(r: ConfigReader, key: string, allowed: readonly T[], fallback: undefined): T | undefined;
function oneOf<T extends string>(r: ConfigReader, key: string, allowed: readonly T[], fallback: T | undefined): T | undefined {
  const v = r.raw(key, fallback);
  if (v === undefined) return undefined;
  if (!(allowed as readonly unknown[]).includes(v)) r.fail(key, `must be one of ${allowed.map(show).join(', ')}, got ${show(v)}`);
  return v as T;
}

const optBool = (r: ConfigReader, key: string): boolean | undefined => (r.raw(key, undefined) === undefined ? undefined : r.bool(key, false));

function numOrNull(r: ConfigReader, key: string): number | null {
  const v = r.raw(key, null);
  if (v === null) return null;
  if (typeof v !== 'number' || !(v > 0)) r.fail(key, `must be a positive number or null, got ${show(v)}`);
  return v;
}

/**
 * Reads a diffusers scheduler config (`scheduler_config.json`, or a scheduler's resolved config) with diffusers'
 * defaults for the keys every scheduler class shares (`beta_start` 0.0001, `beta_end` 0.02, `beta_schedule`
 * 'linear', 1000 timesteps, epsilon prediction, `steps_offset` 0). Throws a ConfigError naming the key at fault.
 */
export function parseSchedulerConfig(json: unknown, source = 'scheduler config'): SchedulerConfig {
  const r = new ConfigReader(json, source);
  r.onlyDefault('thresholding', [false], 'dynamic thresholding is not implemented');
  r.onlyDefault('timestep_type', ['discrete'], "continuous (EDM) timesteps are not implemented");
  r.onlyDefault('interpolation_type', ['linear'], 'only linear σ interpolation is implemented');
  r.onlyDefault('use_lu_lambdas', [false], 'uniform-λ DPM-Solver steps are not implemented');
  const lambdaMin = r.raw('lambda_min_clipped', -Infinity);
  if (lambdaMin !== null && lambdaMin !== -Infinity) r.fail('lambda_min_clipped', `= ${show(lambdaMin)} is not supported (only -inf, no clipping)`);

  const trained = r.raw('trained_betas', null);
  if (trained !== null && (!Array.isArray(trained) || !trained.every((b) => typeof b === 'number' && b >= 0 && b < 1))) {
    r.fail('trained_betas', `must be null or a list of numbers in [0, 1), got ${show(trained)}`);
  }
  const cfg: SchedulerConfig = {
    num_train_timesteps: r.int('num_train_timesteps', 1000, 1),
    beta_start: r.num('beta_start', 0.0001),
    beta_end: r.num('beta_end', 0.02),
    beta_schedule: oneOf<BetaSchedule>(r, 'beta_schedule', ['linear', 'scaled_linear', 'squaredcos_cap_v2'], 'linear'),
    trained_betas: trained as number[] | null,
    rescale_betas_zero_snr: r.bool('rescale_betas_zero_snr', false),
    prediction_type: oneOf<PredictionType>(r, 'prediction_type', ['epsilon', 'v_prediction'], 'epsilon'),
    steps_offset: r.int('steps_offset', 0),
    clip_sample_range: r.num('clip_sample_range', 1),
    timestep_spacing: oneOf<TimestepSpacing>(r, 'timestep_spacing', ['leading', 'linspace', 'trailing'], undefined),
    set_alpha_to_one: optBool(r, 'set_alpha_to_one'),
    clip_sample: optBool(r, 'clip_sample'),
    variance_type: r.raw('variance_type', undefined) === null ? null : oneOf<DdpmVarianceType>(r, 'variance_type', ['fixed_small', 'fixed_small_log', 'fixed_large'], undefined),
    use_karras_sigmas: optBool(r, 'use_karras_sigmas'),
    sigma_min: numOrNull(r, 'sigma_min'),
    sigma_max: numOrNull(r, 'sigma_max'),
    final_sigmas_type: oneOf<FinalSigmasType>(r, 'final_sigmas_type', ['zero', 'sigma_min'], undefined),
    lower_order_final: optBool(r, 'lower_order_final'),
    euler_at_final: optBool(r, 'euler_at_final'),
  };
  if (cfg.trained_betas && cfg.trained_betas.length !== cfg.num_train_timesteps) {
    r.fail('trained_betas', `has ${cfg.trained_betas.length} values but num_train_timesteps is ${cfg.num_train_timesteps}`);
  }
  if (!(cfg.beta_start > 0 && cfg.beta_end > 0 && cfg.beta_start < 1 && cfg.beta_end < 1)) {
    throw new ConfigError(`${source}: 'beta_start' and 'beta_end' must lie in (0, 1), got ${cfg.beta_start} and ${cfg.beta_end}`);
  }
  return cfg;
}

/** Stable Diffusion 1.x/2.x's training schedule (the PNDM `scheduler_config.json` they ship, SD_SCHEDULER), parsed. */
export const SD_SCHEDULER_CONFIG: SchedulerConfig = parseSchedulerConfig(SD_SCHEDULER, 'SD_SCHEDULER');
