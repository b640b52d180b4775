// Load a YAML run config: parse (keeping positions), apply `--set` and flag overrides, validate with a strict zod
// schema (defaults filled), resolve relative paths, and word every problem as "key: what (file:line:col)".
//
// Precedence, lowest to highest: schema defaults < the file < `--set` (left to right) < dedicated flags.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, stringify, type Document } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { expectsPlainString, resolveConfigPaths, type KeySegment } from './fields.js';
import { describeIssues, describeValue, dotted, entries, issueLine, type ConfigIssue, type Place } from './format_issues.js';

export type { ConfigIssue } from './format_issues.js';
export type { KeySegment } from './fields.js';
export { pathField, resolveConfigPath } from './fields.js';

/** Where a value in the final config came from. */
export type ValueOrigin = 'default' | 'file' | 'set' | 'flag';

export interface ConfigOptions {
  /** Values from dedicated CLI flags, by dotted key ('training.learning_rate'); undefined entries are ignored. */
  overrides?: Readonly<Record<string, unknown>>;
  /** Raw `--set key.path=value` strings, applied left to right (a later one wins). */
  set?: readonly string[];
  /** How to name a flag in messages, by dotted key (e.g. '--lr 1e-4'); default "command-line flag for <key>". */
  overrideLabels?: Readonly<Record<string, string>>;
  /** Extra advice for unknown keys, by dotted key path (replaces the did-you-mean suggestion). */
  unknownKeyHints?: Readonly<Record<string, string>>;
  /** Folder that relative paths in the file resolve against (default: the file's folder). */
  baseDir?: string;
  /** Folder that relative paths given on the command line resolve against (default: process.cwd()). */
  cwd?: string;
}

/** Where the config came from; `origin(key)` tells whether a value is a default, from the file, `--set` or a flag. */
export interface ResolvedSource {
  /** The file name as given (used in messages). */
  file: string;
  /** The file's absolute path. */
  path: string;
  /** The folder relative paths in the file resolved against. */
  baseDir: string;
  /** The `--set` arguments that were applied. */
  set: readonly string[];
  /** The flag overrides that were applied (undefined ones dropped). */
  overrides: Readonly<Record<string, unknown>>;
  origin(key: string | readonly KeySegment[]): ValueOrigin;
}

export interface LoadedConfig<T> {
  config: T;
  source: ResolvedSource;
}

/** A ConfigError that carries every problem found; its message lists them one per line. */
export class ConfigIssuesError extends ConfigError {
  constructor(
    readonly file: string,
    readonly issues: readonly ConfigIssue[],
  ) {
    super(
      issues.length === 1
        ? issueLine(issues[0]!)
        : `${file}: ${issues.length} problems in the configuration:\n${issues.map((i) => `  ${issueLine(i)}`).join('\n')}`,
    );
  }
}

/** Read and validate a config file. Throws ConfigError (a ConfigIssuesError when validation fails). */
export async function loadConfig<S extends z.ZodType>(file: string, schema: S, opts: ConfigOptions = {}): Promise<LoadedConfig<z.output<S>>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : (err as Error).message;
    throw new ConfigError(`cannot read config file ${file}: ${why}`, { cause: err });
  }
  return parseConfig(text, file, schema, opts);
}

