// The conditional U-Net of Stable Diffusion 1.x/2.x (diffusers UNet2DConditionModel, SD path only), NHWC.
import * as tf from '@tensorflow/tfjs';
import { Module } from '../nn/module.js';
import { Conv2d, GroupNorm } from '../nn/layers.js';
import { silu } from '../nn/functional.js';
import { ConfigReader } from './diffusers_config.js';
import { TimestepEmbedding, timestepProjection } from './embeddings.js';
import type { AttentionCallOptions } from './attention.js';
import {
  CrossAttnDownBlock2D,
  CrossAttnUpBlock2D,
  DownBlock2D,
  UNetMidBlock2DCrossAttn,
  UpBlock2D,
  type BlockOptions,
  type DownBlock,
  type UpBlock,
} from './unet_blocks.js';

export const UNET_DOWN_BLOCK_TYPES = ['CrossAttnDownBlock2D', 'DownBlock2D'] as const;
export const UNET_UP_BLOCK_TYPES = ['UpBlock2D', 'CrossAttnUpBlock2D'] as const;
export type UNetDownBlockType = (typeof UNET_DOWN_BLOCK_TYPES)[number];
export type UNetUpBlockType = (typeof UNET_UP_BLOCK_TYPES)[number];

/** The keys of diffusers' `unet/config.json` that the SD U-Net uses, with diffusers' names. */
export interface UNet2DConditionConfig {
  sample_size: number | null;
  /** 4, or 9 for inpainting U-Nets (latents + mask + masked-image latents). */
  in_channels: number;
  out_channels: number;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: UNetDownBlockType[];
  up_block_types: UNetUpBlockType[];
  block_out_channels: number[];
  layers_per_block: number;
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number;
  transformer_layers_per_block: number;
  /**
   * The number of attention heads, despite the name (diffusers keeps the historical mis-naming): SD1's 8 means 8 heads,
   * SD2's [5, 10, 20, 20] means 5/10/20/20 heads of 64 channels. A list is indexed by down block.
   */
  attention_head_dim: number | number[];
  /** Takes precedence over `attention_head_dim` when set. */
  num_attention_heads: number | number[] | null;
  use_linear_projection: boolean;
  /** SD2.1 sets it. It only changes fp16 runs (q·kᵀ in float32); tfjs computes in float32 anyway, so it is a no-op here. */
  upcast_attention: boolean;
}

/**
 * Read a diffusers `unet/config.json` (already JSON-parsed): fills diffusers' defaults (v0.27.2 signature) and throws
 * a ConfigError naming the key for anything outside the SD 1.x/2.x architecture.
 */
