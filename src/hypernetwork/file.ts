// Hypernetwork files: A1111's `.pt` (read and written exactly as `Hypernetwork.save`/`load` do) and our `.safetensors`.
//
// A1111 `.pt` (torch.save of a dict; formats.md §5.1):
//   <width: int>  → (k_state_dict, v_state_dict), two OrderedDicts of `linear.N.{weight,bias}` float32 tensors
//   step: int, name: str, layer_structure: [float], activation_func: str | None, is_layer_norm: bool,
//   weight_initialization: str, sd_checkpoint: str | None, sd_checkpoint_name: str | None, activate_output: bool,
//   use_dropout: bool, dropout_structure: [0 | float], last_layer_dropout: bool, optional_info: str | None
// The oldest files (Oct 2022) hold only `linear1.*`/`linear2.*` and step/name; A1111 renames those to
// `linear.0.*`/`linear.1.*` and fills the missing settings with its load defaults (see `loadedSettings`).
//
// sdtrain `.safetensors` (same tensors, same settings):
//   tensors   `<width>.<k|v>.linear.N.{weight,bias}`, F32, e.g. `768.k.linear.0.weight` [1536, 768]
//   metadata  `sdtrain.format` = "hypernetwork"
//             `sdtrain.hypernetwork` = JSON object with `sizes` (the widths in order) and the A1111 keys above,
//             under A1111's names and with A1111's values (null for None)
import { parse as parsePath } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CheckpointMismatchError, FormatError, SdtrainError } from '../errors.js';
import type { LoadedTensor } from '../formats/dtype.js';
import { PyFloat, PyOrderedDict, PyTuple, TorchTensorRef, TorchTensorToWrite, pyTypeName, type PyValue } from '../formats/pickle_values.js';
import { SafetensorsFile, writeSafetensors } from '../formats/safetensors.js';
import { sniffTensorFile } from '../formats/tensor_file.js';
import { openTorchFile, writeTorchFile } from '../formats/torch.js';
import { namedParams } from '../nn/module.js';
import { Hypernetwork, loadedSettings, type HypernetworkSettings } from './hypernetwork.js';
import type { HypernetworkModule } from './module.js';

export const SAFETENSORS_FORMAT_KEY = 'sdtrain.format';
export const SAFETENSORS_SETTINGS_KEY = 'sdtrain.hypernetwork';

/** Metadata written next to the weights; each defaults to the hypernetwork's own field. */
export interface WriteHypernetworkOptions {
  step?: number;
  name?: string;
  sdCheckpoint?: string | null;
  sdCheckpointName?: string | null;
}

/** One tensor of a module's state dict, read on demand. */
interface StoredTensor {
  shape: number[];
  load(): Promise<LoadedTensor>;
}

type Raw = (key: string) => unknown;

/** Reads an A1111 `.pt` (current or first 2022 layout) or an sdtrain `.safetensors` hypernetwork, by content. */
export async function readHypernetwork(path: string): Promise<Hypernetwork> {
  const stem = parsePath(path).name;
  const hn = (await sniffTensorFile(path)) === 'safetensors' ? await readSafetensors(path, stem) : await readPt(path, stem);
  hn.filename = path;
  return hn;
}

async function readPt(path: string, stem: string): Promise<Hypernetwork> {
  const file = await openTorchFile(path);
  try {
    const root = file.root;
    if (!(root instanceof Map)) throw new FormatError(path, `expected a dict at the top level, got ${pyTypeName(root)}: not an A1111 hypernetwork`);
    const modules = new Map<number, [Map<string, StoredTensor>, Map<string, StoredTensor>]>();
    for (const [key, value] of root) {
      if (typeof key !== 'number' || !Number.isInteger(key)) continue; // A1111 takes the int keys only
      const pair = value instanceof PyTuple ? value.items : Array.isArray(value) ? value : undefined;
      if (!pair || pair.length !== 2) throw new FormatError(path, `expected a (k, v) pair of state dicts, got ${pyTypeName(value)}`, String(key));
      const [k, v] = pair.map((sd, i) => torchStateDict(path, `${key}.${i}`, sd));
      modules.set(key, [k!, v!]);
    }
    const raw: Raw = (k) => (root.has(k) ? toJs(root.get(k)!) : undefined);
    return await build(path, raw, modules, stem);
  } finally {
    await file.close();
  }
}

