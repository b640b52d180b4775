// Attention layers of the U-Net's spatial transformers (Attention, GEGLU feed-forward, BasicTransformerBlock,
// Transformer2DModel) and the VAE mid block's single-head spatial self-attention. NHWC in, tokens row-major over H
// then W, which is exactly what reshaping [B, H, W, C] → [B, H·W, C] gives (no transpose needed, unlike NCHW).
import * as tf from '@tensorflow/tfjs';
import { Module } from '../nn/module.js';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../nn/layers.js';
import { attention, gelu } from '../nn/functional.js';

/** Per-call options passed down to every attention. */
export interface AttentionCallOptions {
  /**
   * diffusers' attention slicing (`enable_attention_slicing(slice_size)`): compute at most this many of the
   * batch·heads attention maps at a time. Bounds peak memory (a 64×64 latent has 4096 tokens: 64 MB per map) and
   * gives bit-identical results; see `mapSliceSize` in `attention()`.
   */
  attentionSliceSize?: number;
}

// Port of diffusers Attention with the classic AttnProcessor, as the SD transformer blocks build it
// (bias=False for q/k/v, out_bias=True, no group/spatial norm, no residual inside):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/attention_processor.py
export class Attention extends Module {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  /** `[Linear, null]`: the null keeps PyTorch's ModuleList index (`to_out.1` is a Dropout), so weights are `to_out.0.*`. */
  readonly to_out: [Linear, null];
  /**
   * Optional hook on the context before the key/value projections: returns [context for to_k, context for to_v]
   * (A1111 hypernetworks, set by src/hypernetwork/apply.ts). Default none. The query never goes through it.
   */
  kvTransform?: (context: tf.Tensor3D) => [tf.Tensor3D, tf.Tensor3D];

  constructor(
    queryDim: number,
    readonly heads: number,
    dimHead: number,
    /** Width of the context (text) tokens; `null` for self-attention. */
    crossAttentionDim: number | null,
    bias = false,
  ) {
    super();
    const inner = heads * dimHead;
    const kvDim = crossAttentionDim ?? queryDim;
    this.to_q = new Linear(queryDim, inner, bias);
    this.to_k = new Linear(kvDim, inner, bias);
    this.to_v = new Linear(kvDim, inner, bias);
    this.to_out = [new Linear(inner, queryDim, true), null];
  }

  /** x [B, T, C], context [B, S, C_ctx] (defaults to x) → [B, T, C]. Scale is head_dim^-0.5. */
  forward(x: tf.Tensor3D, context?: tf.Tensor3D, opts: AttentionCallOptions = {}): tf.Tensor3D {
    const kv = context ?? x;
    const [kvK, kvV] = this.kvTransform ? this.kvTransform(kv) : [kv, kv]; // hypernetworks; q is never transformed
    const q = this.to_q.forward(x); // [B, T, H·D]
    const k = this.to_k.forward(kvK); // [B, S, H·D]
    const v = this.to_v.forward(kvV); // [B, S, H·D]
    const out = attention(q, k, v, this.heads, { mapSliceSize: opts.attentionSliceSize }); // [B, T, H·D]
    return this.to_out[0].forward(out); // [B, T, C]
  }
}

// Port of diffusers GEGLU (the first layer of the transformer feed-forward):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/activations.py
export class GEGLU extends Module {
  readonly proj: Linear;

  constructor(dimIn: number, dimOut: number) {
    super();
    this.proj = new Linear(dimIn, dimOut * 2);
  }

  forward(x: tf.Tensor3D): tf.Tensor3D {
    // Why this order: torch's `hidden, gate = proj(x).chunk(2, dim=-1)` makes the first half the value and the second
    // half the gate; swapping them still runs but gives a different network.
    const [value, gate] = tf.split(this.proj.forward(x), 2, -1) as [tf.Tensor3D, tf.Tensor3D]; // 2 × [B, T, dimOut]
    return value.mul(gelu(gate)); // exact (erf) GELU
  }
}

// Port of diffusers FeedForward (activation_fn="geglu", mult=4, dropout 0):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/attention.py
export class FeedForward extends Module {
  /** `[GEGLU, null, Linear]`: the null is PyTorch's Dropout at `ff.net.1`, kept so the output layer stays `ff.net.2`. */
  readonly net: [GEGLU, null, Linear];

  constructor(dim: number, mult = 4) {
    super();
    const inner = dim * mult;
    this.net = [new GEGLU(dim, inner), null, new Linear(inner, dim)];
  }

  forward(x: tf.Tensor3D): tf.Tensor3D {
    return this.net[2].forward(this.net[0].forward(x)); // [B, T, dim]
  }
}

// Port of diffusers BasicTransformerBlock, SD path (norm_type="layer_norm", self- then cross-attention, GEGLU):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/attention.py
export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;

  constructor(dim: number, heads: number, dimHead: number, crossAttentionDim: number) {
    super();
    this.norm1 = new LayerNorm(dim, 1e-5);
    this.attn1 = new Attention(dim, heads, dimHead, null);
    this.norm2 = new LayerNorm(dim, 1e-5);
    this.attn2 = new Attention(dim, heads, dimHead, crossAttentionDim);
    this.norm3 = new LayerNorm(dim, 1e-5);
    this.ff = new FeedForward(dim);
  }

  /** x [B, T, dim], context [B, S, C_ctx] → [B, T, dim]. */
  forward(x: tf.Tensor3D, context: tf.Tensor3D, opts: AttentionCallOptions = {}): tf.Tensor3D {
    let h: tf.Tensor3D = x.add(this.attn1.forward(this.norm1.forward(x), undefined, opts)); // self-attention
    h = h.add(this.attn2.forward(this.norm2.forward(h), context, opts)); // cross-attention on the text tokens
    return h.add(this.ff.forward(this.norm3.forward(h)));
  }
}

