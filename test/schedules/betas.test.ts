import { describe, expect, it } from 'vitest';
import {
  alphasCumprod,
  betasFor,
  cumprodF32,
  linearBetas,
  noiseSchedule,
  rescaleZeroTerminalSnr,
  scaledLinearBetas,
  sigmasFromAlphasCumprod,
  squaredcosCapV2Betas,
  torchLinspaceF32,
} from '../../src/schedules/betas.js';
import { parseSchedulerConfig, SD_SCHEDULER_CONFIG } from '../../src/schedules/config.js';
import { loadSchedCase } from '../samplers/sched_case.js';
import { hasShared } from '../helpers/shared.js';

const f32 = Math.fround;

describe('training schedule tables', () => {
  it('torchLinspaceF32 hits both ends exactly and is monotone', () => {
    for (const n of [2, 3, 16, 17, 31, 1000]) {
      const v = torchLinspaceF32(0.1, 0.9, n);
      expect(v.length).toBe(n);
      expect(v[0]).toBe(f32(0.1));
      expect(v[n - 1]).toBe(f32(0.9));
      for (let i = 1; i < n; i++) expect(v[i]!).toBeGreaterThan(v[i - 1]!);
    }
    expect(Array.from(torchLinspaceF32(1, 5, 1))).toEqual([1]);
    expect(torchLinspaceF32(0, 1, 0).length).toBe(0);
  });

  it('SD scaled_linear: β from 0.00085 to 0.012; ᾱ decreasing from 1 - β_0; σ 0.0292 ... 14.6146', () => {
    const s = noiseSchedule(SD_SCHEDULER_CONFIG);
    expect(s.betas[0]).toBeCloseTo(0.00085, 9);
    expect(s.betas[999]).toBeCloseTo(0.012, 8);
    expect(s.alphasCumprod[0]).toBe(f32(1 - s.betas[0]!));
    expect(s.sigmas[0]).toBeCloseTo(0.0291675, 6);
    expect(s.sigmas[999]).toBeCloseTo(14.614645, 5);
    for (let i = 1; i < 1000; i++) expect(s.alphasCumprod[i]!).toBeLessThan(s.alphasCumprod[i - 1]!);
  });

  it('linear and squaredcos_cap_v2 betas', () => {
    const lin = linearBetas(0.0001, 0.02, 1000);
    expect(lin[0]).toBe(f32(0.0001));
    expect(lin[999]).toBe(f32(0.02));
    const cos = squaredcosCapV2Betas(1000);
    expect(Math.max(...cos)).toBeLessThanOrEqual(f32(0.999));
    expect(cos[0]!).toBeLessThan(1e-4);
    expect(betasFor({ ...SD_SCHEDULER_CONFIG, beta_schedule: 'squaredcos_cap_v2' })).toEqual(cos);
  });

  it('cumprod accumulates in double and rounds each product (torch.cumprod on float32)', () => {
    const a = Float32Array.from([0.9, 0.8, 0.7]);
    expect(Array.from(cumprodF32(a))).toEqual([f32(a[0]!), f32(a[0]! * a[1]!), f32(a[0]! * a[1]! * a[2]!)]);
  });

  it('zero terminal SNR: last ᾱ is 0, first unchanged; the σ samplers floor it at 2^-24', () => {
    const betas = scaledLinearBetas(0.00085, 0.012, 1000);
    const ac = alphasCumprod(rescaleZeroTerminalSnr(betas));
    expect(ac[999]).toBe(0);
    expect(ac[0]).toBeCloseTo(alphasCumprod(betas)[0]!, 6);
    const cfg = { ...SD_SCHEDULER_CONFIG, rescale_betas_zero_snr: true };
    expect(noiseSchedule(cfg).alphasCumprod[999]).toBe(0);
    const s = noiseSchedule(cfg, { sigmaSafeZeroSnr: true });
    expect(s.alphasCumprod[999]).toBe(2 ** -24);
    expect(Number.isFinite(s.sigmas[999]!)).toBe(true);
  });

  it('trained_betas replace the schedule', () => {
    const cfg = parseSchedulerConfig({ num_train_timesteps: 3, trained_betas: [0.1, 0.2, 0.3] });
    expect(Array.from(betasFor(cfg))).toEqual([0.1, 0.2, 0.3].map(f32));
  });
});

describe.runIf(hasShared)('sched_tables fixture (bit-exact)', () => {
  it('betas, alphas, alphas_cumprod and sigmas_train equal diffusers float32 tables', async () => {
    const fx = await loadSchedCase('sched_tables');
    const s = noiseSchedule(fx.config());
    const ours = { betas: s.betas, alphas: s.alphas, alphas_cumprod: s.alphasCumprod, sigmas_train: s.sigmas };
    for (const [name, values] of Object.entries(ours)) {
      expect(Array.from(values), name).toEqual(fx.values(`outputs/${name}`));
    }
    expect(Array.from(sigmasFromAlphasCumprod(s.alphasCumprod))).toEqual(Array.from(s.sigmas));
  });
});
