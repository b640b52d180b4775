import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModule, namedParams } from '../../src/nn/module.js';
import { AutoencoderKL, parseVaeConfig } from '../../src/models/vae.js';
import { ConfigError } from '../../src/errors.js';
import { hasShared } from '../helpers/shared.js';
import { loadParityCase, loadTiny, maxAbsDiff } from '../helpers/parity_case.js';

const report = (what: string, err: number, atol: number): void => console.log(`${what}: max abs err ${err.toExponential(2)} (atol ${atol})`);

describe.runIf(hasShared)('AutoencoderKL on tiny-sd1', () => {
  let vae: AutoencoderKL;

  beforeAll(async () => {
    vae = await loadTiny('vae');
  });
  afterAll(() => disposeModule(vae));

  it('vae_encode: mean, logvar and sample within suggested_atol', async () => {
    const fx = await loadParityCase('vae_encode');
    const image = fx.nhwc('inputs/image');
    const eps = fx.nhwc('inputs/sample_eps');
    const { mean, logvar } = vae.encode(image);
    const sample = vae.sample(mean, logvar, eps);
    for (const [name, got] of [['mean', mean], ['logvar', logvar], ['sample', sample]] as const) {
      const ref = fx.nhwc(`outputs/${name}`);
      const err = await maxAbsDiff(got, ref);
      report(`vae_encode ${name}`, err, fx.atol(name));
      expect(err).toBeLessThanOrEqual(fx.atol(name));
      ref.dispose();
    }
    expect(vae.scalingFactor).toBe(0.18215);
    tf.dispose([image, eps, mean, logvar, sample]);
  });

  it('vae_decode: image within suggested_atol', async () => {
    const fx = await loadParityCase('vae_decode');
    const z = fx.nhwc('inputs/z');
    const ref = fx.nhwc('outputs/image');
    const out = vae.decode(z);
    const err = await maxAbsDiff(out, ref);
    report('vae_decode image', err, fx.atol('image'));
    expect(err).toBeLessThanOrEqual(fx.atol('image'));
    tf.dispose([z, ref, out]);
  });

  it('clamps logvar to [-30, 20]', async () => {
    // A tiny VAE with all-zero weights: the moments are just quant_conv's bias.
    const probe = new AutoencoderKL(parseVaeConfig({ block_out_channels: [32], latent_channels: 4, layers_per_block: 1 }));
    for (const [key, p] of namedParams(probe)) p.set(key === 'quant_conv.bias' ? tf.tensor1d([1, 2, 3, 4, -100, -30, 25, 5]) : tf.zeros([...p.shape]));
    const x = tf.zeros([1, 8, 8, 3]) as tf.Tensor4D;
    const { mean, logvar } = probe.encode(x);
    expect(Array.from(await mean.data()).slice(0, 4)).toEqual([1, 2, 3, 4]);
    expect(Array.from(await logvar.data()).slice(0, 4)).toEqual([-30, -30, 20, 5]);
    tf.dispose([x, mean, logvar]);
    disposeModule(probe);
  });

  it('leaves no tensors behind (encode + sample + decode)', async () => {
    const fx = await loadParityCase('vae_encode');
    const image = fx.nhwc('inputs/image');
    const eps = fx.nhwc('inputs/sample_eps');
    const before = tf.memory().numTensors;
    const img = tf.tidy(() => {
      const { mean, logvar } = vae.encode(image);
      return vae.decode(vae.sample(mean, logvar, eps));
    });
    img.dispose();
    expect(tf.memory().numTensors).toBe(before);
    const { mean, logvar } = vae.encode(image);
    const s = vae.sample(mean, logvar, eps);
    const out = vae.decode(s);
    tf.dispose([mean, logvar, s, out]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([image, eps]);
  });
});

describe('parseVaeConfig', () => {
  it('fills diffusers’ defaults', () => {
    const c = parseVaeConfig({ block_out_channels: [128, 256, 512, 512], layers_per_block: 2, down_block_types: Array(4).fill('DownEncoderBlock2D'), up_block_types: Array(4).fill('UpDecoderBlock2D') });
    expect(c).toMatchObject({ in_channels: 3, out_channels: 3, latent_channels: 4, norm_num_groups: 32, scaling_factor: 0.18215 });
  });

  it('rejects what the SD autoencoder does not have, naming the key', () => {
    expect(() => parseVaeConfig({ act_fn: 'gelu' })).toThrow(ConfigError);
    expect(() => parseVaeConfig({ act_fn: 'gelu' })).toThrow(/'act_fn'/);
    expect(() => parseVaeConfig({ latents_mean: [0, 0, 0, 0] })).toThrow(/'latents_mean'/);
    expect(() => parseVaeConfig({ down_block_types: ['DownBlock2D'] })).toThrow(/'down_block_types' contains "DownBlock2D"/);
    expect(() => parseVaeConfig({ block_out_channels: [32, 64] })).toThrow(/'down_block_types' has 1 entries but block_out_channels has 2/);
  });
});
