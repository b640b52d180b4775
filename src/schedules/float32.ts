// float32 arithmetic the way torch's CPU kernels do it, for the scalar coefficients diffusers keeps in 0-dim float32
// tensors and for the RNG: every operation rounded to float32 (`Math.fround`), fused multiply-adds rounded once, and
// `exp` as torch's AVX2 build computes it (SLEEF `expf_u10`, which is not always correctly rounded). Pure numbers.

export const f32 = Math.fround;

/** `x ** 0.5` of a float32 tensor (torch special-cases 0.5 as a correctly rounded sqrt). */
export const sqrtf = (x: number): number => f32(Math.sqrt(x));

/** `torch.log` of a float32 (SLEEF's 1-ulp log, correctly rounded in every case checked against the fixtures). */
export const logf = (x: number): number => f32(Math.log(x));

const bits = new DataView(new ArrayBuffer(4));

/** The next float32 after x towards +∞ (x a finite float32). */
function nextUp32(x: number): number {
  if (x === 0) return 2 ** -149;
  bits.setFloat32(0, x);
  const u = bits.getUint32(0);
  bits.setUint32(0, x > 0 ? u + 1 : u - 1);
  return bits.getFloat32(0);
}

/**
 * Fused multiply-add rounded once to float32 (`vfmadd`), for float32 inputs: a*b is exact in a double, and a sum that
 * lands exactly on a float32 rounding midpoint is resolved with its exact error term.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s || !Number.isFinite(s)) return r;
  const bp = s - p;
  const err = p - (s - bp) + (c - bp); // exact: p + c = s + err
  if (err === 0) return r;
  // s is a tie only if it sits exactly between r and its neighbour on the other side of s
  const other = r > s ? -nextUp32(-r) : nextUp32(r);
  if ((r + other) / 2 !== s) return r;
  return err > 0 === r > s ? r : other;
}

const R_LN2F = f32(1.442695040888963407359924681001892137426645954152985934135449406931);
const L2UF = f32(0.693145751953125);
const L2LF = f32(1.428606765330187045e-6);
const EXP_P = [
  0.000198527617612853646278381, 0.00139304355252534151077271, 0.00833336077630519866943359, 0.0416664853692054748535156,
  0.166666671633720397949219, 0.5,
].map(f32);

/** Round half to even to an integer (`np.round`; `_mm256_cvtps_epi32` in the default rounding mode). */
export function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * `torch.exp` of a float32 on an AVX2 CPU: SLEEF's `xexpf` (1-ulp): exp(d) = 2^q · e^s with q = rint(d / ln 2),
 * s = d - q ln 2 in two parts, a degree-6 polynomial, all fused multiply-adds.
 */
export function expf(d: number): number {
  if (Number.isNaN(d)) return NaN;
  if (d > 100) return Infinity;
  if (d < -104) return 0;
  const q = rint(f32(d * R_LN2F));
  let s = fmaf(q, -L2UF, d);
  s = fmaf(q, -L2LF, s);
  let u = EXP_P[0]!;
  for (let k = 1; k < EXP_P.length; k++) u = fmaf(u, s, EXP_P[k]!);
  u = f32(1 + fmaf(f32(s * s), u, s));
  const half = q >> 1; // vldexp2: two multiplications by powers of two
  return f32(f32(u * 2 ** half) * 2 ** (q - half));
}
