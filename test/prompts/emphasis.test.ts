import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SdtrainError } from '../../src/errors.js';
import { isBreak, parseEmphasis } from '../../src/prompts/emphasis.js';
import { pyFloat } from '../../src/prompts/py_regex.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface Case {
  prompt: string;
  parsed: Array<[string, number]>;
}

describe.runIf(hasShared)('parseEmphasis vs prompts/emphasis.json', () => {
  const cases = (JSON.parse(readFileSync(fixture('prompts', 'emphasis.json'), 'utf8')) as { cases: Case[] }).cases;

  it('has the 66 cases', () => expect(cases).toHaveLength(66));

  it.each(cases.map((c) => [c.prompt, c] as const))('%j', (_, c) => {
    const got = parseEmphasis(c.prompt);
    expect(got.map(([t]) => t)).toEqual(c.parsed.map(([t]) => t));
    // float64 equality, bit for bit
    got.forEach(([, w], i) => expect(Object.is(w, c.parsed[i]![1]) || w === c.parsed[i]![1], `${w} vs ${c.parsed[i]![1]}`).toBe(true));
  });
});

describe('parseEmphasis edge cases', () => {
  it('rejects a weight like 1.2.3 inside an open paren, naming the prompt', () => {
    expect(() => parseEmphasis('a (x:1.2.3) b')).toThrow(SdtrainError);
    expect(() => parseEmphasis('a (x:1.2.3) b')).toThrow(/'1\.2\.3'.*"a \(x:1\.2\.3\) b"/);
    expect(() => parseEmphasis('(x:.)')).toThrow(SdtrainError);
  });

  it('keeps 1.2.3 as text when no paren is open', () => {
    expect(parseEmphasis('x:1.2.3)')).toEqual([['x:1.2.3)', 1]]);
  });

  it('only weight exactly -1 is a break', () => {
    const parsed = parseEmphasis('a BREAK (b BREAK c)');
    expect(parsed.filter(isBreak)).toHaveLength(1);
    expect(parsed).toContainEqual(['BREAK', -1.1]);
  });

  it('uses Python word boundaries and whitespace around BREAK', () => {
    expect(parseEmphasis('éBREAK')).toEqual([['éBREAK', 1]]); // é is a word character in Python
    expect(parseEmphasis('a\u0085BREAK\u0085b')).toEqual([['a', 1], ['BREAK', -1], ['b', 1]]);
  });

  it('reads Unicode digits in weights as Python float() does', () => {
    expect(pyFloat('١.٥')).toBe(1.5);
    expect(parseEmphasis('(a:١.٥)')).toEqual([['a', 1.5]]);
    expect(pyFloat('1.')).toBe(1);
    expect(pyFloat('.')).toBeNaN();
  });
});
