// Element types shared by the safetensors and torch readers/writers, and the conversions between stored bytes
// and the arrays TF.js can use (it only computes in float32 and int32).

import { FormatError } from '../errors.js';

/** Element type, spelled as safetensors spells it. */
export type DType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'F8_E4M3'
  | 'F8_E5M2'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL';

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
}

/**
 * A tensor read into memory. Floats are widened to Float32Array; integers (I64/I32/I16/I8/U8, and U16/U32/U64)
 * become Int32Array (a value outside the int32 range is a FormatError naming the tensor); BOOL stays Uint8Array.
 */
export interface LoadedTensor {
  name: string;
  /** The dtype as stored in the file. */
  dtype: DType;
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

/**
 * What a writer accepts. `dtype` defaults from the array type: Float32Array → F32, Int32Array → I32,
 * BigInt64Array → I64, Uint8Array → U8. A Uint16Array holds raw F16/BF16 bits and needs `dtype` to say which.
 * Float32Array can be stored as F32/F16/BF16/F64 (rounded to nearest even); Int32Array as any integer type or BOOL.
 */
export interface TensorToWrite {
  shape: number[];
  data: Float32Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array;
  dtype?: DType;
}

/** Bytes per element. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

/** Element count of a shape ([] is a scalar: 1 element). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides in elements. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

// ---------------------------------------------------------------------------------------------------------------
// Scalar conversions

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

let halfTable: Float32Array | undefined;
/** All 65536 half values, built once: a table lookup is the fastest f16 → f32 widening in JS. */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // zero or subnormal: mant × 2^-24, exact in float32
      t[h] = (sign ? -1 : 1) * mant * 2 ** -24;
    } else if (exp === 31) {
      bits[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN keeping the payload
    } else {
      bits[h] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
    }
  }
  halfTable = t;
  return t;
}

/** float32 → IEEE half bits, round to nearest even (as numpy and torch do). NaN keeps its sign and top payload bits. */
export function floatToHalfBits(x: number): number {
  f32[0] = x;
  const f = u32[0]!;
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    const h = 0x7c00 | (mant >>> 13);
    return sign | (h === 0x7c00 ? 0x7e00 : h);
  }
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0 even after rounding
    // subnormal half: shift the full significand (with implicit 1) right, rounding to nearest even
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = m & ((1 << shift) - 1);
    let h = m >>> shift;
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // may carry into the exponent: still correct
  return sign | h;
}

export function halfBitsToFloat(h: number): number {
  return halfToFloatTable()[h & 0xffff]!;
}

