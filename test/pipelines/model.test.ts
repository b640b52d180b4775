// loadModel: diffusers folder and original single file give the same networks; hashes; VAE overrides.
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { namedParams } from '../../src/nn/module.js';
import { loadModel, type SdModel } from '../../src/pipelines/model.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { TINY } from './helpers.js';

const SINGLE = fixture('tiny-sd1-original', 'tiny-sd1.safetensors');
const sha10 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 10);

/** Largest |a - b| over the parameters of two modules with the same structure. */
function paramDiff(a: object, b: object): number {
  const pb = namedParams(b);
  let worst = 0;
  for (const [k, p] of namedParams(a)) worst = Math.max(worst, tf.tidy(() => tf.max(tf.abs(tf.sub(p.t, pb.get(k)!.t))).dataSync()[0]!));
  return worst;
}

describe.runIf(hasShared)('loadModel', () => {
  it('a diffusers folder: sd1, not inpainting, its scheduler, tokenizer, name and U-Net weights hash', async () => {
    const m = await loadModel(TINY);
    try {
      expect([m.family, m.inpainting, m.name, m.predictionType, m.vaeName]).toEqual(['sd1', false, 'tiny-sd1', 'epsilon', undefined]);
      expect(m.schedulerConfig.steps_offset).toBe(1);
      expect(m.tokenizer.padTokenId).toBe(49407);
      expect(await m.hash()).toBe(sha10(join(TINY, 'unet', 'diffusion_pytorch_model.safetensors')));
      expect(await m.vaeHash()).toBeUndefined();
    } finally {
      m.dispose();
    }
  });

  it('the single file holds the same weights; its hash is the file’s; prediction type can be set', async () => {
    const before = tf.memory().numTensors;
    const [a, b] = [await loadModel(TINY), await loadModel(SINGLE, { predictionType: 'v_prediction', overrides: { text_encoder: { num_attention_heads: 4 } } })];
    try {
      expect([b.family, b.name, b.predictionType, b.schedulerConfig.prediction_type]).toEqual(['sd1', 'tiny-sd1', 'v_prediction', 'v_prediction']);
      expect(await b.hash()).toBe(sha10(SINGLE));
      expect(paramDiff(a.unet, b.unet)).toBe(0);
      expect(paramDiff(a.vae, b.vae)).toBe(0);
      expect(paramDiff(a.textEncoder, b.textEncoder)).toBe(0);
    } finally {
      a.dispose();
      b.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a separate VAE: a diffusers folder, a diffusers-layout file, or the VAE inside an original checkpoint', async () => {
    const base = await loadModel(TINY);
    const models: SdModel[] = [];
    try {
      for (const vae of [join(TINY, 'vae'), join(TINY, 'vae', 'diffusion_pytorch_model.safetensors'), SINGLE]) {
        const m = await loadModel(TINY, { vae });
        models.push(m);
        expect(paramDiff(base.vae, m.vae)).toBe(0);
        expect(m.vaeName).toBe(vae === SINGLE ? 'tiny-sd1' : vae.endsWith('vae') ? 'vae' : 'diffusion_pytorch_model');
        expect(await m.vaeHash()).toBe(sha10(vae.endsWith('vae') ? join(vae, 'diffusion_pytorch_model.safetensors') : vae));
      }
      await expect(loadModel(TINY, { vae: join(TINY, 'unet', 'diffusion_pytorch_model.safetensors') })).rejects.toThrow(/not a VAE/);
    } finally {
      base.dispose();
      for (const m of models) m.dispose();
    }
  });

  it('a missing path is a FormatError', async () => {
    await expect(loadModel('/nonexistent/model.safetensors')).rejects.toThrow(/\/nonexistent\/model\.safetensors: no such file or folder/);
  });
});
