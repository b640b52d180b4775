import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../src/errors.js';
import { bf16BitsToFloat, floatToBf16Bits, type DType, type TensorToWrite } from '../../src/formats/dtype.js';
import { SafetensorsFile, writeSafetensors } from '../../src/formats/safetensors.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';

const tmp = useTmpDir('sdtrain-st-');

/** Hand-built safetensors file: u64 length (overridable), header text (padded unless told), data bytes. */
function craft(name: string, header: unknown, data: Uint8Array | number = 0, opts: { len?: bigint; raw?: boolean } = {}): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  let json = Buffer.from(text, 'utf8');
  if (!opts.raw) json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(opts.len ?? BigInt(json.length));
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const path = join(tmp(), name);
  writeFileSync(path, Buffer.concat([head, json, body]));
  return path;
}

async function openError(path: string, opts?: { maxHeaderBytes?: number }): Promise<FormatError> {
  const err = await SafetensorsFile.open(path, opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FormatError);
  return err as FormatError;
}

const t = (dtype: string, shape: number[], offsets: number[]) => ({ dtype, shape, data_offsets: offsets });

describe('safetensors reader: malformed files give a FormatError naming the file, the problem and the tensor', () => {
  it('file shorter than the 8-byte length prefix', async () => {
    const path = join(tmp(), 'short.safetensors');
    writeFileSync(path, Buffer.from([1, 2, 3]));
    expect((await openError(path)).message).toMatch(/short\.safetensors: file is 3 bytes, too short/);
  });

  it('header length beyond the end of the file (truncated header)', async () => {
    const path = craft('hdr-trunc.safetensors', { a: t('F32', [1], [0, 4]) }, 4, { len: 4000n });
    expect((await openError(path)).message).toMatch(/hdr-trunc\.safetensors: header length 4000 runs past the end of the \d+-byte file/);
  });

  it('absurd header length (beyond the 100 MB cap) and a custom cap', async () => {
    const path = craft('huge.safetensors', { a: t('F32', [1], [0, 4]) }, 4, { len: 1n << 40n });
    expect((await openError(path)).message).toMatch(/huge\.safetensors: header length 1099511627776 exceeds the 100000000-byte limit/);
    const small = craft('capped.safetensors', { a: t('F32', [1], [0, 4]) }, 4);
    expect((await openError(small, { maxHeaderBytes: 16 })).message).toMatch(/exceeds the 16-byte limit/);
  });

  it('header that is not valid JSON', async () => {
    const path = craft('badjson.safetensors', '{"a": {"dtype": "F32",', 0);
    expect((await openError(path)).message).toMatch(/badjson\.safetensors: header is not valid JSON/);
  });

  it('header JSON that is not an object (an array)', async () => {
    const path = craft('array.safetensors', '[1, 2, 3]', 0);
    expect((await openError(path)).message).toMatch(/array\.safetensors: header does not start with '\{' \(expected a JSON object\)/);
  });

  it('header bytes that are not UTF-8', async () => {
    const path = join(tmp(), 'latin.safetensors');
    const json = Buffer.concat([Buffer.from('{"\xff":1}', 'latin1'), Buffer.from('   ')]);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(path, Buffer.concat([len, json]));
    expect((await openError(path)).message).toMatch(/latin\.safetensors: header is not valid UTF-8/);
  });

  it('unknown dtype, naming the tensor', async () => {
    const path = craft('dtype.safetensors', { 'down_blocks.0.w': t('F12', [1], [0, 4]) }, 4);
    expect((await openError(path)).message).toMatch(/dtype\.safetensors \[down_blocks\.0\.w\]: unknown dtype "F12"/);
  });

  it('negative and non-integer shapes', async () => {
    const neg = craft('neg.safetensors', { w: t('F32', [-1, 4], [0, 16]) }, 16);
    expect((await openError(neg)).message).toMatch(/neg\.safetensors \[w\]: shape \[-1,4\] must be a list of non-negative integers/);
    const frac = craft('frac.safetensors', { w: t('F32', [1.5], [0, 6]) }, 6);
    expect((await openError(frac)).message).toMatch(/frac\.safetensors \[w\]: shape \[1\.5\]/);
  });

  it('data_offsets that end before they begin', async () => {
    const path = craft('rev.safetensors', { 'down_blocks.0.resnets.0.conv1.weight': t('F32', [0], [100, 90]) }, 100);
    expect((await openError(path)).message).toBe(
      `${path} [down_blocks.0.resnets.0.conv1.weight]: data_offsets [100, 90] end before they begin`,
    );
  });

  it('data_offsets out of range of the data area', async () => {
    const path = craft('range.safetensors', { a: t('F32', [1], [0, 4]), b: t('F32', [2], [4, 12]) }, 8);
    expect((await openError(path)).message).toMatch(/range\.safetensors \[b\]: data_offsets \[4, 12\] reach past the end of the data area \(8 bytes/);
  });

  it('overlapping offsets name both tensors', async () => {
    const path = craft('overlap.safetensors', { a: t('F32', [2], [0, 8]), b: t('F32', [2], [4, 12]) }, 12);
    expect((await openError(path)).message).toMatch(/overlap\.safetensors \[b\]: data_offsets \[4, 12\] overlap tensor 'a' \(which ends at 8\)/);
  });

  it('a gap between tensors and bytes after the last tensor (offsets must tile the data area)', async () => {
    const gap = craft('gap.safetensors', { a: t('F32', [1], [0, 4]), b: t('F32', [1], [8, 12]) }, 12);
    expect((await openError(gap)).message).toMatch(/gap\.safetensors \[b\]: data_offsets \[8, 12\] leave a gap of 4 bytes/);
    const trailing = craft('trailing.safetensors', { a: t('F32', [1], [0, 4]) }, 8);
    expect((await openError(trailing)).message).toMatch(/trailing\.safetensors: 4 bytes after the last tensor are not described/);
  });

  it('dtype × shape disagreeing with the byte length', async () => {
    const path = craft('len.safetensors', { w: t('F16', [2, 3], [0, 24]) }, 24);
    expect((await openError(path)).message).toMatch(/len\.safetensors \[w\]: F16 \[2, 3\] needs 12 bytes but data_offsets \[0, 24\] span 24/);
  });

  it('metadata value that is not a string, and metadata that is not an object', async () => {
    const path = craft('meta.safetensors', { __metadata__: { ss_network_dim: 4 }, a: t('F32', [1], [0, 4]) }, 4);
    expect((await openError(path)).message).toMatch(/meta\.safetensors: __metadata__ value for 'ss_network_dim' is number; metadata values must be strings/);
    const arr = craft('meta2.safetensors', { __metadata__: ['x'], a: t('F32', [1], [0, 4]) }, 4);
    expect((await openError(arr)).message).toMatch(/__metadata__ is an array/);
  });

  it('a tensor entry that is not an object, or has malformed data_offsets', async () => {
    const path = craft('entry.safetensors', { a: 'F32' }, 0);
    expect((await openError(path)).message).toMatch(/entry\.safetensors \[a\]: header entry is string/);
    const offs = craft('offs.safetensors', { a: t('F32', [1], [0]) }, 4);
    expect((await openError(offs)).message).toMatch(/offs\.safetensors \[a\]: data_offsets \[0\] must be \[begin, end\]/);
  });

  it('a truncated data area is reported at open time, naming the first tensor that does not fit', async () => {
    const good = join(tmp(), 'full.safetensors');
    await writeSafetensors(good, {
      a: { shape: [4], data: new Float32Array(4) },
      b: { shape: [4], data: new Float32Array(4) },
      c: { shape: [4], data: new Float32Array(4) },
    });
    const bytes = readFileSync(good);
    const cut = join(tmp(), 'cut.safetensors');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 20)); // c entirely and 4 bytes of b missing
    expect((await openError(cut)).message).toMatch(/cut\.safetensors \[b\]: data_offsets \[16, 32\] reach past the end of the data area \(28 bytes.*truncated/);
  });

  it('reading a name that is not in the file names it', async () => {
    const path = join(tmp(), 'one.safetensors');
    await writeSafetensors(path, { a: { shape: [1], data: new Float32Array(1) } });
    const f = await SafetensorsFile.open(path);
    await expect(f.read('nope')).rejects.toThrow(/one\.safetensors \[nope\]: no tensor with this name/);
    await f.close();
  });
});

