// Training a model from scratch: turn every parameter of a module into a tf.Variable (in place), and read a module's
// weights as a diffusers/transformers state dict for safetensors files.
import * as tf from '@tensorflow/tfjs';
import { checkpointShape, lazyTensor, toCheckpointLayout } from '../checkpoints/load.js';
import type { TensorToWrite } from '../formats/dtype.js';
import { namedParams, type Module } from '../nn/module.js';

let instances = 0;

/**
 * Replaces each filled parameter's tensor by a trainable tf.Variable sharing its data, in `namedParams` order (a
 * fixed order: optimizer state is stored by position). Variable names are `<prefix>/<param name>#<n>`, unique per
 * call. The parameters must be filled (by a loader or `initModule`).
 */
export function makeTrainable(m: Module, prefix: string): tf.Variable[] {
  const id = ++instances;
  return [...namedParams(m)].map(([name, p]) => {
    const v = tf.variable(p.t, true, `${prefix}/${name}#${id}`);
    p.set(v, name); // the variable shares the old tensor's data; set() disposes the old handle
    return v;
  });
}

/** A module's parameters under their own names, in PyTorch layout, as `dtype` when written. */
export function moduleStateDict(m: Module, dtype: 'F32' | 'F16' = 'F32'): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  for (const [key, param] of namedParams(m)) out.set(key, lazyTensor(checkpointShape(param.shape), dtype, () => toCheckpointLayout(param.t).data));
  return out;
}
