// One A1111 hypernetwork module (`HypernetworkModule` in modules/hypernetworks/hypernetwork.py @3157fe28): an MLP
// over the last axis of an attention context, H(x) = x + Seq(x)·m. `Seq` is rebuilt exactly as A1111 builds its
// torch.nn.Sequential, because the state-dict keys `linear.<position>.*` count every entry of the sequence
// (activations and dropouts included):
//   for i in 0 … len(ls)−2:  Linear(int(d·ls[i]) → int(d·ls[i+1]))
//                            activation   unless None/"linear", or the last Linear without activate_output
//                            LayerNorm    if is_layer_norm (after every Linear, the last one too)
//                            Dropout(p)   if dropout_structure[i+1] > 0
import * as tf from '@tensorflow/tfjs';
import { SdtrainError } from '../errors.js';
import { LayerNorm, Linear } from '../nn/layers.js';
import { gelu } from '../nn/functional.js';
import { Module, Param } from '../nn/module.js';

/** A uniform source in [0, 1): dropout masks and RReLU slopes are drawn from it in training mode. */
export type Rng = () => number;

/** A small seeded generator (splitmix32), so a seed gives the same masks and initial weights on every backend. */
export function seededRng(seed: number): Rng {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return ((z ^ (z >>> 15)) >>> 0) / 4294967296;
  };
}

interface ActContext {
  training: boolean;
  rng: Rng | undefined;
  weight: tf.Tensor | undefined;
}

interface Activation {
  /** The torch.nn class A1111 instantiates (with no arguments, so its defaults apply). */
  torchClass: string;
  fn: (x: tf.Tensor, c: ActContext) => tf.Tensor;
}

const RRELU_LOWER = 1 / 8;
const RRELU_UPPER = 1 / 3;

// Why no tf.where/greater here: the comparison would sit on the gradient path, and tfjs has no gradient for
// Greater; `tf.step` (gradient zero) selects instead, and leakyRelu/prelu/elu/selu have their own gradients.
/** torch.nn.Softplus (beta 1, threshold 20): x where x > 20, else log1p(exp(x)); the clamp keeps the gradient finite. */
const softplus = (x: tf.Tensor): tf.Tensor => {
  const big = tf.step(x.sub(20)); // 1 where x > 20
  return big.mul(x).add(tf.onesLike(big).sub(big).mul(tf.log1p(tf.exp(tf.minimum(x, 20)))));
};
const hardSigmoid = (x: tf.Tensor): tf.Tensor => tf.relu6(x.add(3)).div(6);
/** torch's order of operations: x · relu6(x + 3) / 6. */
const hardSwish = (x: tf.Tensor): tf.Tensor => x.mul(tf.relu6(x.add(3))).div(6);
/** Hardshrink / Softshrink (lambda 0.5): zero where |x| <= lambda. */
const shrink = (x: tf.Tensor, lambda: number, soft: boolean): tf.Tensor => {
  const keep = tf.step(x.abs().sub(lambda));
  return (soft ? x.sub(x.sign().mul(lambda)) : x).mul(keep);
};
/**
 * Softmax/Softmin/LogSoftmax built with `dim=None`, as A1111 builds them: torch then picks dim 0 for 1-D and 3-D
 * inputs and dim 1 otherwise (`_get_softmax_dim`), so on a [B, S, C] context they normalise over the batch.
 * Softmax2d normalises over dim −3 (also the batch for a 3-D input).
 */
const implicitDim = (x: tf.Tensor): number => (x.rank === 0 || x.rank === 1 || x.rank === 3 ? 0 : 1);
const softmaxOver = (x: tf.Tensor, axis: number, log: boolean): tf.Tensor => {
  const z = x.sub(x.max(axis, true));
  const lse = z.exp().sum(axis, true).log();
  return log ? z.sub(lse) : z.sub(lse).exp();
};
const softmax2dAxis = (x: tf.Tensor): number => {
  if (x.rank !== 3 && x.rank !== 4) throw new SdtrainError(`softmax2d needs a 3-D or 4-D input, got rank ${x.rank}`);
  return x.rank - 3;
};

/**
 * Every activation name A1111 accepts (besides "linear" = none): its own table (`swish` is Hardswish, not SiLU)
 * plus every class in torch.nn.modules.activation, lowercased. Threshold and MultiheadAttention need constructor
 * arguments and GLU halves the width, so A1111 cannot build or run them either; they are rejected.
 */
