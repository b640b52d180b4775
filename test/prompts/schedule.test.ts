import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { promptSchedules } from '../../src/prompts/schedule.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface Case {
  prompt: string;
  steps: number;
  hires_steps: number | null;
  schedule: Array<[number, string]>;
}

describe.runIf(hasShared)('promptSchedules vs prompts/schedules.json', () => {
  const cases = (JSON.parse(readFileSync(fixture('prompts', 'schedules.json'), 'utf8')) as { cases: Case[] }).cases;

  it('has the 23 cases', () => expect(cases).toHaveLength(23));

  it.each(cases.map((c) => [c.prompt, c.steps, c.hires_steps, c] as const))('%j, %i steps, hires %s', (_, __, ___, c) => {
    expect(promptSchedules(c.prompt, c.steps, { hiresSteps: c.hires_steps })).toEqual(c.schedule);
  });
});

describe('promptSchedules edge cases', () => {
  it('takes a prompt the grammar rejects literally for all steps', () => {
    expect(promptSchedules('[a:b:3] | c', 10)).toEqual([[10, '[a:b:3] | c']]);
    expect(promptSchedules('[a:b:3] c\\', 10)).toEqual([[10, '[a:b:3] c\\']]);
    expect(promptSchedules('[a:b:3] c\\\nd', 10)).toEqual([[10, '[a:b:3] c\\\nd']]);
  });

  it('keeps escapes and emphasis verbatim', () => {
    expect(promptSchedules('\\[a:b:3\\] (x:1.2) [y]', 10)).toEqual([[10, '\\[a:b:3\\] (x:1.2) [y]']]);
    expect(promptSchedules('(a [b:c:2]:1.1)', 4)).toEqual([[2, '(a b:1.1)'], [4, '(a c:1.1)']]);
  });

  it('treats a failed construct as stray characters and goes on', () => {
    expect(promptSchedules('(a:1:2) [b:3]', 10)).toEqual([[3, '(a:1:2) '], [10, '(a:1:2) b']]);
    expect(promptSchedules('[a (b] c) [d|e]', 2)).toEqual([[1, '[a (b] c) d'], [2, '[a (b] c) e']]);
  });

  it('resolves `when` with exponents, signs and the old rule', () => {
    expect(promptSchedules('[a:b:1e1]', 20)).toEqual([[10, 'a'], [20, 'b']]);
    expect(promptSchedules('[a:b:-3]', 5)).toEqual([[5, 'b']]);
    expect(promptSchedules('[a:b:0.5]', 10, { useOldScheduling: true })).toEqual([[5, 'a'], [10, 'b']]);
    expect(promptSchedules('[a:b:2]', 10, { useOldScheduling: true, hiresSteps: 10 })).toEqual([[2, 'a'], [10, 'b']]);
  });

  it('alternates inside scheduled text and counts nested switch points', () => {
    expect(promptSchedules('[[x|y]:z:3]', 4)).toEqual([[1, 'x'], [2, 'y'], [3, 'x'], [4, 'z']]);
  });
});
