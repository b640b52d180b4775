// PyTorch's CPU random generator, reproduced: `torch.Generator().manual_seed(seed)` followed by `torch.randn`,
// `torch.rand` and `torch.randint` on float32/int64 CPU tensors give these numbers, so that a seed reproduces the
// initial noise of diffusers pipelines run on the CPU. Pure numbers (no tfjs).
//
// What torch does (torch 1.13 / 2.x, aten/src/ATen/core/MT19937RNGEngine.h, ATen/core/DistributionsHelper.h,
// ATen/core/TransformationHelper.h, ATen/native/cpu/DistributionTemplates.h, ATen/native/cpu/avx_mathfun.h):
// - the engine is the reference MT19937 seeded with the low 32 bits of the 64-bit seed (Knuth's initialisation);
//   `random()` is one 32-bit draw, `random64()` two draws `(hi << 32) | lo`;
// - float uniforms are `(random() & (2^24 - 1)) * 2^-24`, double uniforms `(random64() & (2^53 - 1)) * 2^-53`;
// - `randn` of a contiguous float32 tensor with >= 16 elements (`normal_fill`): fill the whole buffer with float
//   uniforms first, then Box-Muller each block of 16 in place, pairing element j with j + 8; when numel % 16 != 0 the
//   last 16 positions are refilled with fresh uniforms and transformed again. On AVX2 CPUs the transform is float32
//   throughout, with avx_mathfun's Cephes-polynomial log and sincos (not libm), compiled with fused multiply-adds;
//   that is what `boxMuller16` reproduces, bit for bit on the fixtures;
// - fewer than 16 elements: one double-precision Box-Muller per element (`normal_distribution<double>`), the second
//   value of each pair cached in the generator for its next scalar draw (the cache survives across calls);
// - `rand`: float uniforms; `randint(low, high)`: `low + random() % (high - low)` (range < 2^32).

import { fmaf } from '../schedules/float32.js';

/** torch's default CPU seed (`default_rng_seed_val`), used when a generator is created without one. */
export const TORCH_DEFAULT_SEED = 67280421310721n;

const N = 624;
const M = 397;
const TWO_POW_24 = 16777216;
const TWO_POW_32 = 4294967296;
const TWO_POW_MINUS_53 = 2 ** -53;

/** The reference MT19937 (what `at::mt19937` and `std::mt19937` compute). */
class Mt19937 {
  readonly state = new Uint32Array(N);
  index = N;

  constructor(seed32: number) {
    const s = this.state;
    s[0] = seed32 >>> 0;
    for (let j = 1; j < N; j++) {
      const prev = s[j - 1]!;
      s[j] = (Math.imul(1812433253, (prev ^ (prev >>> 30)) >>> 0) + j) >>> 0;
    }
  }

