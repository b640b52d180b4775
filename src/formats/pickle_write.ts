// A protocol-2 pickler for the values torch.save writes: containers, scalars, strings and tensors. Its output uses
// only the opcodes and globals that torch's `weights_only=True` unpickler accepts (torch ≥ 1.13; floats need
// torch ≥ 2.0 there, because 1.13's restricted unpickler lacks BINFLOAT, as it does for torch.save's own output).

import { checkTensorToWrite, contiguousStrides, numel, type DType } from './dtype.js';
import { STORAGE_DTYPE } from './pickle_globals.js';
import {
  PyFloat,
  PyGlobal,
  PyNdarray,
  PyObject,
  PyOrderedDict,
  PySet,
  PyTuple,
  TorchTensorRef,
  TorchTensorToWrite,
  type PyValue,
} from './pickle_values.js';

/** A tensor met while pickling; its bytes go to the zip entry `data/<key>`. */
export interface PickledTensor {
  /** Dotted path of the first place it appeared, for error messages. */
  path: string;
  value: TorchTensorRef | TorchTensorToWrite;
  key: string;
  dtype: DType;
  shape: number[];
}

const STORAGE_OF: Partial<Record<DType, string>> = Object.fromEntries(
  Object.entries(STORAGE_DTYPE).map(([name, dtype]) => [dtype, name]),
);

/** Python pickles batch APPENDS/SETITEMS by this many items. */
const BATCH = 1000;

/**
 * Pickles `root` (protocol 2). Safe-integer JS numbers become Python ints (wrap in PyFloat for a float), Maps dicts,
 * PyOrderedDict OrderedDicts; tensors become `_rebuild_tensor_v2` calls on persistent storages, one storage per tensor,
 * listed in `tensors` in pickling order. Shared references (the same object twice) stay shared.
 */
export function pickle(root: PyValue): { bytes: Uint8Array; tensors: PickledTensor[] } {
  const w = new Pickler();
  w.op(0x80, 2); // PROTO 2
  w.save(root, '');
  w.op(0x2e); // STOP
  return { bytes: w.finish(), tensors: w.tensors };
}

class Pickler {
  private chunks: Buffer[] = [];
  private cur = Buffer.alloc(1 << 16);
  private len = 0;
  // Python memoizes by object identity; equal strings and globals are interchangeable, so they are shared by value.
  private readonly memo = new Map<object, number>();
  private readonly memoStr = new Map<string, number>();
  private readonly memoGlobal = new Map<string, number>();
  private memoCount = 0;
  private readonly inProgress = new Set<object>();
  readonly tensors: PickledTensor[] = [];

  finish(): Uint8Array {
    this.chunks.push(this.cur.subarray(0, this.len));
    return new Uint8Array(Buffer.concat(this.chunks));
  }

  private raw(b: Uint8Array): void {
    if (this.len + b.byteLength > this.cur.byteLength) {
      this.chunks.push(this.cur.subarray(0, this.len));
      this.cur = Buffer.alloc(Math.max(1 << 16, b.byteLength));
      this.len = 0;
    }
    this.cur.set(b, this.len);
    this.len += b.byteLength;
  }
  op(...bytes: number[]): void {
    this.raw(Uint8Array.from(bytes));
  }
  private u32(n: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    this.raw(b);
  }

  /** BINPUT the value on top of the stack under the next memo index. */
  private put<K>(table: Map<K, number>, key: K): void {
    const i = this.memoCount++;
    table.set(key, i);
    if (i < 256) this.op(0x71, i); // BINPUT
    else (this.op(0x72), this.u32(i)); // LONG_BINPUT
  }
  private memoize(obj: object): void {
    this.put(this.memo, obj);
  }
  /** BINGET if already pickled. */
  private recall<K>(key: K, table: Map<K, number>): boolean {
    const i = table.get(key);
    if (i === undefined) return false;
    if (i < 256) this.op(0x68, i);
    else (this.op(0x6a), this.u32(i));
    return true;
  }