export interface Transformer2DOptions {
  crossAttentionDim: number;
  groups: number;
  /** SD2 (`true`): proj_in/proj_out are Linear on tokens. SD1 (`false`): 1x1 convs on the feature map. */
  useLinearProjection: boolean;
  numLayers?: number;
}

// Port of diffusers Transformer2DModel, continuous-input path only (no patches, no ada-norm):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/transformers/transformer_2d.py
export class Transformer2DModel extends Module {
  readonly norm: GroupNorm;
  readonly proj_in: Conv2d | Linear;
  readonly transformer_blocks: BasicTransformerBlock[];
  readonly proj_out: Conv2d | Linear;

  constructor(heads: number, dimHead: number, inChannels: number, opts: Transformer2DOptions) {
    super();
    const inner = heads * dimHead;
    // Why 1e-6: diffusers hard-codes this eps for the transformer's GroupNorm, unlike the ResNets' norm_eps (1e-5).
    this.norm = new GroupNorm(opts.groups, inChannels, 1e-6);
    // SD1 checkpoints store [inner, in, 1, 1] conv weights, SD2 ones [inner, in] linear weights.
    this.proj_in = opts.useLinearProjection ? new Linear(inChannels, inner) : new Conv2d(inChannels, inner, 1);
    this.transformer_blocks = Array.from(
      { length: opts.numLayers ?? 1 },
      () => new BasicTransformerBlock(inner, heads, dimHead, opts.crossAttentionDim),
    );
    this.proj_out = opts.useLinearProjection ? new Linear(inner, inChannels) : new Conv2d(inner, inChannels, 1);
  }

  /** x [B, H, W, C], context [B, S, C_ctx] → [B, H, W, C] (residual included). */
  forward(x: tf.Tensor4D, context: tf.Tensor3D, opts: AttentionCallOptions = {}): tf.Tensor4D {
    const [b, hh, ww, c] = x.shape;
    const n = this.norm.forward(x);
    // A 1x1 conv and a Linear are the same map; they differ only in where upstream applies them (before/after the
    // flatten) and in how the checkpoint stores the weight.
    let h =
      this.proj_in instanceof Conv2d
        ? this.proj_in.forward(n).reshape([b, hh * ww, -1]) // [B, H·W, inner]
        : this.proj_in.forward(n.reshape([b, hh * ww, c])); // [B, H·W, inner]
    let tokens = h as tf.Tensor3D;
    for (const block of this.transformer_blocks) tokens = block.forward(tokens, context, opts);
    h =
      this.proj_out instanceof Conv2d
        ? this.proj_out.forward(tokens.reshape([b, hh, ww, -1])) // [B, H, W, C]
        : this.proj_out.forward(tokens).reshape([b, hh, ww, c]); // [B, H, W, C]
    return (h as tf.Tensor4D).add(x);
  }
}

// Port of diffusers Attention as UNetMidBlock2D builds it for the VAE (heads=1, dim_head=C, bias=True,
// norm_num_groups → `group_norm`, residual_connection=True, rescale_output_factor=1):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/attention_processor.py
// A separate class from `Attention` because its forward is a different path (4-D in, GroupNorm first, residual).
// Old VAE checkpoints name these `query/key/value/proj_attn` and LDM files use 1x1 convs; loaders normalise both.
export class SpatialSelfAttention extends Module {
  readonly group_norm: GroupNorm;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  /** `[Linear, null]`: `to_out.1` is PyTorch's Dropout. */
  readonly to_out: [Linear, null];

  constructor(
    readonly channels: number,
    groups: number,
    eps: number,
  ) {
    super();
    this.group_norm = new GroupNorm(groups, channels, eps);
    this.to_q = new Linear(channels, channels);
    this.to_k = new Linear(channels, channels);
    this.to_v = new Linear(channels, channels);
    this.to_out = [new Linear(channels, channels), null];
  }

  /** x [B, H, W, C] → [B, H, W, C]: one head over all H·W pixels, scale C^-0.5, plus the input. */
  forward(x: tf.Tensor4D, opts: AttentionCallOptions = {}): tf.Tensor4D {
    const [b, h, w, c] = x.shape;
    const tokens = this.group_norm.forward(x).reshape([b, h * w, c]) as tf.Tensor3D; // [B, H·W, C]
    const q = this.to_q.forward(tokens);
    const k = this.to_k.forward(tokens);
    const v = this.to_v.forward(tokens);
    const out = attention(q, k, v, 1, { mapSliceSize: opts.attentionSliceSize }); // [B, H·W, C]
    return this.to_out[0].forward(out).reshape([b, h, w, c]).add(x) as tf.Tensor4D; // residual
  }
}
