// The allow-list of globals a torch checkpoint may name, and what "calling" each one means. Nothing Python is ever
// run: each allowed name maps to a small JS function that builds a data value.

import { FormatError, UnsafePickleError } from '../errors.js';
import { DTYPE_SIZE, halfBitsToFloat, isDType, numel, type DType } from './dtype.js';
import {
  PyGlobal,
  PyNdarray,
  PyObject,
  PyOrderedDict,
  PySet,
  PyTuple,
  pyTypeName,
  TorchStorage,
  TorchTensorRef,
  type PyValue,
} from './pickle_values.js';

/** torch.<X>Storage → element type. */
export const STORAGE_DTYPE: Readonly<Record<string, DType>> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** torch.<dtype> objects (pickled for `_rebuild_device_tensor_from_numpy` and in some metadata). */
const TORCH_DTYPE: Readonly<Record<string, DType>> = {
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  float64: 'F64',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint8: 'U8',
  bool: 'BOOL',
};

/**
 * A1111's `modules/safe.py` allow-list (formats.md §8.2), plus the same data types under their numpy 2 / Python 3
 * spellings and the other storage and dtype names of the same kind. Everything else is refused by name.
 */
const CLASSES = new Set([
  'collections.OrderedDict',
  'torch.nn.modules.container.ParameterDict',
  'pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint',
  'pytorch_lightning.callbacks.model_checkpoint',
  'numpy.ndarray',
  'numpy.dtype',
  '__builtin__.set',
  'builtins.set',
]);
const FUNCTIONS = new Set([
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_device_tensor_from_numpy',
  'numpy.core.multiarray.scalar',
  'numpy.core.multiarray._reconstruct',
  'numpy._core.multiarray.scalar',
  'numpy._core.multiarray._reconstruct',
  '_codecs.encode',
]);

/**
 * GLOBAL / STACK_GLOBAL / INST: returns the reference, or refuses before anything could be looked up or run.
 * (Lookups use Object.hasOwn: names like `torch.constructor` must not match inherited object properties.)
 */
export function resolveGlobal(file: string, module: string, name: string): PyGlobal {
  const full = `${module}.${name}`;
  const allowed =
    CLASSES.has(full) ||
    FUNCTIONS.has(full) ||
    (module === 'torch' && (Object.hasOwn(STORAGE_DTYPE, name) || Object.hasOwn(TORCH_DTYPE, name)));
  if (!allowed) throw new UnsafePickleError(file, full);
  return new PyGlobal(module, name);
}

function bad(file: string, g: PyGlobal, detail: string): FormatError {
  return new FormatError(file, `malformed pickle: ${g.fullName}${detail}`);
}

const isCount = (v: PyValue | undefined): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function intTuple(file: string, g: PyGlobal, what: string, v: PyValue | undefined): number[] {
  // torch.Size pickles as a plain tuple; older writers may have used a list.
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : undefined;
  if (!items || !items.every(isCount)) throw bad(file, g, `: ${what} must be a tuple of non-negative ints, got ${pyTypeName(v)}`);
  return items as number[];
}

/** REDUCE: `callable(*args)`. */
export function callGlobal(file: string, g: PyGlobal, args: PyValue[]): PyValue {
  switch (g.fullName) {
    case 'collections.OrderedDict': {
      const d = new PyOrderedDict();
      const init = args[0];
      if (Array.isArray(init) || init instanceof PyTuple) {
        for (const pair of Array.isArray(init) ? init : init.items) {
          const kv = pair instanceof PyTuple ? pair.items : Array.isArray(pair) ? pair : undefined;
          if (!kv || kv.length !== 2) throw bad(file, g, ': items must be (key, value) pairs');
          d.set(kv[0]!, kv[1]!);
        }
      }
      return d;
    }
    case 'torch._utils._rebuild_tensor_v2':
      return rebuildTensor(file, g, args);
    case 'torch._utils._rebuild_parameter': {
      const [t, requiresGrad] = args;
      if (!(t instanceof TorchTensorRef)) throw bad(file, g, `: expected a tensor, got ${pyTypeName(t)}`);
      return new TorchTensorRef(t.storage, t.storageOffset, t.shape, t.stride, requiresGrad === true, true);
    }
    case 'torch._utils._rebuild_device_tensor_from_numpy':
      return tensorFromNumpy(file, g, args);
    case '__builtin__.set':
    case 'builtins.set': {
      const it = args[0];
      if (it === undefined) return new PySet([]);
      if (Array.isArray(it)) return new PySet([...it]);
      if (it instanceof PyTuple || it instanceof PySet) return new PySet([...it.items]);
      throw bad(file, g, `: cannot build a set from ${pyTypeName(it)}`);
    }
    case '_codecs.encode': {
      const [text, encoding = 'utf-8'] = args;
      if (typeof text !== 'string' || typeof encoding !== 'string') throw bad(file, g, ': expected (str, encoding)');
      const enc = encoding.toLowerCase().replace('_', '-');
      // Python 3 pickles bytes under protocol 2 as _codecs.encode(<latin-1 decoded text>, 'latin1').
      if (['latin1', 'latin-1', 'iso-8859-1', 'iso8859-1'].includes(enc)) return new Uint8Array(Buffer.from(text, 'latin1'));
      if (enc === 'utf-8' || enc === 'utf8') return new Uint8Array(Buffer.from(text, 'utf8'));
      throw bad(file, g, `: unsupported encoding '${encoding}'`);
    }
    case 'numpy.dtype': {
      const [spec] = args;
      if (typeof spec !== 'string') throw bad(file, g, ': expected a dtype string');
      return new PyObject(g, [spec]);
    }
    case 'numpy.core.multiarray.scalar':
    case 'numpy._core.multiarray.scalar':
      return numpyScalar(file, g, args);
    case 'numpy.core.multiarray._reconstruct':
    case 'numpy._core.multiarray._reconstruct':
      return new PyNdarray(); // filled in by BUILD
    case 'torch.nn.modules.container.ParameterDict':
    case 'pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint':
      return new PyObject(g, args);
    default:
      throw bad(file, g, ' cannot be called');
  }
}

