// The training noise schedule as diffusers builds it (schedulers' __init__): betas, alphas = 1 - betas, their
// cumulative product and the k-diffusion sigmas, as float32 tables computed the way torch/numpy compute them in
// float32, so that they equal diffusers' tables bit for bit (`sched_tables` fixture). Pure numbers, no tfjs.
import { f32, fmaf } from './float32.js';

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, element for element: torch's kernel
 * (ATen/native/cpu/RangeFactoriesKernel.cpp) computes `step` in float32, fills the first half from `start` and the
 * second half backwards from `end`, 8 lanes at a time (AVX2 `Vectorized<float>::arange(base, step)`, each lane
 * `base + k * step`), the leftover tail element by element; the compiler fuses each multiply-add (fma).
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  if (!Number.isInteger(steps) || steps < 0) throw new RangeError(`linspace: steps must be a non-negative integer, got ${steps}`);
  const out = new Float32Array(steps);
  if (steps === 0) return out;
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const at = (idx: number): number => (idx < halfway ? fmaf(step, idx, s) : fmaf(-step, steps - idx - 1, e));
  const LANES = 8;
  // cpu_serial_kernel_vec: vectorised over whole blocks of 2 x 8, then the scalar loop for the rest
  const vectorised = Math.floor(steps / (2 * LANES)) * 2 * LANES;
  for (let idx = 0; idx < vectorised; idx += LANES) {
    const base = at(idx); // the half is chosen once per vector, at its first lane
    for (let k = 0; k < LANES; k++) out[idx + k] = fmaf(k, step, base);
  }
  for (let idx = vectorised; idx < steps; idx++) out[idx] = at(idx);
  return out;
}

/** `beta_schedule="linear"`: `torch.linspace(beta_start, beta_end, n, dtype=float32)`. */
export function linearBetas(betaStart: number, betaEnd: number, n: number): Float32Array {
  return torchLinspaceF32(betaStart, betaEnd, n);
}

/** `beta_schedule="scaled_linear"` (Stable Diffusion): `linspace(sqrt(beta_start), sqrt(beta_end), n, float32) ** 2`. */
export function scaledLinearBetas(betaStart: number, betaEnd: number, n: number): Float32Array {
  return torchLinspaceF32(Math.sqrt(betaStart), Math.sqrt(betaEnd), n).map((b) => f32(b * b));
}

/** `beta_schedule="squaredcos_cap_v2"` (Nichol & Dhariwal's cosine schedule, `betas_for_alpha_bar`), in float64 then float32. */
export function squaredcosCapV2Betas(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  return Float32Array.from({ length: n }, (_, i) => Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta));
}

/** `torch.cumprod` of a float32 vector: torch accumulates in double and rounds each output to float32. */
export function cumprodF32(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  let acc = 1;
  for (let i = 0; i < values.length; i++) {
    acc *= values[i]!;
    out[i] = acc;
  }
  return out;
}

/** `1 - betas` in float32. */
export function alphasFromBetas(betas: Float32Array): Float32Array {
  return betas.map((b) => f32(1 - b));
}

/** `alphas_cumprod = cumprod(1 - betas)` as diffusers computes it (float32 alphas, double accumulator). */
export function alphasCumprod(betas: Float32Array): Float32Array {
  return cumprodF32(alphasFromBetas(betas));
}

/**
 * diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1): shift and scale sqrt(alphas_cumprod) so the
 * last one is 0 and the first unchanged, then back to betas; float32 tensor arithmetic.
 */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const barSqrt = alphasCumprod(betas).map((a) => f32(Math.sqrt(a)));
  const first = barSqrt[0]!;
  const last = barSqrt[barSqrt.length - 1]!;
  const scale = f32(first / f32(first - last));
  const bar = barSqrt.map((s) => {
    const v = f32(f32(s - last) * scale);
    return f32(v * v);
  });
  return bar.map((b, i) => f32(1 - (i === 0 ? b : f32(b / bar[i - 1]!))));
}

/** k-diffusion sigmas `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, in float32 as numpy computes them. */
export function sigmasFromAlphasCumprod(alphasCumprod: Float32Array): Float32Array {
  return alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';

/** What builds the training schedule: the `scheduler_config.json` keys of that name. */
export interface BetaConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  /** Explicit betas; when given they replace the schedule. */
  trained_betas: readonly number[] | null;
  rescale_betas_zero_snr: boolean;
}

/** The training noise schedule: float32 tables indexed by the integer timestep 0 ... T-1. */
export interface NoiseSchedule {
  betas: Float32Array;
  alphas: Float32Array;
  alphasCumprod: Float32Array;
  /** `((1 - ac) / ac) ** 0.5`: the σ of each training timestep (k-diffusion), increasing. */
  sigmas: Float32Array;
}

/**
 * The betas of a scheduler config, as every diffusers scheduler's `__init__` makes them.
 */
export function betasFor(config: BetaConfig): Float32Array {
  const n = config.num_train_timesteps;
  let betas: Float32Array;
  if (config.trained_betas) {
    if (config.trained_betas.length !== n) {
      throw new RangeError(`trained_betas has ${config.trained_betas.length} values but num_train_timesteps is ${n}`);
    }
    betas = Float32Array.from(config.trained_betas);
  } else if (config.beta_schedule === 'linear') betas = linearBetas(config.beta_start, config.beta_end, n);
  else if (config.beta_schedule === 'scaled_linear') betas = scaledLinearBetas(config.beta_start, config.beta_end, n);
  else betas = squaredcosCapV2Betas(n);
  return config.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

/**
 * The training schedule of a config. `sigmaSafeZeroSnr`: the σ-based schedulers (Euler, DPM-Solver) replace a zero
 * terminal alphas_cumprod by 2^-24 (diffusers: "close to 0 without being 0 so first sigma is not inf").
 */
export function noiseSchedule(config: BetaConfig, opts: { sigmaSafeZeroSnr?: boolean } = {}): NoiseSchedule {
  const betas = betasFor(config);
  const alphas = alphasFromBetas(betas);
  const ac = cumprodF32(alphas);
  if (config.rescale_betas_zero_snr && opts.sigmaSafeZeroSnr) ac[ac.length - 1] = 2 ** -24;
  return { betas, alphas, alphasCumprod: ac, sigmas: sigmasFromAlphasCumprod(ac) };
}
