import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Embedding } from '../../src/embeddings/load.js';
import { EmbeddingRegistry } from '../../src/embeddings/registry.js';
import { targetPromptTokenCount, tokenizeLine } from '../../src/prompts/chunking.js';
import { parseEmphasis } from '../../src/prompts/emphasis.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface Chunk {
  tokens: number[];
  sd2_tokens: number[];
  multipliers: number[];
  fixes: Array<[number, string, number]>;
}
interface Case {
  id: string;
  prompt: string;
  comma_padding_backtrack: number;
  token_count: number;
  target_prompt_token_count: number;
  chunks: Chunk[];
}
interface Fixture {
  meta: { stub_embeddings: Record<string, number> };
  cases: Case[];
}

const stub = (name: string, n: number, dim = 4): Embedding => ({
  name,
  vectors: new Float32Array(n * dim),
  shape: [n, dim],
  source: 'a1111',
});

let tokenizer: CLIPTokenizer;
beforeAll(async () => {
  tokenizer = await CLIPTokenizer.fromBundled();
});

describe.runIf(hasShared)('tokenizeLine vs prompts/a1111_chunks.json', () => {
  const fx = JSON.parse(readFileSync(fixture('prompts', 'a1111_chunks.json'), 'utf8')) as Fixture;
  const registry = () => EmbeddingRegistry.from(tokenizer, Object.entries(fx.meta.stub_embeddings).map(([n, v]) => stub(n, v)));

  it.each(fx.cases.map((c) => [c.id, c] as const))('%s', (_, c) => {
    for (const sd2 of [false, true]) {
      const { chunks, tokenCount } = tokenizeLine(parseEmphasis(c.prompt), tokenizer, registry(), {
        commaBacktrack: c.comma_padding_backtrack,
        sd2,
      });
      expect(tokenCount).toBe(c.token_count);
      expect(targetPromptTokenCount(tokenCount)).toBe(c.target_prompt_token_count);
      expect(chunks.map((ch) => ch.tokens)).toEqual(c.chunks.map((ch) => (sd2 ? ch.sd2_tokens : ch.tokens)));
      expect(chunks.map((ch) => ch.multipliers)).toEqual(c.chunks.map((ch) => ch.multipliers));
      expect(chunks.map((ch) => ch.fixes.map((f) => [f.offset, f.embedding.name, f.embedding.shape[0]]))).toEqual(
        c.chunks.map((ch) => ch.fixes),
      );
    }
  });
});

describe('tokenizeLine extras', () => {
  it('moves an embedding fix with the tokens the comma backtrack relocates', () => {
    const registry = EmbeddingRegistry.from(tokenizer, [stub('cattoy', 2)]);
    // 70 × "a", a comma, "b", cattoy (2 slots), "c" → full at 75, comma 4 back: "b cattoy c" move on
    const prompt = `${'a '.repeat(70)}, b cattoy c d`;
    const { chunks } = tokenizeLine(parseEmphasis(prompt), tokenizer, registry);
    expect(chunks).toHaveLength(2);
    expect(chunks[0]!.fixes).toEqual([]);
    expect(chunks[0]!.tokens.slice(70, 73)).toEqual([320, 267, 49407]);
    expect(chunks[1]!.fixes.map((f) => f.offset)).toEqual([1]);
    expect(chunks[1]!.tokens.slice(0, 7)).toEqual([49406, 321, 0, 0, 322, 323, 49407]);
  });

  it('matches the longest keyword first and ignores case via BPE', () => {
    const registry = EmbeddingRegistry.from(tokenizer, [stub('my', 1), stub('my-embed', 2)]);
    const { chunks } = tokenizeLine(parseEmphasis('MY-EMBED my'), tokenizer, registry);
    expect(chunks[0]!.fixes.map((f) => [f.offset, f.embedding.name])).toEqual([[0, 'my-embed'], [2, 'my']]);
  });
});
