import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Embedding } from '../../src/embeddings/load.js';
import { EmbeddingRegistry } from '../../src/embeddings/registry.js';
import { loadComponentFolder } from '../../src/checkpoints/diffusers_folder.js';
import type { CLIPTextModel } from '../../src/models/clip_text.js';
import { disposeModule } from '../../src/nn/module.js';
import { applyEmphasis, encodePrompts, encodeScheduledPrompt, padToSameLength } from '../../src/prompts/conditioning.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { fixture, hasShared } from '../helpers/shared.js';

const maxDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => a.sub(b).abs().max().dataSync()[0]!);

describe.runIf(hasShared)('applyEmphasis vs a1111_chunks.json emphasis_example', () => {
  const ex = (JSON.parse(readFileSync(fixture('prompts', 'a1111_chunks.json'), 'utf8')) as {
    emphasis_example: { multipliers: number[]; z_mean_before: number; z_after: number[][] };
  }).emphasis_example;

  it('weights then restores the mean over the whole tensor', () => {
    const values = new Float32Array(77 * 4);
    for (let t = 0; t < 77; t++) for (let c = 0; c < 4; c++) values[t * 4 + c] = (((t * 7 + c * 3) % 11) / 5) - 0.7;
    const z = tf.tensor3d(values, [1, 77, 4]);
    expect(Math.abs(z.mean().dataSync()[0]! - ex.z_mean_before)).toBeLessThan(1e-6);
    const out = applyEmphasis(z, [ex.multipliers], 'original');
    expect(maxDiff(out, tf.tensor3d([ex.z_after]))).toBeLessThan(2e-6);
    const noNorm = applyEmphasis(z, [ex.multipliers], 'no_norm');
    expect(noNorm.arraySync()[0]![2]![0]).toBeCloseTo(values[8]! * 1.5, 6);
    expect(applyEmphasis(z, [ex.multipliers], 'ignore')).toBe(z);
    tf.dispose([z, out, noNorm]);
  });
});

