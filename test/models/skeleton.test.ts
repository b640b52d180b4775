// The full-size skeletons declare exactly diffusers' state dict: same keys, same shapes once the one layout rule
// (rank-4 conv weights OIHW → HWIO) is applied. Nothing is allocated: constructors only declare Params.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { namedParams, paramCount, type Module } from '../../src/nn/module.js';
import { parseUNetConfig, UNet2DConditionModel } from '../../src/models/unet.js';
import { AutoencoderKL, parseVaeConfig } from '../../src/models/vae.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface Manifest {
  diffusers_configs: { unet: unknown; vae: unknown };
  diffusers: Record<'unet' | 'vae', { param_count: number; num_tensors: number; tensors: Record<string, number[]> }>;
}

/** PyTorch shape → the shape our Param declares: [O, I, kh, kw] → [kh, kw, I, O]; everything else as is. */
const tfjsLayout = (s: number[]): number[] => (s.length === 4 ? [s[2]!, s[3]!, s[1]!, s[0]!] : s);

function compare(model: Module, expected: Record<string, number[]>): void {
  const ours = namedParams(model);
  const missing = Object.keys(expected).filter((k) => !ours.has(k));
  const extra = [...ours.keys()].filter((k) => !(k in expected));
  const wrong = Object.entries(expected)
    .filter(([k, s]) => ours.has(k) && ours.get(k)!.shape.join(',') !== tfjsLayout(s).join(','))
    .map(([k, s]) => `${k}: ours [${ours.get(k)!.shape}] vs [${tfjsLayout(s)}]`);
  expect({ missing, extra, wrong }).toEqual({ missing: [], extra: [], wrong: [] });
}

describe.runIf(hasShared).each(['sd15', 'sd15_inpaint', 'sd21_v'])('%s skeleton', (name) => {
  const manifest = (): Manifest => JSON.parse(readFileSync(fixture('manifests', `${name}.json`), 'utf8')) as Manifest;

  it('UNet2DConditionModel declares exactly the diffusers U-Net state dict', () => {
    const m = manifest();
    const before = tf.memory().numTensors;
    const unet = new UNet2DConditionModel(parseUNetConfig(m.diffusers_configs.unet));
    expect(tf.memory().numTensors).toBe(before); // declared, not allocated
    expect(namedParams(unet).size).toBe(m.diffusers.unet.num_tensors); // 686
    compare(unet, m.diffusers.unet.tensors);
    expect(paramCount(unet)).toBe(m.diffusers.unet.param_count);
  });

  it('AutoencoderKL declares exactly the diffusers VAE state dict', () => {
    const m = manifest();
    const before = tf.memory().numTensors;
    const vae = new AutoencoderKL(parseVaeConfig(m.diffusers_configs.vae));
    expect(tf.memory().numTensors).toBe(before);
    expect(namedParams(vae).size).toBe(m.diffusers.vae.num_tensors); // 248
    compare(vae, m.diffusers.vae.tensors);
    expect(paramCount(vae)).toBe(m.diffusers.vae.param_count);
  });
});
