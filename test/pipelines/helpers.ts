// Shared by the pipeline tests: the tiny SD1 model, a U-Net call recorder, a 9-channel (inpainting) variant of the
// tiny U-Net, and small image helpers.
import * as tf from '@tensorflow/tfjs';
import { UNet2DConditionModel } from '../../src/models/unet.js';
import { disposeModule, namedParams } from '../../src/nn/module.js';
import type { FloatImage } from '../../src/pipelines/images.js';
import { makeModel, type SdModel } from '../../src/pipelines/model.js';
import { fixture } from '../helpers/shared.js';

export const TINY = fixture('tiny-sd1');

/** The shapes of every U-Net call (sample, context) until `restore()`. */
export function recordUnetCalls(unet: UNet2DConditionModel): { calls: Array<{ sample: number[]; context: number[]; first?: Float32Array }>; restore(): void } {
  const calls: Array<{ sample: number[]; context: number[]; first?: Float32Array }> = [];
  const original = unet.forward;
  unet.forward = function (sample, timestep, ctx, opts) {
    calls.push({ sample: [...sample.shape], context: [...ctx.shape], ...(calls.length === 0 ? { first: sample.dataSync() as Float32Array } : {}) });
    return original.call(this, sample, timestep, ctx, opts);
  };
  return { calls, restore: () => void (unet.forward = original) };
}

/**
 * The tiny model with a 9-channel U-Net: the same weights, and conv_in extended with small deterministic weights for
 * the 5 extra input channels (mask + masked-image latents). Shares the VAE, text encoder and tokenizer with `base`.
 */
export function inpaintingVariant(base: SdModel): SdModel {
  const unet = new UNet2DConditionModel({ ...base.unet.config, in_channels: 9 });
  const src = namedParams(base.unet);
  for (const [key, p] of namedParams(unet)) {
    const from = src.get(key)!.t;
    if (key !== 'conv_in.weight') {
      p.set(from.clone(), key);
      continue;
    }
    const [kh, kw, , out] = from.shape as [number, number, number, number];
    const extra = tf.tidy(() => tf.mul(tf.sin(tf.range(0, kh * kw * 5 * out).reshape([kh, kw, 5, out])), 0.05));
    p.set(tf.tidy(() => tf.concat([from, extra], 2)), key);
    extra.dispose();
  }
  const model = makeModel({ unet, vae: base.vae, textEncoder: base.textEncoder }, { tokenizer: base.tokenizer, schedulerConfig: base.schedulerConfig, path: 'tiny-sd1-inpainting' });
  return { ...model, dispose: () => disposeModule(unet) };
}

/** A smooth deterministic RGB test picture in [-1, 1]. */
export function testPicture(width: number, height: number): FloatImage {
  const data = new Float32Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = Math.round(((x / width) * 255)) / 127.5 - 1;
      data[i + 1] = Math.round((y / height) * 255) / 127.5 - 1;
      data[i + 2] = Math.round(((x + y) % 32) * 8) / 127.5 - 1;
    }
  }
  return { width, height, channels: 3, data };
}

/** A mask (1 = repaint) that is 1 inside the rectangle [x0, x1) × [y0, y1). */
export function rectMask(width: number, height: number, x0: number, y0: number, x1: number, y1: number): FloatImage {
  const data = new Float32Array(width * height);
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) data[y * width + x] = 1;
  return { width, height, channels: 1, data };
}

/** 8-bit RGB of a [-1, 1] FloatImage, as the PNG writer rounds it. */
export const toBytes = (img: FloatImage): Uint8Array => Uint8Array.from(img.data, (v) => Math.round(Math.min(1, Math.max(0, v / 2 + 0.5)) * 255));

export const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
