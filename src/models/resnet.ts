// ResNet block and the two resamplers, shared by the U-Net and the VAE. NHWC throughout.
import * as tf from '@tensorflow/tfjs';
import { Module } from '../nn/module.js';
import { Conv2d, GroupNorm, Linear } from '../nn/layers.js';
import { silu, upsampleNearest } from '../nn/functional.js';

export interface ResnetBlock2DOptions {
  /** Width of the time embedding; `null` for the VAE, whose blocks have no `time_emb_proj`. */
  tembChannels: number | null;
  groups: number;
  /** GroupNorm eps: the U-Net's `norm_eps` (1e-5), 1e-6 in the VAE. */
  eps: number;
}

// Port of diffusers ResnetBlock2D, SD path only (time_embedding_norm="default", no up/down, no FIR):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/resnet.py
export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj?: Linear;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut?: Conv2d;

  constructor(inChannels: number, outChannels: number, opts: ResnetBlock2DOptions) {
    super();
    this.norm1 = new GroupNorm(opts.groups, inChannels, opts.eps);
    this.conv1 = new Conv2d(inChannels, outChannels, 3, { padding: 1 });
    if (opts.tembChannels !== null) this.time_emb_proj = new Linear(opts.tembChannels, outChannels);
    this.norm2 = new GroupNorm(opts.groups, outChannels, opts.eps);
    this.conv2 = new Conv2d(outChannels, outChannels, 3, { padding: 1 });
    // A 1x1 projection only when the channel count changes (diffusers' use_in_shortcut).
    if (inChannels !== outChannels) this.conv_shortcut = new Conv2d(inChannels, outChannels, 1);
  }

  /** x [B, H, W, C_in], temb [B, T] (ignored and allowed absent without time_emb_proj) → [B, H, W, C_out]. */
  forward(x: tf.Tensor4D, temb?: tf.Tensor2D): tf.Tensor4D {
    let h = this.conv1.forward(silu(this.norm1.forward(x))); // [B, H, W, C_out]
    if (this.time_emb_proj) {
      if (!temb) throw new Error('ResnetBlock2D: this block has time_emb_proj and needs a time embedding');
      const t = this.time_emb_proj.forward(silu(temb)); // [B, C_out]
      h = h.add(t.reshape([t.shape[0], 1, 1, t.shape[1]])); // broadcast over H, W
    }
    h = this.conv2.forward(silu(this.norm2.forward(h))); // dropout is identity (p = 0 in SD configs)
    // output_scale_factor is 1 for every SD block, so (shortcut + h) / 1 is left out.
    return (this.conv_shortcut ? this.conv_shortcut.forward(x) : x).add(h);
  }
}

// Port of diffusers Downsample2D (use_conv=True, name="op" → the weight lives at `conv`):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/downsampling.py
export class Downsample2D extends Module {
  readonly conv: Conv2d;

  /**
   * `padding` 1: the U-Net's stride-2 3x3 conv with symmetric padding 1 (H → ceil(H/2)).
   * `padding` 0: the VAE encoder's form. Why asymmetric: the LDM autoencoder pads only bottom and right by one
   * (torch `F.pad(x, (0, 1, 0, 1))`) and then runs a "valid" stride-2 conv, which is an explicit [[0, 1], [0, 1]] here.
   */
  constructor(channels: number, padding: 0 | 1) {
    super();
    const pad: [[number, number], [number, number]] = padding === 1 ? [[1, 1], [1, 1]] : [[0, 1], [0, 1]];
    this.conv = new Conv2d(channels, channels, 3, { stride: 2, padding: pad });
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return this.conv.forward(x); // [B, H, W, C] → [B, ceil(H/2), ceil(W/2), C] (U-Net) / [B, floor(H/2), ...] (VAE, even H)
  }
}

// Port of diffusers Upsample2D (use_conv=True, nearest interpolation, no transposed conv):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/upsampling.py
export class Upsample2D extends Module {
  readonly conv: Conv2d;

  constructor(channels: number) {
    super();
    this.conv = new Conv2d(channels, channels, 3, { padding: 1 });
  }

  /**
   * Nearest ×2, or to `outputSize` [H', W'] when given: the U-Net passes the skip tensor's size when the input is not
   * a multiple of 2^num_upsamplers (diffusers' forward_upsample_size), then a 3x3 conv.
   */
  forward(x: tf.Tensor4D, outputSize?: readonly [number, number]): tf.Tensor4D {
    return this.conv.forward(upsampleNearest(x, outputSize)); // [B, H', W', C]
  }
}