describe('safetensors reader: valid variations', () => {
  it('unpadded header (older writers): unaligned data start is copied and reads correctly', async () => {
    const data = new Uint8Array(new Float32Array([1.5, -2, 3.25]).buffer);
    const path = craft('unpadded.safetensors', '{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}', data, { raw: true });
    const f = await SafetensorsFile.open(path);
    expect(f.dataStart % 4).not.toBe(0);
    expect(Array.from((await f.read('x')).data)).toEqual([1.5, -2, 3.25]);
    await f.close();
  });

  it('does not depend on JSON key order; tensors are listed in data-offset order', async () => {
    const data = new Uint8Array(new Float32Array([1, 2, 3]).buffer);
    const path = craft('order.safetensors', { z: t('F32', [2], [4, 12]), __metadata__: { k: 'v' }, a: t('F32', [], [0, 4]) }, data);
    const f = await SafetensorsFile.open(path);
    expect(f.tensors.map((x) => x.name)).toEqual(['a', 'z']);
    expect(f.metadata).toEqual({ k: 'v' });
    expect(Array.from((await f.read('a')).data)).toEqual([1]);
    expect((await f.read('a')).shape).toEqual([]);
    await f.close();
  });
});

/** Fill a TensorToWrite from stored bytes so the writer reproduces them exactly. */
function fromRaw(dtype: DType, shape: number[], raw: Uint8Array): TensorToWrite {
  const b = raw.buffer;
  switch (dtype) {
    case 'F32': return { shape, data: new Float32Array(b) };
    case 'F16': case 'BF16': return { shape, data: new Uint16Array(b), dtype };
    case 'I64': return { shape, data: new BigInt64Array(b) };
    case 'I32': return { shape, data: new Int32Array(b) };
    case 'BOOL': case 'U8': return { shape, data: raw, dtype };
    default: throw new Error(dtype);
  }
}

