// Loads one parity case of the tiny-sd1 fixtures (`<case>.safetensors` + `<case>.json`) and the tiny diffusers
// components (through the checkpoint loader). Fixture tensors are NCHW; `nhwc()` gives the tfjs layout.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadComponentFolder, type ComponentModels, type ComponentName } from '../../src/checkpoints/diffusers_folder.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import type { LoadedTensor } from '../../src/formats/dtype.js';
import { fixture } from './shared.js';

export const TINY_SD1 = fixture('tiny-sd1');

interface TensorEntry {
  key: string;
  shape: number[];
  dtype: string;
  suggested_atol?: number;
}

export interface CaseJson {
  case: string;
  kind: string;
  inputs: Record<string, TensorEntry>;
  outputs: Record<string, TensorEntry>;
  intermediates?: Record<string, TensorEntry>;
  [key: string]: unknown;
}

export interface ParityCase {
  name: string;
  json: CaseJson;
  /** Stored layout, as a tensor (int64 becomes int32, bool stays bool as int32 0/1). */
  tensor(key: string): tf.Tensor;
  /** Rank ≥ 4 NCHW-style tensors with the channel axis (third from last) moved last; others as stored. */
  nhwc<R extends tf.Rank = tf.Rank.R4>(key: string): tf.Tensor<R>;
  /** `suggested_atol` of an output (`outputs/<name>`), from the case JSON. */
  atol(output: string): number;
  keys: string[];
}

async function readAll(path: string): Promise<Map<string, LoadedTensor>> {
  const file = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, LoadedTensor>();
    for (const t of file.tensors) out.set(t.name, await file.read(t.name));
    return out;
  } finally {
    await file.close();
  }
}

const toTensor = (t: LoadedTensor): tf.Tensor =>
  t.data instanceof Float32Array ? tf.tensor(t.data, t.shape, 'float32') : tf.tensor(Int32Array.from(t.data), t.shape, 'int32');

/** NCHW-style → NHWC-style: move axis −3 to the end ([..., C, H, W] → [..., H, W, C]). */
export function channelsLast(x: tf.Tensor): tf.Tensor {
  const r = x.rank;
  if (r < 4) return x;
  const perm = [...Array(r - 3).keys(), r - 2, r - 1, r - 3];
  return tf.transpose(x, perm);
}

export async function loadParityCase(name: string): Promise<ParityCase> {
  const base = fixture('parity', 'tiny-sd1', name);
  const json = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as CaseJson;
  const data = await readAll(`${base}.safetensors`);
  const get = (key: string): LoadedTensor => {
    const t = data.get(key);
    if (!t) throw new Error(`${name}: no tensor '${key}' (have ${[...data.keys()].join(', ')})`);
    return t;
  };
  return {
    name,
    json,
    keys: [...data.keys()],
    tensor: (key) => toTensor(get(key)),
    nhwc: <R extends tf.Rank>(key: string) => tf.tidy(() => channelsLast(toTensor(get(key)))) as tf.Tensor<R>,
    atol(output) {
      const a = json.outputs[output]?.suggested_atol;
      if (a === undefined) throw new Error(`${name}: output '${output}' has no suggested_atol`);
      return a;
    },
  };
}

/** A tiny-sd1 component (`<tiny-sd1>/<component>`: config.json + weights), loaded as the library loads it. */
export const loadTiny = <C extends ComponentName>(component: C): Promise<ComponentModels[C]> =>
  loadComponentFolder(join(TINY_SD1, component), component);

/** max |a − b| (shapes must match). */
export async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  if (a.shape.join(',') !== b.shape.join(',')) throw new Error(`shape mismatch: [${a.shape}] vs [${b.shape}]`);
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0]!;
  d.dispose();
  return v;
}
