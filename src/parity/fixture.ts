// Reading a parity fixture directory (the format of shared/fixtures/README.md "Case file format"): `parity/index.json`
// (or any case JSON under `parity/`), each case = `<case>.json` + `<case>.safetensors` with tensors named
// `inputs/<name>`, `outputs/<name>`, `intermediates/<name>`, NCHW, int64 ids.
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { FormatError } from '../errors.js';
import type { LoadedTensor } from '../formats/dtype.js';
import { SafetensorsFile } from '../formats/safetensors.js';

export interface TensorSpec {
  key: string;
  shape: number[];
  dtype: string;
  /** Present on float outputs: the tolerance the fixture generator suggests (10 x the float32-vs-float64 deviation). */
  suggested_atol?: number;
  f32_vs_f64_max_abs?: number;
  note?: string;
}

/** A case's JSON, as far as the runner reads it (handlers read `args` themselves). */
export interface CaseSpec {
  case: string;
  kind: string;
  model?: string;
  /** Relative to the fixture directory. */
  model_dir?: string;
  description?: string;
  args?: Record<string, unknown>;
  inputs: Record<string, TensorSpec>;
  outputs: Record<string, TensorSpec>;
  intermediates?: Record<string, TensorSpec>;
  /** The tensor file, relative to the JSON's folder (default `<case>.safetensors`). */
  file?: string;
}

/** One case, located: its JSON, where it lives, and a lazily opened tensor file. */
export class FixtureCase {
  // A promise, so that concurrent reads share one open file handle.
  private file: Promise<SafetensorsFile> | undefined;
  constructor(
    /** The fixture directory (model_dir is relative to it). */
    readonly root: string,
    /** Absolute path of the case JSON. */
    readonly jsonPath: string,
    readonly spec: CaseSpec,
  ) {}

  get name(): string {
    return this.spec.case;
  }

  get kind(): string {
    return this.spec.kind;
  }

  /** Absolute model directory (diffusers layout); a FormatError if the case names none. */
  get modelDir(): string {
    if (!this.spec.model_dir) throw new FormatError(this.jsonPath, "the case names no 'model_dir'");
    return resolve(this.root, this.spec.model_dir);
  }

  get tensorPath(): string {
    return join(dirname(this.jsonPath), this.spec.file ?? `${this.spec.case}.safetensors`);
  }

  /** Reads a tensor by its full key (`inputs/sample`). Floats come back as Float32Array, integers as Int32Array. */
  async tensor(key: string): Promise<LoadedTensor> {
    this.file ??= SafetensorsFile.open(this.tensorPath);
    return (await this.file).read(key);
  }

  async input(name: string): Promise<LoadedTensor> {
    const spec = this.spec.inputs[name];
    if (!spec) throw new FormatError(this.jsonPath, `the case has no input '${name}'`);
    return this.tensor(spec.key);
  }

  async output(name: string): Promise<LoadedTensor> {
    const spec = this.spec.outputs[name];
    if (!spec) throw new FormatError(this.jsonPath, `the case has no output '${name}'`);
    return this.tensor(spec.key);
  }

  async close(): Promise<void> {
    const f = this.file;
    this.file = undefined;
    await (await f?.catch(() => undefined))?.close();
  }
}

function asCaseSpec(json: unknown): CaseSpec | undefined {
  if (!json || typeof json !== 'object' || Array.isArray(json)) return undefined;
  const o = json as Record<string, unknown>;
  if (typeof o.case !== 'string' || typeof o.kind !== 'string') return undefined;
  const isMap = (v: unknown) => v === undefined || (typeof v === 'object' && v !== null && !Array.isArray(v));
  if (!isMap(o.inputs) || !isMap(o.outputs)) return undefined;
  return { ...(o as unknown as CaseSpec), inputs: (o.inputs ?? {}) as CaseSpec['inputs'], outputs: (o.outputs ?? {}) as CaseSpec['outputs'] };
}

const PY_SPECIAL: Record<string, number> = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity };
const SENTINEL = '\u0000py:';

/**
 * JSON as Python's `json.dump` writes it: it also emits bare `NaN`, `Infinity` and `-Infinity` (e.g. a scheduler's
 * resolved `lambda_min_clipped: -Infinity`). Those tokens, outside strings, become the JS numbers.
 */
export function parsePythonJson(text: string): unknown {
  let out = '';
  let last = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === 'N' || ch === 'I' || ch === '-') {
      const token = ['NaN', 'Infinity', '-Infinity'].find((t) => text.startsWith(t, i));
      if (token) {
        out += `${text.slice(last, i)}"\\u0000py:${token}"`; // JSON-escaped SENTINEL
        i += token.length - 1;
        last = i + 1;
      }
    }
  }
  out += text.slice(last);
  return JSON.parse(out, (_key, v: unknown) =>
    typeof v === 'string' && v.startsWith(SENTINEL) ? PY_SPECIAL[v.slice(SENTINEL.length)] : v,
  ) as unknown;
}

async function readJson(path: string): Promise<unknown> {
  const text = await readFile(path, 'utf8');
  try {
    return parsePythonJson(text);
  } catch (e) {
    throw new FormatError(path, `invalid JSON: ${(e as Error).message}`);
  }
}

async function walkJson(dir: string, out: string[] = []): Promise<string[]> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) await walkJson(p, out);
    else if (entry.isFile() && entry.name.endsWith('.json')) out.push(p);
  }
  return out;
}

/**
 * The cases of a fixture directory, in index order: `<dir>/parity/index.json`'s `cases` map (name → path relative
 * to `<dir>`) when it exists, otherwise every JSON under `<dir>/parity/` that looks like a case (has `case`, `kind`,
 * `inputs`/`outputs`), sorted by path. Tables such as module_table.json are not cases and are passed over.
 */
export async function discoverCases(dir: string): Promise<FixtureCase[]> {
  const root = resolve(dir);
  const parityDir = join(root, 'parity');
  if (!existsSync(parityDir)) throw new FormatError(root, "no 'parity/' folder: not a parity fixture directory");
  const indexPath = join(parityDir, 'index.json');
  const cases: FixtureCase[] = [];
  if (existsSync(indexPath)) {
    const index = (await readJson(indexPath)) as { cases?: Record<string, string> };
    if (!index.cases || typeof index.cases !== 'object') throw new FormatError(indexPath, "no 'cases' map");
    for (const [name, rel] of Object.entries(index.cases)) {
      const jsonPath = resolve(root, rel);
      const spec = asCaseSpec(await readJson(jsonPath));
      if (!spec) throw new FormatError(jsonPath, `case '${name}' (listed in ${relative(root, indexPath)}) is not a case file`);
      cases.push(new FixtureCase(root, jsonPath, spec));
    }
    return cases;
  }
  for (const jsonPath of (await walkJson(parityDir)).sort()) {
    const spec = asCaseSpec(await readJson(jsonPath).catch(() => undefined));
    if (spec) cases.push(new FixtureCase(root, jsonPath, spec));
  }
  return cases;
}