describe.runIf(hasShared)('safetensors writer reproduces the reference layout byte for byte', () => {
  const files = hasShared
    ? [
        ...readdirSync(fixture('formats')).filter((f) => f.endsWith('.safetensors')).map((f) => fixture('formats', f)),
        fixture('tiny-sd1', 'text_encoder', 'model.safetensors'),
        fixture('parity', 'tiny-sd1', 'sched_euler_ancestral.safetensors'),
        fixture('parity', 'tiny-sd1', 'text_encoder.safetensors'),
      ]
    : [];
  for (const path of files) {
    it(`${path.split('/fixtures/')[1]}: read, rewrite, identical bytes`, async () => {
      const f = await SafetensorsFile.open(path);
      const tensors = new Map<string, TensorToWrite>();
      for (const info of f.tensors) tensors.set(info.name, fromRaw(info.dtype, info.shape, await f.readRaw(info.name)));
      await f.close();
      const header = JSON.parse(readFileSync(path).subarray(8, f.dataStart).toString('utf8')) as Record<string, unknown>;
      const out = join(tmp(), 'rewrite.safetensors');
      await writeSafetensors(out, tensors, '__metadata__' in header ? f.metadata : undefined);
      expect(readFileSync(out).equals(readFileSync(path))).toBe(true);
    });
  }
});

