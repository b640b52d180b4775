import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModule } from '../../src/nn/module.js';
import { Attention, Transformer2DModel } from '../../src/models/attention.js';
import { CrossAttnDownBlock2D, CrossAttnUpBlock2D } from '../../src/models/unet_blocks.js';
import { Conv2d, Linear } from '../../src/nn/layers.js';
import { namedParams } from '../../src/nn/module.js';
import { timestepFrequencies } from '../../src/models/embeddings.js';
import { parseUNetConfig, UNet2DConditionModel } from '../../src/models/unet.js';
import { ConfigError } from '../../src/errors.js';
import { hasShared } from '../helpers/shared.js';
import { loadParityCase, loadTiny, maxAbsDiff, type ParityCase } from '../helpers/parity_case.js';

/** Logged so a failing or drifting run shows how close we are, not just pass/fail. */
const report = (what: string, err: number, atol: number): void => console.log(`${what}: max abs err ${err.toExponential(2)} (atol ${atol})`);

describe.runIf(hasShared)('UNet2DConditionModel on tiny-sd1', () => {
  let unet: UNet2DConditionModel;
  let unetCase: ParityCase;
  let oddCase: ParityCase;

  beforeAll(async () => {
    unet = await loadTiny('unet');
    unetCase = await loadParityCase('unet');
    oddCase = await loadParityCase('unet_oddsize');
  });
  afterAll(() => disposeModule(unet));

  it('time_proj and time_embedding match the intermediates (int and fractional timesteps)', async () => {
    for (const fx of [unetCase, oddCase]) {
      const t = fx.tensor('inputs/timestep');
      const batch = fx.json.inputs.sample!.shape[0]!;
      const proj = unet.timeProjection(t as tf.Tensor1D, batch);
      const emb = unet.time_embedding.forward(proj);
      const refProj = fx.tensor('intermediates/time_proj');
      const refEmb = fx.tensor('intermediates/time_embedding');
      const eProj = await maxAbsDiff(proj, refProj);
      const eEmb = await maxAbsDiff(emb, refEmb);
      report(`${fx.name} time_proj`, eProj, 1e-5);
      report(`${fx.name} time_embedding`, eEmb, 1e-5);
      expect(eProj).toBeLessThan(1e-5);
      expect(eEmb).toBeLessThan(1e-5);
      tf.dispose([t, proj, emb, refProj, refEmb]);
    }
  });

  it.each(['unet', 'unet_oddsize'])('%s: sample_out within suggested_atol', async (name) => {
    const fx = name === 'unet' ? unetCase : oddCase;
    const sample = fx.nhwc('inputs/sample');
    const t = fx.tensor('inputs/timestep') as tf.Tensor1D;
    const ctx = fx.tensor('inputs/encoder_hidden_states') as tf.Tensor3D;
    const ref = fx.nhwc('outputs/sample_out');
    const out = unet.forward(sample, t, ctx);
    const err = await maxAbsDiff(out, ref);
    report(`${name} sample_out`, err, fx.atol('sample_out'));
    expect(err).toBeLessThanOrEqual(fx.atol('sample_out'));
    tf.dispose([sample, t, ctx, ref, out]);
  });

  it('accepts a number, a number[] and a length-1 tensor as timesteps', async () => {
    const fx = unetCase;
    const sample = fx.nhwc('inputs/sample');
    const ctx = fx.tensor('inputs/encoder_hidden_states') as tf.Tensor3D;
    const ts = Array.from((await fx.tensor('inputs/timestep').data()) as Int32Array);
    const a = unet.forward(sample, ts, ctx);
    const b = unet.forward(sample, tf.tensor1d(ts, 'int32'), ctx);
    expect(await maxAbsDiff(a, b)).toBe(0);
    const c = unet.forward(sample, ts[0]!, ctx);
    const d = unet.forward(sample, [ts[0]!], ctx);
    const e = unet.forward(sample, tf.scalar(ts[0]!), ctx);
    expect(await maxAbsDiff(c, d)).toBe(0);
    expect(await maxAbsDiff(c, e)).toBe(0);
    tf.dispose([sample, ctx, a, b, c, d, e]);
  });

  it('attention slicing gives the same output (max abs diff <= 1e-6)', async () => {
    const fx = unetCase;
    const sample = fx.nhwc('inputs/sample');
    const t = fx.tensor('inputs/timestep') as tf.Tensor1D;
    const ctx = fx.tensor('inputs/encoder_hidden_states') as tf.Tensor3D;
    const full = unet.forward(sample, t, ctx);
    for (const slice of [1, 3, 8]) {
      // batch 2 × 8 heads = 16 maps per attention
      const sliced = unet.forward(sample, t, ctx, { attentionSliceSize: slice });
      const err = await maxAbsDiff(full, sliced);
      report(`unet attentionSliceSize ${slice} vs unsliced`, err, 1e-6);
      expect(err).toBeLessThanOrEqual(1e-6);
      sliced.dispose();
    }
    tf.dispose([sample, t, ctx, full]);
  });

  it('leaves no tensors behind', () => {
    const fx = oddCase;
    const sample = fx.nhwc('inputs/sample');
    const t = fx.tensor('inputs/timestep');
    const ctx = fx.tensor('inputs/encoder_hidden_states') as tf.Tensor3D;
    const before = tf.memory().numTensors;
    const out = tf.tidy(() => unet.forward(sample, t as tf.Scalar, ctx));
    out.dispose();
    expect(tf.memory().numTensors).toBe(before);
    // also without an enclosing tidy: forward's own scopes free everything but the output
    const out2 = unet.forward(sample, 500.5, ctx);
    out2.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([sample, t, ctx]);
  });
});

