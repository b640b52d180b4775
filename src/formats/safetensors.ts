// safetensors: `u64le N` | N bytes of UTF-8 JSON header | data area. Tensors are read one at a time with positioned
// reads, so multi-GB checkpoints never sit in memory whole.

import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { FormatError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';
import {
  checkTensorToWrite,
  decodeTensorData,
  DTYPE_SIZE,
  encodeTensorData,
  isDType,
  numel,
  type DType,
  type LoadedTensor,
  type TensorInfo,
  type TensorToWrite,
} from './dtype.js';
import { readAt, writeFully } from './io.js';

/** Upstream's default cap (safetensors' MAX_HEADER_SIZE); a larger "length" means the file is not safetensors. */
const DEFAULT_MAX_HEADER_BYTES = 100_000_000;

interface Entry extends TensorInfo {
  /** Byte range relative to the start of the data area. */
  begin: number;
  end: number;
}

export class SafetensorsFile {
  private fh: FileHandle | undefined;

  private constructor(
    readonly path: string,
    fh: FileHandle,
    /** Absolute file offset of the data area (8 + header length). */
    readonly dataStart: number,
    readonly metadata: Record<string, string>,
    private readonly entries: Map<string, Entry>,
    /** In data-offset order. */
    readonly tensors: TensorInfo[],
  ) {
    this.fh = fh;
  }

  /** Opens the file and reads and validates the header only. */
  static async open(path: string, opts: { maxHeaderBytes?: number } = {}): Promise<SafetensorsFile> {
    const fh = await fsp.open(path, 'r');
    try {
      const size = (await fh.stat()).size;
      const { dataStart, header } = await readHeader(fh, path, size, opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES);
      const { metadata, entries } = parseHeader(path, header, size - dataStart);
      const ordered = [...entries.values()];
      const tensors = ordered.map((e) => ({ name: e.name, dtype: e.dtype, shape: [...e.shape] }));
      return new SafetensorsFile(path, fh, dataStart, metadata, new Map(ordered.map((e) => [e.name, e])), tensors);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Byte range of a tensor's data, absolute in the file (for hashing or bit-exact copies). */
  byteRange(name: string): { begin: number; end: number } {
    const e = this.entry(name);
    return { begin: this.dataStart + e.begin, end: this.dataStart + e.end };
  }

  /** Reads one tensor, widened as LoadedTensor describes. */
  async read(name: string): Promise<LoadedTensor> {
    const e = this.entry(name);
    const bytes = await this.readRaw(name);
    return { name, dtype: e.dtype, shape: [...e.shape], data: decodeTensorData(this.path, name, e.dtype, bytes) };
  }

  /** The stored little-endian bytes of one tensor, in a fresh 8-aligned buffer. */
  async readRaw(name: string): Promise<Uint8Array> {
    const e = this.entry(name);
    if (!this.fh) throw new FormatError(this.path, 'read after close()', name);
    const bytes = await readAt(this.fh, this.dataStart + e.begin, e.end - e.begin);
    if (bytes.byteLength !== e.end - e.begin) {
      throw new FormatError(this.path, `file ended while reading the tensor (it shrank after open?)`, name);
    }
    return bytes;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new FormatError(this.path, 'no tensor with this name in the file', name);
    return e;
  }
}

async function readHeader(
  fh: FileHandle,
  path: string,
  size: number,
  cap: number,
): Promise<{ dataStart: number; header: unknown }> {
  if (size < 8) throw new FormatError(path, `file is ${size} bytes, too short for the 8-byte safetensors header length`);
  const lenBytes = await readAt(fh, 0, 8);
  const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n > BigInt(cap)) {
    throw new FormatError(
      path,
      `header length ${n} exceeds the ${cap}-byte limit: not a safetensors file, or a corrupt one`,
    );
  }
  const headerLen = Number(n);
  if (8 + headerLen > size) {
    throw new FormatError(path, `header length ${headerLen} runs past the end of the ${size}-byte file: truncated or not safetensors`);
  }
  const bytes = await readAt(fh, 8, headerLen);
  // Upstream requires the header to start with '{'; it also catches non-safetensors files early.
  if (bytes[0] !== 0x7b) throw new FormatError(path, `header does not start with '{' (expected a JSON object): not a safetensors file`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError(path, 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw new FormatError(path, `header is not valid JSON (${(err as Error).message})`);
  }
  return { dataStart: 8 + headerLen, header };
}

function describe(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

const isIndex = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function parseHeader(
  path: string,
  header: unknown,
  dataLength: number,
): { metadata: Record<string, string>; entries: Map<string, Entry> } {
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new FormatError(path, `header JSON is ${describe(header)}, expected an object`);
  }
  const metadata: Record<string, string> = {};
  const list: Entry[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (raw === null) continue; // serde reads null as "no metadata"
      if (typeof raw !== 'object' || Array.isArray(raw)) {
        throw new FormatError(path, `__metadata__ is ${describe(raw)}, expected an object of strings`);
      }
      for (const [k, v] of Object.entries(raw as object)) {
        if (typeof v !== 'string') {
          throw new FormatError(path, `__metadata__ value for '${k}' is ${describe(v)}; metadata values must be strings`);
        }
        metadata[k] = v;
      }
      continue;
    }
    list.push(parseEntry(path, name, raw));
  }
  // Offsets must tile the data area exactly, as upstream's reader enforces (its writer never leaves gaps or
  // trailing bytes, and files with them fail to load in diffusers/A1111). Checking in offset order also makes the
  // first tensor that does not fit a truncated file the one named in the error.
  list.sort((a, b) => a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : 1));
  let pos = 0;
  let prev: Entry | undefined;
  for (const e of list) {
    const range = `data_offsets [${e.begin}, ${e.end}]`;
    if (e.begin < pos) {
      throw new FormatError(path, `${range} overlap tensor '${prev!.name}' (which ends at ${pos})`, e.name);
    }
    if (e.begin > pos) {
      throw new FormatError(path, `${range} leave a gap of ${e.begin - pos} bytes after the previous tensor (offsets must tile the data area)`, e.name);
    }
    if (e.end > dataLength) {
      throw new FormatError(
        path,
        `${range} reach past the end of the data area (${dataLength} bytes after the header): the file is truncated or its header is wrong`,
        e.name,
      );
    }
    pos = e.end;
    prev = e;
  }
  if (pos !== dataLength) {
    throw new FormatError(path, `${dataLength - pos} bytes after the last tensor are not described by the header (offsets must tile the data area)`);
  }
  return { metadata, entries: new Map(list.map((e) => [e.name, e])) };
}

function parseEntry(path: string, name: string, raw: unknown): Entry {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new FormatError(path, `header entry is ${describe(raw)}, expected {dtype, shape, data_offsets}`, name);
  }
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (!isDType(dtype)) {
    throw new FormatError(path, `unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_SIZE).join(', ')})`, name);
  }
  if (!Array.isArray(shape) || !shape.every(isIndex)) {
    throw new FormatError(path, `shape ${JSON.stringify(shape)} must be a list of non-negative integers`, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
    throw new FormatError(path, `data_offsets ${JSON.stringify(offsets)} must be [begin, end], non-negative integers`, name);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw new FormatError(path, `data_offsets [${begin}, ${end}] end before they begin`, name);
  const bytes = numel(shape) * DTYPE_SIZE[dtype];
  if (!Number.isSafeInteger(bytes) || bytes !== end - begin) {
    throw new FormatError(
      path,
      `${dtype} [${shape.join(', ')}] needs ${bytes} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`,
      name,
    );
  }
  return { name, dtype, shape, begin, end };
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

/** The reference writer's dtype order (safetensors' `Dtype` enum); tensors are laid out by it, descending. */
const DTYPE_RANK: readonly DType[] = ['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'];

/** Compares as Rust compares `String`s (UTF-8 bytes), which differs from JS `<` for characters beyond the BMP. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Writes a safetensors file atomically, with the reference writer's layout: compact JSON header with `__metadata__`
 * first, padded with spaces to a multiple of 8, data sorted by dtype (descending alignment) then name. Tensors are
 * encoded and written one at a time.
 */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  const items = [...(tensors instanceof Map ? tensors.entries() : Object.entries(tensors))].map(([name, t]) => {
    if (name === '__metadata__') throw new TypeError(`'__metadata__' is reserved and cannot name a tensor`);
    return { name, t, dtype: checkTensorToWrite(name, t) };
  });
  items.sort((a, b) => DTYPE_RANK.indexOf(b.dtype) - DTYPE_RANK.indexOf(a.dtype) || compareUtf8(a.name, b.name));

  // Built by hand rather than JSON.stringify(object): JS objects move integer-like keys ("0", "12") to the front.
  const parts: string[] = [];
  if (metadata !== undefined) {
    const meta = Object.entries(metadata).map(([k, v]) => {
      if (typeof v !== 'string') throw new TypeError(`safetensors metadata '${k}' must be a string, got ${describe(v)}`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${meta.join(',')}}`);
  }
  let offset = 0;
  for (const { name, t, dtype } of items) {
    const bytes = numel(t.shape) * DTYPE_SIZE[dtype];
    parts.push(`${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${offset + bytes}]}`);
    offset += bytes;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const headerLen = Math.ceil(json.byteLength / 8) * 8;
  const head = Buffer.alloc(8 + headerLen, 0x20);
  head.writeBigUInt64LE(BigInt(headerLen), 0);
  json.copy(head, 8);

  await writeFileAtomic(path, async (fh) => {
    await writeFully(fh, head, 0);
    let pos = head.byteLength;
    for (const { name, t, dtype } of items) {
      const bytes = encodeTensorData(name, t, dtype);
      await writeFully(fh, bytes, pos);
      pos += bytes.byteLength;
    }
  });
}
