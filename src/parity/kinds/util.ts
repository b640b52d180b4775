// Shared by the kind handlers: fixture tensors (NCHW) in and out of tfjs (NHWC).
import * as tf from '@tensorflow/tfjs';
import type { LoadedTensor } from '../../formats/dtype.js';
import { channelsFirst, channelsLast } from '../compare.js';
import type { ComputedOutput } from '../types.js';

const asFloat32 = (d: LoadedTensor['data']): Float32Array => (d instanceof Float32Array ? d : Float32Array.from(d));

/** A fixture image/latent [B, C, H, W] as an NHWC tensor [B, H, W, C]. */
export function nhwcTensor(t: LoadedTensor): tf.Tensor4D {
  if (t.shape.length !== 4) throw new Error(`${t.name}: expected a 4-D NCHW tensor, got shape [${t.shape.join(', ')}]`);
  const { data, shape } = channelsLast(asFloat32(t.data), t.shape);
  return tf.tensor4d(data, shape as [number, number, number, number]);
}

/** A float fixture tensor as is. */
export function floatTensor(t: LoadedTensor): tf.Tensor {
  return tf.tensor(asFloat32(t.data), t.shape, 'float32');
}

/** Token ids (int64 in the file, int32 here). */
export function intTensor(t: LoadedTensor): tf.Tensor {
  return tf.tensor(t.data instanceof Int32Array ? t.data : Int32Array.from(t.data), t.shape, 'int32');
}

/** A computed NHWC tensor back to the fixture's NCHW layout (reads synchronously: call inside the case's tidy). */
export function nchwOutput(x: tf.Tensor4D): ComputedOutput {
  return channelsFirst(x.dataSync() as Float32Array, x.shape);
}

export function plainOutput(x: tf.Tensor): ComputedOutput {
  return { data: x.dataSync() as Float32Array | Int32Array, shape: x.shape };
}

/** Runs `fn` in a tidy scope and returns its plain (already read) result: every tensor it made is freed. */
export function tidyData<T>(fn: () => T): T {
  let out!: T;
  tf.tidy(() => {
    out = fn();
  });
  return out;
}
