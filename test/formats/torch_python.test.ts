// Cross-checks against real PyTorch (Debian: `apt-get install -y python3-torch`, used via /usr/bin/python3).
// (a) files we write load with torch.load(weights_only=True) and equal what we wrote;
// (b) files torch.save writes (all dtypes, strided views, shared storages, nested containers) read back correctly.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DTYPE_SIZE, encodeTensorData, checkTensorToWrite, type DType, type TensorToWrite } from '../../src/formats/dtype.js';
import {
  PyFloat,
  PyObject,
  PyOrderedDict,
  PySet,
  PyTuple,
  TorchTensorRef,
  TorchTensorToWrite,
  type PyValue,
} from '../../src/formats/pickle.js';
import { openTorchFile, writeTorchFile } from '../../src/formats/torch.js';
import { runPythonJson, torchPython } from '../helpers/python_torch.js';
import { useTmpDir } from '../helpers/tmp.js';

const tmp = useTmpDir('sdtrain-torchpy-');

/** Python side: a JSON description of any value torch.load returns (tensor bytes as contiguous hex). */
const DESCRIBE_PY = String.raw`
import collections, json, math, sys, zipfile
import numpy as np
import torch

def desc(v):
    if isinstance(v, torch.Tensor):
        t = v.detach().contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        return {'type': 'tensor', 'dtype': str(t.dtype).replace('torch.', ''), 'shape': list(t.shape),
                'requires_grad': v.requires_grad, 'parameter': isinstance(v, torch.nn.Parameter), 'hex': raw.hex()}
    if v is None: return {'type': 'None'}
    if isinstance(v, (bool, np.bool_)): return {'type': 'bool', 'value': bool(v)}
    if isinstance(v, (int, np.integer)): return {'type': 'int', 'value': str(int(v))}
    if isinstance(v, (float, np.floating)): return {'type': 'float', 'value': repr(float(v))}
    if isinstance(v, str): return {'type': 'str', 'value': v}
    if isinstance(v, torch.nn.ParameterDict): return {'type': 'ParameterDict', 'items': [[desc(k), desc(x)] for k, x in v._parameters.items()]}
    if isinstance(v, collections.OrderedDict): return {'type': 'OrderedDict', 'items': [[desc(k), desc(x)] for k, x in v.items()]}
    if isinstance(v, dict): return {'type': 'dict', 'items': [[desc(k), desc(x)] for k, x in v.items()]}
    if isinstance(v, tuple): return {'type': 'tuple', 'items': [desc(x) for x in v]}
    if isinstance(v, list): return {'type': 'list', 'items': [desc(x) for x in v]}
    if isinstance(v, set): return {'type': 'set', 'items': [desc(x) for x in v]}
    raise TypeError(type(v))
`;

type Desc = { type: string; value?: unknown; items?: unknown[]; [k: string]: unknown };

const TORCH_DTYPE: Record<string, string> = {
  F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64', I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};

/** What Python should see for a value we wrote (keeps the int/float distinction we chose). */
function describeWritten(v: PyValue, path = ''): Desc {
  if (v === null) return { type: 'None' };
  if (typeof v === 'boolean') return { type: 'bool', value: v };
  if (typeof v === 'number') return Number.isSafeInteger(v) && !Object.is(v, -0) ? { type: 'int', value: String(v) } : { type: 'float', value: pyRepr(v) };
  if (typeof v === 'bigint') return { type: 'int', value: String(v) };
  if (typeof v === 'string') return { type: 'str', value: v };
  if (v instanceof PyFloat) return { type: 'float', value: pyRepr(v.value) };
  if (v instanceof PyTuple) return { type: 'tuple', items: v.items.map((x) => describeWritten(x, path)) };
  if (Array.isArray(v)) return { type: 'list', items: v.map((x) => describeWritten(x, path)) };
  if (v instanceof Map) return { type: v instanceof PyOrderedDict ? 'OrderedDict' : 'dict', items: [...v].map(([k, x]) => [describeWritten(k), describeWritten(x, `${path}.${String(k)}`)]) };
  if (v instanceof TorchTensorToWrite) {
    const dtype = checkTensorToWrite(path, v.tensor);
    return {
      type: 'tensor', dtype: TORCH_DTYPE[dtype]!, shape: v.tensor.shape, requires_grad: v.opts.requiresGrad === true, parameter: v.opts.parameter === true,
      hex: Buffer.from(encodeTensorData(path, v.tensor, dtype)).toString('hex'),
    };
  }
  throw new Error(`describeWritten: ${String(v)}`);
}

/** Python's repr of a float, for the values used here. */
function pyRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (Object.is(x, -0)) return '-0.0';
  const s = String(x);
  return /[.e]/.test(s) ? s.replace(/e\+?/, 'e+').replace('e+-', 'e-') : `${s}.0`;
}

