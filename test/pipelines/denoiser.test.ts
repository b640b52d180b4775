// The CFG denoiser with a stand-in U-Net whose output reveals its inputs: the guidance formula (incl. AND weights),
// batch layout, context padding, 9-channel concatenation and prompt-editing steps.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import type { UNet2DConditionModel } from '../../src/models/unet.js';
import { Conditioning } from '../../src/pipelines/conditioning.js';
import { createCfgDenoiser } from '../../src/pipelines/denoiser.js';

/** out[b] = x[b]·(1 + mean of its context) (+ the extra channels' sum when 9 channels come in), recording calls. */
function fakeUnet(inChannels = 4) {
  const calls: Array<{ sample: number[]; context: number[] }> = [];
  const unet = {
    config: { in_channels: inChannels },
    forward(x: tf.Tensor4D, _t: unknown, ctx: tf.Tensor3D) {
      calls.push({ sample: x.shape, context: ctx.shape });
      const m = tf.mean(ctx, [1, 2]).reshape([-1, 1, 1, 1]);
      const lat = x.slice([0, 0, 0, 0], [-1, -1, -1, 4]);
      const extra = inChannels > 4 ? tf.sum(x.slice([0, 0, 0, 4], [-1, -1, -1, -1]), 3, true) : tf.scalar(0);
      return tf.add(tf.mul(lat, tf.add(m, 1)), extra) as tf.Tensor4D;
    },
  } as unknown as UNet2DConditionModel;
  return { unet, calls };
}

const ctx = (value: number, tokens = 77) => tf.fill([1, tokens, 2], value) as tf.Tensor3D;
const value = (t: tf.Tensor) => Array.from(t.dataSync());

describe('CFG denoiser', () => {
  it('one call [uncond, cond] with batch 2B: u + s·(c − u)', () => {
    const { unet, calls } = fakeUnet();
    const cond = Conditioning.fixed(ctx(3), ctx(1));
    const d = createCfgDenoiser({ unet, conditioning: cond, guidanceScale: 7.5, batch: 2 });
    const x = tf.ones([2, 1, 1, 4]) as tf.Tensor4D;
    const out = tf.tidy(() => d(x, 10));
    expect(calls).toEqual([{ sample: [4, 1, 1, 4], context: [4, 77, 2] }]);
    expect(value(out)).toEqual(Array(8).fill(2 + 7.5 * (4 - 2))); // u = 2, c = 4
    expect(d.calls).toBe(1);
    tf.dispose([x, out]);
    cond.dispose();
  });

  it('guidance 1 with one prompt part skips the unconditional half', () => {
    const { unet, calls } = fakeUnet();
    const cond = Conditioning.fixed(ctx(3), ctx(1));
    const x = tf.ones([3, 1, 1, 4]) as tf.Tensor4D;
    const out = tf.tidy(() => createCfgDenoiser({ unet, conditioning: cond, guidanceScale: 1, batch: 3 })(x, 1));
    expect(calls).toEqual([{ sample: [3, 1, 1, 4], context: [3, 77, 2] }]);
    expect(value(out)).toEqual(Array(12).fill(4));
    tf.dispose([x, out]);
    cond.dispose();
  });

  it("AND parts: u + Σ w_i·s·(c_i − u) (A1111's combine_denoised), one call with (1 + k)·B", () => {
    const { unet, calls } = fakeUnet();
    const cond = new Conditioning(
      [
        { weight: 1, schedule: [{ endAtStep: Infinity, cond: ctx(3) }] },
        { weight: 0.5, schedule: [{ endAtStep: Infinity, cond: ctx(5) }] },
      ],
      [{ endAtStep: Infinity, cond: ctx(1) }],
      undefined,
    );
    const x = tf.ones([1, 1, 1, 4]) as tf.Tensor4D;
    const out = tf.tidy(() => createCfgDenoiser({ unet, conditioning: cond, guidanceScale: 2, batch: 1 })(x, 1));
    expect(calls).toEqual([{ sample: [3, 1, 1, 4], context: [3, 77, 2] }]);
    expect(value(out)).toEqual(Array(4).fill(2 + 1 * 2 * (4 - 2) + 0.5 * 2 * (6 - 2)));
    tf.dispose([x, out]);
    cond.dispose();
  });

  it('pads a shorter context with empty-prompt chunks so both halves fit one call', () => {
    const { unet, calls } = fakeUnet();
    const cond = Conditioning.fixed(ctx(3, 154), ctx(1), ctx(0));
    const x = tf.ones([1, 1, 1, 4]) as tf.Tensor4D;
    const out = tf.tidy(() => createCfgDenoiser({ unet, conditioning: cond, guidanceScale: 2, batch: 1 })(x, 1));
    expect(calls).toEqual([{ sample: [2, 1, 1, 4], context: [2, 154, 2] }]);
    expect(value(out)).toEqual(Array(4).fill(1.5 + 2 * (4 - 1.5))); // uncond mean: (1·77 + 0·77)/154
    tf.dispose([x, out]);
    expect(() => tf.tidy(() => createCfgDenoiser({ unet, conditioning: Conditioning.fixed(ctx(3, 154), ctx(1)), guidanceScale: 2, batch: 1 })(x, 1))).toThrow(
      /cannot pad/,
    );
    cond.dispose();
  });

  it('9 channels: [latents, mask, masked-image latents] on the channel axis', () => {
    const { unet, calls } = fakeUnet(9);
    const cond = Conditioning.fixed(ctx(0), ctx(0));
    const x = tf.ones([1, 1, 1, 4]) as tf.Tensor4D;
    const mask = tf.fill([1, 1, 1, 1], 0.5) as tf.Tensor4D;
    const masked = tf.fill([1, 1, 1, 4], 2) as tf.Tensor4D;
    const out = tf.tidy(() => createCfgDenoiser({ unet, conditioning: cond, guidanceScale: 3, batch: 1, inpaint: { mask, maskedImageLatents: masked } })(x, 1));
    expect(calls).toEqual([{ sample: [2, 1, 1, 9], context: [2, 77, 2] }]);
    expect(value(out)).toEqual(Array(4).fill(1 + 8.5));
    const plain = fakeUnet(9);
    expect(() => tf.tidy(() => createCfgDenoiser({ unet: plain.unet, conditioning: cond, guidanceScale: 3, batch: 1 })(x, 1))).toThrow(/needs a mask/);
    tf.dispose([x, mask, masked, out]);
    cond.dispose();
  });

  it("prompt editing: call k uses the context with step k <= endAtStep (A1111's 0-based self.step)", () => {
    const { unet } = fakeUnet();
    const cond = new Conditioning(
      [{ weight: 1, schedule: [{ endAtStep: 1, cond: ctx(1) }, { endAtStep: 3, cond: ctx(3) }] }],
      [{ endAtStep: Infinity, cond: ctx(0) }],
      undefined,
    );
    expect(cond.constant).toBe(false);
    const d = createCfgDenoiser({ unet, conditioning: cond, guidanceScale: 1, batch: 1 });
    const x = tf.ones([1, 1, 1, 4]) as tf.Tensor4D;
    const seen = [0, 1, 2, 3, 4].map(() => tf.tidy(() => d(x, 1).dataSync()[0]));
    expect(seen).toEqual([2, 2, 4, 4, 4]); // steps 0, 1 → first; then the second (and it stays the last)
    x.dispose();
    cond.dispose();
  });
});
