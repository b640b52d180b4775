import { describe, expect, it } from 'vitest';
import {
  bf16BitsToFloat,
  decodeTensorData,
  encodeTensorData,
  floatToBf16Bits,
  floatToHalfBits,
  halfBitsToFloat,
} from '../../src/formats/dtype.js';
import { FormatError } from '../../src/errors.js';

const isNaNHalf = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

describe('f16 <-> f32', () => {
  it('every one of the 65536 half values widens and narrows back to the same bits (NaNs stay NaN)', () => {
    for (let h = 0; h < 65536; h++) {
      const back = floatToHalfBits(halfBitsToFloat(h));
      if (isNaNHalf(h)) expect(isNaNHalf(back)).toBe(true);
      else if (back !== h) expect(back).toBe(h);
    }
  });

  it('values exactly halfway between two halves round to the even one (round-to-nearest-even)', () => {
    for (let h = 0; h < 0x7bff; h++) {
      const mid = (halfBitsToFloat(h) + halfBitsToFloat(h + 1)) / 2; // exact in float32 (12 significant bits)
      const expected = h % 2 === 0 ? h : h + 1;
      const got = floatToHalfBits(mid);
      if (got !== expected) expect([h, got]).toEqual([h, expected]);
      expect(floatToHalfBits(-mid)).toBe(expected | 0x8000);
    }
  });

  it('known values: max half, overflow to inf, smallest subnormal, underflow to signed zero, -0', () => {
    expect(halfBitsToFloat(0x7bff)).toBe(65504);
    expect(floatToHalfBits(65504)).toBe(0x7bff);
    expect(floatToHalfBits(65520)).toBe(0x7c00); // halfway to the next binade rounds up to inf
    expect(floatToHalfBits(65519.996)).toBe(0x7bff);
    expect(halfBitsToFloat(0x0001)).toBe(2 ** -24);
    expect(floatToHalfBits(2 ** -25)).toBe(0); // tie with 0 → even
    expect(floatToHalfBits(Math.fround(2 ** -25 * 1.0001))).toBe(1);
    expect(floatToHalfBits(-1e-10)).toBe(0x8000);
    expect(floatToHalfBits(-0)).toBe(0x8000);
    expect(floatToHalfBits(Infinity)).toBe(0x7c00);
    expect(floatToHalfBits(-Infinity)).toBe(0xfc00);
    expect(isNaNHalf(floatToHalfBits(NaN))).toBe(true);
  });
});

describe('bf16 <-> f32', () => {
  it('rounds to nearest even on ties and keeps NaN a NaN', () => {
    expect(floatToBf16Bits(1)).toBe(0x3f80);
    expect(floatToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even (down)
    expect(floatToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(floatToBf16Bits(Math.fround(1 + 2 ** -8 + 2 ** -20))).toBe(0x3f81);
    expect(floatToBf16Bits(-0)).toBe(0x8000);
    expect(floatToBf16Bits(3.3895313892515355e38)).toBe(0x7f7f);
    expect(floatToBf16Bits(3.4e38)).toBe(0x7f80); // rounds past max → inf
    const n = floatToBf16Bits(NaN);
    expect(Number.isNaN(bf16BitsToFloat(n))).toBe(true);
  });

  it('widening is exact: bits land in the high half of a float32', () => {
    for (let b = 0; b < 65536; b += 7) {
      const f = bf16BitsToFloat(b);
      if (!Number.isNaN(f)) expect(floatToBf16Bits(f)).toBe(b);
    }
  });
});

describe('decodeTensorData', () => {
  it('I64 values inside int32 decode; a value outside is a FormatError naming the tensor and the value', () => {
    const ok = new BigInt64Array([0n, -1n, 2147483647n, -2147483648n]);
    const data = decodeTensorData('f.safetensors', 'ids', 'I64', new Uint8Array(ok.buffer));
    expect(Array.from(data)).toEqual([0, -1, 2147483647, -2147483648]);
    const bad = new BigInt64Array([1n, 2147483648n]);
    expect(() => decodeTensorData('f.safetensors', 'ids', 'I64', new Uint8Array(bad.buffer))).toThrow(
      /f\.safetensors \[ids\]: I64 value 2147483648 at element 1 is outside the int32 range/,
    );
    expect(() => decodeTensorData('f', 'x', 'I64', new Uint8Array(new BigInt64Array([-(2n ** 40n)]).buffer))).toThrow(FormatError);
  });

  it('unaligned byte offsets are copied, not viewed (Float32Array needs 4-byte alignment)', () => {
    const buf = new Uint8Array(13);
    new DataView(buf.buffer).setFloat32(1, 1.5, true);
    new DataView(buf.buffer).setFloat32(5, -2, true);
    new DataView(buf.buffer).setFloat32(9, 0.25, true);
    const out = decodeTensorData('f', 'x', 'F32', buf.subarray(1));
    expect(Array.from(out)).toEqual([1.5, -2, 0.25]);
  });

  it('F8 E4M3 / E5M2, U8, I8, I16 and F64 widen to the expected values', () => {
    expect(Array.from(decodeTensorData('f', 'x', 'F8_E4M3', Uint8Array.from([0x38, 0xb8, 0x01, 0x7e])))).toEqual([1, -1, 2 ** -9, 448]);
    expect(Array.from(decodeTensorData('f', 'x', 'F8_E5M2', Uint8Array.from([0x3c, 0x7c])))).toEqual([1, Infinity]);
    expect(Array.from(decodeTensorData('f', 'x', 'U8', Uint8Array.from([255, 0])))).toEqual([255, 0]);
    expect(Array.from(decodeTensorData('f', 'x', 'I8', Uint8Array.from([255, 1])))).toEqual([-1, 1]);
    expect(Array.from(decodeTensorData('f', 'x', 'I16', new Uint8Array(Int16Array.from([-300, 7]).buffer)))).toEqual([-300, 7]);
    expect(Array.from(decodeTensorData('f', 'x', 'F64', new Uint8Array(Float64Array.from([0.5, 1e300]).buffer)))).toEqual([0.5, Infinity]);
  });
});

describe('encodeTensorData', () => {
  it('Int32Array narrowed to I8 refuses values that do not fit, naming the tensor', () => {
    expect(() => encodeTensorData('w', { shape: [2], data: Int32Array.from([1, 200]) }, 'I8')).toThrow(/tensor 'w': value 200 at element 1 does not fit I8/);
  });
});
