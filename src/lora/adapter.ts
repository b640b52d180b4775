// LoRA adapters for training: y = W·x + b + m·(alpha/r)·up(dropout(down(x))) on a Linear or Conv2d, with W never
// touched (kohya `networks.lora` LoRAModule). The adapter hangs on the layer's `adapter` hook (src/nn/layers.ts), so
// every forward pass of the model — training, previews — sees it until `remove()`; the frozen weights stay plain
// tensors and only the adapters' down/up are tf.Variables.
//
// Layouts: Linear down [r, in] and up [out, r] (PyTorch's, as kohya stores them); a conv's down is a convolution with
// the layer's kernel, stride and padding, kept HWIO [kh, kw, in, r] for tf.conv2d (exported as [r, in, kh, kw]), and
// its up a 1×1 convolution kept [out, r] (exported as [out, r, 1, 1]).
//
// Initialisation (kohya): down ~ U(−1/√fan_in, 1/√fan_in) (kaiming_uniform_(a=√5), fan_in = in·kh·kw), up = 0, so
// the adapted model starts exactly equal to the base model. The values come from a TorchGenerator seeded from
// (seed, module name), drawn in PyTorch's element order: adding a module never changes another one's start.
import * as tf from '@tensorflow/tfjs';
import { deriveSeed } from '../data/rng.js';
import { SdtrainError } from '../errors.js';
import type { LayerAdapter } from '../nn/layers.js';
import { TorchGenerator } from '../random/torch_rng.js';
import type { LoraTarget } from './names.js';
import type { LoraModule } from './read.js';

export interface LoraSpec {
  target: LoraTarget;
  rank: number;
  alpha: number;
}

export interface InstallOptions {
  /** Seeds the initial down weights (each module draws from its own generator). */
  seed: number;
  /** Dropout rate on the down projection's output while `training` (kohya network_dropout); default 0. */
  dropout?: number;
  /** Makes the variable names unique (tfjs refuses a name twice); default a per-process counter. */
  namePrefix?: string;
}

let installs = 0;

/** One module's LoRA: a LayerAdapter on its layer. */
export class LoraAdapter implements LayerAdapter {
  /** Linear: [r, in]; conv: HWIO [kh, kw, in, r]. */
  readonly down: tf.Variable;
  /** [out, r]. */
  readonly up: tf.Variable;
  readonly rank: number;
  readonly alpha: number;
  /** alpha / rank. */
  readonly scale: number;
  /** Strength (kohya `multiplier`); 1 while training. */
  multiplier = 1;
  /** Dropout rate applied only while `dropoutSeed` is set. */
  readonly dropout: number;
  /** Set by the training method for one micro-batch (a fresh seed each); undefined = inference, no dropout. */
  dropoutSeed: number | undefined;
  private readonly pad: 'valid' | [[0, 0], [number, number], [number, number], [0, 0]] = 'valid';

  constructor(
    readonly target: LoraTarget,
    rank: number,
    alpha: number,
    opts: { seed: number; dropout?: number; name: string },
  ) {
    if (!Number.isInteger(rank) || rank < 1) throw new SdtrainError(`${target.name}: LoRA rank must be a whole number >= 1, got ${rank}`);
    if (!(alpha > 0)) throw new SdtrainError(`${target.name}: LoRA alpha must be > 0, got ${alpha}`);
    this.rank = rank;
    this.alpha = alpha;
    this.scale = alpha / rank;
    this.dropout = opts.dropout ?? 0;
    const { inFeatures: inp, outFeatures: out, kernelSize: k } = target;
    const fanIn = inp * k * k;
    const bound = 1 / Math.sqrt(fanIn);
    const u = new TorchGenerator(deriveSeed(opts.seed, 'lora-init', target.name)).rand([rank, fanIn]); // torch [r, in, kh, kw]
    for (let i = 0; i < u.length; i++) u[i] = (2 * u[i]! - 1) * bound;
    const init = tf.tidy(() => {
      const t = tf.tensor(u, [rank, inp, k, k], 'float32');
      return target.kind === 'linear' ? t.reshape([rank, inp]) : t.transpose([2, 3, 1, 0]); // HWIO [kh, kw, in, r]
    });
    this.down = tf.variable(init, true, `${opts.name}/lora_down`);
    init.dispose();
    const zeros = tf.zeros([out, rank]);
    this.up = tf.variable(zeros, true, `${opts.name}/lora_up`);
    zeros.dispose();
    if (target.kind === 'conv') {
      const layer = target.layer as { padding: number | [[number, number], [number, number]]; stride: number };
      const p = layer.padding;
      const [[t, b], [l, r]] = typeof p === 'number' ? [[p, p], [p, p]] : p;
      if (t || b || l || r) this.pad = [[0, 0], [t, b], [l, r], [0, 0]];
    }
  }

