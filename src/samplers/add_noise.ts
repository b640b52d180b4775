// The forward process and the conversions between what a U-Net predicts (ε or v) and x0, as diffusers' schedulers
// compute them: the scalar coefficients in float32 (diffusers holds them in 0-dim float32 tensors), the tensor math
// in tfjs float32. Used by training (addNoise, getVelocity, trainingTarget) and by the samplers.
import * as tf from '@tensorflow/tfjs';
import type { PredictionType } from '../schedules/config.js';
import { f32, sqrtf } from '../schedules/float32.js';

/** sqrt(ᾱ) and sqrt(1 - ᾱ) of a float32 ᾱ (`alphas_cumprod[t] ** 0.5`, `(1 - alphas_cumprod[t]) ** 0.5`). */
export function alphaCoefficients(alphaProd: number): [sqrtAlpha: number, sqrtOneMinusAlpha: number] {
  return [sqrtf(alphaProd), sqrtf(f32(1 - alphaProd))];
}

/** ᾱ of an integer timestep (a RangeError for anything else). */
export function alphaAt(alphasCumprod: Float32Array, t: number): number {
  if (!Number.isInteger(t) || t < 0 || t >= alphasCumprod.length) {
    throw new RangeError(`timestep ${t} is not an integer in [0, ${alphasCumprod.length - 1}]`);
  }
  return alphasCumprod[t]!;
}

/** Per-sample coefficients as a [B, 1, 1, 1] tensor (one timestep per sample), or one number for the whole batch. */
function perSample(
  alphasCumprod: Float32Array,
  t: number | readonly number[],
  batch: number,
  pick: (sqrtAlpha: number, sqrtOneMinus: number) => number,
): number | tf.Tensor4D {
  if (typeof t === 'number') return pick(...alphaCoefficients(alphaAt(alphasCumprod, t)));
  if (t.length !== batch) throw new RangeError(`${t.length} timesteps for a batch of ${batch}`);
  const c = Float32Array.from(t, (ti) => pick(...alphaCoefficients(alphaAt(alphasCumprod, ti))));
  return tf.tensor4d(c, [batch, 1, 1, 1]);
}

/**
 * `DDPMScheduler.add_noise`: x_t = sqrt(ᾱ_t)·x0 + sqrt(1 - ᾱ_t)·noise, with one timestep for the batch or one per sample.
 */
export function addNoise(x0: tf.Tensor4D, noise: tf.Tensor4D, t: number | readonly number[], alphasCumprod: Float32Array): tf.Tensor4D {
  return tf.tidy(() => {
    const a = perSample(alphasCumprod, t, x0.shape[0], (sa) => sa);
    const b = perSample(alphasCumprod, t, x0.shape[0], (_, sb) => sb);
    return tf.add(tf.mul(x0, a), tf.mul(noise, b));
  });
}

/** `DDPMScheduler.get_velocity`: the v-prediction target v = sqrt(ᾱ_t)·noise - sqrt(1 - ᾱ_t)·x0. */
export function getVelocity(x0: tf.Tensor4D, noise: tf.Tensor4D, t: number | readonly number[], alphasCumprod: Float32Array): tf.Tensor4D {
  return tf.tidy(() => {
    const a = perSample(alphasCumprod, t, x0.shape[0], (sa) => sa);
    const b = perSample(alphasCumprod, t, x0.shape[0], (_, sb) => sb);
    return tf.sub(tf.mul(noise, a), tf.mul(x0, b));
  });
}

/** What the U-Net is trained to predict: the noise (ε) or the velocity (v). */
export function trainingTarget(
  predictionType: PredictionType,
  x0: tf.Tensor4D,
  noise: tf.Tensor4D,
  t: number | readonly number[],
  alphasCumprod: Float32Array,
): tf.Tensor4D {
  return predictionType === 'epsilon' ? noise.clone() : getVelocity(x0, noise, t, alphasCumprod);
}

// ---- α-parameterised conversions (DDIM, DDPM, PNDM), for one ᾱ ----

/** x0 = (x - sqrt(1-ᾱ)·ε) / sqrt(ᾱ). */
export function x0FromEpsilon(x: tf.Tensor4D, eps: tf.Tensor4D, alphaProd: number): tf.Tensor4D {
  const [sa, sb] = alphaCoefficients(alphaProd);
  return tf.div(tf.sub(x, tf.mul(eps, sb)), sa);
}

/** x0 = sqrt(ᾱ)·x - sqrt(1-ᾱ)·v. */
export function x0FromV(x: tf.Tensor4D, v: tf.Tensor4D, alphaProd: number): tf.Tensor4D {
  const [sa, sb] = alphaCoefficients(alphaProd);
  return tf.sub(tf.mul(x, sa), tf.mul(v, sb));
}

/** ε = sqrt(ᾱ)·v + sqrt(1-ᾱ)·x. */
export function epsFromV(x: tf.Tensor4D, v: tf.Tensor4D, alphaProd: number): tf.Tensor4D {
  const [sa, sb] = alphaCoefficients(alphaProd);
  return tf.add(tf.mul(v, sa), tf.mul(x, sb));
}

/** The model output as x0 (DDPM, DDIM). */
export function predictX0(predictionType: PredictionType, x: tf.Tensor4D, modelOutput: tf.Tensor4D, alphaProd: number): tf.Tensor4D {
  return predictionType === 'epsilon' ? x0FromEpsilon(x, modelOutput, alphaProd) : x0FromV(x, modelOutput, alphaProd);
}

// ---- σ-parameterised (k-diffusion) forms: Euler, Euler a, DPM-Solver ----

/** x0 from the model output at σ, as Euler/Euler a do: x - σ·ε, or v·(-σ / sqrt(σ²+1)) + x / (σ²+1). */
export function x0FromSigmaPrediction(predictionType: PredictionType, x: tf.Tensor4D, modelOutput: tf.Tensor4D, sigma: number): tf.Tensor4D {
  if (predictionType === 'epsilon') return tf.sub(x, tf.mul(modelOutput, sigma));
  const s2p1 = f32(f32(sigma * sigma) + 1);
  return tf.add(tf.mul(modelOutput, f32(-sigma / sqrtf(s2p1))), tf.div(x, s2p1));
}

/** DPM-Solver's `_sigma_to_alpha_sigma_t`: α_t = 1 / sqrt(σ²+1), σ_t = σ·α_t. */
export function dpmAlphaSigma(sigma: number): [alphaT: number, sigmaT: number] {
  const alphaT = f32(1 / sqrtf(f32(f32(sigma * sigma) + 1)));
  return [alphaT, f32(sigma * alphaT)];
}

/** Euler's `add_noise`: x0 + noise·σ. */
export function addNoiseSigma(x0: tf.Tensor4D, noise: tf.Tensor4D, sigma: number): tf.Tensor4D {
  return tf.tidy(() => tf.add(x0, tf.mul(noise, sigma)));
}

/** DPM-Solver's `add_noise`: α_t·x0 + σ_t·noise with α_t, σ_t of σ. */
export function addNoiseDpm(x0: tf.Tensor4D, noise: tf.Tensor4D, sigma: number): tf.Tensor4D {
  const [alphaT, sigmaT] = dpmAlphaSigma(sigma);
  return tf.tidy(() => tf.add(tf.mul(x0, alphaT), tf.mul(noise, sigmaT)));
}
