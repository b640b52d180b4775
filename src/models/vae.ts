// The Stable Diffusion autoencoder (diffusers AutoencoderKL with its Encoder/Decoder), NHWC.
import * as tf from '@tensorflow/tfjs';
import { Module } from '../nn/module.js';
import { Conv2d, GroupNorm } from '../nn/layers.js';
import { silu } from '../nn/functional.js';
import { ConfigReader } from './diffusers_config.js';
import { Downsample2D, ResnetBlock2D, Upsample2D, type ResnetBlock2DOptions } from './resnet.js';
import { SpatialSelfAttention, type AttentionCallOptions } from './attention.js';

/** The keys of diffusers' `vae/config.json` that the SD autoencoder uses, with diffusers' names. */
export interface AutoencoderKLConfig {
  in_channels: number;
  out_channels: number;
  down_block_types: 'DownEncoderBlock2D'[];
  up_block_types: 'UpDecoderBlock2D'[];
  block_out_channels: number[];
  layers_per_block: number;
  latent_channels: number;
  norm_num_groups: number;
  sample_size: number;
  /** Pipelines multiply encoder samples by it and divide latents by it before `decode` (0.18215 for SD1/SD2). */
  scaling_factor: number;
}

/** Pixels per latent along each side: 2^(levels − 1), diffusers' vae_scale_factor (8 for SD, 4 for tiny-shapes). */
export const vaeScaleFactor = (c: Pick<AutoencoderKLConfig, 'block_out_channels'>): number => 2 ** (c.block_out_channels.length - 1);

/**
 * Read a diffusers `vae/config.json` (already JSON-parsed): fills diffusers' defaults (v0.27.2 signature) and throws a
 * ConfigError naming the key for anything outside the SD autoencoder.
 */
export function parseVaeConfig(json: unknown, source = 'vae config'): AutoencoderKLConfig {
  const r = new ConfigReader(json, source);
  const sd = 'sdtrain implements the Stable Diffusion AutoencoderKL';
  r.onlyDefault('act_fn', ['silu'], sd);
  r.onlyDefault('latents_mean', [null], sd);
  r.onlyDefault('latents_std', [null], sd);
  // Keys written by later diffusers versions; their defaults are the 0.27.2 architecture.
  r.onlyDefault('use_quant_conv', [true], sd);
  r.onlyDefault('use_post_quant_conv', [true], sd);
  r.onlyDefault('mid_block_add_attention', [true], sd);
  r.onlyDefault('shift_factor', [null], sd);
  // force_upcast only matters for fp16 runs; tfjs computes in float32.
  r.bool('force_upcast', true);

  const cfg: AutoencoderKLConfig = {
    in_channels: r.int('in_channels', 3, 1),
    out_channels: r.int('out_channels', 3, 1),
    down_block_types: r.enumList('down_block_types', ['DownEncoderBlock2D'], ['DownEncoderBlock2D'] as const, 'supported down blocks'),
    up_block_types: r.enumList('up_block_types', ['UpDecoderBlock2D'], ['UpDecoderBlock2D'] as const, 'supported up blocks'),
    block_out_channels: r.intList('block_out_channels', [64]),
    layers_per_block: r.int('layers_per_block', 1, 1),
    latent_channels: r.int('latent_channels', 4, 1),
    norm_num_groups: r.int('norm_num_groups', 32, 1),
    sample_size: r.int('sample_size', 32, 1),
    scaling_factor: r.num('scaling_factor', 0.18215),
  };
  const n = cfg.block_out_channels.length;
  if (cfg.down_block_types.length !== n) r.fail('down_block_types', `has ${cfg.down_block_types.length} entries but block_out_channels has ${n}`);
  if (cfg.up_block_types.length !== n) r.fail('up_block_types', `has ${cfg.up_block_types.length} entries but block_out_channels has ${n}`);
  cfg.block_out_channels.forEach((c, i) => {
    if (c % cfg.norm_num_groups !== 0) r.fail('block_out_channels', `[${i}] = ${c} is not divisible by norm_num_groups = ${cfg.norm_num_groups}`);
  });
  return cfg;
}

/** Why 1e-6: the VAE's GroupNorms all use it (ResNets, attention, norm_out), unlike the U-Net's 1e-5. */
const VAE_EPS = 1e-6;

// The autoencoder's blocks, ported from diffusers' unet_2d_blocks.py (temb_channels=None everywhere):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/unets/unet_2d_blocks.py

