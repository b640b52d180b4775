import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FormatError, UnsafePickleError } from '../../src/errors.js';
import {
  pickle,
  PyFloat,
  PyGlobal,
  PyObject,
  PyOrderedDict,
  PySet,
  PyTuple,
  toPlainObject,
  TorchTensorRef,
  unpickle,
  type PyValue,
} from '../../src/formats/pickle.js';
import { CPYTHON_PICKLES } from '../helpers/cpython_pickles.js';
import { useTmpDir } from '../helpers/tmp.js';

const tmp = useTmpDir('sdtrain-pickle-');
const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const load = (b: Uint8Array | string, file = 'evil.pt') => unpickle(typeof b === 'string' ? bytes(b) : b, { file });

function unsafe(b: Uint8Array | string): UnsafePickleError {
  let err: unknown;
  try {
    load(b);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UnsafePickleError);
  return err as UnsafePickleError;
}

/** Protocol 2 `callable(arg)` with the callable named by GLOBAL. */
const p2call = (module: string, name: string, arg: string) =>
  `\x80\x02c${module}\n${name}\nq\x00X${String.fromCharCode(arg.length)}\x00\x00\x00${arg}q\x01\x85q\x02Rq\x03.`;
/** Protocol 4 `callable(arg)` with the callable named by STACK_GLOBAL. */
const p4call = (module: string, name: string, arg: string) =>
  `\x80\x04\x8c${String.fromCharCode(module.length)}${module}\x94\x8c${String.fromCharCode(name.length)}${name}\x94\x93\x94\x8c${String.fromCharCode(arg.length)}${arg}\x94\x85\x94R\x94.`;

describe('restricted unpickler refuses code-execution payloads by name, before anything runs', () => {
  const sentinel = () => join(tmp(), 'pwned');
  const cases: Array<[string, () => string, string]> = [
    ['classic protocol-0 os.system', () => `cos\nsystem\n(S'touch ${sentinel()}'\ntR.`, 'os.system'],
    ['protocol-0 posix.system', () => `cposix\nsystem\n(S'touch ${sentinel()}'\ntR.`, 'posix.system'],
    ['protocol-2 builtins.eval', () => p2call('builtins', 'eval', `open('${sentinel()}','w')`), 'builtins.eval'],
    ['protocol-2 __builtin__.exec', () => p2call('__builtin__', 'exec', `open('${sentinel()}','w')`), '__builtin__.exec'],
    ['protocol-2 builtins.exec', () => p2call('builtins', 'exec', `open('${sentinel()}','w')`), 'builtins.exec'],
    ['protocol-4 STACK_GLOBAL subprocess.Popen', () => p4call('subprocess', 'Popen', `touch ${sentinel()}`), 'subprocess.Popen'],
    ['protocol-4 STACK_GLOBAL os.system', () => p4call('os', 'system', `touch ${sentinel()}`), 'os.system'],
    ['protocol-2 builtins.getattr', () => p2call('builtins', 'getattr', 'x'), 'builtins.getattr'],
    ['torch.load (a pickle loading another file)', () => p2call('torch', 'load', 'other.pt'), 'torch.load'],
    ['INST opcode naming os.system', () => `(S'touch ${sentinel()}'\nios\nsystem\n.`, 'os.system'],
    ['copyreg._reconstructor (generic object rebuild)', () => p2call('copy_reg', '_reconstructor', 'x'), 'copy_reg._reconstructor'],
    ['torch.nn.Module subclass other than ParameterDict', () => p2call('torch.nn.modules.linear', 'Linear', 'x'), 'torch.nn.modules.linear.Linear'],
    ['an inherited JS property name (torch.constructor)', () => p2call('torch', 'constructor', 'x'), 'torch.constructor'],
    ['an inherited JS property name (torch.__proto__)', () => p2call('torch', '__proto__', 'x'), 'torch.__proto__'],
  ];
  for (const [what, payload, global] of cases) {
    it(`${what} → UnsafePickleError naming '${global}'`, () => {
      const err = unsafe(payload());
      expect(err.global).toBe(global);
      expect(err.message).toBe(
        `evil.pt: refusing to load: the pickle names '${global}', which is not on the allow-list of torch.save types (nothing was executed)`,
      );
      expect(existsSync(sentinel())).toBe(false);
    });
  }

  it('a forbidden global after valid allowed content is still refused (no partial result)', () => {
    const prefix = '\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01';
    expect(unsafe(`${prefix}X\x01\x00\x00\x00bcos\nsystem\nX\x02\x00\x00\x00ls\x85Ru.`).global).toBe('os.system');
  });
});