/** Validate config text (what loadConfig does after reading the file); `fileName` is used in messages and for paths. */
export function parseConfig<S extends z.ZodType>(text: string, fileName: string, schema: S, opts: ConfigOptions = {}): LoadedConfig<z.output<S>> {
  const absolute = path.resolve(fileName);
  const baseDir = opts.baseDir ?? path.dirname(absolute);
  const cwd = opts.cwd ?? process.cwd();
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, keepSourceTokens: true, prettyErrors: false, uniqueKeys: true, merge: true });
  const at = (offset: number): Place => {
    const { line, col } = lineCounter.linePos(offset);
    return { location: `${fileName}:${line}:${col}`, line, col };
  };
  if (doc.errors.length > 0) {
    throw new ConfigIssuesError(
      fileName,
      doc.errors.map((e) => {
        const what = e.code === 'MULTIPLE_DOCS' ? 'the file holds several YAML documents (---); a config is one document' : e.message;
        return { keyPath: [], key: '', message: `YAML syntax error: ${what}`, ...at(e.pos[0]) };
      }),
    );
  }
  const parsed: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
  if (!isPlainObject(parsed)) {
    const message = `the top level must be a mapping of keys (like 'model: ...'), got ${describeValue(parsed)}`;
    throw new ConfigIssuesError(fileName, [{ keyPath: [], key: '', message, ...at(doc.contents?.range?.[0] ?? 0) }]);
  }
  const data: Record<string, unknown> = parsed;

  // Command-line values: --set first (left to right), then dedicated flags.
  const origins = new Map<string, { kind: 'set' | 'flag'; label: string }>();
  const problems: ConfigIssue[] = [];
  const apply = (keyPath: KeySegment[], value: unknown, kind: 'set' | 'flag', label: string): void => {
    const error = setIn(data, keyPath, value);
    if (error !== undefined) {
      problems.push({ keyPath, key: dotted(keyPath), message: error, location: `${label}; config ${fileName}` });
      return;
    }
    const key = dotted(keyPath);
    for (const k of origins.keys()) if (k.startsWith(`${key}.`)) origins.delete(k);
    origins.set(key, { kind, label });
  };
  for (const arg of opts.set ?? []) {
    const parsedArg = parseSetArgument(arg);
    if (!parsedArg.ok) {
      problems.push({ keyPath: [], key: '', message: parsedArg.error, location: `--set ${arg}; config ${fileName}` });
      continue;
    }
    const value = parseSetValue(parsedArg.raw, expectsPlainString(schema, parsedArg.keyPath));
    if (!value.ok) {
      problems.push({ keyPath: parsedArg.keyPath, key: parsedArg.key, message: value.error, location: `--set ${arg}; config ${fileName}` });
      continue;
    }
    apply(parsedArg.keyPath, value.value, 'set', `--set ${arg}`);
  }
  const appliedOverrides: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(opts.overrides ?? {})) {
    if (value === undefined) continue;
    const keyPath = parseKeyPath(key);
    const label = opts.overrideLabels?.[key] ?? `command-line flag for ${key}`;
    if (keyPath === undefined) {
      problems.push({ keyPath: [], key, message: `not a valid key path for an override`, location: `${label}; config ${fileName}` });
      continue;
    }
    appliedOverrides[key] = value;
    apply(keyPath, value, 'flag', label);
  }
  if (problems.length > 0) throw new ConfigIssuesError(fileName, problems);

  const originOf = (keyPath: readonly KeySegment[]): { kind: 'set' | 'flag'; label: string } | undefined => {
    for (let n = keyPath.length; n > 0; n--) {
      const o = origins.get(dotted(keyPath.slice(0, n)));
      if (o) return o;
    }
    return undefined;
  };
  const locate = (keyPath: readonly KeySegment[], which: 'key' | 'value'): Place => {
    const o = originOf(keyPath);
    if (o) return { location: `${o.label}; config ${fileName}` };
    const found = findNodes(doc, keyPath);
    const node = found.depth === keyPath.length && which === 'value' ? (found.value ?? found.key) : found.key;
    const offset = node?.range?.[0];
    return offset === undefined ? { location: fileName } : at(offset);
  };

  stripNulls(data);
  const result = schema.safeParse(data);
  if (!result.success) {
    const issues = describeIssues(result.error.issues, { schema, input: data, locate, unknownKeyHints: opts.unknownKeyHints });
    // In file order; values from the command line (no line) last.
    const rank = (i: ConfigIssue): number => (i.line === undefined ? Infinity : i.line * 1e6 + (i.col ?? 0));
    throw new ConfigIssuesError(fileName, [...issues].sort((a, b) => rank(a) - rank(b)));
  }
  const config = resolveConfigPaths(schema, result.data, (keyPath) => (originOf(keyPath) ? cwd : baseDir)) as z.output<S>;
  const source: ResolvedSource = {
    file: fileName,
    path: absolute,
    baseDir,
    set: [...(opts.set ?? [])],
    overrides: appliedOverrides,
    origin(key) {
      const keyPath = typeof key === 'string' ? (parseKeyPath(key) ?? []) : key;
      const o = originOf(keyPath);
      if (o) return o.kind;
      return findNodes(doc, keyPath).depth === keyPath.length ? 'file' : 'default';
    },
  };
  return { config, source };
}

/** The final config as YAML, for `config.resolved.yaml` in the run folder (loading it back gives the same config). */
export function dumpResolvedConfig(config: unknown, source?: ResolvedSource): string {
  const header = ['# sdtrain resolved configuration: every key, defaults filled in, paths absolute.'];
  if (source) {
    header.push(`# from: ${source.path}`);
    const oneLine = (t: string): string => t.replace(/\r?\n/g, '\\n');
    for (const s of source.set) header.push(`# --set ${oneLine(s)}`);
    for (const [k, v] of Object.entries(source.overrides)) header.push(`# flag: ${oneLine(`${k}=${JSON.stringify(v)}`)}`);
  }
  return `${header.join('\n')}\n${stringify(config, { aliasDuplicateObjects: false, lineWidth: 0 })}`;
}

