// Reading a diffusers `config.json` into one of our config types: keys keep diffusers' names, missing keys get
// diffusers' defaults, and keys that select an architecture we do not implement must hold their default (or we
// throw a ConfigError naming the key). Keys diffusers itself would not know are ignored, as diffusers does.
import { ConfigError } from '../errors.js';

type Json = Record<string, unknown>;

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

const sameJson = (a: unknown, b: unknown): boolean => show(a) === show(b);

/** A cursor over one config object that reports errors as `<source>: '<key>' ...`. */
export class ConfigReader {
  private readonly obj: Json;

  constructor(
    json: unknown,
    readonly source: string,
  ) {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new ConfigError(`${source}: expected a JSON object, got ${show(json)}`);
    }
    this.obj = json as Json;
  }

  fail(key: string, detail: string): never {
    throw new ConfigError(`${this.source}: '${key}' ${detail}`);
  }

  /** The value, or `fallback` when the key is absent (diffusers treats an explicit null like absent only for some keys). */
  raw(key: string, fallback: unknown): unknown {
    return Object.hasOwn(this.obj, key) ? this.obj[key] : fallback;
  }

  int(key: string, fallback: number, min = 0): number {
    const v = this.raw(key, fallback);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(key, `must be an integer >= ${min}, got ${show(v)}`);
    return v;
  }

  num(key: string, fallback: number): number {
    const v = this.raw(key, fallback);
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `must be a number, got ${show(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw(key, fallback);
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${show(v)}`);
    return v;
  }

  intOrNull(key: string, fallback: number | null): number | null {
    const v = this.raw(key, fallback);
    if (v === null) return null;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) this.fail(key, `must be a positive integer or null, got ${show(v)}`);
    return v;
  }

  intList(key: string, fallback: number[]): number[] {
    const v = this.raw(key, fallback);
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 1)) {
      this.fail(key, `must be a non-empty list of positive integers, got ${show(v)}`);
    }
    return [...(v as number[])];
  }

  /** A positive integer or a list of them (one per down block). */
  intOrList(key: string, fallback: number | number[] | null): number | number[] {
    const v = this.raw(key, fallback);
    if (typeof v === 'number' && Number.isInteger(v) && v >= 1) return v;
    if (Array.isArray(v)) return this.intList(key, fallback as number[]);
    return this.fail(key, `must be a positive integer or a list of them, got ${show(v)}`);
  }

  enumList<T extends string>(key: string, fallback: T[], allowed: readonly T[], what: string): T[] {
    const v = this.raw(key, fallback);
    if (!Array.isArray(v) || v.length === 0) this.fail(key, `must be a non-empty list of block type names, got ${show(v)}`);
    for (const t of v) {
      if (!(allowed as readonly unknown[]).includes(t)) {
        this.fail(key, `contains ${show(t)}, which is not supported (${what}: ${allowed.join(', ')})`);
      }
    }
    return [...(v as T[])];
  }

  /** The key selects a feature we do not implement: it must be absent or hold one of `accepted` (diffusers' default first). */
  onlyDefault(key: string, accepted: readonly unknown[], why: string): void {
    if (!Object.hasOwn(this.obj, key)) return;
    const v = this.obj[key];
    if (!accepted.some((a) => sameJson(a, v))) {
      this.fail(key, `= ${show(v)} is not supported (${why}; expected ${accepted.map(show).join(' or ')})`);
    }
  }
}
