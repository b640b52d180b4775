import { closeSync, openSync, writeFileSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../src/errors.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { openTensorFile, sniffTensorFile } from '../../src/formats/tensor_file.js';
import { openTorchFile, writeTorchFile } from '../../src/formats/torch.js';
import { ZipReader } from '../../src/formats/zip.js';
import { useTmpDir } from '../helpers/tmp.js';
import { writeZip } from '../helpers/zip.js';

const tmp = useTmpDir('sdtrain-zip-');
const p = (n: string) => join(tmp(), n);

/** A one-entry zip built by hand, so method, flags and names can be anything. */
function handZip(entries: Array<{ name: string; data: Uint8Array; method?: number; flags?: number }>): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const method = e.method ?? 0;
    const body = method === 8 ? zlib.deflateRawSync(e.data) : Buffer.from(e.data);
    const name = Buffer.from(e.name);
    const crc = zlib.crc32(e.data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(e.flags ?? 0, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(e.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt16LE(e.flags ?? 0, 8);
    cd.writeUInt16LE(method, 10);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(body.length, 20);
    cd.writeUInt32LE(e.data.length, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(offset, 42);
    parts.push(local, name, body);
    central.push(cd, name);
    offset += 30 + name.length + body.length;
  }
  const cdBuf = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cdBuf.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...parts, cdBuf, eocd]);
}

describe('zip reader', () => {
  it('inflates deflated entries and checks their CRC', async () => {
    const data = Buffer.from('hello hello hello hello, torch');
    writeFileSync(p('deflate.zip'), handZip([{ name: 'a/b', data, method: 8 }]));
    const z = await ZipReader.open(p('deflate.zip'));
    expect(Buffer.from(await z.read(z.get('a/b')!)).toString()).toBe(data.toString());
    expect(Buffer.from(await z.readRange(z.get('a/b')!, 6, 5)).toString()).toBe('hello');
    await z.close();
  });

  it('refuses encrypted entries, unknown compression methods and duplicate names', async () => {
    writeFileSync(p('enc.zip'), handZip([{ name: 'x', data: Buffer.from('abc'), flags: 1 }]));
    const z = await ZipReader.open(p('enc.zip'));
    await expect(z.read(z.get('x')!)).rejects.toThrow(/enc\.zip \[x\]: entry is encrypted/);
    await z.close();
    writeFileSync(p('bz.zip'), handZip([{ name: 'x', data: Buffer.from('abc'), method: 12 }]));
    const z2 = await ZipReader.open(p('bz.zip'));
    await expect(z2.read(z2.get('x')!)).rejects.toThrow(/bz\.zip \[x\]: compression method 12 is not supported/);
    await z2.close();
    writeFileSync(p('dup.zip'), handZip([{ name: 'x', data: Buffer.from('a') }, { name: 'x', data: Buffer.from('b') }]));
    await expect(ZipReader.open(p('dup.zip'))).rejects.toThrow(/dup\.zip: bad central directory: entry 1 'x' is a duplicate name/);
  });

  it('reads zip64 records written by our writer (sizes, offsets, end-of-directory)', async () => {
    await writeZip(p('z64.zip'), [['a', 'first'], ['b/c', new Uint8Array(1000).fill(7)]], { forceZip64: true });
    const z = await ZipReader.open(p('z64.zip'));
    expect(z.entries.map((e) => [e.name, e.size])).toEqual([['a', 5], ['b/c', 1000]]);
    expect((await z.read(z.get('b/c')!)).every((b) => b === 7)).toBe(true);
    await z.close();
  });

  it('a local header that is not where the directory says is a FormatError', async () => {
    const buf = handZip([{ name: 'x', data: Buffer.from('abc') }]);
    buf.writeUInt32LE(0, 0); // wipe the local header signature
    writeFileSync(p('nolocal.zip'), buf);
    const z = await ZipReader.open(p('nolocal.zip'));
    await expect(z.read(z.get('x')!)).rejects.toThrow(/nolocal\.zip \[x\]: no local file header at offset 0/);
    await z.close();
  });
});

describe('format sniffing front door', () => {
  it('tells safetensors (even with 0x80 as the first length byte), torch zips and other files apart', async () => {
    // header length 0x80 = 128: first byte looks like a pickle PROTO opcode
    const json = `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`.padEnd(128, ' ');
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(128n);
    writeFileSync(p('x80.bin'), Buffer.concat([head, Buffer.from(json), Buffer.alloc(4)]));
    expect(await sniffTensorFile(p('x80.bin'))).toBe('safetensors');
    await expect(openTorchFile(p('x80.bin'))).rejects.toThrow(/x80\.bin: this is a safetensors file, not a PyTorch zip/);
    await writeTorchFile(p('t.safetensors'), new Map([['a', 1]])); // misnamed on purpose: content decides
    const f = await openTensorFile(p('t.safetensors'));
    expect(f.format).toBe('torch');
    await f.close();
    writeFileSync(p('junk.ckpt'), 'not a model');
    await expect(sniffTensorFile(p('junk.ckpt'))).rejects.toThrow(FormatError);
  });

  it('safetensors reads one tensor without touching the rest of a multi-GB (sparse) file', async () => {
    const huge = 3_000_000_000;
    const json = Buffer.from(JSON.stringify({ small: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, huge: { dtype: 'U8', shape: [huge], data_offsets: [8, 8 + huge] } }));
    const padded = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(padded.length));
    const small = Buffer.from(new Float32Array([1.25, -4]).buffer);
    writeFileSync(p('sparse.safetensors'), Buffer.concat([head, padded, small]));
    const fd = openSync(p('sparse.safetensors'), 'r+');
    ftruncateSync(fd, 8 + padded.length + 8 + huge);
    closeSync(fd);
    const f = await SafetensorsFile.open(p('sparse.safetensors'));
    expect(f.tensors.map((t) => t.name)).toEqual(['small', 'huge']);
    expect(Array.from((await f.read('small')).data)).toEqual([1.25, -4]);
    expect(f.byteRange('huge')).toEqual({ begin: f.dataStart + 8, end: f.dataStart + 8 + huge });
    await f.close();
  });
});