describe('safetensors writer', () => {
  it('round-trips F32 (NaN, -0, ±inf, denormals), F16/BF16 bits, I64, I32, BOOL, U8, scalars and empty tensors bit-identically', async () => {
    const f32 = new Float32Array([NaN, -0, 0, Infinity, -Infinity, 1e-45, -1.17549435e-38, 3.4028235e38, 1 / 3]);
    new Uint32Array(f32.buffer)[0] = 0x7fa00001; // a NaN with a payload
    const f16bits = Uint16Array.from([0x7e01, 0x8000, 0x0001, 0x7bff, 0x3c00, 0xfc00]);
    const bf16bits = Uint16Array.from([0x7fc1, 0x8000, 0x0001, 0x3f80]);
    const i64 = BigInt64Array.from([0n, -1n, 9007199254740993n, -(2n ** 63n)]);
    const tensors: Record<string, TensorToWrite> = {
      f32: { shape: [3, 3], data: f32 },
      f16: { shape: [6], data: f16bits, dtype: 'F16' },
      bf16: { shape: [2, 2], data: bf16bits, dtype: 'BF16' },
      i64: { shape: [4], data: i64 },
      i64from32: { shape: [2], data: Int32Array.from([-5, 2 ** 31 - 1]), dtype: 'I64' },
      i32: { shape: [2], data: Int32Array.from([-(2 ** 31), 7]) },
      mask: { shape: [3], data: Uint8Array.from([1, 0, 1]), dtype: 'BOOL' },
      u8: { shape: [2], data: Uint8Array.from([0, 255]) },
      alpha: { shape: [], data: Float32Array.from([4]) },
      empty: { shape: [0, 3], data: new Float32Array(0) },
    };
    const path = join(tmp(), 'rt.safetensors');
    await writeSafetensors(path, tensors, { note: 'ünïcode ✓', nested: JSON.stringify({ a: [1] }) });
    const f = await SafetensorsFile.open(path);
    expect(f.metadata).toEqual({ note: 'ünïcode ✓', nested: '{"a":[1]}' });
    const raw = async (n: string) => Buffer.from(await f.readRaw(n));
    expect((await raw('f32')).equals(Buffer.from(f32.buffer))).toBe(true);
    expect((await raw('f16')).equals(Buffer.from(f16bits.buffer))).toBe(true);
    expect((await raw('bf16')).equals(Buffer.from(bf16bits.buffer))).toBe(true);
    expect((await raw('i64')).equals(Buffer.from(i64.buffer))).toBe(true);
    expect(new Uint32Array((await f.read('f32')).data.buffer)).toEqual(new Uint32Array(f32.buffer));
    expect(Object.is((await f.read('f32')).data[1], -0)).toBe(true);
    expect(Array.from((await f.read('i64from32')).data)).toEqual([-5, 2 ** 31 - 1]);
    expect(Array.from((await f.read('i32')).data)).toEqual([-(2 ** 31), 7]);
    expect((await f.read('mask')).data).toEqual(Uint8Array.from([1, 0, 1]));
    expect((await f.read('mask')).dtype).toBe('BOOL');
    expect(Array.from((await f.read('u8')).data)).toEqual([0, 255]);
    expect((await f.read('alpha')).shape).toEqual([]);
    expect((await f.read('empty')).data.length).toBe(0);
    await expect(f.read('i64')).rejects.toThrow(/rt\.safetensors \[i64\]: I64 value 9007199254740993 at element 2 is outside the int32 range/);
    // layout: dtype alignment descending (I64 first), then name
    expect(f.tensors.map((x) => x.name)).toEqual(['i64', 'i64from32', 'alpha', 'empty', 'f32', 'i32', 'bf16', 'f16', 'u8', 'mask']);
    expect(f.dataStart % 8).toBe(0);
    await f.close();
  });

  it('F16/BF16 from Float32Array round to nearest even and read back widened', async () => {
    const src = Float32Array.from([1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 1e-8, -2.5]);
    const path = join(tmp(), 'half.safetensors');
    await writeSafetensors(path, { h: { shape: [6], data: src, dtype: 'F16' }, b: { shape: [6], data: src, dtype: 'BF16' } });
    const f = await SafetensorsFile.open(path);
    expect(Array.from((await f.read('h')).data)).toEqual([1, 1, 1 + 4 * 2 ** -11, 65504, 0, -2.5]);
    expect(Array.from((await f.read('b')).data)).toEqual([1, 1, 1, 65536, bf16BitsToFloat(floatToBf16Bits(1e-8)), -2.5]);
    await f.close();
  });

  it('integer-like tensor names keep the writer order (not JS object key order) and unicode names sort by UTF-8 bytes', async () => {
    const path = join(tmp(), 'names.safetensors');
    const one = () => ({ shape: [1], data: new Float32Array(1) });
    await writeSafetensors(path, new Map([['b', one()], ['10', one()], ['2', one()], ['\u{1F600}', one()], ['\uFFFD', one()]]));
    const f = await SafetensorsFile.open(path);
    expect(f.tensors.map((x) => x.name)).toEqual(['10', '2', 'b', '\uFFFD', '\u{1F600}']);
    await f.close();
  });

  it('non-string metadata and wrong element counts are refused before anything is written', async () => {
    const path = join(tmp(), 'never.safetensors');
    await expect(writeSafetensors(path, { a: { shape: [1], data: new Float32Array(1) } }, { n: 4 as unknown as string })).rejects.toThrow(
      /metadata 'n' must be a string/,
    );
    await expect(writeSafetensors(path, { a: { shape: [2, 2], data: new Float32Array(3) } })).rejects.toThrow(/tensor 'a': shape \[2, 2\] needs 4 elements, data has 3/);
    await expect(writeSafetensors(path, { a: { shape: [1], data: new Uint16Array(1) } })).rejects.toThrow(/raw half bits/);
    expect(existsSync(path)).toBe(false);
  });

  it('is atomic: an error while writing leaves the existing file untouched and no temp file behind', async () => {
    const dir = tmp();
    const path = join(dir, 'atomic.safetensors');
    await writeSafetensors(path, { keep: { shape: [2], data: Float32Array.from([1, 2]) } });
    const before = readFileSync(path);
    const failing = { a: { shape: [1], data: new Float32Array(1) }, z: { shape: [1], data: Int32Array.from([1000]), dtype: 'I8' as const } };
    await expect(writeSafetensors(path, failing)).rejects.toThrow(/value 1000 at element 0 does not fit I8/);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
});
