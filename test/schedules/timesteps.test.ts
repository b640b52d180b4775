import { describe, expect, it } from 'vitest';
import { noiseSchedule } from '../../src/schedules/betas.js';
import { SD_SCHEDULER_CONFIG, type SchedulerConfig } from '../../src/schedules/config.js';
import { ddimTimesteps, dpmSolverSchedule, eulerSchedule, plmsTimesteps } from '../../src/schedules/sampler_schedules.js';
import {
  indexForTimestep,
  karrasSigmas,
  leadingTimesteps,
  linspaceTimesteps,
  logSigmas,
  npArange,
  npInterp,
  roundHalfEven,
  sigmaToTimestep,
  trailingTimesteps,
} from '../../src/schedules/timesteps.js';
import { loadSchedCase, type SchedCase } from '../samplers/sched_case.js';
import { hasShared } from '../helpers/shared.js';

const SD: SchedulerConfig = SD_SCHEDULER_CONFIG;
const spacing = (s: SchedulerConfig['timestep_spacing']): SchedulerConfig => ({ ...SD, timestep_spacing: s });

describe('timestep spacings (tables checked against numpy with diffusers formulas)', () => {
  it.each([
    [5, 1, [801, 601, 401, 201, 1]], // diffusers test_scheduler_ddim.py::test_steps_offset
    [5, 0, [800, 600, 400, 200, 0]],
    [3, 1, [667, 334, 1]],
    [10, 1, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]],
  ])('leadingTimesteps(%i, offset=%i)', (n, offset, expected) => {
    expect(leadingTimesteps(n, 1000, offset)).toEqual(expected);
  });

  it.each([
    [3, [999, 666, 332]],
    [7, [999, 856, 713, 570, 428, 285, 142]],
    [10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]],
  ])('trailingTimesteps(%i)', (n, expected) => {
    expect(trailingTimesteps(n, 1000)).toEqual(expected);
  });

  it('linspace: rounded (DDIM/DDPM/PNDM) or float32 (Euler)', () => {
    expect(linspaceTimesteps(3, 1000, true)).toEqual([999, 500, 0]);
    expect(linspaceTimesteps(3, 1000, false)).toEqual([999, 499.5, 0]);
    expect(linspaceTimesteps(20, 1000, false)[1]).toBe(946.4210815429688);
  });

  it('per-class rules: DDIM/DDPM leading, PLMS repeats its second timestep, DPM-Solver linspace over n+1', () => {
    expect(ddimTimesteps(SD, 5)).toEqual([801, 601, 401, 201, 1]);
    expect(ddimTimesteps(spacing('linspace'), 3)).toEqual([999, 500, 0]);
    expect(plmsTimesteps(SD, 4)).toEqual([751, 501, 501, 251, 1]);
    expect(plmsTimesteps(SD, 1)).toEqual([1]);
    expect(dpmSolverSchedule(SD, 10).timesteps).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
    expect(dpmSolverSchedule(spacing('leading'), 3).timesteps).toEqual([751, 501, 251]);
    expect(dpmSolverSchedule(spacing('trailing'), 7).timesteps).toEqual([999, 856, 713, 570, 428, 285, 142]);
    expect(eulerSchedule(spacing('trailing'), 3).timesteps).toEqual([999, 666, 332]);
    expect(() => ddimTimesteps(SD, 0)).toThrow(RangeError);
    expect(() => ddimTimesteps(SD, 1001)).toThrow(RangeError);
  });

  it('Euler: σ_max as init_noise_sigma for linspace, sqrt(σ_max² + 1) for leading; final σ 0', () => {
    const lin = eulerSchedule(SD, 10);
    expect(lin.sigmas!.length).toBe(11);
    expect(lin.sigmas![10]).toBe(0);
    expect(lin.initNoiseSigma).toBe(lin.sigmas![0]);
    const lead = eulerSchedule(spacing('leading'), 10);
    expect(lead.initNoiseSigma).toBe(Math.fround(Math.sqrt(Math.fround(Math.fround(lead.sigmas![0]! ** 2) + 1))));
  });

  it('Karras ramp: from σ_max to σ_min, ρ-spaced; Euler Karras timesteps read back by log-σ', () => {
    const k = karrasSigmas(10, 0.0292, 14.6146);
    expect(k[0]).toBeCloseTo(14.6146, 10);
    expect(k[9]).toBeCloseTo(0.0292, 10);
    for (let i = 1; i < 10; i++) expect(k[i]!).toBeLessThan(k[i - 1]!);
    const e = eulerSchedule(SD, 10, true);
    expect(e.timesteps[0]).toBeCloseTo(999, 3);
    expect(e.timesteps[9]).toBeCloseTo(0, 3);
  });
});