/** A state dict of tensors, with A1111's `fix_old_state_dict` renames (linear1/linear2 → linear.0/linear.1). */
function torchStateDict(path: string, where: string, sd: PyValue | undefined): Map<string, StoredTensor> {
  if (!(sd instanceof Map)) throw new FormatError(path, `expected a state dict, got ${pyTypeName(sd)}`, where);
  const out = new Map<string, StoredTensor>();
  for (const [name, t] of sd) {
    if (typeof name !== 'string' || !(t instanceof TorchTensorRef)) throw new FormatError(path, `state dict entry ${String(name)} is ${pyTypeName(t)}, not a tensor`, where);
    const renamed = /^linear[12]\.(weight|bias)$/.test(name) ? `linear.${Number(name[6]) - 1}${name.slice(7)}` : name;
    out.set(renamed, { shape: t.shape, load: () => t.load(`${where}.${name}`) });
  }
  return out;
}

async function readSafetensors(path: string, stem: string): Promise<Hypernetwork> {
  const file = await SafetensorsFile.open(path);
  try {
    const json = file.metadata[SAFETENSORS_SETTINGS_KEY];
    if (file.metadata[SAFETENSORS_FORMAT_KEY] !== 'hypernetwork' || json === undefined) {
      throw new FormatError(path, `not an sdtrain hypernetwork: the metadata lacks ${SAFETENSORS_FORMAT_KEY}="hypernetwork" and ${SAFETENSORS_SETTINGS_KEY}`);
    }
    let meta: Record<string, unknown>;
    try {
      meta = JSON.parse(json) as Record<string, unknown>;
    } catch {
      throw new FormatError(path, 'the settings JSON does not parse', SAFETENSORS_SETTINGS_KEY);
    }
    if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw new FormatError(path, 'the settings JSON is not an object', SAFETENSORS_SETTINGS_KEY);
    const sizes = meta.sizes;
    if (!Array.isArray(sizes) || !sizes.every((s) => Number.isSafeInteger(s))) throw new FormatError(path, '`sizes` must be a list of integers', SAFETENSORS_SETTINGS_KEY);
    const modules = new Map<number, [Map<string, StoredTensor>, Map<string, StoredTensor>]>();
    for (const s of sizes as number[]) modules.set(s, [new Map(), new Map()]);
    for (const t of file.tensors) {
      const m = /^(\d+)\.([kv])\.(.+)$/.exec(t.name);
      const pair = m ? modules.get(Number(m[1])) : undefined;
      if (!m || !pair) throw new FormatError(path, `unexpected tensor (names are <width>.<k|v>.linear.N.*, widths ${sizes.join(', ')})`, t.name);
      pair[m[2] === 'k' ? 0 : 1].set(m[3]!, { shape: t.shape, load: () => file.read(t.name) });
    }
    return await build(path, (k) => meta[k], modules, stem);
  } finally {
    await file.close();
  }
}

