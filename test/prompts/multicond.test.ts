import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { multiCondPromptList, splitAnd } from '../../src/prompts/multicond.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface Case {
  prompt: string;
  subprompts: Array<[string, number]>;
}

describe.runIf(hasShared)('splitAnd vs prompts/multicond.json', () => {
  const cases = (JSON.parse(readFileSync(fixture('prompts', 'multicond.json'), 'utf8')) as { cases: Case[] }).cases;
  it.each(cases.map((c) => [c.prompt, c] as const))('%j', (_, c) => {
    expect(splitAnd(c.prompt)).toEqual(c.subprompts);
  });
});

describe('multiCondPromptList', () => {
  it('shares identical sub-prompts', () => {
    expect(multiCondPromptList(['a cat AND a dog:0.5', 'a cat'])).toEqual({
      texts: ['a cat', ' a dog'],
      indexes: [[[0, 1], [1, 0.5]], [[0, 1]]],
    });
  });

  it('splits only on the whole word, with Python word boundaries', () => {
    expect(splitAnd('éAND x')).toEqual([['éAND x', 1]]);
    expect(splitAnd('a\nAND\nb :2')).toEqual([['a', 1], ['\nb', 2]]);
  });
});