  private int(v: number | bigint): void {
    if (typeof v === 'number' && v >= 0 && v < 256) return this.op(0x4b, v); // BININT1
    if (typeof v === 'number' && v >= 0 && v < 65536) return this.op(0x4d, v & 0xff, v >> 8); // BININT2
    if (typeof v === 'number' && v >= -(2 ** 31) && v < 2 ** 31) {
      const b = Buffer.alloc(5);
      b[0] = 0x4a; // BININT
      b.writeInt32LE(v, 1);
      return this.raw(b);
    }
    // LONG1/LONG4: minimal little-endian two's complement
    let n = BigInt(v);
    const out: number[] = [];
    for (;;) {
      const byte = Number(n & 0xffn);
      out.push(byte);
      n >>= 8n;
      if ((n === 0n && !(byte & 0x80)) || (n === -1n && byte & 0x80)) break;
    }
    if (out.length < 256) this.op(0x8a, out.length, ...out);
    else (this.op(0x8b), this.u32(out.length), this.raw(Uint8Array.from(out)));
  }

  private float(v: number): void {
    const b = Buffer.alloc(9);
    b[0] = 0x47; // BINFLOAT, big-endian
    b.writeDoubleBE(v, 1);
    this.raw(b);
  }

  private str(s: string, memoize = true): void {
    if (memoize && this.recall(s, this.memoStr)) return;
    const b = Buffer.from(s, 'utf8');
    this.op(0x58); // BINUNICODE
    this.u32(b.byteLength);
    this.raw(b);
    if (memoize) this.put(this.memoStr, s);
  }

  private global(module: string, name: string): void {
    const key = `${module}\n${name}`;
    if (this.recall(key, this.memoGlobal)) return;
    this.raw(Buffer.from(`c${module}\n${name}\n`, 'utf8'));
    this.put(this.memoGlobal, key);
  }

  private tuple(items: PyValue[], path: string): void {
    if (items.length === 0) return this.op(0x29); // EMPTY_TUPLE
    if (items.length > 3) this.op(0x28); // MARK
    items.forEach((v, i) => this.save(v, join(path, i)));
    this.op(items.length > 3 ? 0x74 : 0x84 + items.length); // TUPLE or TUPLE1..3
  }

  /** Items in batches, as Python does: one item → APPEND/SETITEM, more → MARK … APPENDS/SETITEMS. */
  private batched<T>(items: T[], saveOne: (item: T) => void, single: number, multi: number): void {
    for (let i = 0; i < items.length; i += BATCH) {
      const batch = items.slice(i, i + BATCH);
      if (batch.length > 1) this.op(0x28);
      batch.forEach(saveOne);
      this.op(batch.length > 1 ? multi : single);
    }
  }

  private dictItems(d: Map<PyValue, PyValue>, path: string): void {
    this.batched([...d], ([k, v]) => (this.save(k, path), this.save(v, join(path, k))), 0x73, 0x75);
  }

