// diffusers textual-inversion placeholders as transformers added tokens (tokenizer/ti_added_tokens.json).
import { readFileSync } from 'node:fs';
import { beforeEach, describe, expect, it, test } from 'vitest';
import { CLIPTokenizer, multiVectorTokenNames } from '../../src/tokenizer/clip_tokenizer.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface TiFixture {
  meta: { registered: Array<{ token: string; vectors: number }>; added_token_ids: Array<[string, number]> };
  cases: Array<{ prompt: string; converted_prompt: string; tokens: string[]; ids: number[]; sd1_input_ids: number[] }>;
}

const ti: TiFixture | undefined = hasShared
  ? (JSON.parse(readFileSync(fixture('tokenizer', 'ti_added_tokens.json'), 'utf8')) as TiFixture)
  : undefined;

let tok: CLIPTokenizer;
beforeEach(async () => {
  tok = await CLIPTokenizer.fromBundled();
});

describe.runIf(hasShared)('tokenizer/ti_added_tokens.json', () => {
  const register = () => {
    for (const { token, vectors } of ti!.meta.registered) tok.addTokens(multiVectorTokenNames(token, vectors));
  };

  it('registers <t>, <t>_1, ... with ids from 49408 in order', () => {
    register();
    expect(tok.addedTokens).toEqual(ti!.meta.added_token_ids);
  });

  test.each((ti?.cases ?? []).map((c) => [c.prompt, c] as const))('%s', (_prompt, c) => {
    register();
    const converted = tok.maybeConvertPrompt(c.prompt);
    expect(converted).toBe(c.converted_prompt);
    expect(tok.bpeTokens(converted)).toEqual(c.tokens);
    expect(tok.encode(converted)).toEqual(c.ids);
    expect(tok.tokenize(converted).inputIds).toEqual(c.sd1_input_ids);
  });
});

describe('addTokens', () => {
  it('matches added tokens case-sensitively, inside words, longest first', () => {
    expect(tok.addTokens(['<x>', '<x>_1', 'Zq'])).toEqual([49408, 49409, 49410]);
    expect(tok.encode('<x>_1<x>')).toEqual([49409, 49408]);
    expect(tok.encode('aZqb zq')).toEqual([320, 49410, ...tok.encode('b'), ...tok.encode('zq')]);
    expect(tok.decode([320, 49408, 1929])).toBe('a <x> dog ');
    expect(tok.singleTokenId('<x>')).toBe(49408);
    expect(tok.idToToken(49409)).toBe('<x>_1');
    expect(tok.tokenToId('Zq')).toBe(49410);
  });

  it('refuses tokens that already exist, atomically', () => {
    expect(() => tok.addTokens(['sks'])).toThrow(/already in the CLIP vocabulary \(id 48136\)/);
    expect(() => tok.addTokens(['<ok>', 'cat'])).toThrow(/"cat" is already in the CLIP vocabulary/);
    expect(tok.addedTokens).toEqual([]);
    expect(() => tok.addTokens(['<|endoftext|>'])).toThrow(/already in the CLIP vocabulary/);
    expect(() => tok.addTokens(['<a>', '<a>'])).toThrow(/listed twice/);
    expect(() => tok.addTokens([''])).toThrow(/empty/);
    tok.addTokens(['<a>']);
    expect(() => tok.addTokens(['<a>'])).toThrow(/already an added token \(id 49408\)/);
  });

  it('rewrites multi-vector placeholders literally, even with $ in the name', () => {
    tok.addTokens(multiVectorTokenNames('<$&>', 2));
    expect(tok.maybeConvertPrompt('a <$&> b <$&>')).toBe('a <$&> <$&>_1 b <$&> <$&>_1');
    expect(tok.encode('a <$&>')).toEqual([320, 49408]);
  });

  it('names multi-vector companions like diffusers', () => {
    expect(multiVectorTokenNames('<t>', 3)).toEqual(['<t>', '<t>_1', '<t>_2']);
    expect(multiVectorTokenNames('<t>', 1)).toEqual(['<t>']);
  });
});
