import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FormatError, UnsafePickleError } from '../../src/errors.js';
import type { TensorToWrite } from '../../src/formats/dtype.js';
import {
  PyFloat,
  PyOrderedDict,
  PyTuple,
  TorchStorage,
  TorchTensorRef,
  TorchTensorToWrite,
  type PyValue,
} from '../../src/formats/pickle.js';
import { SafetensorsFile, writeSafetensors } from '../../src/formats/safetensors.js';
import { openTensorFile } from '../../src/formats/tensor_file.js';
import { flattenTensors, openTorchFile, writeTorchFile } from '../../src/formats/torch.js';
import { ZipReader } from '../../src/formats/zip.js';
import { useTmpDir } from '../helpers/tmp.js';
import { writeZip } from '../helpers/zip.js';

const tmp = useTmpDir('sdtrain-torch-');
const p = (name: string) => join(tmp(), name);

async function openError(path: string): Promise<Error> {
  const err = await openTorchFile(path).then(
    async (f) => (await f.close(), undefined),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FormatError);
  return err as Error;
}

/** Copies a zip, letting `edit` drop (return undefined) or replace entries. */
async function rezip(src: string, dst: string, edit: (name: string, data: Uint8Array) => [string, Uint8Array] | undefined): Promise<void> {
  const zip = await ZipReader.open(src);
  const out: Array<[string, Uint8Array]> = [];
  for (const e of zip.entries) {
    const r = edit(e.name, await zip.read(e));
    if (r) out.push(r);
  }
  await zip.close();
  await writeZip(dst, out);
}

function sampleTensors(): Record<string, TensorToWrite> {
  const f32 = Float32Array.from([NaN, -0, 1e-45, -1e-40, Infinity, 3.5]);
  new Uint32Array(f32.buffer)[0] = 0xffc00123; // negative NaN with payload
  return {
    f32: { shape: [2, 3], data: f32 },
    f16: { shape: [4], data: Uint16Array.from([0x3c00, 0x8001, 0x7e12, 0xfbff]), dtype: 'F16' },
    bf16: { shape: [2], data: Uint16Array.from([0x3f80, 0xff81]), dtype: 'BF16' },
    i64: { shape: [3], data: BigInt64Array.from([-1n, 265n, 2n ** 40n]) },
    mask: { shape: [2, 2], data: Uint8Array.from([1, 0, 0, 1]), dtype: 'BOOL' },
    scalar: { shape: [], data: Float32Array.from([0.125]) },
    empty: { shape: [0], data: new Float32Array(0) },
  };
}

