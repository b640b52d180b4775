// The memory estimator behind `--backend auto`: weights counted exactly, activations checked against the backend's own
// allocations on small models, and the decisions it drives (full-size SD goes to cpu, the tiny model stays on wasm).
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import { trackTensorMemory } from '../../bench/memtrack.js';
import { WASM_BUDGET_BYTES, useBackend } from '../../src/backend/backend.js';
import {
  componentWeightBytes,
  estimateJob,
  paramCounts,
  samplingBytes,
  trainingBytes,
  unetActivationBytes,
  vaeDecodeActivationBytes,
  weightBytes,
  type SamplingJob,
  type TrainingJob,
} from '../../src/backend/memory.js';
import type { PipelineConfigs } from '../../src/checkpoints/pipeline.js';
import { parseClipTextConfig } from '../../src/models/clip_text.js';
import { SD15, SD21_V } from '../../src/models/presets.js';
import { UNet2DConditionModel, type UNet2DConditionConfig } from '../../src/models/unet.js';
import { AutoencoderKL, parseVaeConfig, type AutoencoderKLConfig } from '../../src/models/vae.js';
import { parseUNetConfig } from '../../src/models/unet.js';
import { namedParams, type Module } from '../../src/nn/module.js';
import { fixture, hasShared } from '../helpers/shared.js';

const sd15: PipelineConfigs = { unet: SD15.unet, vae: SD15.vae, text_encoder: SD15.text_encoder };

function tinyConfigs(): PipelineConfigs {
  const json = (c: string): unknown => JSON.parse(readFileSync(fixture('tiny-sd1', c, 'config.json'), 'utf8'));
  return { unet: parseUNetConfig(json('unet')), vae: parseVaeConfig(json('vae')), text_encoder: parseClipTextConfig(json('text_encoder')) };
}

const sample = (over: Partial<SamplingJob> = {}): SamplingJob => ({ configs: sd15, width: 512, height: 512, batch: 1, cfg: true, ...over });
const train = (over: Partial<TrainingJob> = {}): TrainingJob => ({
  configs: sd15,
  method: 'lora',
  batch: 1,
  resolution: 512,
  optimizer: 'adamw',
  ...over,
});

