// Timestep spacings and σ tables of the samplers, as numpy computes them in diffusers' `set_timesteps` (float64 grids,
// numpy's round-half-to-even, float32 where diffusers casts). Pure numbers, no tfjs; the per-class rules that combine
// these live in sampler_schedules.ts.
import { f32, rint } from './float32.js';

/** `np.round`: round half to even. */
export const roundHalfEven = rint;

/** `np.linspace(start, stop, num)` (endpoint included, float64): `start + i * step`, the last value exactly `stop`. */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => start + i * step);
  if (num > 1) out[num - 1] = stop;
  return out;
}

/** `np.arange(start, stop, step)` with a float step: `ceil((stop - start) / step)` values `start + i * delta`. */
export function npArange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  if (n === 0) return [];
  const delta = start + step - start; // numpy's fill uses buffer[1] - buffer[0], not the step itself
  return Array.from({ length: n }, (_, i) => (i === 0 ? start : i === 1 ? start + step : start + i * delta));
}

/**
 * "leading" spacing (diffusers' default for DDIM/PNDM/DDPM): every (T / n)-th step, descending, shifted by
 * `stepsOffset`. `leadingTimesteps(5, 1000, 1)` = [801, 601, 401, 201, 1].
 */
export function leadingTimesteps(n: number, numTrainTimesteps = 1000, stepsOffset = 0): number[] {
  const ratio = Math.floor(numTrainTimesteps / n);
  return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + stepsOffset);
}

/** "trailing" spacing: `round(arange(T, 0, -T / n)) - 1`, descending, always starting at T - 1. */
export function trailingTimesteps(n: number, numTrainTimesteps = 1000): number[] {
  return npArange(numTrainTimesteps, 0, -numTrainTimesteps / n).map((t) => roundHalfEven(t) - 1);
}

/**
 * "linspace" spacing: `linspace(0, T - 1, n)` descending, rounded to integers (DDIM/DDPM/PNDM) or kept as float32
 * (Euler, whose U-Net then sees fractional timesteps such as 946.42108).
 */
export function linspaceTimesteps(n: number, numTrainTimesteps = 1000, round = true): number[] {
  return npLinspace(0, numTrainTimesteps - 1, n)
    .reverse()
    .map((t) => (round ? roundHalfEven(t) : f32(t)));
}

/** `np.interp(x, xp, fp)` for increasing `xp` (float64), clamped to the ends. */
export function npInterp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const n = xp.length;
  if (x <= xp[0]!) return fp[0]!;
  if (x >= xp[n - 1]!) return fp[n - 1]!;
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xp[mid]! <= x) lo = mid;
    else hi = mid;
  }
  if (x === xp[lo]) return fp[lo]!;
  const slope = (fp[lo + 1]! - fp[lo]!) / (xp[lo + 1]! - xp[lo]!);
  return slope * (x - xp[lo]!) + fp[lo]!;
}

/** σ at (possibly fractional) timesteps: the training σ table linearly interpolated in t (float64, not rounded). */
export function interpolateSigmas(timesteps: readonly number[], trainSigmas: Float32Array): number[] {
  const xp = Array.from(trainSigmas, (_, i) => i);
  return timesteps.map((t) => npInterp(t, xp, trainSigmas));
}

/** Karras et al. (2022) eq. 5: n σ from σ_max down to σ_min, evenly spaced in σ^(1/ρ) (float64). */
export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 7): number[] {
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (maxInvRho + r * (minInvRho - maxInvRho)) ** rho);
}

/** `np.log` of the float32 training σ (numpy keeps float32). */
export function logSigmas(trainSigmas: Float32Array): Float32Array {
  return trainSigmas.map((s) => f32(Math.log(s)));
}

/**
 * diffusers' `_sigma_to_t`: the (fractional) timestep of a σ, by linear interpolation of log σ between the two
 * training timesteps around it (clamped to [0, T-1]).
 */
export function sigmaToTimestep(sigma: number, logSigmaTable: Float32Array): number {
  // numpy (1.x value-based casting) does this in float32: the float64 scalar log σ meets float32 arrays
  const logSigma = f32(Math.log(Math.max(sigma, 1e-10)));
  const n = logSigmaTable.length;
  // low = the last index whose log σ is <= log σ(sigma) (the table increases), kept below the last index
  let count = 0;
  for (let i = 0; i < n; i++) if (logSigmaTable[i]! <= logSigma) count = i + 1;
  const low = Math.min(Math.max(count - 1, 0), n - 2);
  const lowV = logSigmaTable[low]!;
  const highV = logSigmaTable[low + 1]!;
  const w = Math.min(Math.max(f32(f32(lowV - logSigma) / f32(lowV - highV)), 0), 1);
  return f32(1 - w) * low + w * (low + 1);
}

/**
 * diffusers' `index_for_timestep`: where a timestep sits in a schedule. With duplicates (PLMS's repeated step, many
 * Karras steps) the second occurrence is taken, "so that we don't accidentally skip a sigma" when a pipeline starts in
 * the middle (img2img). A timestep not in the schedule: `fallback` (DPM-Solver uses the last index) or an error.
 */
export function indexForTimestep(schedule: readonly number[], t: number, fallback?: number): number {
  const first = schedule.indexOf(t);
  if (first < 0) {
    if (fallback !== undefined) return fallback;
    throw new RangeError(`timestep ${t} is not in the schedule [${schedule.join(', ')}]`);
  }
  const second = schedule.indexOf(t, first + 1);
  return second >= 0 ? second : first;
}
