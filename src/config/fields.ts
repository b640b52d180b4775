// Schema-side helpers shared by the loader and the run-config schemas: path fields, walking a zod schema by key path,
// and resolving relative paths in a parsed config (done here and nowhere else).
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** One segment of a key path: a mapping key or a list index. */
export type KeySegment = string | number;

type Schema = z.core.$ZodType;
/** The parts of a zod definition we walk (zod's own `_zod.def`, the documented hook for library authors). */
interface Def {
  type: string;
  innerType?: Schema;
  in?: Schema;
  out?: Schema;
  shape?: Record<string, Schema>;
  element?: Schema;
  items?: Schema[];
  valueType?: Schema;
  options?: Schema[];
  entries?: Record<string, unknown>;
  values?: unknown[];
}
const defOf = (s: Schema): Def => s._zod.def as unknown as Def;

/** Metadata key that marks a string schema as a filesystem path (stripped from the generated JSON Schema). */
export const PATH_META_KEY = 'sdtrainPath';

/**
 * A string that names a file or folder. Relative values are resolved by {@link resolveConfigPaths}: against the
 * config file's folder for values written in the file (and for defaults), against the current directory for values
 * given on the command line. The mark survives `.describe()`, `.optional()` and `.default()`.
 */
export function pathField(): z.ZodString {
  return z.string().min(1, { error: 'must not be empty (a file or folder path)' }).meta({ [PATH_META_KEY]: true });
}

export function isPathField(s: Schema): boolean {
  return (z.globalRegistry.get(s) as Record<string, unknown> | undefined)?.[PATH_META_KEY] === true;
}

/** Resolve one path value: `~` expands to the home folder, relative paths join `baseDir`. */
export function resolveConfigPath(value: string, baseDir: string): string {
  if (value === '~') return homedir();
  if (value.startsWith('~/') || value.startsWith('~\\')) return path.join(homedir(), value.slice(2));
  return path.isAbsolute(value) ? path.normalize(value) : path.resolve(baseDir, value);
}

let packageRootCache: string | undefined;
/** The sdtrain package folder (the nearest ancestor of this module with a package.json; works from src/ and dist/). */
export function packageRoot(): string {
  if (packageRootCache !== undefined) return packageRootCache;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  packageRootCache = dir;
  return dir;
}

const WRAPPERS = new Set(['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional', 'lazy']);

/** Strip optional/default/... wrappers; a pipe is followed to its schema side (`in` when `out` is a bare transform). */
export function unwrap(s: Schema, visit?: (s: Schema) => void): Schema {
  for (;;) {
    visit?.(s);
    const d = defOf(s);
    if (d.type === 'lazy') s = (s as unknown as { _zod: { innerType: Schema } })._zod.innerType;
    else if (WRAPPERS.has(d.type) && d.innerType) s = d.innerType;
    else if (d.type === 'pipe' && d.in && d.out) s = defOf(d.out).type === 'transform' ? d.in : d.out;
    else return s;
  }
}

/** The (unwrapped) type name of a schema: 'object', 'array', 'string', 'union', ... */
export function kindOf(s: Schema): string {
  return defOf(unwrap(s)).type;
}

/** The keys an object schema allows (empty for non-objects). */
export function objectKeys(s: Schema): string[] {
  const d = defOf(unwrap(s));
  return d.type === 'object' && d.shape ? Object.keys(d.shape) : [];
}

/** The allowed string values of an enum or literal schema (empty for others). */
export function enumValues(s: Schema): string[] {
  const d = defOf(unwrap(s));
  if (d.type === 'enum' && d.entries) return Object.values(d.entries).filter((v): v is string => typeof v === 'string');
  if (d.type === 'literal' && d.values) return d.values.filter((v): v is string => typeof v === 'string');
  return [];
}