/** Settings (A1111 load defaults), module structure, then the weights, checked key by key against the structure. */
async function build(
  path: string,
  raw: Raw,
  modules: Map<number, [Map<string, StoredTensor>, Map<string, StoredTensor>]>,
  stem: string,
): Promise<Hypernetwork> {
  if (modules.size === 0) throw new FormatError(path, 'no hypernetwork modules (integer context-width keys): not an A1111 hypernetwork');
  let hn: Hypernetwork;
  try {
    hn = new Hypernetwork(loadedSettings(settingsFrom(path, raw)), [...modules.keys()], stem);
  } catch (err) {
    if (err instanceof SdtrainError && !(err instanceof FormatError)) throw new FormatError(path, err.message, undefined, { cause: err });
    throw err;
  }
  try {
    for (const [size, pair] of hn.layers) {
      for (const i of [0, 1]) await fill(path, `${size}.${i === 0 ? 'k' : 'v'}`, pair[i]!, modules.get(size)![i]!);
    }
  } catch (err) {
    hn.dispose();
    throw err;
  }
  const name = raw('name');
  const step = raw('step');
  if (typeof name === 'string') hn.name = name;
  if (typeof step === 'number' && Number.isSafeInteger(step)) hn.step = step;
  hn.sdCheckpoint = optString(path, raw, 'sd_checkpoint') ?? null;
  hn.sdCheckpointName = optString(path, raw, 'sd_checkpoint_name') ?? null;
  return hn;
}

/** Strict, as torch's load_state_dict: every key the structure has, no other, with the same shapes. */
async function fill(path: string, where: string, m: HypernetworkModule, stored: Map<string, StoredTensor>): Promise<void> {
  const params = namedParams(m);
  const missing = [...params.keys()].filter((k) => !stored.has(k));
  const unexpected = [...stored.keys()].filter((k) => !params.has(k));
  const misshaped = [...params]
    .filter(([k, p]) => stored.has(k) && stored.get(k)!.shape.join() !== p.shape.join())
    .map(([k, p]) => `${k} (file [${stored.get(k)!.shape.join(', ')}], structure expects [${p.shape.join(', ')}])`);
  if (missing.length + unexpected.length + misshaped.length > 0) {
    throw new CheckpointMismatchError(path, `hypernetwork module ${where} (${m.describe().join(', ')})`, missing, unexpected, misshaped);
  }
  for (const [k, p] of params) {
    const t = await stored.get(k)!.load();
    if (!(t.data instanceof Float32Array)) throw new FormatError(path, `expected a floating-point tensor, got ${t.dtype}`, `${where}.${k}`);
    p.set(tf.tensor(t.data, t.shape, 'float32'), `${where}.${k}`);
  }
}

/** The settings keys present in the file (None counts as absent, except for booleans, where it is false). */
function settingsFrom(path: string, raw: Raw): Partial<HypernetworkSettings> {
  const s: Partial<HypernetworkSettings> = {};
  const ls = numList(path, raw, 'layer_structure');
  const ds = numList(path, raw, 'dropout_structure');
  if (ls) s.layerStructure = ls;
  if (ds) s.dropoutStructure = ds;
  const act = optString(path, raw, 'activation_func');
  if (act !== undefined) s.activationFunc = act;
  const init = optString(path, raw, 'weight_initialization');
  if (init) s.weightInitialization = init;
  const info = optString(path, raw, 'optional_info');
  if (info) s.optionalInfo = info;
  const flags = [['is_layer_norm', 'isLayerNorm'], ['use_dropout', 'useDropout'], ['activate_output', 'activateOutput'], ['last_layer_dropout', 'lastLayerDropout']] as const;
  for (const [key, field] of flags) {
    const v = raw(key);
    if (v === undefined) continue;
    if (v !== null && typeof v !== 'boolean' && typeof v !== 'number') throw new FormatError(path, `expected a bool, got ${typeof v}`, key);
    s[field] = Boolean(v); // Python truthiness, as A1111 uses these
  }
  return s;
}

function numList(path: string, raw: Raw, key: string): number[] | undefined {
  const v = raw(key);
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new FormatError(path, 'expected a list of numbers', key);
  return v as number[];
}

function optString(path: string, raw: Raw, key: string): string | null | undefined {
  const v = raw(key);
  if (v === undefined || v === null || typeof v === 'string') return v;
  throw new FormatError(path, `expected a string or None, got ${typeof v}`, key);
}