  save(v: PyValue, path: string): void {
    if (v === null) return this.op(0x4e);
    if (v === true) return this.op(0x88);
    if (v === false) return this.op(0x89);
        // Safe integers are Python ints; anything else (fractions, -0, NaN, ±inf, 1e300) is a float. Ints beyond 2^53
    // come from the reader as bigint, so an unsafe-integer number was a float.
    if (typeof v === 'number') return Number.isSafeInteger(v) && !Object.is(v, -0) ? this.int(v) : this.float(v);
    if (typeof v === 'bigint') return this.int(v);
    if (typeof v === 'string') return this.str(v);
    if (v instanceof PyFloat) return this.float(v.value);
    if (this.recall<object>(v, this.memo)) return;
    if (v instanceof PyTuple) {
      if (this.inProgress.has(v)) throw new TypeError(`pickle: tuple at '${path}' contains itself`);
      this.inProgress.add(v);
      this.tuple(v.items, path);
      this.inProgress.delete(v);
      // A tuple's items may have pickled the tuple itself via a list; Python then pops and re-gets it. Not worth it:
      // such cycles are refused above.
      return this.memoize(v);
    }
    if (v instanceof Uint8Array) {
      // Protocol 2 has no bytes opcode; Python 3 writes _codecs.encode(latin-1 text, 'latin1').
      this.global('_codecs', 'encode');
      this.str(Buffer.from(v).toString('latin1'), false);
      this.str('latin1');
      this.op(0x86, 0x52); // TUPLE2 REDUCE
      return this.memoize(v);
    }
    if (Array.isArray(v)) {
      this.op(0x5d); // EMPTY_LIST
      this.memoize(v);
      let i = 0;
      return this.batched(v, (item) => this.save(item, join(path, i++)), 0x61, 0x65);
    }
    if (v instanceof PyOrderedDict) {
      this.global('collections', 'OrderedDict');
      this.op(0x29, 0x52); // EMPTY_TUPLE REDUCE
      this.memoize(v);
      this.dictItems(v, path);
      if (v.attrs && v.attrs.size > 0) {
        this.save(v.attrs, path);
        this.op(0x62); // BUILD
      }
      return;
    }
    if (v instanceof Map) {
      this.op(0x7d); // EMPTY_DICT
      this.memoize(v);
      return this.dictItems(v, path);
    }
    if (v instanceof PySet) {
      this.global('__builtin__', 'set');
      this.save([...v.items], path);
      this.op(0x85, 0x52); // TUPLE1 REDUCE
      return this.memoize(v);
    }
    if (v instanceof PyGlobal) return this.global(v.module, v.name);
    if (v instanceof PyObject) {
      this.global(v.cls.module, v.cls.name);
      this.tuple(v.args, path);
      this.op(0x81); // NEWOBJ
      this.memoize(v);
      if (v.state !== null) {
        this.save(v.state, path);
        this.op(0x62);
      }
      return;
    }
    if (v instanceof TorchTensorToWrite || v instanceof TorchTensorRef) return this.tensor(v, path);
    if (v instanceof PyNdarray) throw new TypeError(`pickle: numpy arrays cannot be written ('${path}'); convert to a tensor`);
    throw new TypeError(`pickle: cannot write ${Object.prototype.toString.call(v)} at '${path}'`);
  }

  private tensor(t: TorchTensorToWrite | TorchTensorRef, path: string): void {
    const name = path || '<root>';
    const dtype = t instanceof TorchTensorToWrite ? checkTensorToWrite(name, t.tensor) : t.dtype;
    const shape = t instanceof TorchTensorToWrite ? [...t.tensor.shape] : [...t.shape];
    const requiresGrad = t instanceof TorchTensorToWrite ? t.opts.requiresGrad === true : t.requiresGrad;
    const parameter = t instanceof TorchTensorToWrite ? t.opts.parameter === true : t.isParameter;
    const storage = STORAGE_OF[dtype];
    if (!storage) throw new TypeError(`tensor '${name}': torch files cannot hold ${dtype} tensors`);
    const key = String(this.tensors.length);
    this.tensors.push({ path: name, value: t, key, dtype, shape });

    if (parameter) this.global('torch._utils', '_rebuild_parameter');
    this.global('torch._utils', '_rebuild_tensor_v2');
    this.op(0x28); // MARK: the 6 arguments
    this.op(0x28); // MARK: the persistent id ('storage', <StorageType>, key, 'cpu', numel)
    this.str('storage');
    this.global('torch', storage);
    this.str(key);
    this.str('cpu');
    this.int(numel(shape));
    this.op(0x74, 0x51); // TUPLE BINPERSID
    this.int(0); // storage offset
    this.tuple(shape, path);
    this.tuple(contiguousStrides(shape), path);
    // A Parameter's inner tensor is its detached .data; the flag goes on the Parameter.
    this.op(requiresGrad && !parameter ? 0x88 : 0x89);
    this.global('collections', 'OrderedDict'); // backward hooks: always an empty OrderedDict
    this.op(0x29, 0x52);
    this.op(0x74, 0x52); // TUPLE REDUCE
    if (parameter) {
      this.op(requiresGrad ? 0x88 : 0x89);
      this.global('collections', 'OrderedDict');
      this.op(0x29, 0x52);
      this.op(0x87, 0x52); // TUPLE3 REDUCE
    }
    this.memoize(t);
  }
}

function join(path: string, key: PyValue): string {
  const k = typeof key === 'string' || typeof key === 'number' || typeof key === 'bigint' ? String(key) : '?';
  return path ? `${path}.${k}` : k;
}