describe('restricted unpickler: malformed pickles are FormatErrors naming the opcode and byte offset', () => {
  const err = (b: string) => {
    try {
      load(b, 'bad.pt');
    } catch (e) {
      expect(e).toBeInstanceOf(FormatError);
      return (e as Error).message;
    }
    throw new Error('no error');
  };
  it('unknown opcode', () => expect(err('\x80\x02N\xff.')).toBe('bad.pt: malformed pickle: unknown opcode 0xff at byte 3'));
  it('truncated string payload', () => expect(err('\x80\x02X\x10\x00\x00\x00abc')).toMatch(/bad\.pt: pickle truncated: opcode BINUNICODE at byte 2 needs 16 bytes, 3 left/));
  it('no STOP at the end', () => expect(err('\x80\x02N')).toMatch(/bad\.pt: pickle truncated: no STOP opcode/));
  it('stack underflow', () => expect(err('\x80\x02R.')).toMatch(/stack underflow \(opcode REDUCE at byte 2\)/));
  it('memo key never stored', () => expect(err('\x80\x02h\x05.')).toMatch(/memo key 5 was never stored \(opcode BINGET at byte 2\)/));
  it('persistent id outside a torch file', () => expect(err('\x80\x02X\x01\x00\x00\x00xQ.')).toMatch(/persistent ids are only allowed inside torch files/));
  it('extension registry opcode', () => expect(err('\x80\x02\x82\x01.')).toMatch(/EXT1\/2\/4/));
  it('out-of-band buffer', () => expect(err('\x80\x05\x97.')).toMatch(/out-of-band buffers/));
  it('calling an allowed non-callable (a dtype object)', () => expect(err('\x80\x02ctorch\nfloat32\n)R.')).toMatch(/torch\.float32 cannot be called/));
  it('_rebuild_tensor_v2 without a storage', () =>
    expect(err('\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00)))\x89NtR.')).toMatch(/first argument must be a storage/));
  it('APPEND onto a dict', () => expect(err('\x80\x02}K\x01a.')).toMatch(/cannot append to dict/));
  it('text FLOAT spelled like an inherited property name', () => expect(err('Fconstructor\n.')).toMatch(/bad float literal 'constructor'/));
  it('absurdly long LONG4 integer', () => expect(err('\x80\x02\x8b\x00\x00\x01\x00.')).toMatch(/integer of 65536 bytes is implausibly long/));
});

