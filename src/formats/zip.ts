// A minimal zip reader/writer for torch's container: stored (and, on read, deflated) entries, zip64, CRC-32.
// The reader keeps a file handle and does positioned reads; it never loads the archive whole.

import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as zlib from 'node:zlib';
import { FormatError } from '../errors.js';
import { readAt, writeFully } from './io.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated. */
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const u64 = (dv: DataView, at: number) => Number(dv.getBigUint64(at, true));

export class ZipReader {
  private fh: FileHandle | undefined;
  private readonly byName: Map<string, ZipEntry>;
  private readonly dataOffsets = new Map<ZipEntry, number>();

  private constructor(
    readonly path: string,
    fh: FileHandle,
    readonly entries: ZipEntry[],
    /** Where the central directory starts: entry data must end before it. */
    private readonly dataLimit: number,
  ) {
    this.fh = fh;
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }

  static async open(path: string): Promise<ZipReader> {
    const fh = await fsp.open(path, 'r');
    try {
      const size = (await fh.stat()).size;
      const { cdOffset, cdSize, count } = await readEndOfCentralDirectory(fh, path, size);
      const cd = await readAt(fh, cdOffset, cdSize);
      const entries = parseCentralDirectory(path, cd, count, cdOffset);
      return new ZipReader(path, fh, entries, cdOffset);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** Reads a whole entry (inflating if needed) and checks its CRC-32. */
  async read(entry: ZipEntry): Promise<Uint8Array> {
    return this.readRange(entry, 0, entry.size);
  }

  /** Reads `length` bytes at `start` of an entry's (uncompressed) content. Stored entries are read in place. */
  async readRange(entry: ZipEntry, start: number, length: number): Promise<Uint8Array> {
    if (start < 0 || length < 0 || start + length > entry.size) {
      throw new FormatError(this.path, `bytes [${start}, ${start + length}) requested but the entry holds ${entry.size}`, entry.name);
    }
    if (entry.flags & 1) throw new FormatError(this.path, 'entry is encrypted', entry.name);
    const fh = this.handle(entry.name);
    const dataOffset = await this.dataOffset(entry);
    let bytes: Uint8Array;
    if (entry.method === 0) {
      bytes = await readAt(fh, dataOffset + start, length);
      if (bytes.byteLength !== length) throw new FormatError(this.path, 'file ended inside the entry (truncated?)', entry.name);
      if (start === 0 && length === entry.size) this.checkCrc(entry, bytes);
      return bytes;
    }
    if (entry.method === 8) {
      // torch never compresses, but a user who re-zipped an archive gets it read rather than refused.
      const packed = await readAt(fh, dataOffset, entry.compressedSize);
      try {
        bytes = zlib.inflateRawSync(packed, { maxOutputLength: Math.max(entry.size, 1) });
      } catch (err) {
        throw new FormatError(this.path, `cannot inflate the entry (${(err as Error).message})`, entry.name);
      }
      if (bytes.byteLength !== entry.size) {
        throw new FormatError(this.path, `inflated to ${bytes.byteLength} bytes, the directory says ${entry.size}`, entry.name);
      }
      this.checkCrc(entry, bytes);
      // A fresh copy keeps the result 8-aligned like stored reads (typed-array views need alignment).
      return new Uint8Array(bytes.subarray(start, start + length));
    }
    throw new FormatError(this.path, `compression method ${entry.method} is not supported (only stored and deflated)`, entry.name);
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  private handle(name: string): FileHandle {
    if (!this.fh) throw new FormatError(this.path, 'read after close()', name);
    return this.fh;
  }

  private checkCrc(entry: ZipEntry, bytes: Uint8Array): void {
    const crc = zlib.crc32(bytes) >>> 0;
    if (crc !== entry.crc32) {
      throw new FormatError(this.path, `CRC-32 mismatch (stored ${hex(entry.crc32)}, computed ${hex(crc)}): the file is corrupt`, entry.name);
    }
  }

  /** The local header repeats the name and has its own extra field, so the data offset needs one small read. */
  private async dataOffset(entry: ZipEntry): Promise<number> {
    const cached = this.dataOffsets.get(entry);
    if (cached !== undefined) return cached;
    const head = await readAt(this.handle(entry.name), entry.localHeaderOffset, 30);
    const dv = view(head);
    if (head.byteLength < 30 || dv.getUint32(0, true) !== SIG_LOCAL) {
      throw new FormatError(this.path, `no local file header at offset ${entry.localHeaderOffset}`, entry.name);
    }
    const offset = entry.localHeaderOffset + 30 + dv.getUint16(26, true) + dv.getUint16(28, true);
    if (offset + entry.compressedSize > this.dataLimit) {
      throw new FormatError(this.path, `entry data [${offset}, ${offset + entry.compressedSize}) runs into the central directory at ${this.dataLimit}`, entry.name);
    }
    this.dataOffsets.set(entry, offset);
    return offset;
  }
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

async function readEndOfCentralDirectory(
  fh: FileHandle,
  path: string,
  size: number,
): Promise<{ cdOffset: number; cdSize: number; count: number }> {
  // The EOCD record is 22 bytes plus a comment of up to 64 KiB, so it lies in the last 65557 bytes.
  const tailStart = Math.max(0, size - (22 + U16_MAX));
  const tail = await readAt(fh, tailStart, size - tailStart);
  const dv = view(tail);
  let at = -1;
  for (let i = tail.byteLength - 22; i >= 0; i--) {
    // The comment-length check rejects "PK\5\6" byte sequences that merely occur inside data or a comment.
    if (dv.getUint32(i, true) === SIG_EOCD && i + 22 + dv.getUint16(i + 20, true) === tail.byteLength) {
      at = i;
      break;
    }
  }
  if (at < 0) {
    throw new FormatError(path, 'not a zip archive, or a truncated one: no end-of-central-directory record');
  }
  const eocdPos = tailStart + at;
  if (dv.getUint16(at + 4, true) !== 0 || dv.getUint16(at + 6, true) !== 0) {
    throw new FormatError(path, 'multi-disk zip archives are not supported');
  }
  let count = dv.getUint16(at + 10, true);
  let cdSize = dv.getUint32(at + 12, true);
  let cdOffset = dv.getUint32(at + 16, true);
  let cdLimit = eocdPos;
  // Archives over 4 GB (full checkpoints) carry the real values in a zip64 record found via the locator.
  if (eocdPos >= 20) {
    const loc = await readAt(fh, eocdPos - 20, 20);
    const ldv = view(loc);
    if (ldv.getUint32(0, true) === SIG_ZIP64_LOCATOR) {
      const recPos = u64(ldv, 8);
      const rec = recPos + 56 <= eocdPos - 20 ? await readAt(fh, recPos, 56) : new Uint8Array(0);
      const rdv = view(rec);
      if (rec.byteLength < 56 || rdv.getUint32(0, true) !== SIG_ZIP64_EOCD) {
        throw new FormatError(path, `bad central directory: the zip64 locator points to offset ${recPos}, which holds no zip64 record`);
      }
      count = u64(rdv, 32);
      cdSize = u64(rdv, 40);
      cdOffset = u64(rdv, 48);
      cdLimit = recPos;
    }
  }
  if (cdOffset + cdSize > cdLimit || !Number.isSafeInteger(cdOffset + cdSize)) {
    throw new FormatError(path, `bad central directory: it claims bytes [${cdOffset}, ${cdOffset + cdSize}) but must end by ${cdLimit}`);
  }
  if (count * 46 > cdSize) {
    throw new FormatError(path, `bad central directory: ${count} entries cannot fit in ${cdSize} bytes`);
  }
  return { cdOffset, cdSize, count };
}

function parseCentralDirectory(path: string, cd: Uint8Array, count: number, cdOffset: number): ZipEntry[] {
  const dv = view(cd);
  const entries: ZipEntry[] = [];
  const names = new Set<string>();
  let p = 0;
  const bad = (what: string) => new FormatError(path, `bad central directory: entry ${entries.length} ${what}`);
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.byteLength || dv.getUint32(p, true) !== SIG_CENTRAL) {
      throw bad(`has no central header signature at offset ${cdOffset + p}`);
    }
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.byteLength) throw bad('runs past the end of the directory');
    const name = Buffer.from(cd.subarray(p + 46, p + 46 + nameLen)).toString('utf8');
    const e: ZipEntry = {
      name,
      flags: dv.getUint16(p + 8, true),
      method: dv.getUint16(p + 10, true),
      crc32: dv.getUint32(p + 16, true),
      compressedSize: dv.getUint32(p + 20, true),
      size: dv.getUint32(p + 24, true),
      localHeaderOffset: dv.getUint32(p + 42, true),
    };
    readZip64Extra(cd.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen), e, () => bad(`'${name}' has a short zip64 extra field`));
    if (e.method === 0 && e.compressedSize !== e.size) throw bad(`'${name}' is stored but its sizes differ`);
    if (e.localHeaderOffset + 30 > cdOffset) throw bad(`'${name}' has its local header at ${e.localHeaderOffset}, past the data area`);
    if (names.has(name)) throw bad(`'${name}' is a duplicate name`);
    names.add(name);
    entries.push(e);
    p = end;
  }
  return entries;
}