// diffusers DownEncoderBlock2D (downsample_padding=0: the asymmetric-pad downsampler)
export class DownEncoderBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  readonly downsamplers?: [Downsample2D];

  constructor(inChannels: number, outChannels: number, numLayers: number, addDownsample: boolean, ro: ResnetBlock2DOptions) {
    super();
    this.resnets = Array.from({ length: numLayers }, (_, j) => new ResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, ro));
    if (addDownsample) this.downsamplers = [new Downsample2D(outChannels, 0)];
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    let h = x;
    for (const resnet of this.resnets) h = resnet.forward(h);
    return this.downsamplers ? this.downsamplers[0].forward(h) : h; // [B, H/2, W/2, C] when downsampling
  }
}

// diffusers UpDecoderBlock2D
export class UpDecoderBlock2D extends Module {
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers?: [Upsample2D];

  constructor(inChannels: number, outChannels: number, numLayers: number, addUpsample: boolean, ro: ResnetBlock2DOptions) {
    super();
    this.resnets = Array.from({ length: numLayers }, (_, j) => new ResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, ro));
    if (addUpsample) this.upsamplers = [new Upsample2D(outChannels)];
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    let h = x;
    for (const resnet of this.resnets) h = resnet.forward(h);
    return this.upsamplers ? this.upsamplers[0].forward(h) : h; // [B, 2H, 2W, C] when upsampling
  }
}

// diffusers UNetMidBlock2D as the VAE builds it: resnets.0 → single-head self-attention → resnets.1
export class UNetMidBlock2D extends Module {
  readonly attentions: SpatialSelfAttention[];
  readonly resnets: ResnetBlock2D[];

  constructor(channels: number, ro: ResnetBlock2DOptions) {
    super();
    // attention_head_dim = channels, so heads = 1 and the scale is C^-0.5.
    this.attentions = [new SpatialSelfAttention(channels, ro.groups, ro.eps)];
    this.resnets = [new ResnetBlock2D(channels, channels, ro), new ResnetBlock2D(channels, channels, ro)];
  }

  forward(x: tf.Tensor4D, opts: AttentionCallOptions = {}): tf.Tensor4D {
    let h = this.resnets[0]!.forward(x);
    this.attentions.forEach((attn, j) => {
      h = attn.forward(h, opts);
      h = this.resnets[j + 1]!.forward(h);
    });
    return h;
  }
}

/**
 * Why tidy in Encoder/Decoder (the U-Net's exception, style.md §3.3, applied to the VAE): at 512×512 every full-size
 * activation is 128 MB, so intermediates must be freed block by block or a decode cannot fit the wasm heap. Safe
 * during training (the engine keeps clones of tensors saved for backward).
 */
const scoped = (f: () => tf.Tensor4D): tf.Tensor4D => tf.tidy(f);
// (Each block's input is disposed as soon as the next output exists; the backward pass only needs the engine's clones.)

// Port of diffusers Encoder (double_z=True, mid-block attention on):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/autoencoders/vae.py
export class Encoder extends Module {
  readonly conv_in: Conv2d;
  readonly down_blocks: DownEncoderBlock2D[];
  readonly mid_block: UNetMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(c: AutoencoderKLConfig) {
    super();
    const ch = c.block_out_channels;
    const last = ch.length - 1;
    const ro: ResnetBlock2DOptions = { tembChannels: null, groups: c.norm_num_groups, eps: VAE_EPS };
    this.conv_in = new Conv2d(c.in_channels, ch[0]!, 3, { padding: 1 });
    this.down_blocks = ch.map((out, i) => new DownEncoderBlock2D(i === 0 ? ch[0]! : ch[i - 1]!, out, c.layers_per_block, i !== last, ro));
    this.mid_block = new UNetMidBlock2D(ch[last]!, ro);
    this.conv_norm_out = new GroupNorm(c.norm_num_groups, ch[last]!, VAE_EPS);
    // double_z: mean and logvar channels side by side.
    this.conv_out = new Conv2d(ch[last]!, 2 * c.latent_channels, 3, { padding: 1 });
  }

  /** x [B, H, W, in_channels] → [B, H/f, W/f, 2·latent_channels] with f = 2^(levels − 1). */
  forward(x: tf.Tensor4D, opts: AttentionCallOptions = {}): tf.Tensor4D {
    let h = scoped(() => this.conv_in.forward(x));
    for (const block of this.down_blocks) {
      const prev = h;
      h = scoped(() => block.forward(prev));
      prev.dispose();
    }
    const prev = h;
    const out = scoped(() => this.conv_out.forward(silu(this.conv_norm_out.forward(this.mid_block.forward(prev, opts)))));
    prev.dispose();
    return out;
  }
}