describe('Attention slicing at 64×64 tokens', () => {
  it('sliced and unsliced self-attention agree (max abs diff <= 1e-6)', async () => {
    const attn = new Attention(32, 4, 8, null);
    const seeded = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 0.3, 'float32', seed);
    attn.to_q.weight.set(seeded([32, 32], 1));
    attn.to_k.weight.set(seeded([32, 32], 2));
    attn.to_v.weight.set(seeded([32, 32], 3));
    attn.to_out[0].weight.set(seeded([32, 32], 4));
    attn.to_out[0].bias!.set(seeded([32], 5));
    const x = seeded([2, 64 * 64, 32], 6) as tf.Tensor3D; // batch 2 × 4 heads = 8 maps of 4096×4096
    const full = attn.forward(x);
    for (const slice of [1, 3]) {
      const sliced = attn.forward(x, undefined, { attentionSliceSize: slice });
      const err = await maxAbsDiff(full, sliced);
      report(`64x64-token attention, slice ${slice} vs unsliced`, err, 1e-6);
      expect(err).toBeLessThanOrEqual(1e-6);
      sliced.dispose();
    }
    tf.dispose([x, full]);
    disposeModule(attn);
  });
});

describe('SD2 paths (no numeric fixture)', () => {
  it('per-block head lists: down blocks in order, up blocks reversed, mid block the last entry', () => {
    const cfg = parseUNetConfig({ attention_head_dim: [5, 10, 20, 20], use_linear_projection: true, cross_attention_dim: 1024 });
    const unet = new UNet2DConditionModel(cfg);
    const heads = (t: Transformer2DModel) => t.transformer_blocks[0]!.attn1.heads;
    const down = unet.down_blocks.map((b) => (b instanceof CrossAttnDownBlock2D ? heads(b.attentions[0]!) : null));
    const up = unet.up_blocks.map((b) => (b instanceof CrossAttnUpBlock2D ? heads(b.attentions[0]!) : null));
    expect(down).toEqual([5, 10, 20, null]);
    expect(up).toEqual([null, 20, 10, 5]);
    expect(heads(unet.mid_block.attentions[0]!)).toBe(20);
    // head size 64 everywhere, as SD2's num_head_channels: 64
    expect(unet.down_blocks[0]!.resnets[0]!.conv1.outChannels / 5).toBe(64);
  });

  it('linear proj_in/proj_out (SD2) compute the same map as 1x1 convs (SD1) with the same weights', async () => {
    const opts = { crossAttentionDim: 16, groups: 8 };
    const conv = new Transformer2DModel(4, 8, 32, { ...opts, useLinearProjection: false });
    const lin = new Transformer2DModel(4, 8, 32, { ...opts, useLinearProjection: true });
    const linParams = namedParams(lin);
    let seed = 10;
    for (const [key, p] of namedParams(conv)) {
      const v = tf.randomNormal([...p.shape], 0, 0.2, 'float32', seed++);
      p.set(v);
      const q = linParams.get(key)!;
      // [1, 1, in, out] conv weight ↔ [out, in] linear weight
      q.set(p.shape.length === 4 ? v.reshape([p.shape[2]!, p.shape[3]!]).transpose() : v.clone());
    }
    expect(conv.proj_in).toBeInstanceOf(Conv2d);
    expect(lin.proj_in).toBeInstanceOf(Linear);
    const x = tf.randomNormal([2, 3, 5, 32], 0, 1, 'float32', 1) as tf.Tensor4D;
    const ctx = tf.randomNormal([2, 7, 16], 0, 1, 'float32', 2) as tf.Tensor3D;
    const a = conv.forward(x, ctx);
    const b = lin.forward(x, ctx);
    expect(await maxAbsDiff(a, b)).toBeLessThan(1e-5);
    tf.dispose([x, ctx, a, b]);
    disposeModule(conv);
    disposeModule(lin);
  });
});

