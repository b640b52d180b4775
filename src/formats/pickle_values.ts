// The JS representation of Python values read from (and written to) pickles.
//
//   None → null, bool → boolean, int → number (bigint beyond ±2^53), float → number, str → string,
//   bytes/bytearray → Uint8Array, list → array, tuple → PyTuple, dict → Map, OrderedDict → PyOrderedDict (a Map),
//   set/frozenset → PySet, torch tensor → TorchTensorRef (lazy), a bare storage → TorchStorage, numpy array → PyNdarray,
//   a class or function reference → PyGlobal, an instance of an allow-listed class → PyObject (opaque).
//
// One representation for dicts whatever their key types (hypernetwork files key by int), with insertion order kept.

import { FormatError } from '../errors.js';
import {
  contiguousStrides,
  decodeTensorData,
  DTYPE_SIZE,
  numel,
  type DType,
  type LoadedTensor,
  type TensorToWrite,
} from './dtype.js';

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyTuple
  | Map<PyValue, PyValue>
  | PySet
  | PyFloat
  | PyGlobal
  | PyObject
  | PyNdarray
  | TorchStorage
  | TorchTensorRef
  | TorchTensorToWrite;

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

/** Forces a Python float when writing a number that happens to be integral (e.g. `layer_structure: [1.0, 2.0, 1.0]`). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** collections.OrderedDict. `attrs` holds instance attributes set by BUILD (state_dict's `_metadata`). */
export class PyOrderedDict extends Map<PyValue, PyValue> {
  attrs: Map<PyValue, PyValue> | undefined;
}

/** set / frozenset; items in pickle order. */
export class PySet {
  constructor(
    readonly items: PyValue[],
    readonly frozen = false,
  ) {}
}

/** A reference to a module-level class or function (only allow-listed ones are ever created by the reader). */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get fullName(): string {
    return `${this.module}.${this.name}`;
  }
}

/**
 * An instance of an allow-listed class, never constructed for real: `args` are the constructor arguments and
 * `state` what BUILD gave it (a module's `__dict__`, e.g. ParameterDict's `_parameters`).
 */
export class PyObject {
  state: PyValue = null;
  constructor(
    readonly cls: PyGlobal,
    readonly args: PyValue[] = [],
  ) {}
  /** An attribute from a dict state, e.g. `getAttr('_parameters')`. */
  getAttr(name: string): PyValue | undefined {
    return this.state instanceof Map ? this.state.get(name) : undefined;
  }
}

/** numpy.ndarray as pickled by numpy (dtype string like '<f4', C or Fortran order, raw bytes). */
export class PyNdarray {
  dtype = '';
  shape: number[] = [];
  fortranOrder = false;
  data: Uint8Array = new Uint8Array(0);
}

/** Where a torch storage's bytes come from: a zip entry read on demand, or memory. */
export class TorchStorage {
  constructor(
    readonly file: string,
    readonly key: string,
    readonly dtype: DType,
    /** Element count declared in the pickle. */
    readonly numel: number,
    readonly location: string,
    /** Reads `length` bytes at byte `offset` of the storage. */
    readonly read: (offset: number, length: number) => Promise<Uint8Array>,
  ) {}
}

/** A tensor found in a pickle. Nothing is read until `load()`. */
export class TorchTensorRef {
  constructor(
    readonly storage: TorchStorage,
    /** In elements. */
    readonly storageOffset: number,
    readonly shape: number[],
    /** In elements. */
    readonly stride: number[],
    readonly requiresGrad: boolean,
    /** Pickled as torch.nn.Parameter (`_rebuild_parameter`). */
    readonly isParameter = false,
  ) {}

  get dtype(): DType {
    return this.storage.dtype;
  }
  get storageKey(): string {
    return this.storage.key;
  }

  /** Element span [first, last+1) this view touches in its storage; 0 for empty tensors. */
  extent(): number {
    if (this.shape.some((d) => d === 0)) return 0;
    return 1 + this.shape.reduce((acc, d, i) => acc + (d - 1) * this.stride[i]!, 0);
  }