export const ACTIVATIONS: Readonly<Record<string, Activation>> = {
  relu: { torchClass: 'ReLU', fn: (x) => tf.relu(x) },
  leakyrelu: { torchClass: 'LeakyReLU', fn: (x) => tf.leakyRelu(x, 0.01) },
  elu: { torchClass: 'ELU', fn: (x) => tf.elu(x) },
  swish: { torchClass: 'Hardswish', fn: (x) => hardSwish(x) },
  tanh: { torchClass: 'Tanh', fn: (x) => tf.tanh(x) },
  sigmoid: { torchClass: 'Sigmoid', fn: (x) => tf.sigmoid(x) },
  rrelu: {
    torchClass: 'RReLU',
    fn: (x, c) => {
      if (!c.training) return tf.leakyRelu(x, (RRELU_LOWER + RRELU_UPPER) / 2);
      const slopes = new Float32Array(x.size);
      const rng = needRng(c.rng);
      for (let i = 0; i < slopes.length; i++) slopes[i] = RRELU_LOWER + (RRELU_UPPER - RRELU_LOWER) * rng();
      return tf.prelu(x, tf.tensor(slopes, x.shape, 'float32'));
    },
  },
  hardtanh: { torchClass: 'Hardtanh', fn: (x) => tf.clipByValue(x, -1, 1) },
  relu6: { torchClass: 'ReLU6', fn: (x) => tf.relu6(x) },
  hardsigmoid: { torchClass: 'Hardsigmoid', fn: (x) => hardSigmoid(x) },
  silu: { torchClass: 'SiLU', fn: (x) => x.mul(tf.sigmoid(x)) },
  mish: { torchClass: 'Mish', fn: (x) => x.mul(tf.tanh(softplus(x))) },
  hardswish: { torchClass: 'Hardswish', fn: (x) => hardSwish(x) },
  celu: { torchClass: 'CELU', fn: (x) => tf.elu(x) }, // alpha 1: CELU = ELU
  selu: { torchClass: 'SELU', fn: (x) => tf.selu(x) }, // scale 1.0507009873554805, alpha 1.6732632423543772, as torch
  gelu: { torchClass: 'GELU', fn: (x) => gelu(x) },
  hardshrink: { torchClass: 'Hardshrink', fn: (x) => shrink(x, 0.5, false) },
  logsigmoid: { torchClass: 'LogSigmoid', fn: (x) => tf.minimum(x, 0).sub(tf.log1p(tf.exp(x.abs().neg()))) },
  softplus: { torchClass: 'Softplus', fn: (x) => softplus(x) },
  softshrink: { torchClass: 'Softshrink', fn: (x) => shrink(x, 0.5, true) },
  prelu: { torchClass: 'PReLU', fn: (x, c) => tf.prelu(x, c.weight!) },
  softsign: { torchClass: 'Softsign', fn: (x) => x.div(x.abs().add(1)) },
  tanhshrink: { torchClass: 'Tanhshrink', fn: (x) => x.sub(tf.tanh(x)) },
  softmin: { torchClass: 'Softmin', fn: (x) => softmaxOver(x.neg(), implicitDim(x), false) },
  softmax: { torchClass: 'Softmax', fn: (x) => softmaxOver(x, implicitDim(x), false) },
  softmax2d: { torchClass: 'Softmax2d', fn: (x) => softmaxOver(x, softmax2dAxis(x), false) },
  logsoftmax: { torchClass: 'LogSoftmax', fn: (x) => softmaxOver(x, implicitDim(x), true) },
};

const UNBUILDABLE: Readonly<Record<string, string>> = {
  threshold: 'torch.nn.Threshold needs constructor arguments',
  multiheadattention: 'torch.nn.MultiheadAttention is not an elementwise activation',
  glu: 'torch.nn.GLU halves the width, so the next layer cannot take its output',
};

function needRng(rng: Rng | undefined): Rng {
  if (!rng) throw new SdtrainError('hypernetwork training mode needs a random source (rng) for dropout / RReLU');
  return rng;
}

/** Names valid as `activation_func` (besides null), "linear" (no activation) first. */
export const ACTIVATION_NAMES: readonly string[] = ['linear', ...Object.keys(ACTIVATIONS)];

/** Throws (A1111's message) unless `name` is null, "linear" or a known activation. */
export function checkActivation(name: string | null): void {
  if (name === null || name === 'linear' || Object.hasOwn(ACTIVATIONS, name)) return;
  const why = UNBUILDABLE[name];
  throw new SdtrainError(
    `hypernetwork uses an unsupported activation function: ${name}` + (why ? ` (${why})` : ` (known: ${ACTIVATION_NAMES.join(', ')})`),
  );
}

/** An activation entry of the sequence; PReLU carries a weight (`linear.N.weight`, shape [1], 0.25 when created). */
export class ActivationLayer extends Module {
  readonly weight?: Param;
  constructor(readonly activation: string) {
    super();
    if (activation === 'prelu') this.weight = new Param([1]);
  }
}

