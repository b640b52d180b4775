// Seeded randomness for the data pipeline. Every draw comes from a TorchGenerator whose seed is derived from the run
// seed and a position (epoch, batch), so any batch can be recomputed from (seed, cursor) alone: resuming replays the
// exact same order, crops, flips, tag shuffles, template choices and latent samples.
import { createHash } from 'node:crypto';
import { TorchGenerator } from '../random/torch_rng.js';

/**
 * A 32-bit seed for one purpose and position. TorchGenerator seeds MT19937 with the low 32 bits only, so `seed + epoch`
 * style arithmetic would collide between runs; hashing keeps streams for different (seed, parts) independent.
 */
export function deriveSeed(seed: number, ...parts: (string | number)[]): number {
  const h = createHash('sha256').update(JSON.stringify([seed, ...parts])).digest();
  return h.readUInt32LE(0);
}

export function generatorFor(seed: number, ...parts: (string | number)[]): TorchGenerator {
  return new TorchGenerator(deriveSeed(seed, ...parts));
}

/** Uniform integer in [0, n). */
export function randomIndex(rng: TorchGenerator, n: number): number {
  if (!(n >= 1)) throw new RangeError(`randomIndex needs n ≥ 1, got ${n}`);
  // n is tiny next to 2^32, so the modulo bias is negligible (torch.randint draws the same way).
  return rng.nextUint32() % n;
}

/** Uniform float in [0, 1) (53 bits from two draws). */
export function uniform(rng: TorchGenerator): number {
  const hi = rng.nextUint32() >>> 5;
  const lo = rng.nextUint32() >>> 6;
  return (hi * 67108864 + lo) / 9007199254740992;
}

/** Fisher–Yates shuffle in place; returns the array. */
export function shuffleInPlace<T>(a: T[], rng: TorchGenerator): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = randomIndex(rng, i + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}
