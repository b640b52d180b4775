import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { parsePythonJson } from '../../src/parity/fixture.js';
import { parseSchedulerConfig, SD_SCHEDULER_CONFIG } from '../../src/schedules/config.js';
import { expf, fmaf, rint } from '../../src/schedules/float32.js';
import { fixture, hasShared } from '../helpers/shared.js';

describe('parseSchedulerConfig', () => {
  it("diffusers' shared defaults; class-dependent keys stay undefined when absent", () => {
    const c = parseSchedulerConfig({});
    expect(c).toMatchObject({
      num_train_timesteps: 1000,
      beta_start: 0.0001,
      beta_end: 0.02,
      beta_schedule: 'linear',
      trained_betas: null,
      prediction_type: 'epsilon',
      steps_offset: 0,
      rescale_betas_zero_snr: false,
    });
    for (const k of ['timestep_spacing', 'set_alpha_to_one', 'clip_sample', 'variance_type', 'use_karras_sigmas', 'final_sigmas_type'] as const) {
      expect(c[k], k).toBeUndefined();
    }
  });

  it('reads the SD scheduler_config.json (PNDM, leading spacing left to each class)', () => {
    expect(SD_SCHEDULER_CONFIG).toMatchObject({ beta_schedule: 'scaled_linear', steps_offset: 1, set_alpha_to_one: false, clip_sample: false });
    expect(SD_SCHEDULER_CONFIG.timestep_spacing).toBeUndefined();
    const v = parseSchedulerConfig({ ...SD_SCHEDULER_CONFIG, prediction_type: 'v_prediction', timestep_spacing: 'trailing' });
    expect(v.prediction_type).toBe('v_prediction');
    expect(v.timestep_spacing).toBe('trailing');
  });

  it.each([
    [{ prediction_type: 'sample' }, /prediction_type/],
    [{ beta_schedule: 'sigmoid' }, /beta_schedule/],
    [{ thresholding: true }, /thresholding.*not supported/],
    [{ timestep_type: 'continuous' }, /timestep_type/],
    [{ use_lu_lambdas: true }, /use_lu_lambdas/],
    [{ lambda_min_clipped: -5.1 }, /lambda_min_clipped/],
    [{ variance_type: 'learned_range' }, /variance_type/],
    [{ steps_offset: -1 }, /steps_offset/],
    [{ trained_betas: [0.1], num_train_timesteps: 2 }, /trained_betas/],
    [{ beta_end: 2 }, /beta_end/],
    [[], /expected a JSON object/],
  ])('rejects %j', (json, message) => {
    expect(() => parseSchedulerConfig(json, 'scheduler_config.json')).toThrow(ConfigError);
    expect(() => parseSchedulerConfig(json, 'scheduler_config.json')).toThrow(message);
  });

  it.runIf(hasShared)('accepts every resolved config of the fixtures (Python -Infinity included)', () => {
    for (const name of ['sched_tables', 'sched_ddim', 'sched_euler', 'sched_dpmpp_2m_karras', 'sched_pndm', 'sched_ddpm', 'sched_euler_ancestral']) {
      const json = parsePythonJson(readFileSync(fixture('parity', 'tiny-sd1', `${name}.json`), 'utf8')) as { args: { scheduler: { config: unknown } } };
      expect(() => parseSchedulerConfig(json.args.scheduler.config), name).not.toThrow();
    }
    const raw = JSON.parse(readFileSync(fixture('tiny-sd1', 'scheduler', 'scheduler_config.json'), 'utf8')) as unknown;
    expect(parseSchedulerConfig(raw)).toEqual(SD_SCHEDULER_CONFIG);
  });
});

describe('float32 arithmetic helpers', () => {
  it('fmaf rounds once, resolving a double that lands on a float32 tie by its exact error', () => {
    const a = Math.fround(1 + 2 ** -12);
    // a*a = 1 + 2^-11 + 2^-24 exactly: a float32 tie; a tiny c decides the direction a single rounding takes
    expect(fmaf(a, a, 2 ** -70)).toBe(1 + 2 ** -11 + 2 ** -23);
    expect(fmaf(a, a, -(2 ** -70))).toBe(1 + 2 ** -11);
    expect(fmaf(a, a, 0)).toBe(1 + 2 ** -11); // ties to even
    expect(fmaf(3, 4, 5)).toBe(17);
  });

  it('expf (SLEEF xexpf) is within 1 ulp of exp and exact at 0', () => {
    expect(expf(0)).toBe(1);
    expect(expf(-Infinity)).toBe(0);
    expect(expf(Infinity)).toBe(Infinity);
    const ulps = (x: number, y: number) => Math.abs(new Int32Array(Float32Array.of(x).buffer)[0]! - new Int32Array(Float32Array.of(y).buffer)[0]!);
    let worst = 0;
    for (let i = 0; i < 20000; i++) {
      const d = Math.fround(-80 + (160 * i) / 20000);
      worst = Math.max(worst, ulps(expf(d), Math.fround(Math.exp(d))));
    }
    expect(worst).toBeLessThanOrEqual(1);
  });

  it('rint rounds half to even', () => {
    expect([0.5, 1.5, 2.5, -2.5, 3.49].map(rint)).toEqual([0, 2, 2, -2, 3]);
  });
});
