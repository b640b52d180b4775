// Leaf layers. Each holds `Param`s named like the PyTorch module's state-dict entries (`weight`, `bias`) and a
// synchronous `forward`. Layers never call tidy/dispose: the loops that call them own memory.
import * as tf from '@tensorflow/tfjs';
import { Module, Param } from './module.js';
import { groupNorm, layerNorm } from './functional.js';

/**
 * A trainable side path added to a layer's output, y = layer(x) + adapter(x), that leaves the layer's own weight
 * untouched (LoRA training installs one per targeted layer: src/lora/adapter.ts). Linear passes its input flattened to
 * [N, in] and expects [N, out]; Conv2d passes its NHWC input and expects the convolution's output shape. Deliberately
 * not a Module: its tensors must stay out of namedParams (checkpoint writers, loaders) and of loraTargets' walk.
 */
export interface LayerAdapter {
  forward(x: tf.Tensor): tf.Tensor;
}

/** torch.nn.Linear: weight [out, in] kept in PyTorch layout, so y = x · Wᵀ + b via matMul(x, w, false, true). */
export class Linear extends Module {
  readonly weight: Param;
  readonly bias?: Param;
  /** Optional side path added to the output (LoRA training). `declare`: no own property until one is installed. */
  declare adapter?: LayerAdapter;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    bias = true,
  ) {
    super();
    this.weight = new Param([outFeatures, inFeatures]);
    if (bias) this.bias = new Param([outFeatures]);
  }

  forward<T extends tf.Tensor>(x: T): T {
    const lead = x.shape.slice(0, -1);
    const x2 = x.reshape([-1, this.inFeatures]); // [N, in]
    let y = tf.matMul(x2, this.weight.t, false, true); // [N, out]
    if (this.bias) y = y.add(this.bias.t);
    if (this.adapter) y = y.add(this.adapter.forward(x2)); // [N, out]
    return y.reshape([...lead, this.outFeatures]) as T; // [..., out]
  }
}

/** Padding as our convolutions use it: symmetric `p`, or explicit [[top, bottom], [left, right]]. */
export type ConvPadding = number | [[number, number], [number, number]];

/** torch.nn.Conv2d in NHWC: weight stored HWIO [kh, kw, in, out] (converted from OIHW at load). */
export class Conv2d extends Module {
  readonly weight: Param;
  readonly bias?: Param;
  readonly stride: number;
  readonly padding: ConvPadding;
  /** Optional side path added to the output (LoRA training). `declare`: no own property until one is installed. */
  declare adapter?: LayerAdapter;
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    opts: { stride?: number; padding?: ConvPadding; bias?: boolean } = {},
  ) {
    super();
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
    this.weight = new Param([kernelSize, kernelSize, inChannels, outChannels]);
    if (opts.bias ?? true) this.bias = new Param([outChannels]);
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    // [B, H, W, C_in] -> [B, H', W', C_out]
    const [[t, b], [l, r]] = typeof this.padding === 'number' ? [[this.padding, this.padding], [this.padding, this.padding]] : this.padding;
    const pad: 'valid' | [[0, 0], [number, number], [number, number], [0, 0]] = t || b || l || r ? [[0, 0], [t, b], [l, r], [0, 0]] : 'valid';
    let y = tf.conv2d(x, this.weight.t as tf.Tensor4D, this.stride, pad);
    if (this.bias) y = y.add(this.bias.t);
    if (this.adapter) y = y.add(this.adapter.forward(x));
    return y;
  }
}

/** torch.nn.GroupNorm over NHWC (channels split into contiguous groups, as PyTorch does). */
export class GroupNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;
  constructor(
    readonly numGroups: number,
    readonly numChannels: number,
    readonly eps = 1e-5,
  ) {
    super();
    this.weight = new Param([numChannels]);
    this.bias = new Param([numChannels]);
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return groupNorm(x, this.numGroups, this.eps).mul(this.weight.t).add(this.bias.t);
  }
}

/** torch.nn.LayerNorm over the last axis. */
export class LayerNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;
  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
  ) {
    super();
    this.weight = new Param([dim]);
    this.bias = new Param([dim]);
  }

  forward<T extends tf.Tensor>(x: T): T {
    return layerNorm(x, this.eps).mul(this.weight.t).add(this.bias.t) as T;
  }
}

/** torch.nn.Embedding: weight [num, dim]; ids int32. */
export class Embedding extends Module {
  readonly weight: Param;
  constructor(
    readonly num: number,
    readonly dim: number,
  ) {
    super();
    this.weight = new Param([num, dim]);
  }

  forward(ids: tf.Tensor): tf.Tensor {
    return tf.gather(this.weight.t, ids.toInt()); // [..., dim]
  }
}