describe('torch .pt writer → reader round trip', () => {
  it('A1111-shaped dicts: tensors of every dtype bit-identical, int keys, tuples, OrderedDicts, nested dicts, scalars, requires_grad', async () => {
    const ts = sampleTensors();
    const k = new PyOrderedDict([['linear.0.weight', new TorchTensorToWrite(ts.f32!)], ['linear.0.bias', new TorchTensorToWrite(ts.scalar!)]]);
    const v = new PyOrderedDict([['linear.0.weight', new TorchTensorToWrite(ts.f16!)]]);
    const root = new Map<PyValue, PyValue>([
      [768, new PyTuple([k, v])],
      ['string_to_param', new Map([['*', new TorchTensorToWrite(ts.bf16!, { requiresGrad: true })]])],
      ['param', new TorchTensorToWrite(ts.i64!, { parameter: true, requiresGrad: false })],
      ['nested', new Map<PyValue, PyValue>([['list', [new TorchTensorToWrite(ts.mask!), 'x', new TorchTensorToWrite(ts.empty!)]]])],
      ['layer_structure', [new PyFloat(1), new PyFloat(2), new PyFloat(1)]],
      ['step', 2000],
      ['name', 'hn-ünï'],
      ['optional_info', null],
      ['is_layer_norm', false],
    ]);
    const path = p('rt.pt');
    await writeTorchFile(path, root);
    const f = await openTorchFile(path);
    try {
      expect(f.archiveName).toBe('rt');
      expect(f.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
        ['768.0.linear.0.weight', 'F32', [2, 3]],
        ['768.0.linear.0.bias', 'F32', []],
        ['768.1.linear.0.weight', 'F16', [4]],
        ['string_to_param.*', 'BF16', [2]],
        ['param', 'I64', [3]],
        ['nested.list.0', 'BOOL', [2, 2]],
        ['nested.list.2', 'F32', [0]],
      ]);
      const r = f.root as Map<PyValue, PyValue>;
      expect(r.get('layer_structure')).toEqual([1, 2, 1]);
      expect(r.get('step')).toBe(2000);
      expect(r.get('name')).toBe('hn-ünï');
      expect(r.get('optional_info')).toBeNull();
      expect(r.get('is_layer_norm')).toBe(false);
      expect((r.get(768) as PyTuple).items[0]).toBeInstanceOf(PyOrderedDict);
      expect(f.get('string_to_param.*')!.requiresGrad).toBe(true);
      expect(f.get('param')!.isParameter).toBe(true);
      expect(f.get('768.0.linear.0.weight')!.requiresGrad).toBe(false);
      const raw = async (n: string) => Buffer.from(await f.get(n)!.loadRaw(n));
      const bytesOf = (t: TensorToWrite) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      expect((await raw('768.0.linear.0.weight')).equals(bytesOf(ts.f32!))).toBe(true);
      expect((await raw('768.1.linear.0.weight')).equals(bytesOf(ts.f16!))).toBe(true);
      expect((await raw('string_to_param.*')).equals(bytesOf(ts.bf16!))).toBe(true);
      expect((await raw('param')).equals(bytesOf(ts.i64!))).toBe(true);
      expect((await raw('nested.list.0')).equals(bytesOf(ts.mask!))).toBe(true);
      expect(Array.from((await f.read('768.0.linear.0.bias')).data)).toEqual([0.125]);
      await expect(f.read('param')).rejects.toThrow(/rt\.pt \[param\]: I64 value 1099511627776 at element 2 is outside the int32 range/);
    } finally {
      await f.close();
    }
  });

  it('the same tensors written as safetensors and as .pt read back with identical bytes through both readers', async () => {
    const ts = sampleTensors();
    await writeSafetensors(p('same.safetensors'), ts);
    await writeTorchFile(p('same.pt'), new Map(Object.entries(ts).map(([n, t]) => [n, new TorchTensorToWrite(t)])));
    const a = await openTensorFile(p('same.safetensors'));
    const b = await openTensorFile(p('same.pt'));
    const st = await SafetensorsFile.open(p('same.safetensors'));
    const pt = await openTorchFile(p('same.pt'));
    try {
      expect([a.format, b.format]).toEqual(['safetensors', 'torch']);
      expect(new Set(a.tensors.map((t) => t.name))).toEqual(new Set(b.tensors.map((t) => t.name)));
      for (const name of Object.keys(ts)) {
        expect(Buffer.from(await st.readRaw(name)).equals(Buffer.from(await pt.get(name)!.loadRaw()))).toBe(true);
        if (name === 'i64') continue;
        const x = await a.read(name);
        const y = await b.read(name);
        expect([y.dtype, y.shape]).toEqual([x.dtype, x.shape]);
        expect(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength).equals(Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength))).toBe(true);
      }
    } finally {
      await Promise.all([a.close(), b.close(), st.close(), pt.close()]);
    }
  });

  it('layout matches torch.save: <stem>/data.pkl, byteorder, data/N, version "3\\n", .data/serialization_id; storages 64-byte aligned', async () => {
    await writeTorchFile(p('layout.pt'), new Map([['a', new TorchTensorToWrite({ shape: [3], data: new Float32Array(3) })], ['b', new TorchTensorToWrite({ shape: [1], data: new Float32Array(1) })]]));
    const zip = await ZipReader.open(p('layout.pt'));
    expect(zip.entries.map((e) => e.name)).toEqual(['layout/data.pkl', 'layout/byteorder', 'layout/data/0', 'layout/data/1', 'layout/version', 'layout/.data/serialization_id']);
    expect(Buffer.from(await zip.read(zip.get('layout/version')!)).toString()).toBe('3\n');
    expect(Buffer.from(await zip.read(zip.get('layout/byteorder')!)).toString()).toBe('little');
    expect(Buffer.from(await zip.read(zip.get('layout/.data/serialization_id')!)).toString()).toMatch(/^\d{40}$/);
    await zip.close();
    const file = readFileSync(p('layout.pt'));
    for (const e of zip.entries) {
      const nameLen = file.readUInt16LE(e.localHeaderOffset + 26);
      const extraLen = file.readUInt16LE(e.localHeaderOffset + 28);
      expect((e.localHeaderOffset + 30 + nameLen + extraLen) % 64).toBe(0);
      expect(file.toString('latin1', e.localHeaderOffset + 30 + nameLen, e.localHeaderOffset + 32 + nameLen)).toBe('FB');
    }
    await writeTorchFile(p('named.pt'), new Map([['x', 1]]), { archiveName: 'archive' });
    expect((await openTorchFile(p('named.pt'))).archiveName).toBe('archive');
  });

  it('zip64 records (forced) are written and read back', async () => {
    const t = { shape: [5], data: Float32Array.from([1, 2, 3, 4, 5]) };
    await writeTorchFile(p('z64.pt'), new Map([['w', new TorchTensorToWrite(t)]]), { zip64: true });
    const buf = readFileSync(p('z64.pt'));
    expect(buf.includes(Buffer.from([0x50, 0x4b, 0x06, 0x06]))).toBe(true); // zip64 end of central directory
    const f = await openTorchFile(p('z64.pt'));
    expect(Array.from((await f.read('w')).data)).toEqual([1, 2, 3, 4, 5]);
    await f.close();
  });

  it('tensors read from one torch file can be written into another bit for bit (F16 stays F16)', async () => {
    await writeTorchFile(p('src.pt'), new Map([['h', new TorchTensorToWrite(sampleTensors().f16!, { requiresGrad: true })]]));
    const src = await openTorchFile(p('src.pt'));
    await writeTorchFile(p('copy.pt'), new Map([['h2', src.get('h')!]]));
    const dst = await openTorchFile(p('copy.pt'));
    expect(dst.get('h2')!.dtype).toBe('F16');
    expect(dst.get('h2')!.requiresGrad).toBe(true);
    expect(Buffer.from(await dst.get('h2')!.loadRaw()).equals(Buffer.from(await src.get('h')!.loadRaw()))).toBe(true);
    await Promise.all([src.close(), dst.close()]);
  });

  it('an error while writing leaves an existing file untouched', async () => {
    await writeTorchFile(p('keep.pt'), new Map([['a', 1]]));
    const before = readFileSync(p('keep.pt'));
    const bad = new TorchTensorToWrite({ shape: [1], data: Int32Array.from([300]), dtype: 'I8' });
    await expect(writeTorchFile(p('keep.pt'), new Map([['a', bad]]))).rejects.toThrow(/does not fit I8/);
    expect(readFileSync(p('keep.pt')).equals(before)).toBe(true);
  });
});