  /** Linear: x [N, in] → [N, out]; conv: NHWC → the convolution's output shape. */
  forward(x: tf.Tensor): tf.Tensor {
    let h: tf.Tensor;
    if (this.target.kind === 'linear') {
      h = tf.matMul(x as tf.Tensor2D, this.down as tf.Tensor2D, false, true); // [N, r]
    } else {
      const stride = (this.target.layer as { stride: number }).stride;
      h = tf.conv2d(x as tf.Tensor4D, this.down as tf.Tensor4D, stride, this.pad); // [B, H', W', r]
    }
    if (this.dropoutSeed !== undefined && this.dropout > 0) h = tf.dropout(h, this.dropout, undefined, this.dropoutSeed);
    const lead = h.shape.slice(0, -1);
    const y = tf.matMul(h.reshape([-1, this.rank]) as tf.Tensor2D, this.up as tf.Tensor2D, false, true); // [N, out]
    const out = y.mul(tf.scalar(this.multiplier * this.scale));
    return lead.length === 1 ? out : out.reshape([...lead, this.target.outFeatures]);
  }

  /** The module as a LoRA file stores it: down [r, in(, kh, kw)], up [out, r(, 1, 1)] in PyTorch layout, float32. */
  async toModule(): Promise<LoraModule> {
    const { name, component, path, kind, kernelSize: k, inFeatures: inp, outFeatures: out } = this.target;
    const torchDown = kind === 'linear' ? this.down : tf.transpose(this.down, [3, 2, 0, 1]); // HWIO → [r, in, kh, kw]
    const down = Float32Array.from((await torchDown.data()) as Float32Array);
    if (torchDown !== this.down) torchDown.dispose();
    const up = Float32Array.from((await this.up.data()) as Float32Array);
    return {
      name,
      component,
      path,
      kind,
      down: { shape: kind === 'linear' ? [this.rank, inp] : [this.rank, inp, k, k], data: down },
      up: { shape: kind === 'linear' ? [out, this.rank] : [out, this.rank, 1, 1], data: up },
      alpha: this.alpha,
      rank: this.rank,
    };
  }

  dispose(): void {
    this.down.dispose();
    this.up.dispose();
  }
}

export interface InstalledLoras {
  /** In the order of the specs (= the trainable variables' order: down, up per adapter). */
  readonly adapters: readonly LoraAdapter[];
  readonly active: boolean;
  /** [down₀, up₀, down₁, up₁, …]. */
  variables(): tf.Variable[];
  /** Detaches every adapter from its layer and frees its variables. Idempotent. */
  remove(): void;
}

/**
 * Creates an adapter for every spec and hangs it on the spec's layer. Refuses a layer that already carries an adapter
 * (two trainings on one model); on any error nothing stays installed.
 */
export function installLoras(specs: readonly LoraSpec[], opts: InstallOptions): InstalledLoras {
  const prefix = opts.namePrefix ?? `sdtrain/lora#${++installs}`;
  const seen = new Set<object>();
  for (const { target } of specs) {
    if (target.layer.adapter) throw new SdtrainError(`${target.name}: this layer already has an adapter installed (another LoRA training on the same model?)`);
    if (seen.has(target.layer)) throw new SdtrainError(`${target.name}: listed twice`);
    seen.add(target.layer);
  }
  const adapters: LoraAdapter[] = [];
  try {
    for (const s of specs) adapters.push(new LoraAdapter(s.target, s.rank, s.alpha, { seed: opts.seed, dropout: opts.dropout ?? 0, name: `${prefix}/${s.target.name}` }));
  } catch (err) {
    for (const a of adapters) a.dispose();
    throw err;
  }
  for (const a of adapters) a.target.layer.adapter = a;
  let active = true;
  return {
    adapters,
    get active() {
      return active;
    },
    variables: () => adapters.flatMap((a) => [a.down, a.up]),
    remove() {
      if (!active) return;
      for (const a of adapters) {
        if (a.target.layer.adapter === a) delete a.target.layer.adapter;
        a.dispose();
      }
      active = false;
    },
  };
}
