// Learning-rate schedules: tables computed from transformers' lambdas (get_scheduler) by hand.
import { describe, expect, it } from 'vitest';
import { learningRateAt, scheduleFactor, warmupFactor } from '../../src/training/lr.js';

const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(b)));

describe('learningRateAt', () => {
  it.each([
    // [scheduler, warmup, total, step, expected factor]
    ['constant', 0, 100, 0, 1],
    ['constant', 0, 100, 99, 1],
    ['constant', 10, 100, 5, 0.5], // warm-up applies to 'constant' too (documented difference from diffusers)
    ['constant_with_warmup', 10, 100, 0, 0],
    ['constant_with_warmup', 10, 100, 3, 0.3],
    ['constant_with_warmup', 10, 100, 10, 1],
    ['linear', 0, 100, 0, 1],
    ['linear', 0, 100, 50, 0.5],
    ['linear', 0, 100, 99, 0.01],
    ['linear', 10, 110, 10, 1],
    ['linear', 10, 110, 60, 0.5],
    ['linear', 10, 110, 200, 0],
    ['cosine', 0, 100, 0, 1],
    ['cosine', 0, 100, 50, 0.5],
    ['cosine', 0, 100, 25, 0.5 * (1 + Math.cos(Math.PI * 0.25))],
    ['cosine', 20, 120, 70, 0.5],
    ['cosine', 20, 120, 5, 0.25],
    ['cosine_with_restarts', 0, 100, 50, 0.5],
  ] as const)('%s warmup %i total %i: step %i → ×%f', (name, warmup, total, step, factor) => {
    close(learningRateAt({ learningRate: 2e-3, scheduler: name, warmupSteps: warmup, totalSteps: total })(step), 2e-3 * factor);
  });

  it('cosine_with_restarts with 2 cycles restarts halfway and ends at 0', () => {
    const f = (s: number) => scheduleFactor('cosine_with_restarts', s, 0, 100, 2);
    close(f(0), 1);
    close(f(25), 0.5);
    close(f(50), 1); // restart
    close(f(75), 0.5);
    close(f(100), 0);
  });

  it('A1111 strings: rate per piece, the last piece to the end, with warm-up on top', () => {
    const lr = learningRateAt({ learningRate: '5e-3:100, 1e-3:1000, 1e-4', scheduler: 'constant', warmupSteps: 0, totalSteps: 5000 });
    expect([0, 99, 100, 999, 1000, 4999].map(lr)).toEqual([5e-3, 5e-3, 1e-3, 1e-3, 1e-4, 1e-4]);
    const warm = learningRateAt({ learningRate: '5e-3:100, 1e-4', scheduler: 'constant', warmupSteps: 10, totalSteps: 500 });
    close(warm(5), 2.5e-3);
    expect(() => learningRateAt({ learningRate: '5e-3:100, 1e-4', scheduler: 'cosine', warmupSteps: 0, totalSteps: 500 })).toThrow(/must be 'constant'/);
  });

  it('warmupFactor(s, 0) is 1 (no division by zero)', () => {
    expect(warmupFactor(0, 0)).toBe(1);
  });
});