/** Our reader's view, in the same shape; Python ints and floats both arrive as JS numbers, so they compare as 'num'. */
async function describeRead(v: PyValue): Promise<Desc> {
  if (v === null) return { type: 'None' };
  if (typeof v === 'boolean') return { type: 'bool', value: v };
  if (typeof v === 'number' || typeof v === 'bigint') return { type: 'num', value: Number.isNaN(v) ? 'nan' : String(v) };
  if (typeof v === 'string') return { type: 'str', value: v };
  if (v instanceof PyTuple) return { type: 'tuple', items: await Promise.all(v.items.map(describeRead)) };
  if (Array.isArray(v)) return { type: 'list', items: await Promise.all(v.map(describeRead)) };
  if (v instanceof PySet) return { type: 'set', items: await Promise.all(v.items.map(describeRead)) };
  const pairs = async (m: Map<PyValue, PyValue>) => Promise.all([...m].map(async ([k, x]) => [await describeRead(k), await describeRead(x)]));
  if (v instanceof Map) return { type: v instanceof PyOrderedDict ? 'OrderedDict' : 'dict', items: await pairs(v) };
  if (v instanceof PyObject && v.cls.name === 'ParameterDict') return { type: 'ParameterDict', items: await pairs(v.getAttr('_parameters') as Map<PyValue, PyValue>) };
  if (v instanceof TorchTensorRef) {
    return { type: 'tensor', dtype: TORCH_DTYPE[v.dtype]!, shape: v.shape, requires_grad: v.requiresGrad, parameter: v.isParameter, hex: Buffer.from(await v.loadRaw()).toString('hex') };
  }
  throw new Error(`describeRead: ${Object.prototype.toString.call(v)}`);
}

/** Python's description with int/float merged into 'num' (what our reader can distinguish). */
function numbersMerged(d: unknown): unknown {
  if (Array.isArray(d)) return d.map(numbersMerged);
  if (d && typeof d === 'object') {
    const o = d as Desc;
    if (o.type === 'int') return { type: 'num', value: o.value };
    if (o.type === 'float') {
      const x = Number(String(o.value).replace(/^(-?)inf$/, '$1Infinity'));
      return { type: 'num', value: Number.isNaN(x) ? 'nan' : String(x) };
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, numbersMerged(x)]));
  }
  return d;
}

const tw = (t: TensorToWrite, opts?: { requiresGrad?: boolean; parameter?: boolean }) => new TorchTensorToWrite(t, opts);
const rnd = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i * 12.9898) * 0.1);

