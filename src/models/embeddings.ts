// The U-Net's timestep conditioning: a fixed sinusoidal projection (diffusers `Timesteps`, `time_proj`) and the
// learned two-layer MLP on top of it (`TimestepEmbedding`, `time_embedding.linear_1/linear_2`).
import * as tf from '@tensorflow/tfjs';
import { Module } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import { silu } from '../nn/functional.js';

const f32 = Math.fround;

/**
 * The frequencies `exp(-ln(max_period) · i / (half − freq_shift))`, i < half, rounded the way diffusers computes
 * them: every step is a float32 op on a float32 tensor (`-math.log(10000) * arange(half, dtype=float32)`, then
 * `/ (half - shift)`, then `exp`). Why it matters: the embedding multiplies these by t ≈ 1000, so one ulp in a
 * frequency f moves `sin(t·f)` by up to t·ulp(f) (6e-5 for f = 1); a float64 table would be off by that much.
 * What remains: torch's float32 `exp` is Sleef's (≤ 1 ulp, not correctly rounded), so a few entries still differ
 * by one ulp (2 of the tiny U-Net's 16), which leaves ~2e-6 in `time_proj` (measured) — noise for the U-Net output.
 */
export function timestepFrequencies(half: number, freqShift: number, maxPeriod = 10000): Float32Array {
  const a = f32(-Math.log(maxPeriod)); // the python float becomes a float32 scalar operand
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    // a·i and the quotient of two float32 values are rounded exactly once when done in double and then fround.
    const exponent = f32(f32(a * i) / (half - freqShift));
    freqs[i] = f32(Math.exp(exponent));
  }
  return freqs;
}

// Port of diffusers get_timestep_embedding (used by `Timesteps`, the U-Net's `time_proj`):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/embeddings.py
/**
 * Sinusoidal timestep projection. `timesteps` [B] float (fractional values allowed) → [B, dim].
 * `flipSinToCos` puts cos first (`[cos, sin]`, the LDM order SD was trained with).
 */
export function timestepProjection(timesteps: tf.Tensor1D, dim: number, flipSinToCos: boolean, freqShift: number): tf.Tensor2D {
  const half = Math.floor(dim / 2);
  const freqs = tf.tensor2d(timestepFrequencies(half, freqShift), [1, half]); // [1, half]
  const args = timesteps.toFloat().reshape([-1, 1]).mul(freqs); // [B, half], float32 as in diffusers
  const [sin, cos] = [tf.sin(args), tf.cos(args)];
  let emb = tf.concat(flipSinToCos ? [cos, sin] : [sin, cos], 1) as tf.Tensor2D; // [B, 2·half]
  if (dim % 2 === 1) emb = emb.pad([[0, 0], [0, 1]]); // odd dims get a zero column, as upstream
  return emb;
}

// Port of diffusers TimestepEmbedding (SD path: linear_1 → SiLU → linear_2, no cond_proj, no post_act):
// https://github.com/huggingface/diffusers/blob/b69fd990ad8026f21893499ab396d969b62bb8cc/src/diffusers/models/embeddings.py
export class TimestepEmbedding extends Module {
  readonly linear_1: Linear;
  readonly linear_2: Linear;

  constructor(inChannels: number, timeEmbedDim: number) {
    super();
    this.linear_1 = new Linear(inChannels, timeEmbedDim);
    this.linear_2 = new Linear(timeEmbedDim, timeEmbedDim);
  }

  forward(x: tf.Tensor2D): tf.Tensor2D {
    return this.linear_2.forward(silu(this.linear_1.forward(x))); // [B, timeEmbedDim]
  }
}
