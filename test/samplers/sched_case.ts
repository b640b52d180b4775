// Loads a scheduler/RNG case of the tiny-sd1 parity fixtures. Its JSON is read as Python wrote it (DPM-Solver configs
// carry a bare `-Infinity`), tensors come as stored (NCHW), with helpers for the NHWC tensors the samplers use.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { LoadedTensor } from '../../src/formats/dtype.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { channelsLast } from '../../src/parity/compare.js';
import { parsePythonJson, type CaseSpec } from '../../src/parity/fixture.js';
import { parseSchedulerConfig, type SchedulerConfig } from '../../src/schedules/config.js';
import { fixture } from '../helpers/shared.js';

export interface SchedCase {
  name: string;
  json: CaseSpec & { observed?: Record<string, unknown> };
  args: Record<string, unknown>;
  /** `inputs/<name>` or `outputs/<name>`, as stored. */
  get(key: string): LoadedTensor;
  /** As plain numbers. */
  values(key: string): number[];
  /** A stored NCHW tensor [B, C, H, W] as NHWC. */
  nhwc(key: string): tf.Tensor4D;
  /** Slice k of a stacked [K, B, C, H, W] tensor as NHWC [B, H, W, C]. */
  nhwcAt(key: string, k: number): tf.Tensor4D;
  /** The parsed `args.<entry>.config` scheduler config. */
  config(entry?: string): SchedulerConfig;
  atol(output: string): number;
}

export async function loadSchedCase(name: string): Promise<SchedCase> {
  const base = fixture('parity', 'tiny-sd1', name);
  const json = parsePythonJson(readFileSync(`${base}.json`, 'utf8')) as SchedCase['json'];
  const file = await SafetensorsFile.open(`${base}.safetensors`);
  const data = new Map<string, LoadedTensor>();
  try {
    for (const t of file.tensors) data.set(t.name, await file.read(t.name));
  } finally {
    await file.close();
  }
  const get = (key: string): LoadedTensor => {
    const t = data.get(key);
    if (!t) throw new Error(`${name}: no tensor '${key}'`);
    return t;
  };
  const floats = (t: LoadedTensor): Float32Array => (t.data instanceof Float32Array ? t.data : Float32Array.from(t.data));
  const toNhwc = (d: Float32Array, shape: number[]): tf.Tensor4D => {
    const { data: x, shape: s } = channelsLast(d, shape);
    return tf.tensor4d(x, s as [number, number, number, number]);
  };
  const args = (json.args ?? {}) as Record<string, unknown>;
  return {
    name,
    json,
    args,
    get,
    values: (key) => Array.from(get(key).data),
    nhwc: (key) => toNhwc(floats(get(key)), get(key).shape),
    nhwcAt(key, k) {
      const t = get(key);
      const inner = t.shape.slice(1);
      const size = inner.reduce((a, b) => a * b, 1);
      return toNhwc(floats(t).subarray(k * size, (k + 1) * size), inner);
    },
    config: (entry = 'scheduler') => parseSchedulerConfig((args[entry] as { config: unknown }).config),
    atol(output) {
      const a = json.outputs[output]?.suggested_atol;
      if (a === undefined) throw new Error(`${name}: output '${output}' has no suggested_atol`);
      return a;
    },
  };
}