describe('strided tensor views', () => {
  it('non-contiguous strides (transpose, slice with offset, broadcast stride 0) are gathered into row-major order', async () => {
    const data = new Uint8Array(Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]).buffer);
    const storage = new TorchStorage('mem', '0', 'F32', 8, 'cpu', async (o, n) => data.slice(o, o + n));
    const transposed = new TorchTensorRef(storage, 0, [3, 2], [1, 3], false); // of a 2x3 at offset 0
    expect(Array.from((await transposed.load()).data)).toEqual([0, 3, 1, 4, 2, 5]);
    const slice = new TorchTensorRef(storage, 2, [2, 2], [4, 1], false);
    expect(Array.from((await slice.load()).data)).toEqual([2, 3, 6, 7]);
    const expanded = new TorchTensorRef(storage, 5, [2, 3], [0, 1], false);
    expect(Array.from((await expanded.load()).data)).toEqual([5, 6, 7, 5, 6, 7]);
    const tooBig = new TorchTensorRef(storage, 4, [2, 3], [3, 1], false);
    await expect(tooBig.load('t')).rejects.toThrow(/mem \[t\]: the tensor needs elements \[4, 10\) of storage '0', which declares 8/);
  });

  it('flattenTensors names dict keys, ints in decimal, tuple/list indices', () => {
    const s = new TorchStorage('mem', '0', 'F32', 1, 'cpu', async () => new Uint8Array(4));
    const t = new TorchTensorRef(s, 0, [1], [1], false);
    const root = new Map<PyValue, PyValue>([[768, new PyTuple([new Map([['linear.0.weight', t]]), [t]])], ['x', t]]);
    expect(flattenTensors(root).map(([n]) => n)).toEqual(['768.0.linear.0.weight', '768.1.0', 'x']);
  });
});

