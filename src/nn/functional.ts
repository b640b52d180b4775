// Stateless building blocks shared by the U-Net, the VAE and the text encoders.
import * as tf from '@tensorflow/tfjs';

export const silu = <T extends tf.Tensor>(x: T): T => x.mul(tf.sigmoid(x)) as T;

/** Exact (erf) GELU, as torch.nn.functional.gelu's default. */
export const gelu = <T extends tf.Tensor>(x: T): T => x.mul(tf.erf(x.mul(Math.SQRT1_2)).add(1)).mul(0.5) as T;

/** OpenAI CLIP's quick_gelu: x · sigmoid(1.702 x). */
export const quickGelu = <T extends tf.Tensor>(x: T): T => x.mul(tf.sigmoid(x.mul(1.702))) as T;

/**
 * GroupNorm without affine, NHWC. PyTorch's groups are contiguous channel ranges, so split C into [G, C/G] and
 * normalise over H, W and C/G (biased variance, as PyTorch).
 */
export function groupNorm(x: tf.Tensor4D, groups: number, eps: number): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const g = x.reshape([b, h, w, groups, c / groups]); // [B, H, W, G, C/G]
  const { mean, variance } = tf.moments(g, [1, 2, 4], true);
  return g.sub(mean).mul(tf.rsqrt(variance.add(eps))).reshape([b, h, w, c]);
}

/** LayerNorm without affine over the last axis (biased variance, as PyTorch). */
export function layerNorm<T extends tf.Tensor>(x: T, eps: number): T {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).mul(tf.rsqrt(variance.add(eps))) as T;
}

export interface AttentionOptions {
  /** Additive mask broadcastable to [B*heads, Tq, Tk] (e.g. CLIP's causal mask). */
  mask?: tf.Tensor;
  /**
   * Compute the scores for at most this many query rows at a time. Bounds peak memory at
   * O(sliceSize · Tk) per head instead of O(Tq · Tk) (a 64x64 latent has 4096 tokens); identical results.
   */
  sliceSize?: number;
  /** Scale applied to q before Q·Kᵀ (default head_dim^-0.5). */
  scale?: number;
}

/**
 * Multi-head scaled dot-product attention. q [B, Tq, H·D], k/v [B, Tk, H·D] → [B, Tq, H·D].
 */
export function attention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, heads: number, opts: AttentionOptions = {}): tf.Tensor3D {
  const [b, tq, c] = q.shape;
  const tk = k.shape[1];
  const d = c / heads;
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  const split = (x: tf.Tensor3D, t: number) =>
    x.reshape([b, t, heads, d]).transpose([0, 2, 1, 3]).reshape([b * heads, t, d]); // [B*H, T, D]
  const qh = split(q, tq).mul(scale) as tf.Tensor3D;
  const kh = split(k, tk);
  const vh = split(v, tk);
  const attend = (qs: tf.Tensor3D, row0: number): tf.Tensor3D => {
    let s = tf.matMul(qs, kh, false, true); // [B*H, tq', Tk]
    const m = opts.mask;
    if (m) {
      // the mask's query axis is the second to last; take the rows of this slice
      const rows = qs.shape[1];
      s = s.add(rows === tq ? m : m.slice([...m.shape.slice(0, -2).map(() => 0), row0, 0], [...m.shape.slice(0, -2), rows, tk]));
    }
    return tf.matMul(tf.softmax(s, -1), vh); // [B*H, tq', D]
  };
  const slice = opts.sliceSize && opts.sliceSize < tq ? opts.sliceSize : tq;
  let out: tf.Tensor3D;
  if (slice === tq) out = attend(qh, 0);
  else {
    const parts: tf.Tensor3D[] = [];
    for (let i = 0; i < tq; i += slice) parts.push(attend(qh.slice([0, i, 0], [b * heads, Math.min(slice, tq - i), d]), i));
    out = tf.concat(parts, 1);
  }
  return out.reshape([b, heads, tq, d]).transpose([0, 2, 1, 3]).reshape([b, tq, c]); // [B, Tq, H*D]
}

/** float32's most negative finite value, what transformers' masks add (`torch.finfo(torch.float32).min`). */
export const FLOAT32_MIN = -3.4028234663852886e38;

/**
 * Additive causal mask [T, T]: 0 where key j <= query i, `value` where j > i. The default is float32's most negative
 * finite value, as transformers' `_create_4d_causal_attention_mask` uses; after softmax any large finite negative
 * gives the same result (exactly 0 weight), and staying finite keeps a fully masked row from turning into NaN.
 */
export function causalMask(t: number, value = FLOAT32_MIN): tf.Tensor2D {
  const m = new Float32Array(t * t);
  for (let i = 0; i < t; i++) m.fill(value, i * t + i + 1, (i + 1) * t);
  return tf.tensor2d(m, [t, t]);
}

/**
 * torch.nn.functional.interpolate(mode="nearest") over NHWC: `src = min(floor(dst · in/out), in - 1)` per axis.
 * Default size is 2× (diffusers' Upsample2D). tfjs' resizeNearestNeighbor with alignCorners and halfPixelCenters
 * off computes exactly that index, and its gradient kernel exists on every backend.
 */
export function upsampleNearest(x: tf.Tensor4D, size?: readonly [number, number]): tf.Tensor4D {
  const [, h, w] = x.shape;
  const [outH, outW] = size ?? [2 * h, 2 * w];
  return tf.image.resizeNearestNeighbor(x, [outH, outW], false, false); // [B, outH, outW, C]
}
