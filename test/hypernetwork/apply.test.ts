// Hypernetworks inside the U-Net: the Attention hook changes only the key/value context (never the query); on the
// tiny SD1 U-Net strength 0 is bit-identical to no hypernetwork, strength 1 is not, detach restores, several chain in
// order, widths a hypernetwork lacks are skipped, and nothing leaks.
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDiffusersFolder, type LoadedDiffusersFolder } from '../../src/checkpoints/diffusers_folder.js';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { applyHypernetworks, attachHypernetworks, transformerAttentions } from '../../src/hypernetwork/apply.js';
import { Hypernetwork } from '../../src/hypernetwork/hypernetwork.js';
import { seededRng } from '../../src/hypernetwork/module.js';
import { Attention } from '../../src/models/attention.js';
import { attention } from '../../src/nn/functional.js';
import { namedParams } from '../../src/nn/module.js';
import { fixture, hasShared } from '../helpers/shared.js';

const sameBits = (a: tf.Tensor, b: tf.Tensor): boolean => Buffer.from((a.dataSync() as Float32Array).buffer).equals(Buffer.from((b.dataSync() as Float32Array).buffer));

function randomAttention(queryDim: number, cross: number | null): Attention {
  const a = new Attention(queryDim, 2, 4, cross);
  let seed = 1;
  for (const [k, p] of namedParams(a)) p.set(tf.randomNormal([...p.shape], 0, 0.3, 'float32', seed++), k);
  return a;
}

describe('Attention.kvTransform', () => {
  it('feeds to_k and to_v the transformed contexts and leaves the query alone (cross- and self-attention)', () => {
    for (const cross of [6, null]) {
      const a = randomAttention(8, cross);
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        const x = tf.randomNormal([1, 5, 8], 0, 1, 'float32', 11) as tf.Tensor3D;
        const ctx = cross === null ? undefined : (tf.randomNormal([1, 3, cross], 0, 1, 'float32', 12) as tf.Tensor3D);
        const plain = a.forward(x, ctx);
        const seen: tf.Tensor[] = [];
        a.kvTransform = (c) => {
          seen.push(c);
          return [c, c];
        };
        expect(sameBits(a.forward(x, ctx), plain)).toBe(true); // the identity hook changes nothing
        expect(seen[0]).toBe(ctx ?? x); // self-attention: the hook sees the image tokens
        // A hook that scales k's context by 2 and v's by 3. Had it been applied to the query too (or k and v
        // swapped), the output would differ from this by-hand computation.
        a.kvTransform = (c) => [c.mul(2), c.mul(3)];
        const kv = ctx ?? x;
        const want = a.to_out[0].forward(attention(a.to_q.forward(x), a.to_k.forward(kv.mul(2)), a.to_v.forward(kv.mul(3)), a.heads));
        expect(sameBits(a.forward(x, ctx), want)).toBe(true);
        const wrong = a.to_out[0].forward(attention(a.to_q.forward(x.mul(2)), a.to_k.forward(kv.mul(2)), a.to_v.forward(kv.mul(3)), a.heads));
        expect(sameBits(want, wrong)).toBe(false);
        a.kvTransform = undefined;
      });
      expect(tf.memory().numTensors).toBe(before);
      for (const p of namedParams(a).values()) p.value?.dispose();
    }
  });

  it('gradients reach the hypernetwork through the hook', () => {
    const a = randomAttention(8, 16);
    const hn = Hypernetwork.create({ activationFunc: 'relu', useDropout: true }, [16], { seed: 2, trainable: true }).train(seededRng(3));
    a.kvTransform = (c) => applyHypernetworks([{ hn, strength: 0.3 }], c);
    const vars = hn.trainableVariables();
    const { value, grads } = tf.variableGrads(() => {
      const x = tf.randomNormal([1, 4, 8], 0, 1, 'float32', 1) as tf.Tensor3D;
      return a.forward(x, tf.randomNormal([1, 3, 16], 0, 1, 'float32', 2) as tf.Tensor3D).square().mean() as tf.Scalar;
    }, vars);
    expect(Object.keys(grads).length).toBe(vars.length);
    tf.dispose([value, ...Object.values(grads)]);
    hn.dispose();
    for (const p of namedParams(a).values()) p.value?.dispose();
  });
});