export function parseUNetConfig(json: unknown, source = 'unet config'): UNet2DConditionConfig {
  const r = new ConfigReader(json, source);
  const sd = 'sdtrain implements the Stable Diffusion 1.x/2.x U-Net';
  r.onlyDefault('center_input_sample', [false], sd);
  r.onlyDefault('mid_block_type', ['UNetMidBlock2DCrossAttn'], sd);
  r.onlyDefault('only_cross_attention', [false], sd);
  r.onlyDefault('downsample_padding', [1], sd);
  r.onlyDefault('mid_block_scale_factor', [1], sd);
  r.onlyDefault('dropout', [0], 'dropout inside the U-Net is not implemented');
  r.onlyDefault('act_fn', ['silu'], sd);
  r.onlyDefault('reverse_transformer_layers_per_block', [null], sd);
  r.onlyDefault('encoder_hid_dim', [null], sd);
  r.onlyDefault('encoder_hid_dim_type', [null], sd);
  r.onlyDefault('dual_cross_attention', [false], sd);
  r.onlyDefault('class_embed_type', [null], 'class embeddings are not implemented');
  r.onlyDefault('addition_embed_type', [null], 'added (SDXL-style) embeddings are not implemented');
  r.onlyDefault('addition_time_embed_dim', [null], 'added (SDXL-style) embeddings are not implemented');
  r.onlyDefault('num_class_embeds', [null], 'class embeddings are not implemented');
  r.onlyDefault('projection_class_embeddings_input_dim', [null], 'class embeddings are not implemented');
  r.onlyDefault('class_embeddings_concat', [false], 'class embeddings are not implemented');
  r.onlyDefault('resnet_time_scale_shift', ['default'], sd);
  r.onlyDefault('resnet_skip_time_act', [false], sd);
  r.onlyDefault('resnet_out_scale_factor', [1], sd);
  r.onlyDefault('time_embedding_type', ['positional'], sd);
  r.onlyDefault('time_embedding_dim', [null], sd);
  r.onlyDefault('time_embedding_act_fn', [null], sd);
  r.onlyDefault('timestep_post_act', [null], sd);
  r.onlyDefault('time_cond_proj_dim', [null], sd);
  r.onlyDefault('conv_in_kernel', [3], sd);
  r.onlyDefault('conv_out_kernel', [3], sd);
  r.onlyDefault('attention_type', ['default'], sd);
  r.onlyDefault('mid_block_only_cross_attention', [null, false], sd);
  r.onlyDefault('cross_attention_norm', [null], sd);

  const cfg: UNet2DConditionConfig = {
    sample_size: r.intOrNull('sample_size', null),
    in_channels: r.int('in_channels', 4, 1),
    out_channels: r.int('out_channels', 4, 1),
    flip_sin_to_cos: r.bool('flip_sin_to_cos', true),
    freq_shift: r.int('freq_shift', 0),
    down_block_types: r.enumList(
      'down_block_types',
      ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
      UNET_DOWN_BLOCK_TYPES,
      'supported down blocks',
    ),
    up_block_types: r.enumList(
      'up_block_types',
      ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
      UNET_UP_BLOCK_TYPES,
      'supported up blocks',
    ),
    block_out_channels: r.intList('block_out_channels', [320, 640, 1280, 1280]),
    layers_per_block: r.int('layers_per_block', 2, 1),
    norm_num_groups: r.int('norm_num_groups', 32, 1),
    norm_eps: r.num('norm_eps', 1e-5),
    cross_attention_dim: r.int('cross_attention_dim', 1280, 1),
    transformer_layers_per_block: r.int('transformer_layers_per_block', 1, 1),
    attention_head_dim: r.intOrList('attention_head_dim', 8),
    num_attention_heads: r.raw('num_attention_heads', null) === null ? null : r.intOrList('num_attention_heads', null),
    use_linear_projection: r.bool('use_linear_projection', false),
    upcast_attention: r.bool('upcast_attention', false),
  };

  const n = cfg.block_out_channels.length;
  if (cfg.down_block_types.length !== n) r.fail('down_block_types', `has ${cfg.down_block_types.length} entries but block_out_channels has ${n}`);
  if (cfg.up_block_types.length !== n) r.fail('up_block_types', `has ${cfg.up_block_types.length} entries but block_out_channels has ${n}`);
  const headsKey = cfg.num_attention_heads !== null ? 'num_attention_heads' : 'attention_head_dim';
  const heads = headsPerDownBlock(cfg);
  if (heads.length !== n) r.fail(headsKey, `has ${heads.length} entries but block_out_channels has ${n}`);
  cfg.block_out_channels.forEach((c, i) => {
    if (c % cfg.norm_num_groups !== 0) r.fail('block_out_channels', `[${i}] = ${c} is not divisible by norm_num_groups = ${cfg.norm_num_groups}`);
    if (c % heads[i]! !== 0) r.fail(headsKey, `[${i}] = ${heads[i]} heads do not divide block_out_channels[${i}] = ${c}`);
  });
  return cfg;
}

/**
 * Heads of each down block. Why `attention_head_dim`: diffusers' "num_attention_heads = num_attention_heads or
 * attention_head_dim" (unet_2d_condition.py) — SD configs store the head count under the wrong name. (diffusers
 * 0.27.2 itself refuses an explicit num_attention_heads for this class; we let it win, as later versions do.)
 */
export function headsPerDownBlock(cfg: UNet2DConditionConfig): number[] {
  const spec = cfg.num_attention_heads ?? cfg.attention_head_dim;
  return typeof spec === 'number' ? cfg.block_out_channels.map(() => spec) : [...spec];
}

export type UNetForwardOptions = AttentionCallOptions;

/** Timesteps as the U-Net accepts them: one per sample, or one for all (a number, a length-1 list, a 0-dim tensor). */
export type Timesteps = number | number[] | tf.Tensor1D | tf.Scalar;