/** float32 → bfloat16 bits (the high half of the float32), round to nearest even. NaN stays a quiet NaN. */
export function floatToBf16Bits(x: number): number {
  f32[0] = x;
  const f = u32[0]!;
  if ((f & 0x7fffffff) > 0x7f800000) return ((f >>> 16) | 0x0040) & 0xffff;
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToFloat(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

/** OCP FP8 E4M3 "fn" (no infinities, 0x7f/0xff are NaN), as torch.float8_e4m3fn. */
function fp8e4m3ToFloat(b: number): number {
  const sign = b & 0x80 ? -1 : 1;
  const exp = (b >> 3) & 0xf;
  const mant = b & 0x7;
  if (exp === 0xf && mant === 0x7) return NaN;
  if (exp === 0) return sign * mant * 2 ** -9;
  return sign * (1 + mant / 8) * 2 ** (exp - 7);
}

/** FP8 E5M2 is the top byte of an IEEE half. */
function fp8e5m2ToFloat(b: number): number {
  return halfBitsToFloat(b << 8);
}

// ---------------------------------------------------------------------------------------------------------------
// Array conversions

/** Returns a view of `bytes` as T when its offset is aligned, else an aligned copy (typed arrays need alignment). */
function aligned(bytes: Uint8Array, itemsize: number): { buffer: ArrayBufferLike; byteOffset: number } {
  if (bytes.byteOffset % itemsize === 0) return { buffer: bytes.buffer, byteOffset: bytes.byteOffset };
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return { buffer: copy.buffer, byteOffset: 0 };
}

/**
 * Decodes little-endian stored bytes into the in-memory representation of LoadedTensor. F32 data is returned as a
 * view (no copy) when `bytes` is 4-aligned. `file`/`name` are only used in error messages.
 */
export function decodeTensorData(
  file: string,
  name: string,
  dtype: DType,
  bytes: Uint8Array,
): Float32Array | Int32Array | Uint8Array {
  const size = DTYPE_SIZE[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new FormatError(file, `${bytes.byteLength} bytes is not a whole number of ${dtype} elements`, name);
  }
  const n = bytes.byteLength / size;
  const { buffer, byteOffset } = aligned(bytes, size);
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, n);
    case 'F64':
      return Float32Array.from(new Float64Array(buffer, byteOffset, n));
    case 'F16': {
      const src = new Uint16Array(buffer, byteOffset, n);
      const table = halfToFloatTable();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
      return out;
    }
    case 'BF16': {
      const src = new Uint16Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
      return out;
    }
    case 'F8_E4M3':
    case 'F8_E5M2': {
      const conv = dtype === 'F8_E4M3' ? fp8e4m3ToFloat : fp8e5m2ToFloat;
      const lut = new Float32Array(256);
      for (let b = 0; b < 256; b++) lut[b] = conv(b);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = lut[bytes[i]!]!;
      return out;
    }
    case 'I32':
      return new Int32Array(buffer, byteOffset, n);
    case 'I16':
      return Int32Array.from(new Int16Array(buffer, byteOffset, n));
    case 'I8':
      return Int32Array.from(new Int8Array(buffer, byteOffset, n));
    case 'U8':
      return Int32Array.from(bytes);
    case 'U16':
      return Int32Array.from(new Uint16Array(buffer, byteOffset, n));
    case 'U32': {
      const src = new Uint32Array(buffer, byteOffset, n);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        if (src[i]! > 0x7fffffff) throw outOfRange(file, name, dtype, i, BigInt(src[i]!));
        out[i] = src[i]!;
      }
      return out;
    }
    case 'I64':
    case 'U64': {
      // Read as two 32-bit halves: a value fits int32 iff the high word is the sign extension of the low word.
      const words = new Int32Array(buffer, byteOffset, n * 2);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const lo = words[2 * i]!;
        const hi = words[2 * i + 1]!;
        const fits = dtype === 'I64' ? hi === lo >> 31 : hi === 0 && lo >= 0;
        if (!fits) {
          const view = new DataView(buffer as ArrayBuffer, byteOffset + 8 * i, 8);
          const v = dtype === 'I64' ? view.getBigInt64(0, true) : view.getBigUint64(0, true);
          throw outOfRange(file, name, dtype, i, v);
        }
        out[i] = lo;
      }
      return out;
    }
    case 'BOOL':
      return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  }
}

function outOfRange(file: string, name: string, dtype: DType, index: number, value: bigint): FormatError {
  return new FormatError(
    file,
    `${dtype} value ${value} at element ${index} is outside the int32 range this toolkit computes in`,
    name,
  );
}

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  I32: [-(2 ** 31), 2 ** 31 - 1],
  I16: [-32768, 32767],
  I8: [-128, 127],
  U8: [0, 255],
  U16: [0, 65535],
  U32: [0, 2 ** 32 - 1],
  BOOL: [0, 1],
};

/** The dtype a TensorToWrite is stored as. */
export function resolveWriteDType(t: TensorToWrite): DType | undefined {
  if (t.dtype) return t.dtype;
  if (t.data instanceof Float32Array) return 'F32';
  if (t.data instanceof Int32Array) return 'I32';
  if (t.data instanceof BigInt64Array) return 'I64';
  if (t.data instanceof Uint8Array) return 'U8';
  return undefined;
}