describe('restricted unpickler reads real CPython pickles (protocols 0, 2, 4, 5)', () => {
  for (const proto of [0, 2, 4, 5]) {
    it(`protocol ${proto}: str, bytes, ints of every width, floats incl. -0/inf, tuples, None, bools, set, int keys, OrderedDict, shared list`, () => {
      const root = load(Buffer.from(CPYTHON_PICKLES[proto]!, 'hex'), 'cpython.pkl') as Map<PyValue, PyValue>;
      expect(root).toBeInstanceOf(Map);
      expect(root.get('s')).toBe('h\u00e9llo \u2713');
      expect(root.get('b')).toEqual(Uint8Array.from([0, 255]));
      expect(root.get('i')).toEqual([0, 255, 256, 65535, 65536, -1, -(2 ** 31), 2 ** 31, 2n ** 53n + 1n, -(2n ** 70n)]);
      const f = root.get('f') as number[];
      expect(f[0]).toBe(1.5);
      expect(Object.is(f[1], -0)).toBe(true);
      expect(f[2]).toBe(Infinity);
      expect(root.get('t')).toEqual(new PyTuple([1, new PyTuple([2, 3]), new PyTuple([])]));
      expect(root.get('n')).toBeNull();
      expect(root.get('bool')).toEqual([true, false]);
      expect(root.get('set')).toEqual(new PySet([1]));
      expect(root.get(7)).toBe('int key');
      const od = root.get('od');
      expect(od).toBeInstanceOf(PyOrderedDict);
      expect([...(od as PyOrderedDict)]).toEqual([['a', 1]]);
      const shared = root.get('shared') as PyTuple;
      expect(shared.items[0]).toBe(shared.items[1]); // the same list object, via the memo
      if (proto >= 4) expect(root.get('fs')).toEqual(new PySet([2], true));
      if (proto >= 5) expect(root.get('ba')).toEqual(Uint8Array.from([97, 98]));
      expect([...root.keys()].slice(0, 3)).toEqual(['s', 'b', 'i']); // insertion order kept
    });
  }

  it('numpy scalars and dtypes (as found in Lightning checkpoints) decode to numbers', () => {
    // pickle.dumps({'f': np.float64(2.5), 'i': np.int64(-3), 'b': np.bool_(True), 'h': np.float16(0.5), 'u': np.uint8(200)},
    //              protocol=2) with numpy 1.24
    const hex = [
      '80027d7100285801000000667101636e756d70792e636f72652e6d756c746961727261790a7363616c61720a7102636e756d70790a6474',
      '7970650a71035802000000663871048988877105527106284b0358010000003c71074e4e4e4affffffff4affffffff4b0074710862635f',
      '636f646563730a656e636f64650a710958080000000000000000000440710a58060000006c6174696e31710b86710c52710d86710e5271',
      '0f5801000000697110680268035802000000693871118988877112527113284b0368074e4e4e4affffffff4affffffff4b007471146268',
      '095810000000c3bdc3bfc3bfc3bfc3bfc3bfc3bfc3bf7115680b867116527117867118527119580100000062711a680268035802000000',
      '6231711b898887711c52711d284b0358010000007c711e4e4e4e4affffffff4affffffff4b0074711f6268095801000000017120680b86',
      '71215271228671235271245801000000687125680268035802000000663271268988877127527128284b0368074e4e4e4affffffff4aff',
      'ffffff4b0074712962680958020000000038712a680b86712b52712c86712d52712e580100000075712f68026803580200000075317130',
      '8988877131527132284b03681e4e4e4e4affffffff4affffffff4b007471336268095802000000c3887134680b86713552713686713752',
      '7138752e',
    ].join('');
    const root = load(Buffer.from(hex, 'hex'), 'np.pkl') as Map<string, PyValue>;
    expect(root.get('f')).toBe(2.5);
    expect(root.get('i')).toBe(-3);
    expect(root.get('b')).toBe(true);
    expect(root.get('h')).toBe(0.5);
    expect(root.get('u')).toBe(200);
  });
  it('_rebuild_device_tensor_from_numpy: numpy arrays (C and Fortran order) become in-memory tensors', async () => {
    // class T: __reduce__ = (torch._utils._rebuild_device_tensor_from_numpy, (arr, torch.float32, 'cpu', True))
    // pickle.dumps({'c': T(np.arange(6, dtype=np.float32).reshape(2, 3)), 'f': T(np.asfortranarray(<same>))}, protocol=2)
    const hex = [
      '80027d710028580100000063710163746f7263682e5f7574696c730a5f72656275696c645f6465766963655f74656e736f725f66726f6d',
      '5f6e756d70790a710228636e756d70792e636f72652e6d756c746961727261790a5f7265636f6e7374727563740a7103636e756d70790a',
      '6e6461727261790a71044b00857105635f636f646563730a656e636f64650a7106580100000062710758060000006c6174696e31710886',
      '710952710a87710b52710c284b014b024b0386710d636e756d70790a64747970650a710e58020000006634710f8988877110527111284b',
      '0358010000003c71124e4e4e4affffffff4affffffff4b0074711362896806581b000000000000000000c2803f00000040000040400000',
      'c280400000c2a040711468088671155271167471176263746f7263680a666c6f617433320a7118580300000063707571198874711a5271',
      '1b580100000066711c680228680368044b0085711d680a87711e52711f284b014b024b038671206811886806581b000000000000000000',
      '40400000c2803f0000c28040000000400000c2a04071216808867122527123747124626818681988747125527126752e',
    ].join('');
    const root = load(Buffer.from(hex, 'hex'), 'xla.pt') as Map<string, PyValue>;
    for (const key of ['c', 'f']) {
      const t = root.get(key) as TorchTensorRef;
      expect(t).toBeInstanceOf(TorchTensorRef);
      expect(t.requiresGrad).toBe(true);
      const loaded = await t.load(key);
      expect(loaded.shape).toEqual([2, 3]);
      expect(Array.from(loaded.data)).toEqual([0, 1, 2, 3, 4, 5]);
    }
  });
});