describe.runIf(torchPython)(`real PyTorch (${torchPython ?? 'not installed'})`, () => {
  it('our .pt files load with torch.load(weights_only=True) and equal what we wrote (A1111 embedding, all dtypes, zip64)', async () => {
    const f32 = Float32Array.from([NaN, -0, 1e-45, -1.1e-39, Infinity, -3.25]);
    const embedding = new Map<PyValue, PyValue>([
      ['string_to_token', new Map([['*', 265]])],
      ['string_to_param', new Map([['*', tw({ shape: [3, 32], data: rnd(96, 1) }, { requiresGrad: true })]])],
      ['name', 'tiny-emb'],
      ['step', 0],
      ['sd_checkpoint', null],
      ['sd_checkpoint_name', null],
    ]);
    const dtypes = new Map<PyValue, PyValue>([
      ['f32', tw({ shape: [2, 3], data: f32 })],
      ['f16', tw({ shape: [2, 3], data: f32, dtype: 'F16' })],
      ['bf16', tw({ shape: [2, 3], data: f32, dtype: 'BF16' })],
      ['f64', tw({ shape: [2], data: Float32Array.from([0.1, -2]), dtype: 'F64' })],
      ['i64', tw({ shape: [3], data: BigInt64Array.from([-(2n ** 62n), 265n, -1n]) })],
      ['i32', tw({ shape: [2], data: Int32Array.from([-(2 ** 31), 5]) })],
      ['i16', tw({ shape: [1], data: Int32Array.from([-300]), dtype: 'I16' })],
      ['i8', tw({ shape: [1], data: Int32Array.from([-7]), dtype: 'I8' })],
      ['u8', tw({ shape: [2], data: Uint8Array.from([0, 255]) })],
      ['bool', tw({ shape: [3], data: Uint8Array.from([1, 0, 1]), dtype: 'BOOL' })],
      ['scalar', tw({ shape: [], data: Float32Array.from([4]) })],
      ['empty', tw({ shape: [0, 2], data: new Float32Array(0) })],
      ['param', tw({ shape: [2], data: Float32Array.from([1, 2]) }, { parameter: true, requiresGrad: true })],
      ['frozen', tw({ shape: [1], data: Float32Array.from([1]) }, { parameter: true, requiresGrad: false })],
      [-5, [new PyTuple([1, 'two', null, true]), 2n ** 70n, -129, 65536]],
    ]);
    const files: Array<[string, Map<PyValue, PyValue>, { zip64?: boolean }]> = [
      ['emb.pt', embedding, {}],
      ['dtypes.pt', dtypes, {}],
      ['zip64.pt', embedding, { zip64: true }],
    ];
    for (const [name, root, opts] of files) await writeTorchFile(join(tmp(), name), root, opts);
    const out = await runPythonJson<Record<string, { error?: string; desc?: Desc; crc?: string | null }>>(
      `${DESCRIBE_PY}
res = {}
for path in sys.argv[1:]:
    try:
        res[path] = {'desc': desc(torch.load(path, weights_only=True)), 'crc': zipfile.ZipFile(path).testzip()}
    except Exception as e:
        res[path] = {'error': repr(e)}
print(json.dumps(res))`,
      files.map(([n]) => join(tmp(), n)),
    );
    for (const [name, root] of files) {
      const r = out[join(tmp(), name)]!;
      expect(r.error, name).toBeUndefined();
      expect(r.crc, `${name}: zipfile.testzip() names a corrupt entry`).toBeNull();
      expect(r.desc, name).toEqual(describeWritten(root));
    }
  });

  it('an A1111 hypernetwork dict (int keys → (OrderedDict, OrderedDict), float lists, metadata) loads and equals what we wrote', async () => {
    const sd = (seed: number) =>
      new PyOrderedDict([
        ['linear.0.weight', tw({ shape: [64, 32], data: rnd(2048, seed) })],
        ['linear.0.bias', tw({ shape: [64], data: rnd(64, seed + 1) })],
        ['linear.2.weight', tw({ shape: [32, 64], data: rnd(2048, seed + 2) })],
        ['linear.2.bias', tw({ shape: [32], data: rnd(32, seed + 3) })],
      ]);
    const root = new Map<PyValue, PyValue>([
      [32, new PyTuple([sd(1), sd(5)])],
      [768, new PyTuple([sd(9), sd(13)])],
      ['step', 2000],
      ['name', 'hn-tiny-relu'],
      ['layer_structure', [new PyFloat(1), new PyFloat(2), new PyFloat(1)]],
      ['activation_func', 'relu'],
      ['is_layer_norm', false],
      ['weight_initialization', 'XavierNormal'],
      ['sd_checkpoint', '6ce0161689'],
      ['sd_checkpoint_name', 'v1-5-pruned-emaonly'],
      ['activate_output', false],
      ['use_dropout', true],
      ['dropout_structure', [0, 0.3, 0]],
      ['last_layer_dropout', false],
      ['optional_info', null],
    ]);
    const path = join(tmp(), 'hn.pt');
    await writeTorchFile(path, root);
    const out = await runPythonJson<{ weights_only: string; torch_save_weights_only: string; desc: Desc; version: string }>(
      `${DESCRIBE_PY}
path = sys.argv[1]
def try_load(p):
    try:
        torch.load(p, weights_only=True); return 'ok'
    except Exception as e:
        return repr(e)
own = try_load(path)
obj = torch.load(path, weights_only=(own == 'ok'))
# The same object saved by torch itself: tells a torch limitation apart from a problem in our file.
torch.save(obj, path + '.torch.pt')
print(json.dumps({'weights_only': own, 'torch_save_weights_only': try_load(path + '.torch.pt'), 'desc': desc(obj), 'version': torch.__version__}))`,
      [path],
    );
    if (Number.parseInt(out.version, 10) >= 2) expect(out.weights_only).toBe('ok');
    // torch 1.13's restricted unpickler has no BINFLOAT opcode ('G' = 71), so it refuses any float, in torch.save's
    // own files too; our file must fail exactly like torch's, not otherwise.
    else {
      expect(out.weights_only).toMatch(/Unsupported operand 71/);
      expect(out.weights_only).toBe(out.torch_save_weights_only);
    }
    expect(out.desc).toEqual(describeWritten(root));
  });

  it('files torch.save writes read back correctly: all dtypes, transposed/sliced/expanded views, shared storage, nested containers, ParameterDict, numpy scalars, deflated re-zip', async () => {
    const dir = tmp();
    const out = await runPythonJson<Record<string, Desc | string>>(
      `${DESCRIBE_PY}
import os
d = sys.argv[1]
torch.manual_seed(0)
base = torch.randn(4, 6)
base[0, 0] = float('nan'); base[0, 1] = -0.0; base[0, 2] = 1e-40
shared = torch.arange(10, dtype=torch.float32)
objs = {
  'dtypes.pt': {str(t).replace('torch.', ''): base.to(t) if t.is_floating_point else base > 0 if t == torch.bool else (base.nan_to_num(0) * 10).to(t) for t in
                [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]},
  'views.pt': {'transposed': base.t(), 'slice': base[1:, ::2], 'expanded': torch.arange(3.).expand(2, 3),
               'shared': shared, 'shared_view': shared[2:5], 'scalar': torch.tensor(2.5), 'empty': torch.zeros(0, 3)},
  'nested.pt': {768: (collections.OrderedDict([('w', torch.ones(2))]), collections.OrderedDict()), 'list': [1, 2.5, 'x', None, True, (3, [4])],
                'param': torch.nn.Parameter(torch.ones(3)), 'frozen': torch.nn.Parameter(torch.zeros(1), requires_grad=False),
                'pd': torch.nn.ParameterDict({'*': torch.nn.Parameter(torch.full((1, 4), 0.5))}), 'big': 2**70, 'neg': -(2**40), 'np': np.float64(1.5), 'npi': np.int64(7)},
}
res = {}
for name, obj in objs.items():
    torch.save(obj, os.path.join(d, name))
    res[name] = desc(obj)
# deflate every entry: our reader inflates (torch itself never compresses)
src = zipfile.ZipFile(os.path.join(d, 'dtypes.pt'))
with zipfile.ZipFile(os.path.join(d, 'deflated.pt'), 'w', zipfile.ZIP_DEFLATED) as z:
    for i in src.infolist(): z.writestr(i.filename, src.read(i.filename))
res['deflated.pt'] = res['dtypes.pt']
torch.save({'a': torch.ones(2)}, os.path.join(d, 'legacy.pt'), _use_new_zipfile_serialization=False)
# shared storage keys, as torch wrote them
res['shared_keys'] = sorted(n for n in zipfile.ZipFile(os.path.join(d, 'views.pt')).namelist() if '/data/' in n)
print(json.dumps(res))`,
      [dir],
    );
    for (const name of ['dtypes.pt', 'views.pt', 'nested.pt', 'deflated.pt']) {
      const f = await openTorchFile(join(dir, name));
      try {
        expect(await describeRead(f.root), name).toEqual(numbersMerged(out[name]));
        for (const t of f.tensors) expect((await f.read(t.name)).data.length, t.name).toBe(t.shape.reduce((a, b) => a * b, 1));
      } finally {
        await f.close();
      }
    }
    const views = await openTorchFile(join(dir, 'views.pt'));
    expect(views.get('shared_view')!.storage).toBe(views.get('shared')!.storage); // one storage object, read on demand
    expect(views.get('shared_view')!.storageOffset).toBe(2);
    expect(views.get('transposed')!.stride).toEqual([1, 6]);
    expect(views.get('slice')!.storage).toBe(views.get('transposed')!.storage);
    expect([views.get('slice')!.storageOffset, views.get('slice')!.stride]).toEqual([6, [6, 2]]);
    expect(Array.from((await views.read('shared_view')).data)).toEqual([2, 3, 4]);
    await views.close();
    // 7 tensors in 5 storages: base (transposed, slice), arange (expanded), shared (+ shared_view), scalar, empty
    expect((out.shared_keys as unknown as string[]).length).toBe(5);
    await expect(openTorchFile(join(dir, 'legacy.pt'))).rejects.toThrow(/legacy torch serialization/);
  });

  it('bit-identical round trip through torch: we write, torch loads and re-saves, we read the same bytes', async () => {
    const sizes = Object.keys(DTYPE_SIZE).filter((d) => d in TORCH_DTYPE) as DType[];
    const data = Float32Array.from([NaN, -0, 1e-42, 65504, -1.5, 3]);
    const root = new Map<PyValue, PyValue>(
      sizes.filter((d) => d.startsWith('F') || d === 'BF16').map((d) => [d, tw({ shape: [6], data, dtype: d })]),
    );
    const a = join(tmp(), 'ours.pt');
    const b = join(tmp(), 'theirs.pt');
    await writeTorchFile(a, root);
    await runPythonJson(`import sys, json, torch\ntorch.save(torch.load(sys.argv[1], weights_only=True), sys.argv[2])\nprint('{}')`, [a, b]);
    const ours = await openTorchFile(a);
    const theirs = await openTorchFile(b);
    for (const t of ours.tensors) {
      expect(Buffer.from(await theirs.get(t.name)!.loadRaw()).equals(Buffer.from(await ours.get(t.name)!.loadRaw())), t.name).toBe(true);
    }
    await Promise.all([ours.close(), theirs.close()]);
  });
});