/** 'a.b.0.c' → ['a', 'b', 0, 'c']; undefined when a segment is empty or has blanks. */
export function parseKeyPath(key: string): KeySegment[] | undefined {
  const segments = key.split('.');
  if (segments.some((s) => s === '' || /\s/.test(s))) return undefined;
  return segments.map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

/** Split one `--set` argument into its key path and raw value text. */
export function parseSetArgument(arg: string): { ok: true; key: string; keyPath: KeySegment[]; raw: string } | { ok: false; error: string } {
  const eq = arg.indexOf('=');
  const example = 'e.g. --set training.learning_rate=1e-4';
  if (eq < 0) return { ok: false, error: `malformed --set '${arg}': expected KEY=VALUE (${example})` };
  const key = arg.slice(0, eq).trim();
  if (key === '') return { ok: false, error: `malformed --set '${arg}': the key before '=' is empty (${example})` };
  const keyPath = parseKeyPath(key);
  if (!keyPath) return { ok: false, error: `malformed --set '${arg}': '${key}' is not a dotted key path like data.datasets.0.repeats` };
  return { ok: true, key, keyPath, raw: arg.slice(eq + 1) };
}

/**
 * A `--set` value: YAML scalar or flow collection (`1e-4` is a number, `[{rate: 0.1}]` a list, `null` unsets).
 * Anything that is not one scalar or flow collection is the literal text. For keys that only take strings the text is
 * taken literally (so `--set run_name=123` is "123") unless it is quoted or null/~.
 */
export function parseSetValue(raw: string, plainString = false): { ok: true; value: unknown } | { ok: false; error: string } {
  const text = raw.trim();
  if (text === '') return { ok: true, value: '' };
  const doc = parseDocument(text, { prettyErrors: false });
  const flow = text.startsWith('[') || text.startsWith('{');
  if (flow && !plainString) {
    if (doc.errors.length > 0) return { ok: false, error: `cannot parse the value as YAML: ${doc.errors[0]!.message}` };
    return { ok: true, value: doc.toJS() };
  }
  const node = doc.contents;
  const single = doc.errors.length === 0 && doc.warnings.length === 0 && isScalar(node) && node.comment == null && node.commentBefore == null && doc.comment == null;
  if (!single) return { ok: true, value: raw };
  const quoted = node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE';
  if (plainString && !quoted && node.value !== null) return { ok: true, value: raw };
  return { ok: true, value: node.toJSON() };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Set a value at a key path, creating mappings/lists on the way; returns a reason when it cannot. */
function setIn(root: Record<string, unknown>, keyPath: readonly KeySegment[], value: unknown): string | undefined {
  let node: unknown = root;
  for (const [i, seg] of keyPath.entries()) {
    const here = dotted(keyPath.slice(0, i)) || 'the top level';
    const last = i === keyPath.length - 1;
    const fresh = (): unknown => (typeof keyPath[i + 1] === 'number' ? [] : {});
    if (Array.isArray(node)) {
      if (typeof seg !== 'number') return `'${here}' is a list: address an entry by its number, e.g. ${here}.0.${seg}`;
      if (seg > node.length) return `index ${seg} is past the end of '${here}' (it has ${entries(node.length)}; index ${node.length} would add one)`;
      if (last) node[seg] = value;
      else if (node[seg] == null) node[seg] = fresh();
      node = node[seg];
    } else if (isPlainObject(node)) {
      const k = String(seg);
      if (last) node[k] = value;
      else if (node[k] == null) node[k] = fresh();
      node = node[k];
    } else {
      return `'${here}' is ${describeValue(node)}, not a mapping or list, so '${dotted(keyPath)}' cannot be set`;
    }
  }
  return undefined;
}

/** `key: null` (or `key:` with nothing) means "not set": drop it so the default applies. */
function stripNulls(v: unknown): void {
  if (Array.isArray(v)) v.forEach(stripNulls);
  else if (isPlainObject(v)) {
    for (const [k, child] of Object.entries(v)) {
      if (child === null) delete v[k];
      else stripNulls(child);
    }
  }
}

interface Located {
  range?: [number, number, number] | null | undefined;
}

/** The YAML nodes for a key path: how deep the path exists, the last key node and value node found. */
function findNodes(doc: Document, keyPath: readonly KeySegment[]): { depth: number; key?: Located | undefined; value?: Located | undefined } {
  let node: unknown = doc.contents;
  let key: Located | undefined;
  for (const [i, seg] of keyPath.entries()) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
      if (!pair) return { depth: i, key, value: node };
      key = pair.key as Located;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      node = node.items[seg];
      key = node as Located;
    } else {
      return { depth: i, key, value: node as Located };
    }
  }
  return { depth: keyPath.length, key, value: (node ?? undefined) as Located | undefined };
}