describe.runIf(hasShared)('encodePrompts on the tiny SD1 text encoder', () => {
  let model: CLIPTextModel;
  let tokenizer: CLIPTokenizer;
  beforeAll(async () => {
    model = await loadComponentFolder(fixture('tiny-sd1', 'text_encoder'), 'text_encoder');
    tokenizer = await CLIPTokenizer.fromDiffusersFolder(fixture('tiny-sd1', 'tokenizer'));
  });
  afterAll(() => disposeModule(model));

  const plain = (prompt: string, clipSkip = 1) =>
    tf.tidy(() => model.forward(tf.tensor2d([tokenizer.tokenize(prompt).inputIds], [1, 77], 'int32'), { clipSkip }).lastHiddenState);

  it('is the plain forward of the tokenizer frame for a simple prompt', () => {
    for (const clipSkip of [1, 2]) {
      const got = encodePrompts(model, tokenizer, ['a photo of a cat'], undefined, { clipSkip });
      const want = plain('a photo of a cat', clipSkip);
      expect(got.shape).toEqual([1, 77, 32]);
      expect(maxDiff(got, want)).toBe(0);
      tf.dispose([got, want]);
    }
  });

  it('gives 154 context tokens past 75 tokens, chunk 2 encoded on its own', () => {
    const prompt = 'tree '.repeat(80);
    const got = encodePrompts(model, tokenizer, [prompt], undefined, { emphasis: 'none' });
    expect(got.shape).toEqual([1, 154, 32]);
    const second = plain('tree '.repeat(5));
    expect(maxDiff(got.slice([0, 77, 0], [1, 77, 32]), second)).toBe(0);
    tf.dispose([got, second]);
  });

  it('pads a shorter prompt of the batch with an empty chunk', () => {
    const got = encodePrompts(model, tokenizer, ['tree '.repeat(80), 'a cat'], undefined, { emphasis: 'ignore' });
    const empty = plain('');
    expect(got.shape).toEqual([2, 154, 32]);
    expect(maxDiff(got.slice([1, 77, 0], [1, 77, 32]), empty)).toBe(0);
    tf.dispose([got, empty]);
  });

  it('weights with the mean restored, over the whole batch', () => {
    const w = encodePrompts(model, tokenizer, ['a (cat:1.5)', 'a cat'], undefined);
    const m0 = tf.tidy(() => {
      const z = tf.concat([plain('a cat'), plain('a cat')]);
      const mult = tf.tensor2d([[1, 1, 1.5, ...new Array(74).fill(1)], new Array(77).fill(1)], [2, 77]).expandDims(2);
      const weighted = z.mul(mult);
      return weighted.mul(z.mean().div(weighted.mean())).arraySync() as number[][][];
    });
    const want = tf.tensor3d(m0);
    expect(maxDiff(w, want)).toBeLessThan(1e-6);
    tf.dispose([w, want]);
  });

  it('writes embedding rows after BOS through inputsEmbeds', () => {
    const vectors = Float32Array.from({ length: 2 * 32 }, (_, i) => Math.sin(i));
    const emb: Embedding = { name: 'cattoy', vectors, shape: [2, 32], source: 'a1111' };
    const registry = EmbeddingRegistry.from(tokenizer, [emb]);
    const got = encodePrompts(model, tokenizer, ['a cattoy'], registry);
    const want = tf.tidy(() => {
      const ids = tf.tensor2d([[49406, 320, 0, 0, ...new Array(73).fill(49407)]], [1, 77], 'int32');
      const rows = model.embed(ids).arraySync();
      rows[0]![2] = Array.from(vectors.subarray(0, 32));
      rows[0]![3] = Array.from(vectors.subarray(32, 64));
      return model.forward(ids, { inputsEmbeds: tf.tensor3d(rows) }).lastHiddenState;
    });
    expect(maxDiff(got, want)).toBeLessThan(1e-6);
    tf.dispose([got, want]);
    const wide: Embedding = { ...emb, name: 'wide', vectors: new Float32Array(768), shape: [1, 768] };
    expect(() => encodePrompts(model, tokenizer, ['wide'], EmbeddingRegistry.from(tokenizer, [wide]))).toThrow(/768-wide.*takes 32/);
  });

  it('zeroes ids after the first EOS with sd2 and ignores clip skip there', () => {
    const got = encodePrompts(model, tokenizer, ['a cat'], undefined, { sd2: true, clipSkip: 2 });
    const want = tf.tidy(() => {
      const ids = [49406, 320, 2368, 49407, ...new Array(73).fill(0)];
      return model.forward(tf.tensor2d([ids], [1, 77], 'int32')).lastHiddenState;
    });
    expect(maxDiff(got, want)).toBe(0);
    tf.dispose([got, want]);
  });

  it('leaks no tensors', () => {
    const prompts = ['a (cat:1.3) BREAK [dog]', 'x '.repeat(90)];
    tf.dispose(encodePrompts(model, tokenizer, prompts, undefined)); // warm-up (kernels may cache)
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      encodePrompts(model, tokenizer, prompts, undefined);
    });
    tf.dispose(encodePrompts(model, tokenizer, prompts, undefined));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('pads cond/uncond to the same length with empty-prompt chunks', () => {
    const cond = encodePrompts(model, tokenizer, ['tree '.repeat(160)], undefined);
    const uncond = encodePrompts(model, tokenizer, ['blurry'], undefined);
    const empty = encodePrompts(model, tokenizer, [''], undefined);
    const before = tf.memory().numTensors;
    const [c, u] = padToSameLength(cond, uncond, empty);
    expect(tf.memory().numTensors).toBe(before + 2);
    expect(c.shape).toEqual([1, 231, 32]);
    expect(u.shape).toEqual([1, 231, 32]);
    expect(maxDiff(u.slice([0, 154, 0], [1, 77, 32]), empty)).toBe(0);
    expect(maxDiff(u.slice([0, 0, 0], [1, 77, 32]), uncond)).toBe(0);
    tf.dispose([cond, uncond, empty, c, u]);
  });
});

describe.runIf(hasShared)('encodeScheduledPrompt', () => {
  it('encodes every schedule variant in one batch', async () => {
    const model = await loadComponentFolder(fixture('tiny-sd1', 'text_encoder'), 'text_encoder');
    const tokenizer = await CLIPTokenizer.fromBundled();
    const before = tf.memory().numTensors;
    const sched = encodeScheduledPrompt(model, tokenizer, 'a [cat:(dog:1.2):0.5]', 10, undefined);
    expect(sched.map((s) => s.endAtStep)).toEqual([5, 10]);
    const batch = encodePrompts(model, tokenizer, ['a cat', 'a (dog:1.2)'], undefined);
    sched.forEach((s, i) => {
      expect(s.cond.shape).toEqual([1, 77, 32]);
      expect(maxDiff(s.cond, tf.tidy(() => batch.slice([i, 0, 0], [1, 77, 32])))).toBe(0);
    });
    tf.dispose([batch, ...sched.map((s) => s.cond)]);
    disposeModule(model);
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  });
});
