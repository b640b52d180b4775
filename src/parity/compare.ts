// Comparing computed outputs with a fixture's: float outputs by max |a - b| against a tolerance, integer outputs
// exactly. Pure array code (no tfjs).
import type { TensorSpec } from './fixture.js';

export type NumericArray = Float32Array | Int32Array | Uint8Array | readonly number[];

export function maxAbsDiff(a: NumericArray, b: NumericArray): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    // NaN anywhere is a failure, not a 0 difference
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export function maxAbs(a: NumericArray): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Where a tolerance came from: the output's own `suggested_atol`, the largest one of its case, or the guideline. */
export type AtolSource = 'suggested' | 'case' | 'guideline' | 'exact';

/** Project guideline for outputs with no suggestion anywhere in their case: max-abs <= 1e-4 x output scale. */
export const GUIDELINE_REL_ATOL = 1e-4;

const INT_DTYPES = new Set(['int64', 'int32', 'int16', 'int8', 'uint8', 'bool', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']);

export function isIntegerSpec(spec: Pick<TensorSpec, 'dtype'>): boolean {
  return INT_DTYPES.has(spec.dtype);
}

/**
 * The tolerance for one output: integers 0; a float output's `suggested_atol`; else (derived outputs such as
 * `std` or `image_postprocessed`, which carry none) the largest suggestion among the case's outputs; else the
 * guideline 1e-4 x max|ref|.
 */
export function toleranceFor(
  spec: TensorSpec,
  caseOutputs: Record<string, TensorSpec>,
  reference: NumericArray,
): { atol: number; source: AtolSource } {
  if (isIntegerSpec(spec)) return { atol: 0, source: 'exact' };
  if (typeof spec.suggested_atol === 'number') return { atol: spec.suggested_atol, source: 'suggested' };
  const others = Object.values(caseOutputs)
    .map((s) => s.suggested_atol)
    .filter((x): x is number => typeof x === 'number');
  if (others.length) return { atol: Math.max(...others), source: 'case' };
  return { atol: GUIDELINE_REL_ATOL * Math.max(maxAbs(reference), 1e-30), source: 'guideline' };
}

/**
 * NCHW → NHWC for a flat array of shape [N, C, H, W] (or any rank >= 3 with the channel axis second:
 * [N, C, ...spatial] → [N, ...spatial, C]).
 */
export function channelsLast(data: Float32Array, shape: readonly number[]): { data: Float32Array; shape: number[] } {
  if (shape.length < 3) return { data, shape: [...shape] };
  const [n, c] = shape as [number, number];
  const inner = shape.slice(2).reduce((a, b) => a * b, 1);
  const out = new Float32Array(data.length);
  for (let b = 0; b < n; b++)
    for (let ch = 0; ch < c; ch++) {
      const src = (b * c + ch) * inner;
      for (let i = 0; i < inner; i++) out[(b * inner + i) * c + ch] = data[src + i]!;
    }
  return { data: out, shape: [n, ...shape.slice(2), c] };
}

/** NHWC → NCHW, the inverse of `channelsLast` ([N, ...spatial, C] → [N, C, ...spatial]). */
export function channelsFirst(data: Float32Array, shape: readonly number[]): { data: Float32Array; shape: number[] } {
  if (shape.length < 3) return { data, shape: [...shape] };
  const n = shape[0]!;
  const c = shape[shape.length - 1]!;
  const inner = shape.slice(1, -1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(data.length);
  for (let b = 0; b < n; b++)
    for (let i = 0; i < inner; i++)
      for (let ch = 0; ch < c; ch++) out[(b * c + ch) * inner + i] = data[(b * inner + i) * c + ch]!;
  return { data: out, shape: [n, c, ...shape.slice(1, -1)] };
}
