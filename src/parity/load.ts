// Filling a model's declared `Param`s from a diffusers/transformers component folder (config.json + weights): the
// plain walk of style §3.5 E2. Stands in until src/checkpoints/ has a diffusers loader; the parity runner and the
// tests use it.
import * as tf from '@tensorflow/tfjs';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { openTensorFile, type TensorFile } from '../formats/tensor_file.js';
import { disposeModule, namedParams, type Module } from '../nn/module.js';

/**
 * Keys a checkpoint may carry that are not parameters: transformers < 4.31 saved the `position_ids` buffer
 * (int64 [1, 77], an arange) of CLIPTextEmbeddings; newer versions register it as non-persistent.
 */
export const IGNORED_CHECKPOINT_KEYS: readonly RegExp[] = [/(^|\.)embeddings\.position_ids$/];

export interface FillOptions {
  /** Prefix of the model's keys in the file (e.g. `cond_stage_model.transformer.`); default none. */
  prefix?: string;
  /** Extra keys to ignore in the file besides IGNORED_CHECKPOINT_KEYS. */
  ignore?: (key: string) => boolean;
}

/** Converts a stored tensor to the Param's layout: rank-4 conv weights OIHW → HWIO, everything else as stored. */
function toTfjsLayout(data: Float32Array | Int32Array | Uint8Array, shape: number[]): tf.Tensor {
  const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
  if (shape.length !== 4) return tf.tensor(f32, shape, 'float32');
  return tf.tidy(() => tf.tensor4d(f32, shape as [number, number, number, number]).transpose([2, 3, 1, 0])); // [kh, kw, in, out]
}

/**
 * Fill every Param of `model` from tensor files (safetensors or torch zip; several for sharded checkpoints). Strict:
 * a parameter missing from the files, or a file tensor under `prefix` that the model does not declare (other than
 * the ignored buffers), is a FormatError listing them; a shape mismatch names the key.
 */
export async function fillFromTensorFiles(model: Module, paths: readonly string[], opts: FillOptions = {}): Promise<void> {
  const prefix = opts.prefix ?? '';
  const params = namedParams(model);
  const files: TensorFile[] = [];
  try {
    for (const p of paths) files.push(await openTensorFile(p));
    const where = new Map<string, TensorFile>();
    const unexpected: string[] = [];
    for (const f of files) {
      for (const info of f.tensors) {
        if (!info.name.startsWith(prefix)) continue;
        const key = info.name.slice(prefix.length);
        if (params.has(key)) where.set(key, f);
        else if (!IGNORED_CHECKPOINT_KEYS.some((re) => re.test(key)) && !opts.ignore?.(key)) unexpected.push(info.name);
      }
    }
    const missing = [...params.keys()].filter((k) => !where.has(k)).map((k) => prefix + k);
    if (missing.length || unexpected.length) {
      const list = (xs: string[]) => `${xs.slice(0, 5).join(', ')}${xs.length > 5 ? `, ... (${xs.length} in all)` : ''}`;
      const parts = [
        ...(missing.length ? [`missing ${missing.length}: ${list(missing)}`] : []),
        ...(unexpected.length ? [`unexpected ${unexpected.length}: ${list(unexpected)}`] : []),
      ];
      throw new FormatError(paths.join(', '), `weights do not match the model (${parts.join('; ')})`);
    }
    for (const [key, p] of params) {
      const t = await where.get(key)!.read(prefix + key);
      const value = toTfjsLayout(t.data, t.shape);
      try {
        p.set(value, prefix + key);
      } catch (e) {
        value.dispose();
        throw new FormatError(where.get(key)!.path, (e as Error).message, prefix + key);
      }
    }
  } finally {
    await Promise.all(files.map((f) => f.close()));
  }
}

/** Weight file names a diffusers/transformers component folder may hold, in preference order. */
const WEIGHT_NAMES = ['model.safetensors', 'diffusion_pytorch_model.safetensors', 'pytorch_model.bin', 'diffusion_pytorch_model.bin'];

/** The weight files of a component folder: a single file, or the shards listed in `<name>.index.json`. */
export async function componentWeightFiles(dir: string): Promise<string[]> {
  for (const name of WEIGHT_NAMES) {
    if (existsSync(join(dir, name))) return [join(dir, name)];
    const index = join(dir, `${name}.index.json`);
    if (existsSync(index)) {
      const json = JSON.parse(await readFile(index, 'utf8')) as { weight_map?: Record<string, string> };
      if (!json.weight_map) throw new FormatError(index, "no 'weight_map' in the shard index");
      return [...new Set(Object.values(json.weight_map))].map((f) => join(dir, f));
    }
  }
  throw new FormatError(dir, `no weights found (looked for ${WEIGHT_NAMES.join(', ')} and their .index.json shards)`);
}

/** Reads `<dir>/config.json` as JSON. */
export async function readComponentConfig(dir: string): Promise<unknown> {
  const path = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new FormatError(path, `cannot read the component config (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new FormatError(path, `invalid JSON: ${(e as Error).message}`);
  }
}

/**
 * Build a model from a component folder: parse `config.json` with `parse`, construct, fill from the weights.
 * On a fill error the partly filled model is disposed.
 */
export async function loadComponent<C, M extends Module>(
  dir: string,
  parse: (json: unknown, source: string) => C,
  build: (config: C) => M,
): Promise<{ config: C; model: M }> {
  const config = parse(await readComponentConfig(dir), join(dir, 'config.json'));
  const model = build(config);
  try {
    await fillFromTensorFiles(model, await componentWeightFiles(dir));
  } catch (e) {
    disposeModule(model);
    throw e;
  }
  return { config, model };
}