/**
 * Validates a tensor to be written (shape, element count, array type vs dtype) and returns the dtype it will be
 * stored as. Throws a TypeError naming the tensor: these are caller mistakes, not file problems.
 */
export function checkTensorToWrite(name: string, t: TensorToWrite): DType {
  const dtype = resolveWriteDType(t);
  if (!dtype) throw new TypeError(`tensor '${name}': a Uint16Array holds raw half bits; say dtype 'F16' or 'BF16'`);
  if (!isDType(dtype)) throw new TypeError(`tensor '${name}': unknown dtype '${String(dtype)}'`);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TypeError(`tensor '${name}': shape ${JSON.stringify(t.shape)} must be a list of non-negative integers`);
  }
  const n = numel(t.shape);
  if (t.data.length !== n) {
    throw new TypeError(`tensor '${name}': shape [${t.shape.join(', ')}] needs ${n} elements, data has ${t.data.length}`);
  }
  const ok =
    t.data instanceof Float32Array
      ? ['F32', 'F16', 'BF16', 'F64'].includes(dtype)
      : t.data instanceof Int32Array
        ? ['I64', 'I32', 'I16', 'I8', 'U8', 'U16', 'U32', 'U64', 'BOOL'].includes(dtype)
        : t.data instanceof BigInt64Array
          ? dtype === 'I64' || dtype === 'U64'
          : t.data instanceof Uint16Array
            ? ['F16', 'BF16', 'U16', 'I16'].includes(dtype)
            : t.data instanceof Uint8Array
              ? ['U8', 'BOOL', 'I8', 'F8_E4M3', 'F8_E5M2'].includes(dtype)
              : false;
  if (!ok) throw new TypeError(`tensor '${name}': cannot store a ${t.data.constructor.name} as ${dtype}`);
  return dtype;
}

/** Encodes a (checked) tensor to little-endian stored bytes. Uint16Array/Uint8Array inputs are raw bits. */
export function encodeTensorData(name: string, t: TensorToWrite, dtype: DType): Uint8Array {
  const d = t.data;
  const n = d.length;
  const asBytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (d instanceof Float32Array) {
    if (dtype === 'F32') return asBytes(d);
    if (dtype === 'F64') return asBytes(Float64Array.from(d));
    const out = new Uint16Array(n);
    const conv = dtype === 'F16' ? floatToHalfBits : floatToBf16Bits;
    for (let i = 0; i < n; i++) out[i] = conv(d[i]!);
    return asBytes(out);
  }
  if (d instanceof Uint16Array || d instanceof Uint8Array) {
    if (d instanceof Uint8Array && dtype === 'BOOL') checkRange(name, d, dtype);
    if (d instanceof Uint16Array && dtype === 'I16') return asBytes(new Int16Array(d.buffer, d.byteOffset, n));
    return asBytes(d);
  }
  if (d instanceof BigInt64Array) return asBytes(d);
  // Int32Array
  switch (dtype) {
    case 'I32':
      return asBytes(d);
    case 'I64':
    case 'U64': {
      if (dtype === 'U64') checkRange(name, d, dtype, [0, 2 ** 31 - 1]);
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt(d[i]!);
      return asBytes(out);
    }
    default: {
      checkRange(name, d, dtype);
      const Ctor = { I16: Int16Array, I8: Int8Array, U8: Uint8Array, U16: Uint16Array, U32: Uint32Array, BOOL: Uint8Array }[
        dtype as 'I16'
      ];
      if (!Ctor) throw new TypeError(`tensor '${name}': cannot store an Int32Array as ${dtype}`);
      return asBytes(Ctor.from(d));
    }
  }
}

function checkRange(name: string, d: ArrayLike<number>, dtype: DType, range = INT_RANGE[dtype]): void {
  if (!range) return;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (v < range[0] || v > range[1]) {
      throw new TypeError(`tensor '${name}': value ${v} at element ${i} does not fit ${dtype}`);
    }
  }
}