// Port of diffusers UNet2DConditionModel (SD path: no class/added embeddings, no adapters, no ControlNet residuals):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/unets/unet_2d_condition.py
export class UNet2DConditionModel extends Module {
  readonly conv_in: Conv2d;
  readonly time_embedding: TimestepEmbedding;
  readonly down_blocks: DownBlock[];
  readonly mid_block: UNetMidBlock2DCrossAttn;
  readonly up_blocks: UpBlock[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(readonly config: UNet2DConditionConfig) {
    super();
    const c = config;
    const channels = c.block_out_channels;
    const last = channels.length - 1;
    const heads = headsPerDownBlock(c);
    const timeEmbedDim = channels[0]! * 4;
    const opts = (h: number): BlockOptions => ({
      tembChannels: timeEmbedDim,
      groups: c.norm_num_groups,
      eps: c.norm_eps,
      numLayers: c.layers_per_block,
      heads: h,
      crossAttentionDim: c.cross_attention_dim,
      useLinearProjection: c.use_linear_projection,
      transformerLayers: c.transformer_layers_per_block,
    });

    this.conv_in = new Conv2d(c.in_channels, channels[0]!, 3, { padding: 1 });
    // `time_proj` (diffusers' Timesteps) has no weights: see timestepProjection().
    this.time_embedding = new TimestepEmbedding(channels[0]!, timeEmbedDim);

    this.down_blocks = c.down_block_types.map((type, i) => {
      const inCh = i === 0 ? channels[0]! : channels[i - 1]!;
      const Block = type === 'CrossAttnDownBlock2D' ? CrossAttnDownBlock2D : DownBlock2D;
      return new Block(inCh, channels[i]!, i !== last, opts(heads[i]!));
    });

    // The mid block uses the heads of the deepest level (the last list entry).
    this.mid_block = new UNetMidBlock2DCrossAttn(channels[last]!, { ...opts(heads[last]!), numLayers: 1 });

    // Up blocks walk the levels in reverse, with one more ResNet each (the extra one eats the downsampler's skip).
    const reversed = [...channels].reverse();
    const reversedHeads = [...heads].reverse();
    this.up_blocks = c.up_block_types.map((type, i) => {
      const prevOut = reversed[Math.max(i - 1, 0)]!;
      const out = reversed[i]!;
      const inCh = reversed[Math.min(i + 1, last)]!;
      const Block = type === 'CrossAttnUpBlock2D' ? CrossAttnUpBlock2D : UpBlock2D;
      return new Block(inCh, prevOut, out, i !== last, { ...opts(reversedHeads[i]!), numLayers: c.layers_per_block + 1 });
    });

    this.conv_norm_out = new GroupNorm(c.norm_num_groups, channels[0]!, c.norm_eps);
    this.conv_out = new Conv2d(channels[0]!, c.out_channels, 3, { padding: 1 });
  }

  /** Number of ×2 upsamplers (every up block but the last); sizes not divisible by 2^this take the odd-size path. */
  get numUpsamplers(): number {
    return this.up_blocks.length - 1;
  }

  /** `time_proj`: timesteps → [B, block_out_channels[0]] sinusoids (float32, fractional timesteps allowed). */
  timeProjection(timestep: Timesteps, batch: number): tf.Tensor2D {
    return tf.tidy(() => {
      let t: tf.Tensor1D;
      if (typeof timestep === 'number') t = tf.fill([batch], timestep, 'float32');
      else if (Array.isArray(timestep)) t = tf.tensor1d(timestep, 'float32');
      else t = timestep.toFloat().reshape([-1]);
      if (t.shape[0] === 1 && batch !== 1) t = t.tile([batch]); // a 0-dim/length-1 timestep is broadcast to the batch
      if (t.shape[0] !== batch) throw new Error(`UNet2DConditionModel: ${t.shape[0]} timesteps for a batch of ${batch}`);
      return timestepProjection(t, this.config.block_out_channels[0]!, this.config.flip_sin_to_cos, this.config.freq_shift);
    });
  }

  /**
   * Predict the noise (or v) for `sample` [B, H, W, in_channels] at `timestep`, conditioned on `encoderHiddenStates`
   * [B, 77·k, cross_attention_dim] → [B, H, W, out_channels]. H and W need not be multiples of 8.
   */
  forward(sample: tf.Tensor4D, timestep: Timesteps, encoderHiddenStates: tf.Tensor3D, opts: UNetForwardOptions = {}): tf.Tensor4D {
    // Why tidy here (the one deliberate exception to "layers never tidy", style.md §3.3): each block runs in its own
    // scope so its attention maps are freed before the next block, which bounds inference peak memory. Safe during
    // training: the engine keeps its own clones of every tensor saved for backward.
    return tf.tidy(() => {
      const [batch, height, width] = sample.shape;
      const ctx = encoderHiddenStates;
      if (ctx.shape[0] !== batch) {
        throw new Error(`UNet2DConditionModel: encoderHiddenStates has batch ${ctx.shape[0]}, sample has ${batch}`);
      }
      const factor = 2 ** this.numUpsamplers;
      // diffusers' forward_upsample_size: odd sizes make the stride-2 convs round up, so each upsampler must target
      // the size of the skip it is about to be concatenated with instead of plain ×2.
      const forwardUpsampleSize = height % factor !== 0 || width % factor !== 0;

      const temb = tf.tidy(() => this.time_embedding.forward(this.timeProjection(timestep, batch))); // [B, 4·C0]

      let h = this.conv_in.forward(sample); // [B, H, W, C0]
      const skips: tf.Tensor4D[] = [h];
      for (const block of this.down_blocks) {
        const x = h;
        const out = tf.tidy(() => (block instanceof CrossAttnDownBlock2D ? block.forward(x, temb, ctx, opts) : block.forward(x, temb)));
        h = out.h;
        skips.push(...out.skips);
      }

      const x = h;
      h = tf.tidy(() => this.mid_block.forward(x, temb, ctx, opts));

      this.up_blocks.forEach((block, i) => {
        const blockSkips = skips.splice(skips.length - block.resnets.length); // the last n pushed, in push order
        const next = skips[skips.length - 1];
        const upsampleSize: [number, number] | undefined =
          forwardUpsampleSize && i < this.up_blocks.length - 1 && next ? [next.shape[1], next.shape[2]] : undefined;
        const x = h;
        h = tf.tidy(() =>
          block instanceof CrossAttnUpBlock2D
            ? block.forward(x, blockSkips, temb, ctx, upsampleSize, opts)
            : block.forward(x, blockSkips, temb, upsampleSize),
        );
      });

      return this.conv_out.forward(silu(this.conv_norm_out.forward(h))); // [B, H, W, out_channels]
    });
  }
}