/** NEWOBJ: `cls.__new__(cls, *args)`. Only the allow-listed classes; the instance stays opaque. */
export function newObject(file: string, cls: PyGlobal, args: PyValue[]): PyValue {
  if (cls.fullName === 'collections.OrderedDict') return new PyOrderedDict();
  if (cls.fullName === 'builtins.set' || cls.fullName === '__builtin__.set') return new PySet([]);
  if (!CLASSES.has(cls.fullName) || cls.fullName === 'numpy.dtype') throw bad(file, cls, ' cannot be instantiated with NEWOBJ');
  return new PyObject(cls, args);
}

/** BUILD: sets instance state. Dict-like targets keep it as attributes; numpy arrays/dtypes decode it. */
export function buildState(file: string, inst: PyValue, state: PyValue): void {
  if (inst instanceof PyOrderedDict) {
    // OrderedDict state is its instance __dict__, e.g. {'_metadata': OrderedDict(...)} on a state_dict.
    const dict = state instanceof PyTuple ? state.items[0] : state;
    if (dict instanceof Map) {
      inst.attrs ??= new Map();
      for (const [k, v] of dict) inst.attrs.set(k, v);
    }
    return;
  }
  if (inst instanceof PyNdarray) return buildNdarray(file, inst, state);
  if (inst instanceof PyObject) {
    if (inst.cls.fullName === 'numpy.dtype') {
      // state = (version, byteorder, subdescr, names, fields, elsize, alignment, flags)
      const order = state instanceof PyTuple ? state.items[1] : undefined;
      if (typeof order === 'string') inst.state = order;
      return;
    }
    inst.state = state instanceof PyTuple && state.items.length === 2 && state.items[1] === null ? state.items[0]! : state;
    return;
  }
  if (inst instanceof TorchTensorRef) return; // Parameter/Tensor python-side state (hooks, attributes): ignored
  throw new FormatError(file, `malformed pickle: BUILD on a ${pyTypeName(inst)}`);
}

function rebuildTensor(file: string, g: PyGlobal, args: PyValue[]): TorchTensorRef {
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]); metadata arrived in torch 1.x
  // for tensor flags (e.g. conj) and is ignored here.
  if (args.length !== 6 && args.length !== 7) throw bad(file, g, `: expected 6 or 7 arguments, got ${args.length}`);
  const [storage, offset, size, stride, requiresGrad] = args;
  if (!(storage instanceof TorchStorage)) throw bad(file, g, `: first argument must be a storage, got ${pyTypeName(storage)}`);
  if (!isCount(offset)) throw bad(file, g, `: storage offset must be a non-negative int, got ${pyTypeName(offset)}`);
  const shape = intTuple(file, g, 'size', size);
  const strides = intTuple(file, g, 'stride', stride);
  if (shape.length !== strides.length) throw bad(file, g, `: size has ${shape.length} dims but stride has ${strides.length}`);
  return new TorchTensorRef(storage, offset, shape, strides, requiresGrad === true);
}

const NUMPY_KIND: Readonly<Record<string, DType>> = {
  f2: 'F16', f4: 'F32', f8: 'F64', i1: 'I8', i2: 'I16', i4: 'I32', i8: 'I64', u1: 'U8', u2: 'U16', u4: 'U32', u8: 'U64', b1: 'BOOL',
};

