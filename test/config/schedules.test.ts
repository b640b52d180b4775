import { describe, expect, it } from 'vitest';
import { checkStepSchedule, condDropoutSchedule, learningRateSchedule, parseA1111Schedule, rateAt } from '../../src/config/schedules.js';

describe('A1111 learning-rate strings', () => {
  it('parses', () => {
    expect(parseA1111Schedule('5e-3:100, 1e-3:1000, 1e-4')).toEqual({ ok: true, entries: [{ rate: 5e-3, until_step: 100 }, { rate: 1e-3, until_step: 1000 }, { rate: 1e-4 }] });
    expect(parseA1111Schedule('0.005')).toEqual({ ok: true, entries: [{ rate: 0.005 }] });
    expect(parseA1111Schedule('0.01:10, 0.001:-1,')).toEqual({ ok: true, entries: [{ rate: 0.01, until_step: 10 }, { rate: 0.001 }] });
  });

  it.each([
    ['', 'the schedule is empty'],
    ['fast', '"fast" is not a number'],
    ['1e-3:abc', '"abc" in "1e-3:abc" is not a step number'],
    ['1e-3:100:5', 'more than one'],
    ['0:100, 1e-4', 'must be greater than 0'],
    ['1e-3, 1e-4:100', 'only the last piece may leave out its step'],
    ['1e-3:100, 1e-4:100', 'steps must increase'],
  ])('rejects %j', (text, why) => {
    const r = parseA1111Schedule(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain(why);
  });

  it('evaluates', () => {
    const s = learningRateSchedule('5e-3:100, 1e-3:1000');
    expect([0, 99, 100, 999, 1000, 5000].map((step) => rateAt(s, step))).toEqual([5e-3, 5e-3, 1e-3, 1e-3, 1e-3, 1e-3]);
    expect(rateAt(learningRateSchedule(0.1), 12)).toBe(0.1);
  });
});

describe('cond_dropout schedules', () => {
  it('evaluates', () => {
    const s = condDropoutSchedule([{ until_step: 500, rate: 0 }, { rate: 0.1 }]);
    expect([rateAt(s, 0), rateAt(s, 499), rateAt(s, 500)]).toEqual([0, 0, 0.1]);
    expect(rateAt(condDropoutSchedule(0.2), 7)).toBe(0.2);
  });

  it('checks', () => {
    expect(checkStepSchedule([{ until_step: 5, rate: 0 }, { rate: 1 }])).toEqual([]);
    expect(checkStepSchedule([{ rate: 0 }, { until_step: 3, rate: 1 }]).map((p) => p.index)).toEqual([0, 1]);
  });
});
