// Micro-batch preparation: per-sample draws, posterior sampling, pixels through the VAE, min-SNR weights, RNG state.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { TorchGenerator } from '../../src/random/torch_rng.js';
import { noiseSchedule } from '../../src/schedules/betas.js';
import { SD_SCHEDULER_CONFIG } from '../../src/schedules/config.js';
import { minSnrWeights, prepareMicroBatch } from '../../src/training/micro_batch.js';
import type { DiffusionSetup, TrainBatch } from '../../src/training/types.js';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { hasShared } from '../helpers/shared.js';
import { loadTiny } from './helpers.js';

const setup: DiffusionSetup = { alphasCumprod: noiseSchedule(SD_SCHEDULER_CONFIG).alphasCumprod, predictionType: 'epsilon', scalingFactor: 0.18215 };
const opts = { step: 0, micro: 0, dropRate: 0.5, noiseOffset: 0.1, minSnrGamma: 5 };

function distBatch(rows: number[]): TrainBatch {
  const mean = tf.tidy(() => tf.stack(rows.map((r) => tf.fill([4, 6, 4], r)))) as tf.Tensor4D;
  return { captions: rows.map((r) => `caption ${r}`), latentDist: { mean, logvar: tf.fill(mean.shape, -2) as tf.Tensor4D } };
}

describe('prepareMicroBatch', () => {
  it('draws per sample: one batch of 2 sees the same dropout, timesteps, posterior samples and noise as two batches of 1', () => {
    const before = tf.memory().numTensors;
    const g2 = new TorchGenerator(99);
    const both = prepareMicroBatch(distBatch([1, 2]), g2, setup, opts);
    const g1 = new TorchGenerator(99);
    const a = prepareMicroBatch(distBatch([1]), g1, setup, opts);
    const b = prepareMicroBatch(distBatch([2]), g1, setup, opts);
    expect(both.ctx.timesteps).toEqual([...a.ctx.timesteps, ...b.ctx.timesteps]);
    expect(both.ctx.dropped).toEqual([...a.ctx.dropped, ...b.ctx.dropped]);
    expect(both.ctx.captions).toEqual([...a.ctx.captions, ...b.ctx.captions]);
    expect(Array.from(both.ctx.noisyLatents.dataSync())).toEqual([...a.ctx.noisyLatents.dataSync(), ...b.ctx.noisyLatents.dataSync()]);
    expect(Array.from(both.ctx.target.dataSync())).toEqual([...a.ctx.target.dataSync(), ...b.ctx.target.dataSync()]);
    expect(g1.getState()).toEqual(g2.getState());
    for (const m of [both, a, b]) m.dispose();
    expect(tf.memory().numTensors).toBe(before); // the batch's tensors are disposed with the micro-batch
  });

  it('the loss is the element mean without weights, and the weighted per-sample mean with min-SNR / lossWeights', () => {
    const plain = prepareMicroBatch(distBatch([1, 2]), new TorchGenerator(1), setup, { ...opts, minSnrGamma: undefined, noiseOffset: 0 });
    const zero = tf.zerosLike(plain.ctx.target);
    const mse = plain.ctx.lossOf(zero);
    expect(mse.dataSync()[0]).toBeCloseTo(plain.ctx.target.square().mean().dataSync()[0]!, 6);
    const weighted = prepareMicroBatch({ ...distBatch([1, 2]), lossWeights: [1, 0] }, new TorchGenerator(1), setup, { ...opts, minSnrGamma: undefined, noiseOffset: 0 });
    const first = weighted.ctx.target.slice([0], [1]).square().mean().dataSync()[0]!;
    expect(weighted.ctx.lossOf(zero).dataSync()[0]).toBeCloseTo(first / 2, 6);
    tf.dispose([zero, mse]);
    plain.dispose();
    weighted.dispose();
  });

  it('min-SNR-γ weights: min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v', () => {
    const ac = Float32Array.from([0.99, 0.5, 0.01]); // SNR 99, 1, 0.0101…
    const snr = Array.from(ac, (a) => a / (1 - a));
    expect(minSnrWeights([0, 1, 2], ac, 5, 'epsilon')).toEqual([5 / snr[0]!, 1, 1]);
    expect(minSnrWeights([0, 1, 2], ac, 5, 'v_prediction')).toEqual([5 / (snr[0]! + 1), 0.5, snr[2]! / (snr[2]! + 1)]);
  });
});

describe.runIf(hasShared)('prepareMicroBatch with pixels', () => {
  it('encodes pixels with the VAE, samples the posterior, and frees everything', async () => {
    const tiny = await loadTiny();
    const pixels = tf.randomUniform([2, 32, 48, 3], -1, 1, 'float32', 5) as tf.Tensor4D;
    const before = tf.memory().numTensors;
    const mb = prepareMicroBatch({ captions: ['a', 'b'], pixels }, new TorchGenerator(0), tiny.setup, { ...opts, dropRate: 0 });
    expect(mb.ctx.noisyLatents.shape).toEqual([2, 4, 6, 4]);
    mb.dispose();
    expect(tf.memory().numTensors).toBe(before - 1); // the pixels belonged to the batch
    disposePipeline(tiny.model);
  });
});

describe('TorchGenerator.getState / setState', () => {
  it('continues every kind of draw exactly, including the cached scalar normal', () => {
    const g = new TorchGenerator(4242);
    g.randn([3]); // odd count: a cached second Box-Muller value remains
    g.randint(0, 1000, [5]);
    const state = g.getState();
    expect(state.nextDoubleNormal).not.toBeNull();
    const expected = [g.randn([1]), g.randn([20]), g.rand([3]), g.randint(0, 10, [4])].map((x) => Array.from(x));
    const h = new TorchGenerator(1).setState(structuredClone(state));
    expect([h.randn([1]), h.randn([20]), h.rand([3]), h.randint(0, 10, [4])].map((x) => Array.from(x))).toEqual(expected);
    expect(h.initialSeed()).toBe(4242n);
    expect(() => h.setState({ ...state, mt: new Uint32Array(3) })).toThrow(/624 words/);
  });
});
