// Filling a model skeleton from a checkpoint: a plain walk over `namedParams`. For each parameter, find its tensor
// (by the same name, or through the one original↔diffusers table), check the stored shape, then read, convert to tfjs
// layout, set, and drop the buffer: one tensor in flight, so peak memory stays near the float32 model size.
//
// Layout rule (one rule, not a table): rank-4 conv weights are stored OIHW and used HWIO, `transpose([2, 3, 1, 0])`;
// everything else is used as stored (linears stay [out, in]). A rank-2 parameter also accepts a [out, in, 1, 1]
// tensor, a 1x1 conv used as a linear (LDM's VAE attention, old VAE files). F16/BF16 arrive widened by the reader.
import * as tf from '@tensorflow/tfjs';
import { CheckpointMismatchError } from '../errors.js';
import { namedParams, type Module, type Param } from '../nn/module.js';
import type { TensorToWrite } from '../formats/dtype.js';
import type { KeyOp } from './ldm_keys.js';
import type { TensorSource } from './sources.js';

export interface LoadOptions {
  /** Component name in messages ("unet", "vae", "text_encoder"; "checkpoint" for several at once). */
  component?: string;
  /** Where a model key's tensor is stored; default: under the same name. Undefined = the table has no name for it. */
  map?: (key: string) => KeyOp | undefined;
  /** Source tensors that are neither loaded nor unexpected (other components, original-only extras). */
  ignore?: (sourceKey: string) => boolean;
}

/** One model to fill from a source that may hold several (an original single file holds all three). */
export interface LoadPart {
  model: Module;
  map?: (key: string) => KeyOp | undefined;
}

export interface LoadReport {
  /** Parameters filled. */
  loaded: number;
  /** Source tensors skipped through `ignore`. */
  ignored: number;
}

/** A load whose names and shapes all checked out; `fill()` reads the data. */
export interface PreparedLoad {
  fill(): Promise<LoadReport>;
}

interface PlanEntry {
  key: string;
  param: Param;
  src: KeyOp;
  stored: readonly number[];
}

const same = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;
const identity = (key: string): KeyOp => ({ key, op: 'rename' });

/** The shapes a parameter's tensor may be stored with (checkpoint layout). */
function storedShapes(param: readonly number[], op: KeyOp): number[][] {
  if (op.op === 'slice_rows') return [[param[0]! * op.parts, ...param.slice(1)]];
  if (param.length === 4) return [[param[3]!, param[2]!, param[0]!, param[1]!]]; // HWIO → OIHW
  if (param.length === 2) return [[...param], [...param, 1, 1]];
  return [[...param]];
}

/**
 * Checks every parameter of every part against the source's header (names and shapes; no data is read) and throws one
 * CheckpointMismatchError listing the missing, unexpected and mis-shaped keys. Unexpected = a source tensor no part
 * uses and `ignore` does not excuse.
 */
export function prepareLoad(source: TensorSource, parts: readonly LoadPart[], opts: Omit<LoadOptions, 'map'> = {}): PreparedLoad {
  const plan: PlanEntry[] = [];
  const missing: string[] = [];
  const misshaped: string[] = [];
  const uses = new Map<string, number>(); // source key → parameters reading it (q/k/v share one fused tensor)
  for (const part of parts) {
    const map = part.map ?? identity;
    for (const [key, param] of namedParams(part.model)) {
      const src = map(key);
      if (!src) {
        missing.push(`${key} (no checkpoint name for this parameter)`);
        continue;
      }
      const stored = source.shapes.get(src.key);
      if (!stored) {
        missing.push(src.key);
        continue;
      }
      uses.set(src.key, (uses.get(src.key) ?? 0) + 1);
      const allowed = storedShapes(param.shape, src);
      if (!allowed.some((s) => same(s, stored))) {
        misshaped.push(`${src.key} (file ${fmt(stored)}, model expects ${fmt(allowed[0]!)})`);
        continue;
      }
      plan.push({ key, param, src, stored });
    }
  }
  let ignored = 0;
  const unexpected: string[] = [];
  for (const name of source.shapes.keys()) {
    if (uses.has(name)) continue;
    if (opts.ignore?.(name)) ignored++;
    else unexpected.push(name);
  }
  if (missing.length || unexpected.length || misshaped.length) {
    throw new CheckpointMismatchError(source.label, opts.component ?? 'model', missing, unexpected, misshaped);
  }
  return { fill: () => fill(source, plan, uses, ignored) };
}