  /** The tensor's elements in row-major order as stored bytes (non-contiguous views are gathered). */
  async loadRaw(name = `storage ${this.storage.key}`): Promise<Uint8Array> {
    const size = DTYPE_SIZE[this.dtype];
    const extent = this.extent();
    if (extent === 0) return new Uint8Array(0);
    if (this.storageOffset + extent > this.storage.numel) {
      throw new FormatError(
        this.storage.file,
        `the tensor needs elements [${this.storageOffset}, ${this.storageOffset + extent}) of storage '${this.storage.key}', which declares ${this.storage.numel}`,
        name,
      );
    }
    const bytes = await this.storage.read(this.storageOffset * size, extent * size);
    const contiguous = contiguousStrides(this.shape);
    if (this.shape.every((d, i) => d === 1 || this.stride[i] === contiguous[i])) return bytes;
    return gather(bytes, size, this.shape, this.stride);
  }

  async load(name = `storage ${this.storage.key}`): Promise<LoadedTensor> {
    const bytes = await this.loadRaw(name);
    return { name, dtype: this.dtype, shape: [...this.shape], data: decodeTensorData(this.storage.file, name, this.dtype, bytes) };
  }
}

/** Copies a strided view into row-major order, element by element, as whole words (never through a JS number). */
function gather(src: Uint8Array, itemsize: number, shape: number[], stride: number[]): Uint8Array {
  const word = Math.min(itemsize, 4);
  const per = itemsize / word;
  const Ctor = word === 4 ? Uint32Array : word === 2 ? Uint16Array : Uint8Array;
  const s = new Ctor(src.buffer as ArrayBuffer, src.byteOffset, src.byteLength / word);
  const out = new Uint8Array(numel(shape) * itemsize);
  const d = new Ctor(out.buffer);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let srcElem = 0;
  const total = numel(shape);
  for (let o = 0; o < total; o++) {
    for (let k = 0; k < per; k++) d[o * per + k] = s[srcElem * per + k]!;
    // odometer increment over the shape, tracking the source element offset
    for (let ax = rank - 1; ax >= 0; ax--) {
      idx[ax]!++;
      srcElem += stride[ax]!;
      if (idx[ax]! < shape[ax]!) break;
      srcElem -= stride[ax]! * shape[ax]!;
      idx[ax] = 0;
    }
  }
  return out;
}

/** A tensor to put in a torch file. `requiresGrad` sets the flag A1111 embeddings carry; `parameter` pickles as nn.Parameter. */
export class TorchTensorToWrite {
  constructor(
    readonly tensor: TensorToWrite,
    readonly opts: { requiresGrad?: boolean; parameter?: boolean } = {},
  ) {}
}

/** A dict with string keys as a plain object (shallow). Throws if a key is not a string. */
export function toPlainObject(map: Map<PyValue, PyValue>): Record<string, PyValue> {
  const out: Record<string, PyValue> = Object.create(null) as Record<string, PyValue>;
  for (const [k, v] of map) {
    if (typeof k !== 'string') throw new TypeError(`toPlainObject: key ${String(k)} is not a string`);
    out[k] = v;
  }
  return out;
}

/** Short Python-ish type name for error messages. */
export function pyTypeName(v: PyValue | undefined): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'string') return 'str';
  if (v instanceof Uint8Array) return 'bytes';
  if (Array.isArray(v)) return 'list';
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof PyOrderedDict) return 'OrderedDict';
  if (v instanceof Map) return 'dict';
  if (v instanceof PySet) return 'set';
  if (v instanceof PyGlobal) return v.fullName;
  if (v instanceof PyObject) return `${v.cls.fullName} object`;
  if (v instanceof PyNdarray) return 'numpy.ndarray';
  if (v instanceof TorchTensorRef || v instanceof TorchTensorToWrite) return 'Tensor';
  if (v instanceof TorchStorage) return 'Storage';
  return 'float';
}
