// PyTorch's zip container (torch.save since 1.6): `<archive>/data.pkl` (protocol-2 pickle), `<archive>/data/<key>`
// (raw little-endian storages, stored uncompressed, 64-byte aligned), `<archive>/version`, and since torch 2.1
// `<archive>/byteorder` and `<archive>/.data/serialization_id`. The archive name is the file stem torch chose, so
// it is found from the entry ending in `/data.pkl`, never assumed.

import { randomInt } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as nodePath from 'node:path';
import { FormatError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';
import { DTYPE_SIZE, encodeTensorData, type LoadedTensor, type TensorInfo } from './dtype.js';
import { readAt } from './io.js';
import { STORAGE_DTYPE } from './pickle_globals.js';
import { pickle } from './pickle_write.js';
import { unpickle } from './pickle.js';
import {
  PyGlobal,
  PyObject,
  PyTuple,
  TorchStorage,
  TorchTensorRef,
  TorchTensorToWrite,
  type PyValue,
} from './pickle_values.js';
import { ZipReader, ZipWriter, type ZipEntry } from './zip.js';

export interface TorchFile {
  path: string;
  /** The folder name inside the zip (torch uses the file stem at save time). */
  archiveName: string;
  /** The unpickled object: usually a dict (Map) of tensors and metadata. */
  root: PyValue;
  /** Every tensor reachable from `root`, named by dotted path (see flattenTensors). */
  tensors: TensorInfo[];
  get(name: string): TorchTensorRef | undefined;
  /** Reads one tensor by its dotted name. */
  read(name: string): Promise<LoadedTensor>;
  close(): Promise<void>;
}

/** Opens a torch zip file: reads the pickle (never executed) and the zip directory; storages are read on demand. */
export async function openTorchFile(path: string): Promise<TorchFile> {
  await sniff(path);
  const zip = await ZipReader.open(path);
  try {
    const { prefix, pkl } = findArchive(path, zip.entries);
    const byteorder = zip.get(`${prefix}/byteorder`);
    if (byteorder) {
      const order = Buffer.from(await zip.read(byteorder)).toString('latin1').trim();
      if (order !== 'little') throw new FormatError(path, `storages are ${order}-endian; only little-endian files are supported`);
    }
    const storages = new Map<string, TorchStorage>();
    const root = unpickle(await zip.read(pkl), {
      file: path,
      persistentLoad: (pid) => storageFor(path, zip, prefix, storages, pid),
    });
    let flat: Array<[string, TorchTensorRef]>;
    try {
      flat = flattenTensors(root);
    } catch (err) {
      if (err instanceof RangeError) throw new FormatError(path, 'containers are nested too deeply to walk');
      throw err;
    }
    const fromZip = new Set(storages.values());
    const checked = new Set<TorchStorage>();
    for (const [name, ref] of flat) {
      if (!fromZip.has(ref.storage)) continue; // in-memory (numpy) tensors have no zip entry
      checkStorage(path, zip, prefix, ref.storage, name);
      checked.add(ref.storage);
      const extent = ref.extent();
      if (extent > 0 && ref.storageOffset + extent > ref.storage.numel) {
        throw new FormatError(path, `the tensor needs elements [${ref.storageOffset}, ${ref.storageOffset + extent}) but storage '${ref.storageKey}' declares ${ref.storage.numel}`, name);
      }
    }
    for (const s of storages.values()) if (!checked.has(s)) checkStorage(path, zip, prefix, s, `storage ${s.key}`);
    const byName = new Map<string, TorchTensorRef>();
    for (const [name, ref] of flat) if (!byName.has(name)) byName.set(name, ref); // first wins on duplicate paths
    return {
      path,
      archiveName: prefix,
      root,
      tensors: [...byName].map(([name, r]) => ({ name, dtype: r.dtype, shape: [...r.shape] })),
      get: (name) => byName.get(name),
      read: async (name) => {
        const ref = byName.get(name);
        if (!ref) throw new FormatError(path, 'no tensor with this name in the file', name);
        return ref.load(name);
      },
      close: () => zip.close(),
    };
  } catch (err) {
    await zip.close();
    throw err;
  }
}

/** Tells legacy and non-torch files apart before zip parsing produces a less helpful message. */
async function sniff(path: string): Promise<void> {
  const fh = await fsp.open(path, 'r');
  const head = await readAt(fh, 0, 512).finally(() => fh.close());
  if (head.byteLength === 0) throw new FormatError(path, 'the file is empty');
  const sig = head.byteLength >= 4 ? new DataView(head.buffer).getUint32(0, true) : 0;
  if (sig === 0x04034b50 || sig === 0x06054b50) return;
  if (head.byteLength >= 9 && head[8] === 0x7b) {
    throw new FormatError(path, 'this is a safetensors file, not a PyTorch zip (open it with openTensorFile or SafetensorsFile)');
  }
  // torch < 1.6 wrote a bare pickle stream (PROTO, then LONG1 magic 0x1950a86a20f9469cfc6c) or, before 0.4, a tar.
  const legacy = (head[0] === 0x80 && head[2] === 0x8a) || Buffer.from(head.subarray(257, 262)).toString('latin1') === 'ustar';
  if (legacy) {
    throw new FormatError(path, 'legacy torch serialization (pre-1.6, not a zip archive) is not supported; re-save it with torch>=1.6 (torch.save(torch.load(f), f))');
  }
  throw new FormatError(path, 'not a PyTorch file: no zip signature (torch.save writes a zip archive)');
}

function findArchive(path: string, entries: ZipEntry[]): { prefix: string; pkl: ZipEntry } {
  const pkls = entries.filter((e) => e.name.endsWith('/data.pkl'));
  const top = pkls.filter((e) => e.name.indexOf('/') === e.name.length - '/data.pkl'.length);
  const pkl = pkls.length === 1 ? pkls[0] : top.length === 1 ? top[0] : undefined;
  if (!pkl) {
    throw new FormatError(path, pkls.length === 0 ? 'no <archive>/data.pkl entry: not a torch.save file' : `${pkls.length} data.pkl entries: ambiguous archive`);
  }
  const prefix = pkl.name.slice(0, -'/data.pkl'.length);
  // Like A1111's safe.py, refuse archives with entries outside the torch layout: no absolute or parent paths.
  for (const e of entries) {
    const parts = e.name.split('/');
    if (e.name.startsWith('/') || e.name.includes('\\') || parts.includes('..') || parts.includes('.')) {
      throw new FormatError(path, `zip entry name '${e.name}' is not a safe relative path`);
    }
    if (!e.name.startsWith(`${prefix}/`)) {
      throw new FormatError(path, `zip entry '${e.name}' is outside the archive folder '${prefix}/'`);
    }
  }
  return { prefix, pkl };
}

/** BINPERSID for torch: ('storage', torch.<Type>Storage, key, location, numel) → a lazily read storage. */
function storageFor(path: string, zip: ZipReader, prefix: string, cache: Map<string, TorchStorage>, pid: PyValue): TorchStorage {
  const items = pid instanceof PyTuple ? pid.items : [];
  const [tag, type, key, location, count] = items;
  if (tag !== 'storage' || items.length !== 5) throw new FormatError(path, `malformed pickle: persistent id is not a ('storage', type, key, location, numel) tuple`);
  if (!(type instanceof PyGlobal) || type.module !== 'torch' || !Object.hasOwn(STORAGE_DTYPE, type.name)) {
    throw new FormatError(path, `malformed pickle: storage type must be a torch.<Type>Storage, got ${type instanceof PyGlobal ? type.fullName : typeof type}`);
  }
  const k = typeof key === 'number' ? String(key) : key;
  if (typeof k !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(k) || k.includes('..')) throw new FormatError(path, `malformed pickle: bad storage key ${String(key)}`);
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) throw new FormatError(path, `malformed pickle: storage '${k}' has a bad element count`);
  const dtype = STORAGE_DTYPE[type.name]!;
  const cached = cache.get(k);
  if (cached) {
    if (cached.dtype !== dtype) throw new FormatError(path, `storage '${k}' is used as both ${cached.dtype} and ${dtype}`);
    return cached;
  }
  const storage = new TorchStorage(path, k, dtype, count, typeof location === 'string' ? location : 'cpu', async (offset, length) => {
    const entry = zip.get(`${prefix}/data/${k}`);
    if (!entry) throw new FormatError(path, `storage '${k}' is missing from the archive (no entry ${prefix}/data/${k})`);
    return zip.readRange(entry, offset, length);
  });
  cache.set(k, storage);
  return storage;
}