  next(): number {
    if (this.index >= N) this.twist();
    let y = this.state[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  private twist(): void {
    const s = this.state;
    for (let i = 0; i < N; i++) {
      const y = (s[i]! & 0x80000000) | (s[(i + 1) % N]! & 0x7fffffff);
      let v = y >>> 1;
      if (y & 1) v ^= 0x9908b0df;
      s[i] = (s[(i + M) % N]! ^ v) >>> 0;
    }
    this.index = 0;
  }
}

const numel = (shape: readonly number[]): number => {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`invalid shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
};

/** A seed as torch stores it: the uint64 of a (possibly negative) 64-bit integer. */
function toSeed(seed: bigint | number): bigint {
  if (typeof seed === 'number' && !Number.isSafeInteger(seed)) {
    throw new RangeError(`seed must be an integer (a bigint for values beyond 2^53), got ${seed}`);
  }
  const s = BigInt(seed);
  if (s < -(2n ** 63n) || s >= 2n ** 64n) throw new RangeError(`seed ${s} does not fit in 64 bits`);
  return BigInt.asUintN(64, s);
}

/** A generator's complete state as plain data (training checkpoints save it so a resumed run draws the same numbers). */
export interface TorchGeneratorState {
  /** The seed, as a decimal string (a uint64). */
  seed: string;
  /** The 624 MT19937 words. */
  mt: Uint32Array;
  /** Position in `mt` of the next word (624 = twist before the next draw). */
  index: number;
  /** The cached second value of the last scalar Box-Muller pair, or null. */
  nextDoubleNormal: number | null;
}

/** `torch.Generator('cpu')`: `new TorchGenerator(seed)` is `torch.Generator().manual_seed(seed)`. */
export class TorchGenerator {
  private engine!: Mt19937;
  private seed!: bigint;
  /** `next_double_normal_sample`: the unused half of the last scalar Box-Muller pair. */
  private nextDoubleNormal: number | undefined;

  constructor(seed: bigint | number = TORCH_DEFAULT_SEED) {
    this.manualSeed(seed);
  }

  /** `generator.manual_seed(seed)`: restarts the stream (and drops the cached normal). */
  manualSeed(seed: bigint | number): this {
    this.seed = toSeed(seed);
    this.engine = new Mt19937(Number(this.seed & 0xffffffffn));
    this.nextDoubleNormal = undefined;
    return this;
  }

  /** `generator.initial_seed()`. */
  initialSeed(): bigint {
    return this.seed;
  }

  /** A copy of the whole state (`generator.get_state()` in spirit; our own layout, not torch's byte tensor). */
  getState(): TorchGeneratorState {
    return {
      seed: this.seed.toString(),
      mt: Uint32Array.from(this.engine.state),
      index: this.engine.index,
      nextDoubleNormal: this.nextDoubleNormal ?? null,
    };
  }

  /** Restores a state from `getState()`: the following draws continue exactly where that generator was. */
  setState(s: TorchGeneratorState): this {
    if (s.mt.length !== N || !Number.isInteger(s.index) || s.index < 0 || s.index > N) {
      throw new RangeError(`invalid generator state: need ${N} words and an index in [0, ${N}], got ${s.mt.length} and ${s.index}`);
    }
    this.seed = toSeed(BigInt(s.seed));
    this.engine = new Mt19937(0);
    this.engine.state.set(s.mt);
    this.engine.index = s.index;
    this.nextDoubleNormal = s.nextDoubleNormal ?? undefined;
    return this;
  }

  /** One 32-bit draw (`random()`). */
  nextUint32(): number {
    return this.engine.next();
  }

  /** `uniform_real_distribution<float>(0, 1)`: 24 random bits. */
  private uniformFloat(): number {
    return (this.engine.next() & 0xffffff) / TWO_POW_24;
  }

  /** `uniform_real_distribution<double>(0, 1)`: the low 53 bits of `random64()` (hi word first). */
  private uniformDouble(): number {
    const hi = this.engine.next();
    const lo = this.engine.next();
    return ((hi & 0x1fffff) * TWO_POW_32 + lo) * TWO_POW_MINUS_53;
  }

  /** `normal_distribution<double>(0, 1)` with the generator's cached second value. */
  private normalDouble(): number {
    if (this.nextDoubleNormal !== undefined) {
      const v = this.nextDoubleNormal;
      this.nextDoubleNormal = undefined;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log(1 - u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** `torch.randn(shape, generator=g)` (float32, CPU), flat in row-major order. */
  randn(shape: readonly number[]): Float32Array {
    const n = numel(shape);
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
      return out;
    }
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    for (let i = 0; i + 16 <= n; i += 16) boxMuller16(out, i);
    if (n % 16 !== 0) {
      // torch redraws the last 16 positions (overlapping the already transformed ones) and transforms them again
      for (let i = n - 16; i < n; i++) out[i] = this.uniformFloat();
      boxMuller16(out, n - 16);
    }
    return out;
  }

  /** `torch.rand(shape, generator=g)` (float32, uniform in [0, 1)). */
  rand(shape: readonly number[]): Float32Array {
    const n = numel(shape);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    return out;
  }

  /** `torch.randint(low, high, shape, generator=g)`: integers in [low, high), both within int32. */
  randint(low: number, high: number, shape: readonly number[]): Int32Array {
    if (!Number.isInteger(low) || !Number.isInteger(high) || low >= high) {
      throw new RangeError(`randint needs integers low < high, got [${low}, ${high})`);
    }
    if (low < -(2 ** 31) || high > 2 ** 31) throw new RangeError(`randint bounds must lie within int32, got [${low}, ${high})`);
    const range = high - low; // < 2^32: torch takes one 32-bit draw per value
    const n = numel(shape);
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = low + (this.engine.next() % range);
    return out;
  }
}

// ---- float32 arithmetic as the AVX2 kernel does it ----

const f32 = Math.fround;

const bits = new DataView(new ArrayBuffer(4));
function asBits(x: number): number {
  bits.setFloat32(0, x);
  return bits.getUint32(0);
}
function fromBits(u: number): number {
  bits.setUint32(0, u >>> 0);
  return bits.getFloat32(0);
}

const SQRTHF = f32(0.707106781186547524);
const LOG_P = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
  2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
].map(f32);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);

/** avx_mathfun `log256_ps`, one lane, for x in (0, 1] (x is never <= 0 here: u1 = 1 - u > 0). */
function cephesLog(x0: number): number {
  const u = asBits(x0);
  let e = f32((u >>> 23) - 0x7f + 1);
  let x = fromBits((u & ~0x7f800000) | 0x3f000000); // mantissa in [0.5, 1)
  if (x < SQRTHF) {
    e = f32(e - 1);
    x = f32(f32(x - 1) + x);
  } else {
    x = f32(x - 1);
  }
  const z = f32(x * x);
  let y = LOG_P[0]!;
  for (let k = 1; k < LOG_P.length; k++) y = fmaf(y, x, LOG_P[k]!);
  y = f32(y * x);
  y = fmaf(y, z, f32(e * LOG_Q1));
  y = fmaf(z, -0.5, y);
  return fmaf(e, LOG_Q2, f32(x + y));
}

const FOPI = f32(1.27323954473516);
const DP1 = f32(-0.78515625);
const DP2 = f32(-2.4187564849853515625e-4);
const DP3 = f32(-3.77489497744594108e-8);
const COS_P = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(f32);
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f32);

/** avx_mathfun `sincos256_ps`, one lane, for theta >= 0. Returns [sin, cos]. */
function cephesSincos(theta: number): [number, number] {
  let x = Math.abs(theta);
  let j = Math.trunc(f32(x * FOPI));
  j = (j + 1) & ~1;
  const y = j; // exact in float32 for the arguments here (< 2^24)
  let signSin = (j & 4) !== 0;
  const poly = (j & 2) === 0;
  const signCos = (~(j - 2) & 4) !== 0;
  if (theta < 0) signSin = !signSin;
  x = fmaf(y, DP1, x);
  x = fmaf(y, DP2, x);
  x = fmaf(y, DP3, x);
  const z = f32(x * x);
  let yc = fmaf(COS_P[0]!, z, COS_P[1]!);
  yc = fmaf(yc, z, COS_P[2]!);
  yc = f32(yc * z);
  yc = fmaf(yc, z, -f32(z * 0.5));
  yc = f32(yc + 1);
  let ys = fmaf(SIN_P[0]!, z, SIN_P[1]!);
  ys = fmaf(ys, z, SIN_P[2]!);
  ys = f32(ys * z);
  ys = fmaf(ys, x, x);
  const s = poly ? ys : yc;
  const c = poly ? yc : ys;
  return [signSin ? -s : s, signCos ? -c : c];
}

const TWO_PI_F32 = f32(2 * Math.PI);

/** torch's `normal_fill_16_AVX2` (mean 0, std 1) on `d[at .. at + 16)`, in place. */
function boxMuller16(d: Float32Array, at: number): void {
  for (let j = at; j < at + 8; j++) {
    const u1 = f32(1 - d[j]!); // [0, 1) -> (0, 1] for the log
    const u2 = d[j + 8]!;
    const radius = f32(Math.sqrt(f32(-2 * cephesLog(u1))));
    const [sin, cos] = cephesSincos(f32(TWO_PI_F32 * u2));
    d[j] = f32(radius * cos);
    d[j + 8] = f32(radius * sin);
  }
}
