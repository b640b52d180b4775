// The U-Net's down, mid and up blocks (SD path: CrossAttn/plain variants, one transformer layer per attention).
// Every block is a plain straight-line forward; UNet2DConditionModel owns the skip stack and the tidy scopes.
// All five are ported from diffusers' unet_2d_blocks.py:
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/unets/unet_2d_blocks.py
import * as tf from '@tensorflow/tfjs';
import { Module } from '../nn/module.js';
import { Downsample2D, ResnetBlock2D, Upsample2D } from './resnet.js';
import { Transformer2DModel, type AttentionCallOptions } from './attention.js';

/** What every U-Net block needs to build its ResNets and transformers. */
export interface BlockOptions {
  tembChannels: number;
  groups: number;
  /** `norm_eps` of the ResNets (the transformers' GroupNorm uses 1e-6 regardless). */
  eps: number;
  numLayers: number;
  /** Attention heads (diffusers' `attention_head_dim` for SD1/SD2, see unet.ts). Unused by plain blocks. */
  heads: number;
  crossAttentionDim: number;
  useLinearProjection: boolean;
  /** BasicTransformerBlocks per Transformer2DModel (`transformer_layers_per_block`, 1 for SD1/SD2). */
  transformerLayers: number;
}

/** A down block's output: the new hidden state and every tensor it pushes on the skip stack, in push order. */
// (a type alias, not an interface, so that it is a TensorContainer and can be returned from tf.tidy)
export type DownOutput = {
  h: tf.Tensor4D;
  skips: tf.Tensor4D[];
};

const resnetOpts = (o: BlockOptions) => ({ tembChannels: o.tembChannels, groups: o.groups, eps: o.eps });

const transformer = (channels: number, o: BlockOptions): Transformer2DModel =>
  new Transformer2DModel(o.heads, channels / o.heads, channels, {
    crossAttentionDim: o.crossAttentionDim,
    groups: o.groups,
    useLinearProjection: o.useLinearProjection,
    numLayers: o.transformerLayers,
  });

// diffusers CrossAttnDownBlock2D
export class CrossAttnDownBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  readonly attentions: Transformer2DModel[];
  readonly downsamplers?: [Downsample2D];

  constructor(inChannels: number, outChannels: number, addDownsample: boolean, o: BlockOptions) {
    super();
    this.resnets = Array.from({ length: o.numLayers }, (_, j) => new ResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, resnetOpts(o)));
    this.attentions = Array.from({ length: o.numLayers }, () => transformer(outChannels, o));
    if (addDownsample) this.downsamplers = [new Downsample2D(outChannels, 1)];
  }

  forward(x: tf.Tensor4D, temb: tf.Tensor2D, context: tf.Tensor3D, opts: AttentionCallOptions = {}): DownOutput {
    const skips: tf.Tensor4D[] = [];
    let h = x;
    this.resnets.forEach((resnet, j) => {
      h = resnet.forward(h, temb);
      h = this.attentions[j]!.forward(h, context, opts);
      skips.push(h);
    });
    if (this.downsamplers) {
      h = this.downsamplers[0].forward(h); // [B, ceil(H/2), ceil(W/2), C]
      skips.push(h);
    }
    return { h, skips };
  }
}

// diffusers DownBlock2D
export class DownBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  readonly downsamplers?: [Downsample2D];

  constructor(inChannels: number, outChannels: number, addDownsample: boolean, o: BlockOptions) {
    super();
    this.resnets = Array.from({ length: o.numLayers }, (_, j) => new ResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, resnetOpts(o)));
    if (addDownsample) this.downsamplers = [new Downsample2D(outChannels, 1)];
  }

  forward(x: tf.Tensor4D, temb: tf.Tensor2D): DownOutput {
    const skips: tf.Tensor4D[] = [];
    let h = x;
    for (const resnet of this.resnets) {
      h = resnet.forward(h, temb);
      skips.push(h);
    }
    if (this.downsamplers) {
      h = this.downsamplers[0].forward(h);
      skips.push(h);
    }
    return { h, skips };
  }
}