describe('number helpers', () => {
  it.each([
    [0.5, 0],
    [1.5, 2],
    [2.5, 2],
    [-0.5, -0],
    [-1.5, -2],
    [2.4999, 2],
    [499.5, 500],
  ])('roundHalfEven(%f) = %f', (x, r) => expect(roundHalfEven(x)).toBe(r));

  it('npArange fills start + i * (buffer[1] - buffer[0]) like numpy', () => {
    expect(npArange(1000, 0, -1000 / 3)).toEqual([1000, 1000 - 1000 / 3, 1000 + 2 * (1000 - 1000 / 3 - 1000)]);
    expect(npArange(0, 0, 1)).toEqual([]);
  });

  it('npInterp clamps and interpolates', () => {
    expect(npInterp(-1, [0, 1, 2], [10, 20, 40])).toBe(10);
    expect(npInterp(1.5, [0, 1, 2], [10, 20, 40])).toBe(30);
    expect(npInterp(9, [0, 1, 2], [10, 20, 40])).toBe(40);
  });

  it('sigmaToTimestep inverts the training σ; indexForTimestep takes the second of duplicates', () => {
    const train = noiseSchedule(SD).sigmas;
    const logs = logSigmas(train);
    for (const t of [0, 1, 250, 999]) expect(sigmaToTimestep(train[t]!, logs)).toBeCloseTo(t, 4);
    expect(sigmaToTimestep(100, logs)).toBe(999);
    expect(sigmaToTimestep(1e-4, logs)).toBe(0);
    expect(indexForTimestep([901, 801, 801, 701], 801)).toBe(2);
    expect(indexForTimestep([901, 801, 701], 801)).toBe(1);
    expect(indexForTimestep([901, 801], 5, 1)).toBe(1);
    expect(() => indexForTimestep([901, 801], 5)).toThrow(RangeError);
  });
});

describe.runIf(hasShared)('schedules of the sched_* fixtures (bit-exact)', () => {
  const arr = (fx: SchedCase, name: string) => fx.values(`outputs/${name}`);
  const cfgOf = (fx: SchedCase) => fx.config();

  it('DDIM and PLMS timesteps for 10, 20, 50 steps', async () => {
    const ddim = await loadSchedCase('sched_ddim');
    const pndm = await loadSchedCase('sched_pndm');
    for (const n of [10, 20, 50]) {
      expect(ddimTimesteps(cfgOf(ddim), n)).toEqual(arr(ddim, `timesteps_${n}`));
      expect(plmsTimesteps(cfgOf(pndm), n)).toEqual(arr(pndm, `timesteps_${n}`));
    }
  });

  it('Euler timesteps, σ and init_noise_sigma, linspace and leading', async () => {
    const fx = await loadSchedCase('sched_euler');
    const cfg = cfgOf(fx);
    const observed = fx.json.observed as Record<string, number>;
    for (const n of [10, 20, 50]) {
      const s = eulerSchedule(cfg, n);
      expect(s.timesteps).toEqual(arr(fx, `timesteps_${n}`));
      expect(s.sigmas).toEqual(arr(fx, `sigmas_${n}`));
      expect(s.initNoiseSigma).toBe(observed[`init_noise_sigma_${n}`]);
    }
    for (const n of [10, 20]) {
      const s = eulerSchedule({ ...cfg, timestep_spacing: 'leading' }, n);
      expect(s.timesteps).toEqual(arr(fx, `leading_timesteps_${n}`));
      expect(s.sigmas).toEqual(arr(fx, `leading_sigmas_${n}`));
      expect(s.initNoiseSigma).toBe(observed[`leading_init_noise_sigma_${n}`]);
    }
  });

  it('DPM-Solver timesteps and σ, plain and Karras', async () => {
    for (const [name, steps, karras] of [
      ['sched_dpmpp_2m', [10, 20], false],
      ['sched_dpmpp_2m_karras', [10, 20, 25], true],
    ] as const) {
      const fx = await loadSchedCase(name);
      for (const n of steps) {
        const s = dpmSolverSchedule(cfgOf(fx), n, karras);
        expect(s.timesteps, `${name} ${n}`).toEqual(arr(fx, `timesteps_${n}`));
        expect(s.sigmas, `${name} ${n}`).toEqual(arr(fx, `sigmas_${n}`));
      }
    }
  });
});