describe('pickler (protocol 2) → unpickler round trip', () => {
  it('keeps values, types, int keys, tuples, nested dicts, OrderedDict attrs, floats vs ints, bigints, bytes, sets and sharing', () => {
    const shared = [1, 2];
    const od = new PyOrderedDict([['linear.0.weight', 'w']]);
    od.attrs = new Map<PyValue, PyValue>([['_metadata', new PyOrderedDict([['', new Map([['version', 1]])]])]]);
    const root = new Map<PyValue, PyValue>([
      [768, new PyTuple([od, new PyOrderedDict()])],
      ['layer_structure', [new PyFloat(1), new PyFloat(2), new PyFloat(1)]],
      ['floats', [0.1, -0, NaN, Infinity, 1e300]],
      ['ints', [0, 255, 256, 65535, 65536, -1, -129, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 - 1, 2n ** 64n, -(2n ** 100n)]],
      ['none', null],
      ['flags', [true, false]],
      ['text', 'ünï ✓ \u{1F600}'],
      ['bytes', Uint8Array.from([0, 128, 255])],
      ['set', new PySet(['a'])],
      ['nested', new Map<PyValue, PyValue>([['a', new Map([['b', new PyTuple([])]])]])],
      ['big_list', Array.from({ length: 2500 }, (_, i) => i)],
      ['shared', new PyTuple([shared, shared])],
      ['cls', new PyGlobal('collections', 'OrderedDict')],
    ]);
    const { bytes: pkl, tensors } = pickle(root);
    expect(tensors).toEqual([]);
    const back = load(pkl, 'rt.pkl') as Map<PyValue, PyValue>;
    expect([...back.keys()]).toEqual([...root.keys()]);
    const pair = back.get(768) as PyTuple;
    expect(pair.items[0]).toBeInstanceOf(PyOrderedDict);
    expect([...(pair.items[0] as PyOrderedDict)]).toEqual([['linear.0.weight', 'w']]);
    expect((pair.items[0] as PyOrderedDict).attrs?.get('_metadata')).toBeInstanceOf(PyOrderedDict);
    expect(back.get('layer_structure')).toEqual([1, 2, 1]);
    const floats = back.get('floats') as number[];
    expect(floats[0]).toBe(0.1);
    expect(Object.is(floats[1], -0)).toBe(true);
    expect(Number.isNaN(floats[2])).toBe(true);
    expect(floats.slice(3)).toEqual([Infinity, 1e300]);
    expect(back.get('ints')).toEqual([0, 255, 256, 65535, 65536, -1, -129, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 - 1, 2n ** 64n, -(2n ** 100n)]);
    expect(back.get('none')).toBeNull();
    expect(back.get('flags')).toEqual([true, false]);
    expect(back.get('text')).toBe('ünï ✓ \u{1F600}');
    expect(back.get('bytes')).toEqual(Uint8Array.from([0, 128, 255]));
    expect(back.get('set')).toEqual(new PySet(['a']));
    expect(toPlainObject(back.get('nested') as Map<PyValue, PyValue>)).toEqual({ a: new Map([['b', new PyTuple([])]]) });
    expect(back.get('big_list')).toEqual(root.get('big_list'));
    const sh = back.get('shared') as PyTuple;
    expect(sh.items[0]).toBe(sh.items[1]);
    expect((back.get('cls') as PyGlobal).fullName).toBe('collections.OrderedDict');
  });

  it('PyFloat forces a Python float (BINFLOAT) where a plain integral number writes an int (BININT1)', () => {
    expect(Buffer.from(pickle(new PyFloat(1)).bytes).toString('hex')).toBe('800247' + '3ff0000000000000' + '2e');
    expect(Buffer.from(pickle(1).bytes).toString('hex')).toBe('80024b012e');
  });

  it('an opaque module object (ParameterDict) round-trips as NEWOBJ + BUILD', () => {
    const obj = new PyObject(new PyGlobal('torch.nn.modules.container', 'ParameterDict'));
    obj.state = new Map<PyValue, PyValue>([['_parameters', new PyOrderedDict([['*', 1]])], ['training', true]]);
    const back = load(pickle(obj).bytes, 'm.pkl') as PyObject;
    expect(back).toBeInstanceOf(PyObject);
    expect(back.getAttr('training')).toBe(true);
    expect([...(back.getAttr('_parameters') as Map<PyValue, PyValue>)]).toEqual([['*', 1]]);
  });

  it('refuses values it cannot represent and tuples that contain themselves', () => {
    expect(() => pickle(new Map([['f', (() => 1) as unknown as PyValue]]))).toThrow(/cannot write/);
    const items: PyValue[] = [];
    const t = new PyTuple(items);
    items.push(t);
    expect(() => pickle(t)).toThrow(/contains itself/);
  });
});