describe('applyHypernetworks', () => {
  it('chains in order, each picking its pair by the context width, skipping widths it lacks', () => {
    const a = Hypernetwork.create({ activationFunc: 'relu', weightInitialization: 'XavierNormal' }, [16, 24], { seed: 1 });
    const b = Hypernetwork.create({ activationFunc: 'tanh', isLayerNorm: true, weightInitialization: 'XavierNormal' }, [16], { seed: 2 });
    tf.tidy(() => {
      const ctx = tf.randomNormal([1, 3, 16], 0, 1, 'float32', 5);
      const [k, v] = applyHypernetworks([{ hn: a, strength: 1 }, { hn: b, strength: 0.5 }], ctx);
      const [k1, v1] = a.apply(ctx, ctx, 1);
      const [k2, v2] = b.apply(k1, v1, 0.5);
      expect(sameBits(k, k2) && sameBits(v, v2)).toBe(true);
      const [kr] = applyHypernetworks([{ hn: b, strength: 0.5 }, { hn: a, strength: 1 }], ctx);
      expect(sameBits(k, kr)).toBe(false); // order matters
      // b has no 24-wide pair: only a acts on a 24-wide context
      const c24 = tf.randomNormal([1, 3, 24], 0, 1, 'float32', 6);
      expect(sameBits(applyHypernetworks([{ hn: a, strength: 1 }, { hn: b, strength: 1 }], c24)[1], a.apply(c24, c24, 1)[1])).toBe(true);
      // no pair at all: the context itself
      const c8 = tf.randomNormal([1, 3, 8], 0, 1, 'float32', 7);
      const [k8, v8] = applyHypernetworks([{ hn: a, strength: 1 }], c8);
      expect(k8 === c8 && v8 === c8).toBe(true);
    });
    a.dispose();
    b.dispose();
  });
});

describe.runIf(hasShared)('hypernetworks on the tiny SD1 U-Net', () => {
  let pipe: LoadedDiffusersFolder;
  let hn: Hypernetwork;
  const inputs = () => ({
    sample: tf.randomNormal([1, 8, 8, 4], 0, 1, 'float32', 1) as tf.Tensor4D,
    context: tf.randomNormal([1, 7, 32], 0, 1, 'float32', 2) as tf.Tensor3D,
  });
  const run = (): tf.Tensor4D =>
    tf.tidy(() => {
      const { sample, context } = inputs();
      return pipe.unet.forward(sample, 500, context);
    });

  beforeAll(async () => {
    pipe = await loadDiffusersFolder(fixture('tiny-sd1'));
    // block widths 32 (down/up) and 64 (mid): self-attention contexts; the text context is 32 wide
    hn = Hypernetwork.create({ activationFunc: 'relu', isLayerNorm: true, weightInitialization: 'XavierNormal' }, [32, 64], { seed: 3, name: 'tiny' });
  });
  afterAll(() => {
    hn?.dispose();
    if (pipe) disposePipeline(pipe);
  });

  it('strength 0 is bit-identical to no hypernetwork, strength 1 differs, detach restores; nothing leaks', () => {
    const base = run();
    const before = tf.memory().numTensors;

    const zero = attachHypernetworks(pipe.unet, [{ hn, strength: 0 }]);
    expect([zero.attentions, zero.affected, zero.unusedWidths]).toEqual([22, 22, []]); // 11 transformer blocks × (attn1, attn2)
    const out0 = run();
    expect(sameBits(out0, base)).toBe(true);
    zero.detach();
    zero.detach(); // idempotent
    expect(zero.attached).toBe(false);

    const one = attachHypernetworks(pipe.unet, [{ hn, strength: 1 }]);
    const out1 = run();
    const diff = tf.tidy(() => out1.sub(base).abs().max().dataSync()[0]!);
    expect(diff).toBeGreaterThan(1e-4);
    expect(() => attachHypernetworks(pipe.unet, [{ hn, strength: 1 }])).toThrow(/already has hypernetworks attached/);
    one.detach();
    expect(transformerAttentions(pipe.unet).every((a) => a.kvTransform === undefined)).toBe(true);
    const restored = run();
    expect(sameBits(restored, base)).toBe(true);

    tf.dispose([out0, out1, restored]);
    expect(tf.memory().numTensors).toBe(before);
    base.dispose();
  });

  it('a hypernetwork acts only where its widths occur; chaining two is not the same as either alone', () => {
    const base = run();
    const mid = Hypernetwork.create({ activationFunc: 'relu', weightInitialization: 'XavierNormal' }, [64, 768], { seed: 4, name: 'mid' });
    const h = attachHypernetworks(pipe.unet, [{ hn: mid, strength: 1 }]);
    // only the mid block's self-attention is 64 wide; 768 (SD1 text) never occurs in the tiny U-Net
    expect([h.affected, h.unusedWidths]).toEqual([1, ['mid: 768']]);
    const outMid = run();
    expect(sameBits(outMid, base)).toBe(false);
    h.detach();

    const both = attachHypernetworks(pipe.unet, [{ hn, strength: 0.7 }, { hn: mid, strength: 1 }]);
    const outBoth = run();
    both.detach();
    const only = attachHypernetworks(pipe.unet, [{ hn, strength: 0.7 }]);
    const outOnly = run();
    only.detach();
    expect(sameBits(outBoth, outOnly) || sameBits(outBoth, outMid)).toBe(false);
    tf.dispose([base, outMid, outBoth, outOnly]);
    mid.dispose();
  });
});