// diffusers UNetMidBlock2DCrossAttn: resnets.0 → attentions.0 → resnets.1 (output_scale_factor 1)
export class UNetMidBlock2DCrossAttn extends Module {
  readonly attentions: Transformer2DModel[];
  readonly resnets: ResnetBlock2D[];

  constructor(channels: number, o: BlockOptions) {
    super();
    this.attentions = [transformer(channels, o)];
    this.resnets = [new ResnetBlock2D(channels, channels, resnetOpts(o)), new ResnetBlock2D(channels, channels, resnetOpts(o))];
  }

  forward(x: tf.Tensor4D, temb: tf.Tensor2D, context: tf.Tensor3D, opts: AttentionCallOptions = {}): tf.Tensor4D {
    let h = this.resnets[0]!.forward(x, temb);
    this.attentions.forEach((attn, j) => {
      h = attn.forward(h, context, opts);
      h = this.resnets[j + 1]!.forward(h, temb);
    });
    return h;
  }
}

/**
 * The ResNets of an up block: the j-th one takes the running hidden state (prev_output_channel wide for j = 0) plus
 * a popped skip (the last one pops the skip of the previous level, `inChannels` wide).
 */
function upResnets(inChannels: number, prevOutputChannels: number, outChannels: number, o: BlockOptions): ResnetBlock2D[] {
  return Array.from({ length: o.numLayers }, (_, j) => {
    const skipChannels = j === o.numLayers - 1 ? inChannels : outChannels;
    const hiddenChannels = j === 0 ? prevOutputChannels : outChannels;
    return new ResnetBlock2D(hiddenChannels + skipChannels, outChannels, resnetOpts(o));
  });
}

/** `cat([hidden, skip], dim=1)` in NCHW is the channel axis, the last one in NHWC. */
const catSkip = (h: tf.Tensor4D, skip: tf.Tensor4D): tf.Tensor4D => tf.concat([h, skip], 3); // [B, H, W, C_h + C_skip]

// diffusers UpBlock2D
export class UpBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers?: [Upsample2D];

  constructor(inChannels: number, prevOutputChannels: number, outChannels: number, addUpsample: boolean, o: BlockOptions) {
    super();
    this.resnets = upResnets(inChannels, prevOutputChannels, outChannels, o);
    if (addUpsample) this.upsamplers = [new Upsample2D(outChannels)];
  }

  /** `skips` are this block's skip tensors in push order (the last one is consumed first). */
  forward(x: tf.Tensor4D, skips: tf.Tensor4D[], temb: tf.Tensor2D, upsampleSize?: [number, number]): tf.Tensor4D {
    let h = x;
    this.resnets.forEach((resnet, j) => {
      h = resnet.forward(catSkip(h, skips[skips.length - 1 - j]!), temb);
    });
    if (this.upsamplers) h = this.upsamplers[0].forward(h, upsampleSize);
    return h;
  }
}

// diffusers CrossAttnUpBlock2D
export class CrossAttnUpBlock2D extends Module {
  readonly attentions: Transformer2DModel[];
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers?: [Upsample2D];

  constructor(inChannels: number, prevOutputChannels: number, outChannels: number, addUpsample: boolean, o: BlockOptions) {
    super();
    this.attentions = Array.from({ length: o.numLayers }, () => transformer(outChannels, o));
    this.resnets = upResnets(inChannels, prevOutputChannels, outChannels, o);
    if (addUpsample) this.upsamplers = [new Upsample2D(outChannels)];
  }

  forward(
    x: tf.Tensor4D,
    skips: tf.Tensor4D[],
    temb: tf.Tensor2D,
    context: tf.Tensor3D,
    upsampleSize?: [number, number],
    opts: AttentionCallOptions = {},
  ): tf.Tensor4D {
    let h = x;
    this.resnets.forEach((resnet, j) => {
      h = resnet.forward(catSkip(h, skips[skips.length - 1 - j]!), temb);
      h = this.attentions[j]!.forward(h, context, opts);
    });
    if (this.upsamplers) h = this.upsamplers[0].forward(h, upsampleSize);
    return h;
  }
}

export type DownBlock = CrossAttnDownBlock2D | DownBlock2D;
export type UpBlock = CrossAttnUpBlock2D | UpBlock2D;
