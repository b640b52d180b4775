// The shared tokenizer cases (OpenAI SimpleTokenizer + ftfy 6.3.1), reproduced from the bundled assets alone.
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it, test } from 'vitest';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { bundledVocab } from '../../src/tokenizer/vocab.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface TokenizerCase {
  id: string;
  text: string;
  normalized: string;
  ids: number[];
  bpe: string[];
  n_tokens: number;
  truncated: boolean;
  sd1_input_ids: number[];
  sd2_input_ids: number[];
  ftfy_fix_encoding_changes: boolean;
  ftfy_sensitive: boolean;
  ids_without_ftfy?: number[];
  normalized_without_ftfy?: string;
  open_clip_ids?: number[];
}

const cases: TokenizerCase[] = hasShared
  ? (JSON.parse(readFileSync(fixture('tokenizer', 'cases.json'), 'utf8')) as { cases: TokenizerCase[] }).cases
  : [];
// Mojibake repair (ftfy fix_encoding) is not ported: those cases can only match the no-ftfy ids.
const exact = cases.filter((c) => !c.ftfy_fix_encoding_changes);
const mojibake = cases.filter((c) => c.ftfy_fix_encoding_changes);

let sd1: CLIPTokenizer;
let sd2: CLIPTokenizer;
let noFtfy: CLIPTokenizer;

beforeAll(async () => {
  [sd1, sd2, noFtfy] = await Promise.all([
    CLIPTokenizer.fromBundled(),
    CLIPTokenizer.fromBundled({ padWith: 'zero' }),
    CLIPTokenizer.fromBundled({ ftfy: false }),
  ]);
});

describe('bundled vocabulary', () => {
  it('has the 49408 CLIP ids, byte symbols first and the special tokens last', async () => {
    const vocab = await bundledVocab();
    expect(vocab.decoder.length).toBe(49408);
    expect(vocab.bpeRanks.size).toBe(48894);
    expect([sd1.vocabSize, sd1.bosTokenId, sd1.eosTokenId, sd1.padTokenId, sd2.padTokenId]).toEqual([49408, 49406, 49407, 49407, 0]);
    expect(vocab.decoder.slice(0, 3)).toEqual(['!', '"', '#']);
    expect(vocab.decoder[188]).toBe('\u0100'); // byte 0, the first remapped byte
    expect(vocab.decoder[256]).toBe('!</w>');
    expect(vocab.decoder[512]).toBe('in'); // the first merge "i n"
    expect(sd1.tokenToId('a</w>')).toBe(320);
    expect(sd1.idToToken(2368)).toBe('cat</w>');
    expect(sd1.idToToken(49407)).toBe('<|endoftext|>');
    expect(sd1.tokenToId('no such symbol')).toBeUndefined();
  });
});

describe.runIf(hasShared)('tokenizer/cases.json', () => {
  it('covers the shared cases', () => {
    expect(cases.length).toBe(86);
  });

  test.each(exact.map((c) => [c.id, c] as const))('%s', (_id, c) => {
    expect(sd1.normalize(c.text)).toBe(c.normalized);
    expect(sd1.bpeTokens(c.text)).toEqual(c.bpe);
    expect(sd1.encode(c.text)).toEqual(c.ids);
    const t = sd1.tokenize(c.text);
    expect(t.inputIds).toEqual(c.sd1_input_ids);
    expect([t.tokenCount, t.truncated]).toEqual([c.n_tokens, c.truncated]);
    expect(sd2.tokenize(c.text).inputIds).toEqual(c.sd2_input_ids);
    expect(sd2.frame(c.ids)).toEqual(c.sd2_input_ids);
  });

  test.each(mojibake.map((c) => [c.id, c] as const))('%s (needs ftfy mojibake repair, not ported: no-ftfy ids only)', (_id, c) => {
    if (c.ids_without_ftfy) expect(sd1.encode(c.text)).toEqual(c.ids_without_ftfy);
  });

  test.each(cases.map((c) => [c.id, c] as const))('%s without ftfy', (_id, c) => {
    expect(noFtfy.normalize(c.text)).toBe(c.normalized_without_ftfy ?? c.normalized);
    expect(noFtfy.encode(c.text)).toEqual(c.ids_without_ftfy ?? c.ids);
  });

  it('marks exactly the four ftfy-dependent cases as such', () => {
    expect(cases.filter((c) => c.ids_without_ftfy).map((c) => c.id)).toEqual([
      'ftfy_curly_quotes', 'ftfy_ligatures', 'ftfy_fullwidth', 'ftfy_decomposed_accent',
    ]);
  });
});

describe('framing', () => {
  it('keeps 75 ids, always ends with EOS, and reports the slot count', () => {
    const ids = Array.from({ length: 80 }, (_, i) => 1000 + i);
    const framed = sd1.frame(ids);
    expect(framed.length).toBe(77);
    expect(framed[0]).toBe(49406);
    expect(framed.slice(1, 76)).toEqual(ids.slice(0, 75));
    expect(framed[76]).toBe(49407);
    const long = sd1.tokenize('a '.repeat(80));
    expect([long.tokenCount, long.truncated]).toEqual([80, true]);
    expect(long.attentionMask.every((m) => m === 1)).toBe(true);
  });

  it('frames an empty prompt as BOS, EOS and padding', () => {
    const t = sd2.tokenize('  \t ');
    expect(t.inputIds.slice(0, 3)).toEqual([49406, 49407, 0]);
    expect(t.attentionMask.slice(0, 3)).toEqual([1, 1, 0]);
    expect([t.tokenCount, t.truncated]).toEqual([0, false]);
  });

  it('honours maxLength', async () => {
    const short = await CLIPTokenizer.fromBundled({ maxLength: 5 });
    expect(short.tokenize('a photo of a cat').inputIds).toEqual([49406, 320, 1125, 539, 49407]);
  });
});

describe('decode and single tokens', () => {
  it('decodes like SimpleTokenizer.decode (</w> becomes a space)', () => {
    expect(sd1.decode(sd1.encode('Hello, world!'))).toBe('hello , world ! ');
    expect(sd1.decode(sd1.encode('café 東京 👍🏽'))).toBe('café 東京 👍🏽 ');
    expect(sd1.decode([49406, 320, 49407])).toBe('<|startoftext|>a <|endoftext|>');
    expect(sd1.decode([127])).toBe('\uFFFD'); // a lone UTF-8 lead byte
    expect(() => sd1.decode([49408])).toThrow(/49408/);
  });

  it('tells whether a word is a single token', () => {
    expect(sd1.singleTokenId('cat')).toBe(2368);
    expect(sd1.singleTokenId('  Cat ')).toBe(2368);
    expect(sd1.singleTokenId('<cat-toy>')).toBeUndefined();
    expect(sd1.singleTokenId('')).toBeUndefined();
    expect(sd1.singleTokenId('watermark')).toBeUndefined(); // "water" + "mark</w>"
  });
});