/** Python scalars and lists as plain JS (PyFloat unwrapped, tuples as arrays); anything else as-is. */
function toJs(v: PyValue): unknown {
  if (v instanceof PyFloat) return v.value;
  if (v instanceof PyTuple) return v.items.map(toJs);
  if (Array.isArray(v)) return v.map(toJs);
  if (typeof v === 'bigint') return Number(v);
  return v;
}

/** The A1111 settings dict in `Hypernetwork.save` order, as JS values (numbers plain; see `writeHypernetworkPt`). */
function a1111Metadata(hn: Hypernetwork, opts: WriteHypernetworkOptions): Array<[string, unknown]> {
  const s = hn.settings;
  const ds = s.dropoutStructure;
  return [
    ['step', opts.step ?? hn.step],
    ['name', opts.name ?? hn.name],
    ['layer_structure', s.layerStructure],
    ['activation_func', s.activationFunc],
    ['is_layer_norm', s.isLayerNorm],
    ['weight_initialization', s.weightInitialization],
    ['sd_checkpoint', opts.sdCheckpoint !== undefined ? opts.sdCheckpoint : hn.sdCheckpoint],
    ['sd_checkpoint_name', opts.sdCheckpointName !== undefined ? opts.sdCheckpointName : hn.sdCheckpointName],
    ['activate_output', s.activateOutput],
    ['use_dropout', s.useDropout],
    ['dropout_structure', ds],
    ['last_layer_dropout', ds.length >= 2 ? ds[ds.length - 2] !== 0 : s.lastLayerDropout],
    ['optional_info', s.optionalInfo ? s.optionalInfo : null],
  ];
}

const hostData = (p: { t: tf.Tensor }): Float32Array => Float32Array.from(p.t.dataSync() as Float32Array);

/** A module's state_dict() as torch pickles it: an OrderedDict with `_metadata` (version 1 for every submodule). */
function stateDict(m: HypernetworkModule): PyOrderedDict {
  const sd = new PyOrderedDict();
  for (const [k, p] of namedParams(m)) sd.set(k, new TorchTensorToWrite({ shape: [...p.shape], data: hostData(p) }));
  const meta = new PyOrderedDict();
  for (const prefix of ['', 'linear', ...m.linear.map((_, i) => `linear.${i}`)]) meta.set(prefix, new Map<PyValue, PyValue>([['version', 1]]));
  sd.attrs = new Map<PyValue, PyValue>([['_metadata', meta]]);
  return sd;
}

/**
 * Writes A1111's `.pt` exactly as `Hypernetwork.save` does: int width keys → (k, v) state dicts, then the settings;
 * layer_structure as Python floats, dropout_structure with 0 as int and other rates as floats. Atomic.
 */
export async function writeHypernetworkPt(path: string, hn: Hypernetwork, opts: WriteHypernetworkOptions = {}): Promise<void> {
  const root = new Map<PyValue, PyValue>();
  for (const [size, [k, v]] of hn.layers) root.set(size, new PyTuple([stateDict(k), stateDict(v)]));
  for (const [key, value] of a1111Metadata(hn, opts)) {
    if (key === 'layer_structure') root.set(key, (value as number[]).map((x) => new PyFloat(x)));
    else if (key === 'dropout_structure') root.set(key, (value as number[]).map((x) => (x === 0 ? 0 : new PyFloat(x))));
    else root.set(key, value as PyValue);
  }
  await writeTorchFile(path, root);
}

/** Writes our `.safetensors` layout (see the top of this file). Atomic. */
export async function writeHypernetworkSafetensors(path: string, hn: Hypernetwork, opts: WriteHypernetworkOptions = {}): Promise<void> {
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, p] of hn.namedParams()) tensors.set(name, { shape: [...p.shape], data: hostData(p) });
  const settings = Object.fromEntries([['sizes', hn.sizes], ...a1111Metadata(hn, opts)]) as Record<string, unknown>;
  await writeSafetensors(path, tensors, { [SAFETENSORS_FORMAT_KEY]: 'hypernetwork', [SAFETENSORS_SETTINGS_KEY]: JSON.stringify(settings) });
}