/**
 * Fills every parameter of `model` from `source`: all keys and shapes are checked before any data is read (see
 * prepareLoad), then tensors are read one at a time. On a read error the parameters set by this call are emptied.
 */
export function loadStateDict(model: Module, source: TensorSource, opts: LoadOptions = {}): Promise<LoadReport> {
  return prepareLoad(source, [{ model, map: opts.map }], opts).fill();
}

async function fill(source: TensorSource, plan: PlanEntry[], uses: Map<string, number>, ignored: number): Promise<LoadReport> {
  const cache = new Map<string, Float32Array>(); // fused tensors until their last slice is taken
  const left = new Map(uses);
  const filled: Param[] = [];
  try {
    for (const { key, param, src, stored } of plan) {
      let data = cache.get(src.key);
      if (!data) {
        data = toFloat32((await source.read(src.key)).data);
        if (uses.get(src.key)! > 1) cache.set(src.key, data);
      }
      const n = left.get(src.key)! - 1;
      left.set(src.key, n);
      if (n === 0) cache.delete(src.key);
      param.set(toTfjsLayout(data, param.shape, stored, src), key);
      filled.push(param);
    }
  } catch (err) {
    for (const p of filled) {
      p.value?.dispose();
      p.value = null;
    }
    throw err;
  }
  return { loaded: plan.length, ignored };
}

function toFloat32(data: Float32Array | Int32Array | Uint8Array): Float32Array {
  return data instanceof Float32Array ? data : Float32Array.from(data);
}

/** Stored data → a tensor of the parameter's (tfjs-layout) shape. */
function toTfjsLayout(data: Float32Array, shape: readonly number[], stored: readonly number[], src: KeyOp): tf.Tensor {
  if (src.op === 'slice_rows') {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(data.slice(src.part * n, (src.part + 1) * n), [...shape], 'float32');
  }
  if (shape.length === 4) return tf.tensor(oihwToHwio(data, stored), [...shape], 'float32');
  return tf.tensor(data, [...shape], 'float32');
}

/**
 * [O, I, H, W] → [H, W, I, O] on the array itself: a plain loop is several times faster than tf.transpose on the cpu
 * backend and never puts the untransposed copy in the backend's memory.
 */
export function oihwToHwio(src: Float32Array, shape: readonly number[]): Float32Array {
  const [O, I, H, W] = shape as [number, number, number, number];
  const hw = H * W;
  const dst = new Float32Array(src.length);
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < I; i++) {
      const from = (o * I + i) * hw;
      for (let s = 0; s < hw; s++) dst[(s * I + i) * O + o] = src[from + s]!;
    }
  }
  return dst;
}

/** [H, W, I, O] → [O, I, H, W], the inverse of oihwToHwio. */
export function hwioToOihw(src: Float32Array, shape: readonly number[]): Float32Array {
  const [H, W, I, O] = shape as [number, number, number, number];
  const hw = H * W;
  const dst = new Float32Array(src.length);
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < I; i++) {
      const to = (o * I + i) * hw;
      for (let s = 0; s < hw; s++) dst[to + s] = src[(s * I + i) * O + o]!;
    }
  }
  return dst;
}

/** The inverse of the layout rule, for writers: a parameter's values in checkpoint layout (OIHW for convs). */
export function toCheckpointLayout(value: tf.Tensor): { shape: number[]; data: Float32Array } {
  const data = value.dataSync() as Float32Array;
  if (value.rank !== 4) return { shape: [...value.shape], data };
  return { shape: checkpointShape(value.shape), data: hwioToOihw(data, value.shape) };
}

/** A parameter shape in checkpoint layout: HWIO → OIHW for rank 4, else unchanged. */
export const checkpointShape = (s: readonly number[]): number[] => (s.length === 4 ? [s[3]!, s[2]!, s[0]!, s[1]!] : [...s]);

/**
 * A writer input whose data is produced when the writer reads it: `writeSafetensors` takes the whole map up front,
 * and a getter keeps that from being a second copy of the model (each access converts one tensor, then it can be
 * collected; the price is converting twice, once for the writer's size check).
 */
export function lazyTensor(shape: number[], dtype: 'F32' | 'F16', data: () => Float32Array): TensorToWrite {
  return {
    shape,
    dtype,
    get data() {
      return data();
    },
  };
}