const classic = (sentinel: string) => `cos\nsystem\n(S'touch ${sentinel}'\ntR.`;
const stackGlobal = (sentinel: string) => {
  const arg = `touch ${sentinel}`;
  return `\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c${String.fromCharCode(arg.length)}${arg}\x94\x85\x94R\x94.`;
};

describe('torch reader: malicious and malformed files', () => {
  for (const [what, payload] of [['protocol-0 os.system', classic], ['protocol-4 STACK_GLOBAL os.system', stackGlobal]] as const) {
    it(`${what} inside a valid zip (x/data.pkl) → UnsafePickleError, nothing runs`, async () => {
      const sentinel = p('pwned');
      await writeZip(p('evil.pt'), [['x/data.pkl', payload(sentinel)], ['x/version', '3\n']]);
      const err = await openError(p('evil.pt'));
      expect(err).toBeInstanceOf(UnsafePickleError);
      expect(err.message).toMatch(/evil\.pt: refusing to load: the pickle names 'os\.system'/);
      expect((err as UnsafePickleError).global).toBe('os.system');
      expect(existsSync(sentinel)).toBe(false);
    });
  }

  it('legacy (pre-1.6) non-zip torch pickle is refused with a re-save hint', async () => {
    writeFileSync(p('legacy.pt'), Buffer.from('80028a0a6cfc9c46f9206aa8501900', 'hex'));
    expect((await openError(p('legacy.pt'))).message).toMatch(/legacy\.pt: legacy torch serialization \(pre-1\.6, not a zip archive\).*re-save it with torch>=1\.6/);
  });

  it('not a zip at all, and a zip whose tail (end of central directory) was cut off', async () => {
    writeFileSync(p('text.pt'), 'hello');
    expect((await openError(p('text.pt'))).message).toMatch(/text\.pt: not a PyTorch file: no zip signature/);
    await writeTorchFile(p('whole.pt'), new Map([['a', new TorchTensorToWrite({ shape: [64], data: new Float32Array(64) })]]));
    const whole = readFileSync(p('whole.pt'));
    writeFileSync(p('cut.pt'), whole.subarray(0, whole.length - 30));
    expect((await openError(p('cut.pt'))).message).toMatch(/cut\.pt: not a zip archive, or a truncated one: no end-of-central-directory record/);
  });

  it('bad central directory: wrong signature, and offsets pointing outside the file', async () => {
    await writeTorchFile(p('cd.pt'), new Map([['a', 1]]));
    const buf = readFileSync(p('cd.pt'));
    const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    const cdOffset = buf.readUInt32LE(eocd + 16);
    const sig = Buffer.from(buf);
    sig.writeUInt32LE(0xdeadbeef, cdOffset);
    writeFileSync(p('cd-sig.pt'), sig);
    expect((await openError(p('cd-sig.pt'))).message).toMatch(/cd-sig\.pt: bad central directory: entry 0 has no central header signature at offset \d+/);
    const off = Buffer.from(buf);
    off.writeUInt32LE(buf.length + 1000, eocd + 16);
    writeFileSync(p('cd-off.pt'), off);
    expect((await openError(p('cd-off.pt'))).message).toMatch(/cd-off\.pt: bad central directory: it claims bytes \[\d+, \d+\) but must end by \d+/);
  });

  it("zip entry names with '../' or outside the archive folder are refused", async () => {
    await writeTorchFile(p('ok.pt'), new Map([['a', 1]]));
    await rezip(p('ok.pt'), p('dotdot.pt'), (n, d) => [n.endsWith('version') ? 'ok/../../etc/passwd' : n, d]);
    expect((await openError(p('dotdot.pt'))).message).toMatch(/dotdot\.pt: zip entry name 'ok\/\.\.\/\.\.\/etc\/passwd' is not a safe relative path/);
    await rezip(p('ok.pt'), p('outside.pt'), (n, d) => [n.endsWith('version') ? 'other/version' : n, d]);
    expect((await openError(p('outside.pt'))).message).toMatch(/outside\.pt: zip entry 'other\/version' is outside the archive folder 'ok\/'/);
    await rezip(p('ok.pt'), p('nopkl.pt'), (n, d) => (n.endsWith('data.pkl') ? undefined : [n, d]));
    expect((await openError(p('nopkl.pt'))).message).toMatch(/nopkl\.pt: no <archive>\/data\.pkl entry/);
  });

  it('a storage key missing from the zip names the tensor', async () => {
    const root = new Map([['string_to_param', new Map([['*', new TorchTensorToWrite({ shape: [2], data: new Float32Array(2) })]])]]);
    await writeTorchFile(p('full.pt'), root);
    await rezip(p('full.pt'), p('missing.pt'), (n, d) => (n.endsWith('data/0') ? undefined : [n, d]));
    expect((await openError(p('missing.pt'))).message).toBe(
      // entry names keep the archive folder of the file they were copied from
      `${p('missing.pt')} [string_to_param.*]: storage '0' is missing from the archive (no entry full/data/0)`,
    );
  });

  it('a storage shorter than the tensor needs names the tensor', async () => {
    await writeTorchFile(p('long.pt'), new Map([['w', new TorchTensorToWrite({ shape: [4, 4], data: new Float32Array(16) })]]));
    await rezip(p('long.pt'), p('short.pt'), (n, d) => [n, n.endsWith('data/0') ? d.subarray(0, 40) : d]);
    expect((await openError(p('short.pt'))).message).toMatch(/short\.pt \[w\]: storage '0' holds 40 bytes but declares 16 F32 elements \(64 bytes\): truncated/);
  });

  it('corrupted storage bytes fail the CRC-32 check when read', async () => {
    await writeTorchFile(p('crc.pt'), new Map([['w', new TorchTensorToWrite({ shape: [16], data: Float32Array.from({ length: 16 }, (_, i) => i) })]]));
    const buf = readFileSync(p('crc.pt'));
    const zip = await ZipReader.open(p('crc.pt'));
    const e = zip.get('crc/data/0')!;
    await zip.close();
    const at = e.localHeaderOffset + 30 + buf.readUInt16LE(e.localHeaderOffset + 26) + buf.readUInt16LE(e.localHeaderOffset + 28) + 5;
    buf[at] = buf[at]! ^ 0xff;
    writeFileSync(p('crc-bad.pt'), buf);
    const f = await openTorchFile(p('crc-bad.pt'));
    await expect(f.read('w')).rejects.toThrow(/crc-bad\.pt \[crc\/data\/0\]: CRC-32 mismatch/);
    await f.close();
  });

  it('big-endian storages (byteorder "big") are refused', async () => {
    await writeTorchFile(p('le.pt'), new Map([['a', 1]]));
    await rezip(p('le.pt'), p('be.pt'), (n, d) => [n, n.endsWith('byteorder') ? Buffer.from('big') : d]);
    expect((await openError(p('be.pt'))).message).toMatch(/be\.pt: storages are big-endian/);
  });

  it('containers nested too deeply to walk are a FormatError, not a crash', async () => {
    const depth = 200_000; // EMPTY_LIST, then (EMPTY_LIST APPEND) repeated: lists nested `depth` deep
    const pkl = Buffer.concat([Buffer.from('\x80\x02', 'latin1'), Buffer.alloc(depth + 1, 0x5d), Buffer.alloc(depth, 0x61), Buffer.from('.')]);
    await writeZip(p('deep.pt'), [['d/data.pkl', pkl]]);
    expect((await openError(p('deep.pt'))).message).toMatch(/deep\.pt: containers are nested too deeply/);
  });

  it('a storage used with two different dtypes is refused', async () => {
    // Two tensors naming storage '0' as Float and as Half.
    const pkl = Buffer.from(
      '\x80\x02}(X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR' +
        'X\x01\x00\x00\x00bctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu.',
      'latin1',
    );
    await writeZip(p('mixed.pt'), [['m/data.pkl', pkl], ['m/data/0', new Uint8Array(4)]]);
    expect((await openError(p('mixed.pt'))).message).toMatch(/mixed\.pt: storage '0' is used as both F32 and F16/);
  });
});