/** torch.nn.Dropout(p): identity in eval mode; in training, zero with probability p and scale the rest by 1/(1−p). */
export class DropoutLayer extends Module {
  constructor(readonly p: number) {
    super();
  }
}

export type SequenceLayer = Linear | ActivationLayer | LayerNorm | DropoutLayer;

/** What shapes the sequence (the settings of a hypernetwork that matter to one module). */
export interface ModuleStructure {
  layerStructure: readonly number[];
  activationFunc: string | null;
  isLayerNorm: boolean;
  activateOutput: boolean;
  dropoutStructure: readonly number[];
}

export interface ModuleCallOptions {
  /** Training mode: dropout active, multiplier forced to 1 (as A1111). */
  training?: boolean;
  /** Required in training mode when the sequence has dropout or RReLU. */
  rng?: Rng;
}

/** A1111's HypernetworkModule for context width `dim`. Parameters are named `linear.N.{weight,bias}`. */
export class HypernetworkModule extends Module {
  readonly linear: SequenceLayer[] = [];

  constructor(
    readonly dim: number,
    s: ModuleStructure,
  ) {
    super();
    const ls = s.layerStructure;
    if (ls.length < 2 || ls[0] !== 1 || ls[ls.length - 1] !== 1) {
      throw new SdtrainError(`hypernetwork layer_structure must start and end with 1, got [${ls.join(', ')}]`);
    }
    if (s.dropoutStructure.length < ls.length) {
      throw new SdtrainError(`hypernetwork dropout_structure [${s.dropoutStructure.join(', ')}] is shorter than layer_structure [${ls.join(', ')}]`);
    }
    checkActivation(s.activationFunc);
    const width = (f: number): number => {
      const w = Math.trunc(dim * f); // Python int(): truncates (768·0.1 = 76.8 → 76)
      if (!(w >= 1)) throw new SdtrainError(`hypernetwork layer_structure entry ${f} gives width ${w} for context width ${dim}`);
      return w;
    };
    for (let i = 0; i < ls.length - 1; i++) {
      const out = width(ls[i + 1]!);
      this.linear.push(new Linear(width(ls[i]!), out));
      const last = i >= ls.length - 2;
      if (s.activationFunc !== null && s.activationFunc !== 'linear' && !(last && !s.activateOutput)) {
        this.linear.push(new ActivationLayer(s.activationFunc));
      }
      if (s.isLayerNorm) this.linear.push(new LayerNorm(out, 1e-5));
      const p = s.dropoutStructure[i + 1]!;
      if (p > 0) {
        if (!(p < 1)) throw new SdtrainError(`hypernetwork dropout probability must be 0 or in (0, 1), got ${p}`);
        this.linear.push(new DropoutLayer(p));
      }
    }
  }

  /** The sequence as torch prints it, e.g. ["Linear(768->76)", "ReLU", "LayerNorm", "Linear(76->768)", "LayerNorm"]. */
  describe(): string[] {
    return this.linear.map((l) =>
      l instanceof Linear
        ? `Linear(${l.inFeatures}->${l.outFeatures})`
        : l instanceof ActivationLayer
          ? ACTIVATIONS[l.activation]!.torchClass
          : l instanceof LayerNorm
            ? 'LayerNorm'
            : 'Dropout',
    );
  }

  /** Seq(x): the sequence alone, x [..., dim] → [..., dim]. */
  sequence(x: tf.Tensor, opts: ModuleCallOptions = {}): tf.Tensor {
    const training = opts.training === true;
    let h = x;
    for (const layer of this.linear) {
      if (layer instanceof Linear || layer instanceof LayerNorm) h = layer.forward(h);
      else if (layer instanceof ActivationLayer) {
        h = ACTIVATIONS[layer.activation]!.fn(h, { training, rng: opts.rng, weight: layer.weight?.t });
      } else if (training) h = h.mul(dropoutMask(h.shape, layer.p, needRng(opts.rng)));
    }
    return h;
  }

  /** H(x) = x + Seq(x)·m, with m = `multiplier` in eval mode and 1 in training mode (as A1111). */
  forward<T extends tf.Tensor>(x: T, multiplier: number, opts: ModuleCallOptions = {}): T {
    const m = opts.training === true ? 1 : multiplier;
    return x.add(this.sequence(x, opts).mul(m)) as T;
  }
}

/** {0, 1/(1−p)} with P(0) = p, as torch's dropout (bernoulli(1−p) / (1−p)). */
function dropoutMask(shape: number[], p: number, rng: Rng): tf.Tensor {
  const keep = Math.fround(1 / (1 - p));
  const m = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < m.length; i++) m[i] = rng() < p ? 0 : keep;
  return tf.tensor(m, shape, 'float32');
}