/** The child schemas one key/index below `s` (several when `s` is a union). */
function childSchemas(s: Schema, seg: KeySegment): Schema[] {
  const u = unwrap(s);
  const d = defOf(u);
  switch (d.type) {
    case 'object': {
      const c = d.shape?.[String(seg)];
      return c ? [c] : [];
    }
    case 'array':
      return d.element && /^\d+$/.test(String(seg)) ? [d.element] : [];
    case 'tuple': {
      const c = typeof seg === 'number' || /^\d+$/.test(seg) ? d.items?.[Number(seg)] : undefined;
      return c ? [c] : [];
    }
    case 'record':
      return d.valueType ? [d.valueType] : [];
    case 'union':
      return (d.options ?? []).flatMap((o) => childSchemas(o, seg));
    default:
      return [];
  }
}

/** Every schema that can sit at `keyPath` below `root` (empty when the path does not exist in the schema). */
export function schemasAt(root: Schema, keyPath: readonly KeySegment[]): Schema[] {
  let current: Schema[] = [root];
  for (const seg of keyPath) current = current.flatMap((s) => childSchemas(s, seg));
  return current.flatMap((s) => (kindOf(s) === 'union' ? (defOf(unwrap(s)).options ?? []) : [s]));
}

/** True when every schema at `keyPath` is a plain string (so a `--set` value there is taken literally). */
export function expectsPlainString(root: Schema, keyPath: readonly KeySegment[]): boolean {
  const at = schemasAt(root, keyPath);
  return at.length > 0 && at.every((s) => kindOf(s) === 'string');
}

function jsKind(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  return typeof v;
}
const COMPATIBLE: Record<string, string[]> = {
  string: ['string', 'enum', 'literal', 'template_literal'],
  number: ['number', 'int', 'literal', 'enum'],
  boolean: ['boolean', 'literal'],
  object: ['object', 'record'],
  array: ['array', 'tuple'],
};

/**
 * Walk a parsed config together with its schema and resolve every relative path value.
 * `baseFor(keyPath)` picks the folder a given value is relative to (it depends on where the value came from).
 */
export function resolveConfigPaths(
  schema: Schema,
  value: unknown,
  baseFor: (keyPath: readonly KeySegment[]) => string,
  keyPath: KeySegment[] = [],
): unknown {
  let isPath = false;
  const s = unwrap(schema, (layer) => {
    if (isPathField(layer)) isPath = true;
  });
  const d = defOf(s);
  if (d.type === 'union') {
    const wanted = COMPATIBLE[jsKind(value)] ?? [];
    const option = (d.options ?? []).find((o) => wanted.includes(kindOf(o)));
    if (!option) return value;
    return resolveConfigPaths(option, value, baseFor, keyPath);
  }
  if (isPath && typeof value === 'string') return resolveConfigPath(value, baseFor(keyPath));
  if (d.type === 'object' && d.shape && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const child = d.shape[k];
      out[k] = child ? resolveConfigPaths(child, v, baseFor, [...keyPath, k]) : v;
    }
    return out;
  }
  if ((d.type === 'array' || d.type === 'tuple') && Array.isArray(value)) {
    return value.map((v, i) => {
      const child = d.type === 'array' ? d.element : d.items?.[i];
      return child ? resolveConfigPaths(child, v, baseFor, [...keyPath, i]) : v;
    });
  }
  return value;
}

/** Every key path the schema allows, list entries written as '<n>' (for "did you mean" across sections). */
export function allKeyPaths(root: Schema, prefix: string[] = [], depth = 0): string[][] {
  if (depth > 8) return [];
  const d = defOf(unwrap(root));
  if (d.type === 'object' && d.shape) {
    return Object.entries(d.shape).flatMap(([k, child]) => [[...prefix, k], ...allKeyPaths(child, [...prefix, k], depth + 1)]);
  }
  if (d.type === 'array' && d.element) return allKeyPaths(d.element, [...prefix, '<n>'], depth + 1);
  if (d.type === 'union') return (d.options ?? []).flatMap((o) => allKeyPaths(o, prefix, depth + 1));
  return [];
}

/** Levenshtein distance (insert/delete/substitute, each cost 1). */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The closest candidate to a misspelt word, or undefined when none is close enough to be a plausible typo. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/-/g, '_');
  const w = norm(word);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, norm(c));
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  const limit = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  return bestDistance <= limit ? best : undefined;
}
