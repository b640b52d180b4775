// A restricted unpickler: it interprets pickle opcodes into plain JS data and never executes anything. Globals are
// checked against an allow-list the moment they are named (GLOBAL/STACK_GLOBAL/INST), so a payload such as
// `os.system` fails with UnsafePickleError before any argument is even read. The pickler lives in pickle_write.ts.

import { FormatError } from '../errors.js';
import { buildState, callGlobal, newObject, resolveGlobal } from './pickle_globals.js';
import { PyGlobal, PySet, PyTuple, pyTypeName, type PyValue } from './pickle_values.js';

export * from './pickle_values.js';
export { pickle, type PickledTensor } from './pickle_write.js';

export interface UnpickleOptions {
  /** Named in every error message. */
  file: string;
  /** BINPERSID/PERSID handler (torch storages). Without it a persistent id is an error. */
  persistentLoad?: (pid: PyValue) => PyValue;
}

const MARK = Symbol('mark');
type Slot = PyValue | typeof MARK;

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** Interprets a pickle (protocols 0–5) into JS values. See pickle_values.ts for the mapping. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): PyValue {
  return new Unpickler(data, opts).run();
}

class Unpickler {
  private pos = 0;
  private op = 0;
  private opAt = 0;
  private stack: Slot[] = [];
  private readonly memo = new Map<number, PyValue>();
  private readonly dv: DataView;
  private readonly file: string;

  constructor(
    private readonly data: Uint8Array,
    private readonly opts: UnpickleOptions,
  ) {
    this.dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.file = opts.file;
  }

  private fail(detail: string): FormatError {
    const name = OPNAMES[this.op] ?? `0x${this.op.toString(16)}`;
    return new FormatError(this.file, `malformed pickle: ${detail} (opcode ${name} at byte ${this.opAt})`);
  }

  private take(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.data.byteLength) {
      throw new FormatError(this.file, `pickle truncated: opcode ${OPNAMES[this.op] ?? this.op} at byte ${this.opAt} needs ${n} bytes, ${this.data.byteLength - this.pos} left`);
    }
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  private u8 = () => this.take(1)[0]!;
  private u16 = () => (this.take(2), this.dv.getUint16(this.pos - 2, true));
  private u32 = () => (this.take(4), this.dv.getUint32(this.pos - 4, true));
  private u64(): number {
    this.take(8);
    const v = this.dv.getBigUint64(this.pos - 8, true);
    if (v > BigInt(this.data.byteLength)) throw this.fail(`length ${v} exceeds the pickle size`);
    return Number(v);
  }
  private line(encoding: 'utf8' | 'latin1' = 'utf8'): string {
    const end = this.data.indexOf(0x0a, this.pos);
    if (end < 0) this.take(this.data.byteLength - this.pos + 1); // throws "truncated"
    const s = Buffer.from(this.data.subarray(this.pos, end)).toString(encoding);
    this.pos = end + 1;
    return s;
  }
  private utf8 = (n: number) => Buffer.from(this.take(n)).toString('utf8');
  private bytes = (n: number) => new Uint8Array(this.take(n)); // a copy: values must not alias the pickle buffer

