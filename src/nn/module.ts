// The small module kit our models are built from: plain classes whose fields mirror checkpoint key paths, with
// `Param` leaves that declare a shape first and are filled later (from a checkpoint or an initialiser), so a model is
// never random-initialised before its 860M weights are loaded. No tf.layers (names from counters, untracked nesting).
import * as tf from '@tensorflow/tfjs';

/** A weight slot with a declared shape (tfjs layout: HWIO convs, [out, in] linears), filled by a loader or initialiser. */
export class Param {
  value: tf.Tensor | null = null;
  constructor(readonly shape: readonly number[]) {}

  /** The tensor; throws if the slot was never filled (a loader bug, not a user error). */
  get t(): tf.Tensor {
    if (!this.value) throw new Error(`parameter of shape [${this.shape.join(', ')}] used before it was loaded`);
    return this.value;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Put a tensor in the slot, checking its shape; the slot owns it from now on (the previous value is disposed). */
  set(value: tf.Tensor, name = '?'): void {
    if (value.shape.length !== this.shape.length || value.shape.some((d, i) => d !== this.shape[i])) {
      throw new Error(`${name}: expected shape [${this.shape.join(', ')}], got [${value.shape.join(', ')}]`);
    }
    if (this.value && this.value !== value) this.value.dispose();
    this.value = value;
  }
}

/** Marker base class: the walk descends into its own enumerable fields. */
export abstract class Module {}

const join = (prefix: string, key: string | number): string => (prefix ? `${prefix}.${key}` : String(key));

/**
 * "down_blocks.0.resnets.1.conv1.weight" → Param, walking own fields, arrays and sub-modules. `null`/`undefined`
 * holes are skipped: they keep PyTorch's list indices where a ModuleList holds a weightless layer (`to_out.1` is a
 * Dropout, so `to_out` is `[Linear, null]` and its weights are `to_out.0.*`).
 */
export function namedParams(node: unknown, prefix = '', out = new Map<string, Param>()): Map<string, Param> {
  if (node instanceof Param) out.set(prefix, node);
  else if (Array.isArray(node)) node.forEach((child, i) => namedParams(child, join(prefix, i), out));
  else if (node instanceof Module) {
    for (const [key, child] of Object.entries(node)) namedParams(child, join(prefix, key), out);
  }
  return out;
}

/** Total number of scalars in a module's declared parameters. */
export function paramCount(m: Module): number {
  let n = 0;
  for (const p of namedParams(m).values()) n += p.size;
  return n;
}

/** Dispose every filled parameter of a module. */
export function disposeModule(m: Module): void {
  for (const p of namedParams(m).values()) {
    p.value?.dispose();
    p.value = null;
  }
}
