// Shared by the LoRA tests: descriptor delta records, layout conversion, deterministic test modules.
import * as tf from '@tensorflow/tfjs';
import { expect } from 'vitest';
import type { LoraModule } from '../../src/lora/read.js';

export interface DeltaStats {
  shape: number[];
  first: number[];
  sum: number;
  abs_sum: number;
}

/** HWIO → PyTorch OIHW (linear weights are already [out, in]). */
export const toTorch = (t: tf.Tensor): tf.Tensor => (t.rank === 4 ? t.transpose([3, 2, 0, 1]) : t);

/** first/sum/abs_sum of a delta (our layout) against a descriptor record (float32 sums over up to 10⁶ terms). */
export function expectStats(delta: tf.Tensor, want: DeltaStats): void {
  const torch = toTorch(delta);
  expect(torch.shape).toEqual(want.shape);
  const v = torch.dataSync();
  if (torch !== delta) torch.dispose();
  // A few float32 ulps: the reference multiplied in another order (torch) or on another backend.
  want.first.forEach((x, i) => expect(Math.abs(v[i]! - x)).toBeLessThanOrEqual(1e-6 * Math.abs(x) + 1e-10));
  let sum = 0;
  let abs = 0;
  for (const x of v) {
    sum += x;
    abs += Math.abs(x);
  }
  expect(Math.abs(sum - want.sum)).toBeLessThan(1e-6 * want.abs_sum + 1e-9);
  expect(abs).toBeCloseTo(want.abs_sum, 4);
}

/** Deterministic values in [-scale, scale) (an LCG: tests must not depend on Math.random). */
export function pseudoRandom(n: number, seed: number, scale = 0.1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/** A LoRA module with pseudo-random weights for a target of the given PyTorch shape ([out, in] or [out, in, k, k]). */
export function randomModule(
  name: string,
  at: Pick<LoraModule, 'component' | 'path' | 'kind'>,
  torchShape: number[],
  rank: number,
  alpha: number,
  seed: number,
): LoraModule {
  const [out, inp, ...k] = torchShape as [number, number, ...number[]];
  const downShape = [rank, inp, ...k];
  const upShape = k.length ? [out, rank, 1, 1] : [out, rank];
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  return {
    name,
    ...at,
    down: { shape: downShape, data: pseudoRandom(size(downShape), seed) },
    up: { shape: upShape, data: pseudoRandom(size(upShape), seed + 7919) },
    alpha,
    rank,
  };
}