/** numpy dtype strings: '<f4', '|b1', 'float32', '?' ... → our dtype and whether it is big-endian. */
function numpyDType(spec: string, order: string): { dtype: DType | undefined; bigEndian: boolean } {
  const aliases: Record<string, string> = {
    float16: 'f2', float32: 'f4', float64: 'f8', int8: 'i1', int16: 'i2', int32: 'i4', int64: 'i8',
    uint8: 'u1', uint16: 'u2', uint32: 'u4', uint64: 'u8', bool: 'b1', '?': 'b1',
  };
  let s = spec;
  let bigEndian = order === '>';
  if (/^[<>|=]/.test(s)) {
    bigEndian = s[0] === '>';
    s = s.slice(1);
  }
  const kind = Object.hasOwn(aliases, s) ? aliases[s]! : s;
  return { dtype: Object.hasOwn(NUMPY_KIND, kind) ? NUMPY_KIND[kind] : undefined, bigEndian };
}

function dtypeOf(v: PyValue | undefined): { dtype: DType | undefined; bigEndian: boolean; spec: string } {
  if (v instanceof PyObject && v.cls.fullName === 'numpy.dtype' && typeof v.args[0] === 'string') {
    const spec = v.args[0];
    return { ...numpyDType(spec, typeof v.state === 'string' ? v.state : '<'), spec };
  }
  return { dtype: undefined, bigEndian: false, spec: pyTypeName(v) };
}

function numpyScalar(file: string, g: PyGlobal, args: PyValue[]): PyValue {
  const [dt, raw] = args;
  const { dtype, bigEndian, spec } = dtypeOf(dt);
  const bytes = raw instanceof Uint8Array ? raw : typeof raw === 'string' ? new Uint8Array(Buffer.from(raw, 'latin1')) : undefined;
  if (!dtype || !bytes || bytes.byteLength !== DTYPE_SIZE[dtype]) {
    throw bad(file, g, `: only numeric numpy scalars are supported (got dtype ${spec})`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const le = !bigEndian;
  const small = (b: bigint) => (b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b);
  switch (dtype) {
    case 'F16': return halfBitsToFloat(dv.getUint16(0, le));
    case 'F32': return dv.getFloat32(0, le);
    case 'F64': return dv.getFloat64(0, le);
    case 'I8': return dv.getInt8(0);
    case 'I16': return dv.getInt16(0, le);
    case 'I32': return dv.getInt32(0, le);
    case 'I64': return small(dv.getBigInt64(0, le));
    case 'U8': return dv.getUint8(0);
    case 'U16': return dv.getUint16(0, le);
    case 'U32': return dv.getUint32(0, le);
    case 'U64': return small(dv.getBigUint64(0, le));
    case 'BOOL': return dv.getUint8(0) !== 0;
    default: throw bad(file, g, `: unsupported scalar dtype ${spec}`);
  }
}

function buildNdarray(file: string, arr: PyNdarray, state: PyValue): void {
  // ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata))
  const items = state instanceof PyTuple ? state.items : [];
  const [, shape, dt, fortran, raw] = items.length === 5 ? items : [undefined, ...items];
  const g = new PyGlobal('numpy', 'ndarray');
  const { dtype, bigEndian, spec } = dtypeOf(dt);
  if (!dtype) throw bad(file, g, `: only numeric arrays are supported (dtype ${spec})`);
  if (bigEndian) throw bad(file, g, ': big-endian arrays are not supported');
  if (!(raw instanceof Uint8Array)) throw bad(file, g, `: array data must be bytes (object arrays are not supported), got ${pyTypeName(raw)}`);
  arr.shape = intTuple(file, g, 'shape', shape);
  arr.dtype = `<${Object.entries(NUMPY_KIND).find(([, d]) => d === dtype)![0]}`;
  arr.fortranOrder = fortran === true;
  if (raw.byteLength !== numel(arr.shape) * DTYPE_SIZE[dtype]) throw bad(file, g, ': data length does not match shape');
  arr.data = raw;
}

function tensorFromNumpy(file: string, g: PyGlobal, args: PyValue[]): TorchTensorRef {
  // (data: ndarray, dtype: torch.dtype, device: str, requires_grad: bool) — written for XLA/device tensors.
  const [arr, , , requiresGrad] = args;
  if (!(arr instanceof PyNdarray) || arr.dtype === '') throw bad(file, g, ': expected a numpy array');
  const dtype = NUMPY_KIND[arr.dtype.slice(1)]; // set by buildNdarray from this same table
  if (!isDType(dtype)) throw bad(file, g, `: unsupported array dtype ${arr.dtype}`);
  const n = numel(arr.shape);
  const data = arr.data;
  const storage = new TorchStorage(file, `numpy:${arr.shape.join('x')}`, dtype, n, 'cpu', async (off, len) => data.slice(off, off + len));
  // Fortran order is a transposed layout: reverse-order strides.
  const stride = arr.shape.map((_, i) => arr.shape.slice(arr.fortranOrder ? 0 : i + 1, arr.fortranOrder ? i : undefined).reduce((a, b) => a * b, 1));
  return new TorchTensorRef(storage, 0, [...arr.shape], stride, requiresGrad === true);
}
