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
   * O(sliceSize · Tk) per head instead of O(Tq · Tk) (a 64x64 latent has 4096 tokens); the same results up to
   * the last bits (see `mapSliceSize`).
   */
  sliceSize?: number;
  /**
   * Compute at most this many of the B·heads attention maps at a time (diffusers' `set_attention_slice` semantics).
   * Bounds peak memory at O(mapSliceSize · Tq · Tk). Unlike `sliceSize`, each chunk runs the very same per-map
   * matmuls as the unsliced call, so the results are bit-identical on the cpu and wasm backends (query-row chunks can
   * differ in the last bits there: wasm's batched matmul rounds differently when the row count changes).
   */
  mapSliceSize?: number;
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
  const split = (x: tf.Tensor3D, t: number): tf.Tensor3D =>
    x.reshape([b, t, heads, d]).transpose([0, 2, 1, 3]).reshape([b * heads, t, d]); // [B*H, T, D]
  const qh = split(q, tq).mul(scale) as tf.Tensor3D;
  const kh = split(k, tk);
  // V is kept transposed ([B*H, D, Tk]) so that both matmuls are `matMul(x, y, false, true)`. Why: wasm's
  // batched matmul without transposeB rounds differently depending on how many matrices one call gets, which
  // would make `mapSliceSize` change the last bits; with transposeB it does not (measured; same speed, same
  // unsliced result).
  const vh = split(v, tk).transpose([0, 2, 1]) as tf.Tensor3D; // [B*H, D, Tk]
  const maps = b * heads;
  const attend = (qs: tf.Tensor3D, ks: tf.Tensor3D, vs: tf.Tensor3D, m: tf.Tensor | undefined, row0: number): tf.Tensor3D => {
    let s = tf.matMul(qs, ks, false, true); // [maps', tq', Tk]
    if (m) {
      // the mask's query axis is the second to last; take the rows of this slice
      const rows = qs.shape[1];
      s = s.add(rows === tq ? m : m.slice([...m.shape.slice(0, -2).map(() => 0), row0, 0], [...m.shape.slice(0, -2), rows, tk]));
    }
    return tf.matMul(tf.softmax(s, -1), vs, false, true); // [maps', tq', D]
  };
  const attendRows = (qs: tf.Tensor3D, ks: tf.Tensor3D, vs: tf.Tensor3D, m: tf.Tensor | undefined): tf.Tensor3D => {
    const slice = opts.sliceSize && opts.sliceSize < tq ? opts.sliceSize : tq;
    if (slice === tq) return attend(qs, ks, vs, m, 0);
    const n = qs.shape[0];
    const parts: tf.Tensor3D[] = [];
    // Each slice in its own scope: otherwise its scores and softmax stay alive until the caller's scope ends and
    // slicing bounds nothing. (Safe under gradient recording: the engine keeps what the backward pass needs.)
    for (let i = 0; i < tq; i += slice) parts.push(tf.tidy(() => attend(qs.slice([0, i, 0], [n, Math.min(slice, tq - i), d]), ks, vs, m, i)));
    return tf.concat(parts, 1);
  };
  const mapSlice = opts.mapSliceSize && opts.mapSliceSize < maps ? opts.mapSliceSize : maps;
  let out: tf.Tensor3D;
  if (mapSlice === maps) out = attendRows(qh, kh, vh, opts.mask);
  else {
    const m = opts.mask;
    // a mask with one entry per map is sliced along with the maps; a broadcast one (leading 1 or rank < 3) is shared
    const perMap = m !== undefined && m.rank === 3 && m.shape[0] === maps && maps > 1;
    const parts: tf.Tensor3D[] = [];
    for (let i = 0; i < maps; i += mapSlice) {
      const n = Math.min(mapSlice, maps - i);
      const take = (x: tf.Tensor3D): tf.Tensor3D => x.slice([i, 0, 0], [n, x.shape[1], x.shape[2]]); // [n, ·, ·]
      // one scope per slice of maps, for the same reason as the row slices above
      parts.push(tf.tidy(() => attendRows(take(qh), take(kh), take(vh), perMap ? take(m as tf.Tensor3D) : m)));
    }
    out = tf.concat(parts, 0); // [B*H, Tq, D]
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