  private push(v: PyValue): void {
    this.stack.push(v);
  }
  private pop(): PyValue {
    const v = this.stack.pop();
    if (v === undefined) throw this.fail('stack underflow');
    if (v === MARK) throw this.fail('unexpected MARK on the stack');
    return v;
  }
  private top(): PyValue {
    const v = this.stack[this.stack.length - 1];
    if (v === undefined || v === MARK) throw this.fail('stack underflow');
    return v;
  }
  private popMark(): PyValue[] {
    const at = this.stack.lastIndexOf(MARK);
    if (at < 0) throw this.fail('no MARK on the stack');
    const items = this.stack.splice(at);
    items.shift();
    return items as PyValue[];
  }
  private args(v: PyValue): PyValue[] {
    if (!(v instanceof PyTuple)) throw this.fail(`arguments must be a tuple, got ${pyTypeName(v)}`);
    return v.items;
  }
  private global(v: PyValue, what: string): PyGlobal {
    if (!(v instanceof PyGlobal)) throw this.fail(`${what} needs a class or function, got ${pyTypeName(v)}`);
    return v;
  }
  private persistent(pid: PyValue): PyValue {
    if (!this.opts.persistentLoad) throw this.fail('persistent ids are only allowed inside torch files');
    return this.opts.persistentLoad(pid);
  }
  private setItems(target: PyValue, items: PyValue[]): void {
    if (!(target instanceof Map)) throw this.fail(`cannot set items on ${pyTypeName(target)}`);
    if (items.length % 2) throw this.fail('odd number of key/value items');
    for (let i = 0; i < items.length; i += 2) target.set(items[i]!, items[i + 1]!);
  }
  private int(n: number | bigint): number | bigint {
    if (typeof n === 'number') return n;
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
  }
  /** Python's LONG1/LONG4 encoding: little-endian two's complement. */
  private long(bytes: Uint8Array): number | bigint {
    if (bytes.byteLength === 0) return 0;
    let v = 0n;
    for (let i = bytes.byteLength - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
    if (bytes[bytes.byteLength - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.byteLength);
    return this.int(v);
  }
  private textInt(s: string): number | bigint {
    const t = s.endsWith('L') ? s.slice(0, -1) : s;
    if (!/^[+-]?\d+$/.test(t)) throw this.fail(`bad integer literal '${s}'`);
    return this.int(BigInt(t));
  }

  run(): PyValue {
    for (;;) {
      this.opAt = this.pos;
      if (this.pos >= this.data.byteLength) throw new FormatError(this.file, `pickle truncated: no STOP opcode before byte ${this.pos}`);
      this.op = this.u8();
      switch (this.op) {
        case 0x80: { // PROTO
          const v = this.u8();
          if (v > 5) throw this.fail(`unsupported pickle protocol ${v}`);
          break;
        }
        case 0x95: this.u64(); break; // FRAME: only a read-ahead hint
        case 0x2e: { // STOP
          const v = this.pop();
          return v;
        }
        case 0x28: this.stack.push(MARK); break;
        case 0x30: this.pop(); break;
        case 0x31: this.popMark(); break;
        case 0x32: this.push(this.top()); break;
        // --- constants and scalars
        case 0x4e: this.push(null); break;
        case 0x88: this.push(true); break;
        case 0x89: this.push(false); break;
        case 0x4a: this.take(4); this.push(this.dv.getInt32(this.pos - 4, true)); break;
        case 0x4b: this.push(this.u8()); break;
        case 0x4d: this.push(this.u16()); break;
        case 0x8a: this.push(this.long(this.take(this.u8()))); break;
        case 0x8b: {
          // Real checkpoints hold small ints; a megabyte-long integer would only make BigInt parsing crawl.
          const n = this.u32();
          if (n > 4096) throw this.fail(`integer of ${n} bytes is implausibly long`);
          this.push(this.long(this.take(n)));
          break;
        }
        case 0x49: { // INT (protocol 0): also spells bools as 00/01
          const s = this.line();
          this.push(s === '01' ? true : s === '00' ? false : this.textInt(s));
          break;
        }
        case 0x4c: this.push(this.textInt(this.line())); break;
        case 0x46: { // FLOAT: Python repr, which spells the specials inf / -inf / nan
          const s = this.line().trim();
          const special: Record<string, number> = { inf: Infinity, '+inf': Infinity, '-inf': -Infinity, nan: NaN, '-nan': NaN };
          const v = Object.hasOwn(special, s.toLowerCase()) ? special[s.toLowerCase()]! : Number(s);
          if (Number.isNaN(v) && !/^[+-]?nan$/i.test(s)) throw this.fail(`bad float literal '${s}'`);
          this.push(v);
          break;
        }
        case 0x47: this.take(8); this.push(this.dv.getFloat64(this.pos - 8, false)); break;
        // --- strings and bytes
        case 0x58: this.push(this.utf8(this.u32())); break;
        case 0x8c: this.push(this.utf8(this.u8())); break;
        case 0x8d: this.push(this.utf8(this.u64())); break;
        case 0x56: this.push(rawUnicodeEscape(this.line('latin1'))); break;
        // Python 2 str: torch.load decodes it as UTF-8 (its default `encoding`), so do the same.
        case 0x54: this.push(this.utf8(this.u32())); break;
        case 0x55: this.push(this.utf8(this.u8())); break;
        case 0x53: this.push(this.quoted(this.line())); break;
        case 0x42: this.push(this.bytes(this.u32())); break;
        case 0x43: this.push(this.bytes(this.u8())); break;
        case 0x8e: case 0x96: this.push(this.bytes(this.u64())); break;
        case 0x98: this.top(); break; // READONLY_BUFFER: no-op on our values
        case 0x97: throw this.fail('out-of-band buffers are not supported');
        // --- containers
        case 0x5d: this.push([]); break;
        case 0x6c: this.push(this.popMark()); break;
        case 0x61: { const v = this.pop(); this.append(this.top(), [v]); break; }
        case 0x65: { const items = this.popMark(); this.append(this.top(), items); break; }
        case 0x29: this.push(new PyTuple([])); break;
        case 0x74: this.push(new PyTuple(this.popMark())); break;
        case 0x85: case 0x86: case 0x87: {
          const n = this.op - 0x84;
          const items: PyValue[] = [];
          for (let i = 0; i < n; i++) items.unshift(this.pop());
          this.push(new PyTuple(items));
          break;
        }
        case 0x7d: this.push(new Map()); break;
        case 0x64: { const d = new Map<PyValue, PyValue>(); this.setItems(d, this.popMark()); this.push(d); break; }
        case 0x73: { const v = this.pop(); const k = this.pop(); this.setItems(this.top(), [k, v]); break; }
        case 0x75: { const items = this.popMark(); this.setItems(this.top(), items); break; }
        case 0x8f: this.push(new PySet([])); break;
        case 0x90: {
          const items = this.popMark();
          const s = this.top();
          if (!(s instanceof PySet) || s.frozen) throw this.fail(`cannot add items to ${pyTypeName(s)}`);
          for (const item of items) s.items.push(item); // no spread: a hostile MARK may hold millions
          break;
        }
        case 0x91: this.push(new PySet(this.popMark(), true)); break;
        // --- memo
        case 0x71: this.memo.set(this.u8(), this.top()); break;
        case 0x72: this.memo.set(this.u32(), this.top()); break;
        case 0x70: this.memo.set(Number(this.textInt(this.line())), this.top()); break;
        case 0x94: this.memo.set(this.memo.size, this.top()); break;
        case 0x68: this.get(this.u8()); break;
        case 0x6a: this.get(this.u32()); break;
        case 0x67: this.get(Number(this.textInt(this.line()))); break;
        // --- globals and object construction: every name goes through the allow-list first
        case 0x63: { const module = this.line(); const name = this.line(); this.push(resolveGlobal(this.file, module, name)); break; }
        case 0x93: {
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') throw this.fail('STACK_GLOBAL needs two strings');
          this.push(resolveGlobal(this.file, module, name));
          break;
        }
        case 0x69: { // INST: module\nname\n then args from MARK
          const cls = resolveGlobal(this.file, this.line(), this.line());
          this.push(callGlobal(this.file, cls, this.popMark()));
          break;
        }
        case 0x6f: { // OBJ: MARK cls args...
          const [cls, ...args] = this.popMark();
          this.push(callGlobal(this.file, this.global(cls ?? null, 'OBJ'), args));
          break;
        }
        case 0x52: { const args = this.args(this.pop()); const fn = this.global(this.pop(), 'REDUCE'); this.push(callGlobal(this.file, fn, args)); break; }
        case 0x81: { const args = this.args(this.pop()); const cls = this.global(this.pop(), 'NEWOBJ'); this.push(newObject(this.file, cls, args)); break; }
        case 0x92: {
          const kwargs = this.pop();
          const args = this.args(this.pop());
          const cls = this.global(this.pop(), 'NEWOBJ_EX');
          if (!(kwargs instanceof Map) || kwargs.size > 0) throw this.fail('keyword arguments are not supported');
          this.push(newObject(this.file, cls, args));
          break;
        }
        case 0x62: { const state = this.pop(); buildState(this.file, this.top(), state); break; }
        case 0x51: this.push(this.persistent(this.pop())); break;
        case 0x50: this.push(this.persistent(this.line())); break;
        case 0x82: case 0x83: case 0x84:
          throw this.fail('extension-registry references (EXT1/2/4) are not supported');
        default:
          this.pos = this.opAt; // report the offending byte itself
          throw new FormatError(this.file, `malformed pickle: unknown opcode 0x${this.op.toString(16).padStart(2, '0')} at byte ${this.opAt}`);
      }
    }
  }

  private get(i: number): void {
    if (!this.memo.has(i)) throw this.fail(`memo key ${i} was never stored`);
    this.push(this.memo.get(i)!);
  }

  private append(target: PyValue, items: PyValue[]): void {
    if (!Array.isArray(target)) throw this.fail(`cannot append to ${pyTypeName(target)}`);
    for (const item of items) target.push(item); // no spread: a hostile MARK may hold millions
  }

  /** Protocol 0 STRING: a Python repr literal, quoted with ' or ". */
  private quoted(s: string): string {
    const q = s[0];
    if (s.length < 2 || (q !== "'" && q !== '"') || s[s.length - 1] !== q) throw this.fail('STRING literal is not quoted');
    const body = s.slice(1, -1);
    const out: number[] = [];
    const esc: Record<string, number> = { n: 10, t: 9, r: 13, '\\': 92, "'": 39, '"': 34, a: 7, b: 8, f: 12, v: 11, '\n': -1 };
    for (let i = 0; i < body.length; i++) {
      const c = body[i]!;
      if (c !== '\\') { for (const b of Buffer.from(c, 'utf8')) out.push(b); continue; }
      const n = body[++i];
      if (n === undefined) throw this.fail('STRING literal ends in a backslash');
      if (n === 'x') { out.push(parseInt(body.slice(i + 1, i + 3), 16)); i += 2; }
      else if (/[0-7]/.test(n)) { const m = /^[0-7]{1,3}/.exec(body.slice(i))![0]; out.push(parseInt(m, 8) & 0xff); i += m.length - 1; }
      else if (Object.hasOwn(esc, n)) { if (esc[n]! >= 0) out.push(esc[n]!); }
      else out.push(92, n.charCodeAt(0));
    }
    return Buffer.from(out).toString('utf8');
  }
}

/** Protocol 0 UNICODE: raw-unicode-escape (\uXXXX and \UXXXXXXXX; everything else literal). */
function rawUnicodeEscape(s: string): string {
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_, a: string | undefined, b: string | undefined) =>
    String.fromCodePoint(parseInt((a ?? b)!, 16)),
  );
}