// Port of diffusers Decoder (no spatial-norm conditioning):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/autoencoders/vae.py
export class Decoder extends Module {
  readonly conv_in: Conv2d;
  readonly up_blocks: UpDecoderBlock2D[];
  readonly mid_block: UNetMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(c: AutoencoderKLConfig) {
    super();
    const ch = c.block_out_channels;
    const last = ch.length - 1;
    const ro: ResnetBlock2DOptions = { tembChannels: null, groups: c.norm_num_groups, eps: VAE_EPS };
    this.conv_in = new Conv2d(c.latent_channels, ch[last]!, 3, { padding: 1 });
    this.mid_block = new UNetMidBlock2D(ch[last]!, ro);
    // Why reversed: decoder.up_blocks.0 is the deepest level (LDM's decoder.up.{n-1}); each has layers_per_block + 1 ResNets.
    const reversed = [...ch].reverse();
    this.up_blocks = reversed.map(
      (out, i) => new UpDecoderBlock2D(reversed[Math.max(i - 1, 0)]!, out, c.layers_per_block + 1, i !== last, ro),
    );
    this.conv_norm_out = new GroupNorm(c.norm_num_groups, ch[0]!, VAE_EPS);
    this.conv_out = new Conv2d(ch[0]!, c.out_channels, 3, { padding: 1 });
  }

  /** z [B, h, w, latent_channels] (after post_quant_conv) → [B, h·f, w·f, out_channels]. */
  forward(z: tf.Tensor4D, opts: AttentionCallOptions = {}): tf.Tensor4D {
    let h = scoped(() => this.mid_block.forward(this.conv_in.forward(z), opts));
    for (const block of this.up_blocks) {
      const prev = h;
      h = scoped(() => block.forward(prev));
      prev.dispose();
    }
    const prev = h;
    const out = scoped(() => this.conv_out.forward(silu(this.conv_norm_out.forward(prev))));
    prev.dispose();
    return out;
  }
}

/** The posterior's parameters, NHWC [B, h, w, latent_channels]; logvar already clamped to [-30, 20]. */
export type LatentDistribution = {
  mean: tf.Tensor4D;
  logvar: tf.Tensor4D;
};

// Port of diffusers AutoencoderKL (encode → DiagonalGaussianDistribution, decode):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/autoencoders/autoencoder_kl.py
export class AutoencoderKL extends Module {
  readonly encoder: Encoder;
  readonly decoder: Decoder;
  readonly quant_conv: Conv2d;
  readonly post_quant_conv: Conv2d;

  constructor(readonly config: AutoencoderKLConfig) {
    super();
    const lc = config.latent_channels;
    this.encoder = new Encoder(config);
    this.decoder = new Decoder(config);
    this.quant_conv = new Conv2d(2 * lc, 2 * lc, 1);
    this.post_quant_conv = new Conv2d(lc, lc, 1);
  }

  /** `config.scaling_factor`: latents for the U-Net are `sample · scalingFactor`; decode takes `latents / scalingFactor`. */
  get scalingFactor(): number {
    return this.config.scaling_factor;
  }

  /** Image [B, H, W, C] in [-1, 1] → posterior mean and logvar [B, H/8, W/8, latent_channels] (for SD's 4 levels). */
  encode(x: tf.Tensor4D, opts: AttentionCallOptions = {}): LatentDistribution {
    const lc = this.config.latent_channels;
    return tf.tidy(() => {
      const moments = this.quant_conv.forward(this.encoder.forward(x, opts)); // [B, h, w, 2·lc]
      const [mean, logvar] = tf.split(moments, [lc, lc], 3) as [tf.Tensor4D, tf.Tensor4D]; // torch chunk(2, dim=1)
      return { mean, logvar: logvar.clipByValue(-30, 20) as tf.Tensor4D };
    });
  }

  /** A posterior sample `mean + exp(logvar / 2) · eps` (unscaled; multiply by `scalingFactor` for the U-Net). */
  sample(mean: tf.Tensor4D, logvar: tf.Tensor4D, eps: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => mean.add(tf.exp(logvar.mul(0.5)).mul(eps)));
  }

  /** Unscaled latents z [B, h, w, latent_channels] → image [B, h·8, w·8, out_channels], nominally [-1, 1], not clamped. */
  decode(z: tf.Tensor4D, opts: AttentionCallOptions = {}): tf.Tensor4D {
    return tf.tidy(() => this.decoder.forward(this.post_quant_conv.forward(z), opts));
  }
}