describe('timestepFrequencies', () => {
  it('is diffusers’ float32 exp(-ln(10000)·i/half) table', () => {
    const f = timestepFrequencies(160, 0);
    expect(f[0]).toBe(1);
    expect(f[159]).toBeCloseTo(Math.exp((-Math.log(10000) * 159) / 160), 9);
    expect(f[80]).toBe(Math.fround(Math.exp(Math.fround(Math.fround(Math.fround(-Math.log(10000)) * 80) / 160))));
  });
});

describe('parseUNetConfig', () => {
  const sd15 = {
    sample_size: 64,
    in_channels: 4,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    block_out_channels: [320, 640, 1280, 1280],
    cross_attention_dim: 768,
    attention_head_dim: 8,
    class_embed_type: null,
    addition_embed_type: null,
  };

  it('fills diffusers’ defaults', () => {
    const c = parseUNetConfig(sd15);
    expect(c).toMatchObject({
      out_channels: 4,
      flip_sin_to_cos: true,
      freq_shift: 0,
      layers_per_block: 2,
      norm_num_groups: 32,
      norm_eps: 1e-5,
      transformer_layers_per_block: 1,
      use_linear_projection: false,
      upcast_attention: false,
      num_attention_heads: null,
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    });
  });

  it.each([
    ['addition_embed_type', 'text_time'],
    ['class_embed_type', 'timestep'],
    ['time_cond_proj_dim', 256],
    ['mid_block_type', 'UNetMidBlock2DSimpleCrossAttn'],
    ['resnet_time_scale_shift', 'scale_shift'],
  ])('rejects %s = %j, naming the key', (key, value) => {
    expect(() => parseUNetConfig({ ...sd15, [key]: value })).toThrow(ConfigError);
    expect(() => parseUNetConfig({ ...sd15, [key]: value })).toThrow(`'${key}'`);
  });

  it('rejects non-SD block types and mismatched lists', () => {
    expect(() => parseUNetConfig({ ...sd15, down_block_types: ['CrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'] })).toThrow(
      /'down_block_types' contains "SimpleCrossAttnDownBlock2D"/,
    );
    expect(() => parseUNetConfig({ ...sd15, attention_head_dim: [5, 10, 20] })).toThrow(/'attention_head_dim' has 3 entries/);
    expect(() => parseUNetConfig({ ...sd15, attention_head_dim: 7 })).toThrow(/'attention_head_dim'/);
  });
});

describe('attention slicing bounds memory', () => {
  it('a sliced attention keeps at most one slice of score maps alive (peak bytes), with identical results', async () => {
    const { attention } = await import('../../src/nn/functional.js');
    const q = tf.randomNormal([2, 1024, 64], 0, 1, 'float32', 1) as tf.Tensor3D;
    const k = tf.randomNormal([2, 1024, 64], 0, 1, 'float32', 2) as tf.Tensor3D;
    const v = tf.randomNormal([2, 1024, 64], 0, 1, 'float32', 3) as tf.Tensor3D;
    const peak = (f: () => tf.Tensor): { bytes: number; out: Float32Array } => {
      const before = tf.memory().numBytes;
      let max = 0;
      const out = tf.tidy(() => {
        const r = f();
        max = (tf.memory() as { numBytes: number }).numBytes; // everything alive at the end of the scope
        return r;
      });
      const data = out.dataSync() as Float32Array;
      out.dispose();
      return { bytes: max - before, out: data };
    };
    const full = peak(() => attention(q, k, v, 8));
    const sliced = peak(() => attention(q, k, v, 8, { mapSliceSize: 1 }));
    const scoresAll = 2 * 8 * 1024 * 1024 * 4; // one [B·H, T, T] float32 score tensor
    expect(full.bytes).toBeGreaterThan(scoresAll);
    expect(sliced.bytes).toBeLessThan(scoresAll / 2);
    expect(sliced.out).toEqual(full.out);
    tf.dispose([q, k, v]);
  });
});