function checkStorage(path: string, zip: ZipReader, prefix: string, s: TorchStorage, name: string): void {
  const entry = zip.get(`${prefix}/data/${s.key}`);
  if (!entry) throw new FormatError(path, `storage '${s.key}' is missing from the archive (no entry ${prefix}/data/${s.key})`, name);
  const need = s.numel * DTYPE_SIZE[s.dtype];
  if (entry.size < need) {
    throw new FormatError(path, `storage '${s.key}' holds ${entry.size} bytes but declares ${s.numel} ${s.dtype} elements (${need} bytes): truncated`, name);
  }
}

/**
 * Every tensor under `root` with its dotted path: dict keys (ints in decimal), list/tuple indices, and for pickled
 * nn.Modules (rinongal's ParameterDict) their `_parameters`/`_buffers`/`_modules` like a state_dict, e.g.
 * `768.0.linear.0.weight`, `string_to_param.*`. A tensor reachable twice is listed under both paths.
 */
export function flattenTensors(root: PyValue): Array<[string, TorchTensorRef]> {
  const out: Array<[string, TorchTensorRef]> = [];
  const onPath = new Set<object>();
  const join = (path: string, key: string) => (path === '' ? key : `${path}.${key}`);
  const walk = (v: PyValue, path: string): void => {
    if (v instanceof TorchTensorRef) return void out.push([path, v]);
    if (v === null || typeof v !== 'object' || onPath.has(v)) return;
    onPath.add(v);
    if (v instanceof Map) for (const [k, x] of v) walk(x, join(path, keyString(k)));
    else if (Array.isArray(v) || v instanceof PyTuple) (Array.isArray(v) ? v : v.items).forEach((x, i) => walk(x, join(path, String(i))));
    else if (v instanceof PyObject && v.getAttr('_parameters') instanceof Map) {
      for (const attr of ['_parameters', '_buffers', '_modules']) {
        const m = v.getAttr(attr);
        if (m instanceof Map) for (const [k, x] of m) walk(x, join(path, keyString(k)));
      }
    }
    onPath.delete(v);
  };
  walk(root, '');
  return out;
}

