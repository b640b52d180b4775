// fromDiffusersFolder against the tiny-sd1 tokenizer folder and the transformers parity case.
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { bundledVocab, readTokenizerFolder } from '../../src/tokenizer/vocab.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface ParityCase {
  args: { prompts: string[]; pad_token_id: number; model_max_length: number; untruncated_ids: number[][]; tokens: string[][] };
  outputs: Record<string, { key: string; shape: number[] }>;
}

async function readIntMatrix(file: string, key: string): Promise<number[][]> {
  const st = await SafetensorsFile.open(file);
  try {
    const t = await st.read(key);
    const [rows, cols] = t.shape as [number, number];
    return Array.from({ length: rows }, (_, r) => Array.from(t.data.subarray(r * cols, (r + 1) * cols)));
  } finally {
    await st.close();
  }
}

describe.runIf(hasShared)('CLIPTokenizer.fromDiffusersFolder (tiny-sd1)', () => {
  const folder = fixture('tiny-sd1', 'tokenizer');
  let tok: CLIPTokenizer;
  let parity: ParityCase;

  beforeAll(async () => {
    tok = await CLIPTokenizer.fromDiffusersFolder(folder);
    parity = JSON.parse(await readFile(fixture('parity', 'tiny-sd1', 'tokenizer.json'), 'utf8')) as ParityCase;
  });

  it('reads the same vocabulary and merges as the bundled gz', async () => {
    const bundled = await bundledVocab();
    const fromFolder = (await readTokenizerFolder(folder)).vocab;
    expect(fromFolder.decoder).toEqual(bundled.decoder);
    expect([...fromFolder.bpeRanks]).toEqual([...bundled.bpeRanks]);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.maxLength]).toEqual([49406, 49407, 49407, 77]);
  });

  it('reproduces the parity input_ids and attention_mask (7x77)', async () => {
    const file = fixture('parity', 'tiny-sd1', 'tokenizer.safetensors');
    const inputIds = await readIntMatrix(file, parity.outputs.input_ids!.key);
    const mask = await readIntMatrix(file, parity.outputs.attention_mask!.key);
    expect(inputIds.length).toBe(parity.args.prompts.length);
    parity.args.prompts.forEach((prompt, i) => {
      const t = tok.tokenize(prompt);
      expect(t.inputIds, prompt).toEqual(inputIds[i]);
      expect(t.attentionMask, prompt).toEqual(mask[i]);
      const untruncated = parity.args.untruncated_ids[i]!;
      expect(tok.encode(prompt)).toEqual(untruncated.slice(1, -1));
      expect(tok.bpeTokens(prompt)).toEqual(parity.args.tokens[i]!.slice(1, -1));
      expect(t.tokenCount).toBe(untruncated.length - 2);
    });
  });
});

describe.runIf(hasShared)('diffusers folder variants', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sdtrain-tok-'));
    for (const f of ['vocab.json', 'merges.txt']) await copyFile(fixture('tiny-sd1', 'tokenizer', f), join(dir, f));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('pads with id 0 when special_tokens_map.json says pad_token "!" (SD2), overriding tokenizer_config.json', async () => {
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: '<|endoftext|>', model_max_length: 77 }));
    await writeFile(join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: '!' }));
    const sd2 = await CLIPTokenizer.fromDiffusersFolder(dir);
    expect(sd2.padTokenId).toBe(0);
    expect(sd2.tokenize('a cat').inputIds.slice(0, 5)).toEqual([49406, 320, 2368, 49407, 0]);
    const forced = await CLIPTokenizer.fromDiffusersFolder(dir, { padWith: 'eos' });
    expect(forced.padTokenId).toBe(49407);
  });

  it('restores textual-inversion tokens saved in added_tokens.json', async () => {
    await writeFile(join(dir, 'added_tokens.json'), JSON.stringify({ '<cat-toy>': 49408 }));
    const tok = await CLIPTokenizer.fromDiffusersFolder(dir);
    expect(tok.encode('a<cat-toy>dog')).toEqual([320, 49408, 1929]);
    expect(tok.addTokens(['<other>'])).toEqual([49409]);
    await rm(join(dir, 'added_tokens.json'));
  });

  it('names the missing file', async () => {
    await expect(CLIPTokenizer.fromDiffusersFolder(join(dir, 'nope'))).rejects.toThrow(/vocab\.json/);
  });
});
