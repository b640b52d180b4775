import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readPngText, writePngText } from '../../src/formats/png_text.js';
import { buildInfotext, parseInfotext, quote } from '../../src/prompts/infotext.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface Case {
  prompt?: string;
  negative_prompt?: string;
  generation_params?: Record<string, string | number | null>;
  infotext: string;
  parsed: Record<string, string>;
}

const flat = (text: string) => {
  const p = parseInfotext(text);
  return { ...p.params, Prompt: p.prompt, 'Negative prompt': p.negativePrompt };
};

describe.runIf(hasShared)('infotext vs prompts/infotext.json', () => {
  const cases = (JSON.parse(readFileSync(fixture('prompts', 'infotext.json'), 'utf8')) as { cases: Case[] }).cases;
  const built = cases.filter((c) => c.generation_params !== undefined);

  it.each(built.map((c) => [c.prompt, c] as const))('builds %j', (_, c) => {
    expect(buildInfotext({ prompt: c.prompt!, negativePrompt: c.negative_prompt, params: c.generation_params! })).toBe(c.infotext);
  });

  it.each(cases.map((c) => [c.infotext, c] as const))('parses %j', (_, c) => {
    expect(flat(c.infotext)).toEqual(c.parsed);
  });

  it.each(['ascii', 'unicode'])('reads the parameters of a1111_infotext_%s.png', (kind) => {
    const file = fixture('formats', `a1111_infotext_${kind}.png`);
    const desc = JSON.parse(readFileSync(`${file}.json`, 'utf8')) as { parameters: string };
    const text = readPngText(readFileSync(file), file).parameters!;
    expect(text).toBe(desc.parameters);
    const parsed = parseInfotext(text);
    expect(parsed.params.Steps).toBeDefined();
    if (kind === 'ascii') {
      expect(flat(text)).toEqual(cases[0]!.parsed);
      expect(parsed.clipSkip).toBe(2);
    } else {
      expect(parsed.prompt).toBe('猫の写真, café 🐱');
      expect(parsed.negativePrompt).toBe('');
      expect(parsed.params).toMatchObject({ 'Size-1': '512', 'Size-2': '512', Model: 'v1-5-pruned' });
      expect(parsed.clipSkip).toBe(1); // missing means 1
    }
  });

  it('round-trips through a PNG text chunk', () => {
    const png = readFileSync(fixture('formats', 'a1111_infotext_unicode.png'));
    const text = buildInfotext({ prompt: 'ü (x:1.2)', negativePrompt: 'bad', params: { Steps: 5, Seed: 1, Size: '64x64' } });
    expect(parseInfotext(readPngText(writePngText(png, { parameters: text })).parameters!)).toMatchObject({
      prompt: 'ü (x:1.2)',
      negativePrompt: 'bad',
      params: { Steps: '5', Seed: '1', 'Size-1': '64', 'Size-2': '64' },
    });
  });
});

describe('infotext details', () => {
  it('prints a key alone when it equals its value, and Python number forms', () => {
    expect(buildInfotext({ prompt: 'p', params: [['A', 'A'], ['B', 1e-5], ['C', true], ['D', 0.5], ['E', undefined]] })).toBe(
      'p\nA, B: 1e-05, C: True, D: 0.5',
    );
    expect(quote('x\ny')).toBe('"x\\ny"');
    expect(quote('plain "q"')).toBe('plain "q"');
  });

  it('drops empty values and keeps bad quotes literal', () => {
    expect(parseInfotext('p\nAa: 1, Bb: , Cc: "x, Dd: 2, Ee: 3').params).toEqual({ Aa: '1', Cc: '"x', Dd: '2', Ee: '3' });
    expect(parseInfotext('p\nA: 1, B: 2, C: 3').prompt).toBe('p\nA: 1, B: 2, C: 3'); // keys need 2+ characters
  });
});
