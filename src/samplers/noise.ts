// Noise sources for the samplers and the pipelines' initial latents.
import * as tf from '@tensorflow/tfjs';
import { TorchGenerator } from '../random/torch_rng.js';
import type { NoiseSource } from './types.js';

/**
 * Draws like `torch.randn(shape, generator=g)` in diffusers on the CPU: the NHWC shape [B, H, W, C] is drawn in
 * torch's NCHW order [B, C, H, W] and transposed, so a seed gives diffusers' CPU latents (and step noise) exactly.
 * The generator's state advances with every draw, as in diffusers.
 */
export function torchNoise(generator: TorchGenerator | bigint | number): NoiseSource {
  const g = generator instanceof TorchGenerator ? generator : new TorchGenerator(generator);
  return (shape) => {
    if (shape.length !== 4) return tf.tensor(g.randn(shape), [...shape], 'float32');
    const [b, h, w, c] = shape as [number, number, number, number];
    return tf.tidy(() => tf.transpose(tf.tensor4d(g.randn([b, c, h, w]), [b, c, h, w]), [0, 2, 3, 1])); // [B, H, W, C]
  };
}

/** Replays the given tensors one per call (fixtures record the noise diffusers drew); throws when they run out. */
export function replayNoise(draws: readonly tf.Tensor[]): NoiseSource & { readonly used: number } {
  let used = 0;
  const source = (shape: readonly number[]): tf.Tensor => {
    const next = draws[used];
    if (!next) throw new Error(`replayNoise: draw ${used + 1} requested, only ${draws.length} recorded`);
    if (next.shape.join() !== shape.join()) throw new Error(`replayNoise: draw ${used + 1} has shape [${next.shape.join(', ')}], asked for [${shape.join(', ')}]`);
    used++;
    return next.clone();
  };
  Object.defineProperty(source, 'used', { get: () => used });
  return source as NoiseSource & { readonly used: number };
}
