// Classifier-free guidance around the U-Net: the sampler's `Denoiser`. Every model call is ONE batched U-Net call
// holding the unconditional half and the conditional half(s), as diffusers batches `[uncond, cond]` and A1111's
// CFGDenoiser batches `[cond_1 … cond_k, uncond]`:
//
//   out = u + Σ_i (c_i − u)·(w_i·s)        (A1111's AND; one part of weight 1 is diffusers' u + s·(c − u))
//
// Guidance scale 1 with a single part of weight 1 skips the unconditional half (out = c). The negative prompt is the
// unconditional context (the empty prompt when none is given). v-prediction models pass straight through: the
// sampler converts v. 9-channel inpainting U-Nets get `[latents, mask, masked_image_latents]` concatenated on the
// channel axis after the sampler's input scaling, as diffusers does.
//
// Contexts of different lengths (a prompt longer than 75 tokens with a short negative, or AND parts of different
// lengths) are padded with empty-prompt chunks to the longest (A1111's "Pad prompt/negative prompt" option). A1111's
// default instead makes separate U-Net calls for them; padding keeps one call and changes the result slightly.
import * as tf from '@tensorflow/tfjs';
import type { UNet2DConditionModel } from '../models/unet.js';
import type { Denoiser } from '../samplers/types.js';
import { padContexts, type Conditioning } from './conditioning.js';

export interface CfgDenoiserOptions {
  unet: UNet2DConditionModel;
  conditioning: Conditioning;
  guidanceScale: number;
  /** Images in the latents batch (B); the contexts [1, T, C] are repeated for each. */
  batch: number;
  /** 9-channel inpainting inputs: mask [B, h, w, 1] (1 = repaint) and masked-image latents [B, h, w, 4]. Not disposed. */
  inpaint?: { mask: tf.Tensor4D; maskedImageLatents: tf.Tensor4D };
  /** Attention slicing (see UNetForwardOptions). */
  attentionSliceSize?: number;
}

export interface CfgDenoiser extends Denoiser {
  /** U-Net calls made so far; the next call uses the contexts of this (0-based) step. */
  readonly calls: number;
}

/**
 * The guided model output for latents x [B, h, w, c] (already scaled by the sampler) at timestep t. Call it inside a
 * tidy (the sampler loop does); it keeps no tensors. Counts its calls: call k uses the prompt-editing contexts of step k.
 */
export function createCfgDenoiser(opts: CfgDenoiserOptions): CfgDenoiser {
  const { unet, conditioning, guidanceScale: scale, batch } = opts;
  if (!Number.isFinite(scale)) throw new RangeError(`guidance scale must be a finite number, got ${scale}`);
  const expectIn = unet.config.in_channels;
  let calls = 0;
  const denoise = (x: tf.Tensor4D, t: number): tf.Tensor4D => {
    if (x.shape[0] !== batch) throw new Error(`CFG denoiser built for a batch of ${batch}, got latents of batch ${x.shape[0]}`);
    const { conds, uncond } = conditioning.at(calls++);
    const single = conds.length === 1 && conds[0]!.weight === 1;
    const withUncond = !(single && scale === 1);
    const contexts = [...(withUncond ? [uncond] : []), ...conds.map((c) => c.context)];
    const n = contexts.length;

    let xIn = x;
    if (opts.inpaint) xIn = tf.concat([x, opts.inpaint.mask, opts.inpaint.maskedImageLatents], 3);
    if (xIn.shape[3] !== expectIn) {
      throw new Error(`the U-Net takes ${expectIn} input channels, the sampler gives ${xIn.shape[3]}${expectIn === 9 ? ' (an inpainting model needs a mask and masked-image latents)' : ''}`);
    }
    const ctx = tf.concat(padContexts(contexts, conditioning.empty).map((c) => (batch === 1 ? c : tf.tile(c, [batch, 1, 1]))), 0) as tf.Tensor3D; // [n·B, T, C]
    const out = unet.forward(n === 1 ? xIn : (tf.concat(Array<tf.Tensor4D>(n).fill(xIn), 0) as tf.Tensor4D), t, ctx, {
      attentionSliceSize: opts.attentionSliceSize,
    }); // [n·B, h, w, c]
    if (!withUncond) return out;
    const halves = n === 1 ? [out] : (tf.split(out, n, 0) as tf.Tensor4D[]);
    const u = halves[0]!;
    let guided = u;
    conds.forEach(({ weight }, i) => {
      guided = tf.add(guided, tf.mul(tf.sub(halves[i + 1]!, u), weight * scale));
    });
    return guided;
  };
  Object.defineProperty(denoise, 'calls', { get: () => calls });
  return denoise as CfgDenoiser;
}