function keyString(k: PyValue): string {
  if (typeof k === 'string') return k;
  if (typeof k === 'number' || typeof k === 'bigint') return String(k);
  if (typeof k === 'boolean') return k ? 'True' : 'False';
  if (k === null) return 'None';
  if (k instanceof PyGlobal) return k.fullName;
  if (k instanceof PyTuple) return `(${k.items.map(keyString).join(',')})`;
  return '?';
}

/**
 * Writes `root` as torch.save would (zip layout, protocol-2 pickle, 64-byte aligned storages), atomically. Leaves
 * are TorchTensorToWrite (or TorchTensorRef from another file, copied bit for bit); the archive name defaults to
 * the file stem. `zip64` forces zip64 records (they are used automatically past 4 GB).
 */
export async function writeTorchFile(
  path: string,
  root: PyValue,
  opts: { archiveName?: string; zip64?: boolean } = {},
): Promise<void> {
  const name = opts.archiveName ?? (nodePath.parse(path).name || 'archive');
  if (!/^[^/\\]+$/.test(name) || name === '.' || name === '..') throw new TypeError(`bad archive name '${name}'`);
  const { bytes, tensors } = pickle(root);
  await writeFileAtomic(path, async (fh) => {
    const zip = new ZipWriter(fh, { align: 64, forceZip64: opts.zip64 === true });
    await zip.add(`${name}/data.pkl`, bytes);
    await zip.add(`${name}/byteorder`, Buffer.from('little'));
    for (const t of tensors) {
      // One tensor in memory at a time.
      const data = t.value instanceof TorchTensorToWrite ? encodeTensorData(t.path, t.value.tensor, t.dtype) : await t.value.loadRaw(t.path);
      await zip.add(`${name}/data/${t.key}`, data);
    }
    await zip.add(`${name}/version`, Buffer.from('3\n'));
    // torch ≥ 2.1 records a 40-digit id; older readers ignore the entry.
    const id = Array.from({ length: 40 }, () => randomInt(10)).join('');
    await zip.add(`${name}/.data/serialization_id`, Buffer.from(id));
    await zip.finish();
  });
}