/** The zip64 extra field (id 1) holds, in order, the 64-bit values of whichever fields were saturated to 0xFFFFFFFF. */
function readZip64Extra(extra: Uint8Array, e: ZipEntry, short: () => Error): void {
  const dv = view(extra);
  for (let q = 0; q + 4 <= extra.byteLength; ) {
    const id = dv.getUint16(q, true);
    const len = dv.getUint16(q + 2, true);
    if (id === 1) {
      let r = q + 4;
      const take = () => {
        if (r + 8 > q + 4 + len || r + 8 > extra.byteLength) throw short();
        const v = u64(dv, r);
        r += 8;
        return v;
      };
      if (e.size === U32_MAX) e.size = take();
      if (e.compressedSize === U32_MAX) e.compressedSize = take();
      if (e.localHeaderOffset === U32_MAX) e.localHeaderOffset = take();
      return;
    }
    q += 4 + len;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

interface Written {
  name: Buffer;
  crc: number;
  size: number;
  offset: number;
}

/**
 * Appends stored entries to an open file and writes the central directory on `finish()`. Entry data is aligned to
 * `align` bytes with an extra field of id "FB" padded with 'Z', as torch's PyTorchStreamWriter does, so that a
 * reader could map storages directly. Zip64 records are used wherever a size or offset needs them.
 */
export class ZipWriter {
  private pos = 0;
  private readonly written: Written[] = [];

  constructor(
    private readonly fh: FileHandle,
    private readonly opts: { align?: number; forceZip64?: boolean } = {},
  ) {}

  async add(name: string, data: Uint8Array): Promise<void> {
    const nameBytes = Buffer.from(name, 'utf8');
    const size = data.byteLength;
    const offset = this.pos;
    const zip64 = this.opts.forceZip64 === true || size >= U32_MAX || offset >= U32_MAX;
    const crc = zlib.crc32(data) >>> 0;
    const zip64Len = zip64 ? 20 : 0;
    const align = this.opts.align ?? 64;
    const start = offset + 30 + nameBytes.byteLength + zip64Len + 4;
    const pad = (align - (start % align)) % align;
    const head = Buffer.alloc(30 + nameBytes.byteLength + zip64Len + 4 + pad, 0x5a /* 'Z' */);
    head.writeUInt32LE(SIG_LOCAL, 0);
    head.writeUInt16LE(zip64 ? 45 : 20, 4);
    head.writeUInt16LE(nonAscii(nameBytes) ? 0x800 : 0, 6); // bit 11: the name is UTF-8
    head.writeUInt16LE(0, 8); // stored
    head.writeUInt16LE(0, 10); // time 00:00
    head.writeUInt16LE(0x21, 12); // date 1980-01-01: fixed, so identical inputs give identical files
    head.writeUInt32LE(crc, 14);
    head.writeUInt32LE(zip64 ? U32_MAX : size, 18);
    head.writeUInt32LE(zip64 ? U32_MAX : size, 22);
    head.writeUInt16LE(nameBytes.byteLength, 26);
    head.writeUInt16LE(zip64Len + 4 + pad, 28);
    nameBytes.copy(head, 30);
    let x = 30 + nameBytes.byteLength;
    if (zip64) {
      head.writeUInt16LE(1, x);
      head.writeUInt16LE(16, x + 2);
      head.writeBigUInt64LE(BigInt(size), x + 4);
      head.writeBigUInt64LE(BigInt(size), x + 12);
      x += 20;
    }
    head.write('FB', x, 'latin1');
    head.writeUInt16LE(pad, x + 2);
    await writeFully(this.fh, head, this.pos);
    this.pos += head.byteLength;
    await writeFully(this.fh, data, this.pos);
    this.pos += size;
    this.written.push({ name: nameBytes, crc, size, offset });
  }

  async finish(): Promise<void> {
    const force = this.opts.forceZip64 === true;
    const parts: Buffer[] = [];
    for (const w of this.written) {
      const zip64 = force || w.size >= U32_MAX || w.offset >= U32_MAX;
      const rec = Buffer.alloc(46 + w.name.byteLength + (zip64 ? 28 : 0));
      rec.writeUInt32LE(SIG_CENTRAL, 0);
      rec.writeUInt16LE(zip64 ? 45 : 20, 4); // made by: MS-DOS, spec version
      rec.writeUInt16LE(zip64 ? 45 : 20, 6);
      rec.writeUInt16LE(nonAscii(w.name) ? 0x800 : 0, 8);
      rec.writeUInt16LE(0x21, 14);
      rec.writeUInt32LE(w.crc, 16);
      rec.writeUInt32LE(zip64 ? U32_MAX : w.size, 20);
      rec.writeUInt32LE(zip64 ? U32_MAX : w.size, 24);
      rec.writeUInt16LE(w.name.byteLength, 28);
      rec.writeUInt16LE(zip64 ? 28 : 0, 30);
      rec.writeUInt32LE(zip64 ? U32_MAX : w.offset, 42);
      w.name.copy(rec, 46);
      if (zip64) {
        const x = 46 + w.name.byteLength;
        rec.writeUInt16LE(1, x);
        rec.writeUInt16LE(24, x + 2);
        rec.writeBigUInt64LE(BigInt(w.size), x + 4);
        rec.writeBigUInt64LE(BigInt(w.size), x + 12);
        rec.writeBigUInt64LE(BigInt(w.offset), x + 20);
      }
      parts.push(rec);
    }
    const cd = Buffer.concat(parts);
    const cdOffset = this.pos;
    const count = this.written.length;
    const zip64 = force || count >= U16_MAX || cdOffset >= U32_MAX || cd.byteLength >= U32_MAX;
    const tail: Buffer[] = [cd];
    if (zip64) {
      const rec = Buffer.alloc(56);
      rec.writeUInt32LE(SIG_ZIP64_EOCD, 0);
      rec.writeBigUInt64LE(44n, 4); // size of the rest of this record
      rec.writeUInt16LE(45, 12);
      rec.writeUInt16LE(45, 14);
      rec.writeBigUInt64LE(BigInt(count), 24);
      rec.writeBigUInt64LE(BigInt(count), 32);
      rec.writeBigUInt64LE(BigInt(cd.byteLength), 40);
      rec.writeBigUInt64LE(BigInt(cdOffset), 48);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(SIG_ZIP64_LOCATOR, 0);
      loc.writeBigUInt64LE(BigInt(cdOffset + cd.byteLength), 8);
      loc.writeUInt32LE(1, 16);
      tail.push(rec, loc);
    }
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(SIG_EOCD, 0);
    eocd.writeUInt16LE(zip64 ? U16_MAX : count, 8);
    eocd.writeUInt16LE(zip64 ? U16_MAX : count, 10);
    eocd.writeUInt32LE(zip64 ? U32_MAX : cd.byteLength, 12);
    eocd.writeUInt32LE(zip64 ? U32_MAX : cdOffset, 16);
    tail.push(eocd);
    const all = Buffer.concat(tail);
    await writeFully(this.fh, all, this.pos);
    this.pos += all.byteLength;
  }
}

function nonAscii(b: Uint8Array): boolean {
  return b.some((c) => c >= 0x80);
}