describe('weights', () => {
  it('SD 1.5: 1,066,235,307 float32 parameters (the manifest total, text encoder included)', () => {
    expect(paramCounts(sd15)).toEqual({ unet: 859_520_964, vae: 83_653_863, text_encoder: 123_060_480 });
    expect(weightBytes(sd15)).toBe(1_066_235_307 * 4);
    expect(componentWeightBytes(sd15).unet).toBe(859_520_964 * 4);
  });

  it('from a checkpoint listing: every element widened to 4 bytes, whatever the stored dtype', () => {
    const listing = [
      { name: 'a', dtype: 'F16' as const, shape: [320, 4, 3, 3] },
      { name: 'b', dtype: 'F32' as const, shape: [320] },
      { name: 'c', dtype: 'BF16' as const, shape: [] },
    ];
    expect(weightBytes(listing)).toBe((320 * 4 * 9 + 320 + 1) * 4);
  });

  it('building the skeletons for the count allocates no tensors', () => {
    const before = tf.memory().numTensors;
    paramCounts({ unet: SD21_V.unet, vae: SD21_V.vae, text_encoder: SD21_V.text_encoder });
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('decisions', () => {
  afterAll(async () => {
    await useBackend('wasm');
  });

  it('SD 1.5 sampling at 512×512 with CFG is over the wasm budget: auto takes cpu', async () => {
    const bytes = samplingBytes(sample());
    expect(bytes).toBeGreaterThan(WASM_BUDGET_BYTES);
    const choice = await useBackend('auto', { estimatedBytes: bytes });
    expect(choice.backend).toBe('cpu');
    expect(choice.notes.at(-1)).toMatch(/wasm skipped/);
  });

  it.runIf(hasShared)('the tiny fixture model samples far below it (and auto keeps wasm)', async () => {
    const bytes = samplingBytes(sample({ configs: tinyConfigs(), width: 64, height: 64 }));
    expect(bytes).toBeLessThan(WASM_BUDGET_BYTES / 50);
    expect(bytes).toBeGreaterThan(16e6); // its weights alone are 16 MB
    const choice = await useBackend('auto', { estimatedBytes: bytes });
    expect(choice.backend).toBe('wasm');
  });
});

describe('shape of the estimate', () => {
  it('parts add up to the total; phases name what peaks', () => {
    for (const e of [estimateJob({ kind: 'sample', ...sample() }), estimateJob({ kind: 'train', ...train() })]) {
      expect(Object.values(e.parts).reduce((a, b) => a + b, 0)).toBe(e.total);
      const activation = Object.keys(e.parts).find((k) => k.startsWith('activations ('));
      expect(activation).toBeDefined();
      expect(Math.max(...Object.values(e.phases))).toBe(e.parts[activation!]);
    }
  });

  it('grows with batch and resolution (sampling and training)', () => {
    const s = [256, 512, 768].map((r) => samplingBytes(sample({ width: r, height: r })));
    expect(s[0]!).toBeLessThan(s[1]!);
    expect(s[1]!).toBeLessThan(s[2]!);
    expect(samplingBytes(sample({ batch: 2 }))).toBeGreaterThan(samplingBytes(sample()));
    expect(samplingBytes(sample({ cfg: true }))).toBeGreaterThan(samplingBytes(sample({ cfg: false })));
    const t = [256, 512].map((r) => trainingBytes(train({ resolution: r })));
    expect(t[0]!).toBeLessThan(t[1]!);
    expect(trainingBytes(train({ batch: 2 }))).toBeGreaterThan(trainingBytes(train()));
  });

  it('attention slicing lowers the U-Net peak (by the attention maps it no longer holds)', () => {
    const full = estimateJob({ kind: 'sample', ...sample() });
    const sliced = estimateJob({ kind: 'sample', ...sample({ attentionSliceSize: 1 }) });
    expect(sliced.phases.unet!).toBeLessThan(full.phases.unet! / 2);
    expect(sliced.total).toBeLessThan(full.total);
    // at 512×512 the VAE decode (one 128-channel 512×512 block scope) is then the largest phase
    expect(Object.keys(sliced.parts)).toContain('activations (vae_decode)');
  });

  it('training: trainable part and optimizer decide gradients and state', () => {
    const lora = estimateJob({ kind: 'train', ...train() });
    const db = estimateJob({ kind: 'train', ...train({ method: 'dreambooth' }) });
    expect(db.parts.gradients).toBe(859_520_964 * 4);
    expect(db.parts['optimizer state']).toBe(2 * 859_520_964 * 4); // AdamW: two moments
    expect(estimateJob({ kind: 'train', ...train({ method: 'dreambooth', optimizer: 'sgd' }) }).parts['optimizer state']).toBe(0);
    expect(lora.parts.gradients!).toBeLessThan(20e6);
    expect(lora.parts.gradients!).toBeGreaterThan(0);
    // rank 4 on to_q/k/v/out of the SD 1.5 U-Net: 797,184 parameters (kohya's count for this target set)
    expect(lora.parts['weights.lora']).toBe(797_184 * 4);
    const embed = estimateJob({ kind: 'train', ...train({ method: 'embed', numVectors: 2 }) });
    expect(embed.parts.gradients).toBe(2 * 768 * 4);
    expect(trainingBytes(train({ method: 'dreambooth', gradientCheckpointing: true }))).toBeLessThan(trainingBytes(train({ method: 'dreambooth' })));
    expect(estimateJob({ kind: 'train', ...train({ latentsCached: true }) }).phases.vae_encode).toBeUndefined();
    // cpu shares the tensors saved for backward: no weight copies, fewer activation bytes
    const onCpu = estimateJob({ kind: 'train', ...train({ backend: 'cpu' }) });
    expect(onCpu.parts['saved weight copies']).toBeUndefined();
    expect(onCpu.total).toBeLessThan(lora.total - lora.parts['saved weight copies']!);
  });
});

// The activation model against what the wasm backend actually allocates (live buffers, weights excluded).
describe('against measured allocations', () => {
  const fill = (m: Module) => {
    for (const p of namedParams(m).values()) p.set(tf.randomNormal([...p.shape], 0, 0.02));
  };
  const unetCfg: UNet2DConditionConfig = { ...SD15.unet, block_out_channels: [32, 64, 64, 64], cross_attention_dim: 64 };
  const vaeCfg: AutoencoderKLConfig = { ...SD15.vae, block_out_channels: [32, 32, 64, 64] };

  const measure = (f: () => tf.Tensor): number => {
    const tracker = trackTensorMemory();
    try {
      tf.dispose(f());
      return tracker.peak - tracker.live;
    } finally {
      tracker.stop();
    }
  };

  it('U-Net forward (batch 2, 24×24 latents): within 2%', () => {
    const unet = new UNet2DConditionModel(unetCfg);
    fill(unet);
    const x = tf.randomNormal([2, 24, 24, 4]) as tf.Tensor4D;
    const ctx = tf.randomNormal([2, 77, 64]) as tf.Tensor3D;
    const measured = measure(() => unet.forward(x, 500, ctx));
    const estimated = unetActivationBytes(unetCfg, { batch: 2, h: 24, w: 24 });
    expect(estimated / measured).toBeGreaterThan(0.98);
    expect(estimated / measured).toBeLessThan(1.02);
    tf.dispose([x, ctx]);
    for (const p of namedParams(unet).values()) p.value?.dispose();
  });

  it('VAE decode (64×64 image): within 2%', () => {
    const vae = new AutoencoderKL(vaeCfg);
    fill(vae);
    const z = tf.randomNormal([1, 8, 8, 4]) as tf.Tensor4D;
    const measured = measure(() => vae.decode(z));
    const estimated = vaeDecodeActivationBytes(vaeCfg, 1, 8, 8);
    expect(estimated / measured).toBeGreaterThan(0.98);
    expect(estimated / measured).toBeLessThan(1.02);
    z.dispose();
    for (const p of namedParams(vae).values()) p.value?.dispose();
  });

  it('U-Net training step (gradient to the context): within 15%, saved weight copies included', () => {
    const unet = new UNet2DConditionModel(unetCfg);
    fill(unet);
    const x = tf.randomNormal([1, 16, 16, 4]) as tf.Tensor4D;
    const ctx = tf.variable(tf.randomNormal([1, 77, 64])) as tf.Variable<tf.Rank.R3>;
    const measured = measure(() => {
      const { value, grads } = tf.variableGrads(() => unet.forward(x, 500, ctx).square().mean() as tf.Scalar, [ctx]);
      tf.dispose(Object.values(grads));
      return value;
    });
    let weights = 0;
    for (const p of namedParams(unet).values()) weights += p.size * 4;
    const estimated = unetActivationBytes(unetCfg, { batch: 1, h: 16, w: 16, training: true }) + weights;
    expect(estimated / measured).toBeGreaterThan(0.85);
    expect(estimated / measured).toBeLessThan(1.15);
    tf.dispose([x, ctx]);
    for (const p of namedParams(unet).values()) p.value?.dispose();
  });
});
