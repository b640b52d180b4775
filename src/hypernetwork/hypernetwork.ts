// An A1111 hypernetwork (`Hypernetwork` in modules/hypernetworks/hypernetwork.py @3157fe28): settings plus, for each
// context width, a (k, v) pair of HypernetworkModules. Creation follows A1111's defaults and initialisers; files are
// read and written by ./file.ts, and ./apply.ts hooks it into the U-Net's attention layers.
import * as tf from '@tensorflow/tfjs';
import { SdtrainError } from '../errors.js';
import { LayerNorm, Linear } from '../nn/layers.js';
import { disposeModule, namedParams, type Param } from '../nn/module.js';
import { HypernetworkModule, seededRng, type Rng } from './module.js';

/** A1111's `weight_initialization` choices. */
export const WEIGHT_INITIALIZATIONS = ['Normal', 'XavierUniform', 'XavierNormal', 'KaimingUniform', 'KaimingNormal'] as const;

/** The settings A1111 stores next to the weights (camelCase of the file's keys). */
export interface HypernetworkSettings {
  /** Layer widths as multiples of the context width; first and last 1 (`layer_structure`). */
  layerStructure: number[];
  /** `activation_func`: null or "linear" for none, else a name from ACTIVATION_NAMES. */
  activationFunc: string | null;
  isLayerNorm: boolean;
  /** Only used when creating; kept to be written back. */
  weightInitialization: string;
  useDropout: boolean;
  activateOutput: boolean;
  lastLayerDropout: boolean;
  /** Dropout probability after each layer, same length as layerStructure (`dropout_structure`). */
  dropoutStructure: number[];
  optionalInfo: string | null;
}

/** A1111's `parse_dropout_structure`: 0.3 after every hidden layer but the last, which needs lastLayerDropout. */
export function parseDropoutStructure(layerStructure: readonly number[], useDropout: boolean, lastLayerDropout: boolean): number[] {
  if (!useDropout) return layerStructure.map(() => 0);
  const hidden = Math.max(layerStructure.length - 3, 0);
  return [0, ...Array<number>(hidden).fill(0.3), lastLayerDropout ? 0.3 : 0, 0];
}

/** Settings for a new hypernetwork with A1111's creation defaults: [1, 2, 1], "linear", Normal, last_layer_dropout on. */
export function creationSettings(s: Partial<HypernetworkSettings> = {}): HypernetworkSettings {
  const layerStructure = [...(s.layerStructure ?? [1, 2, 1])];
  const useDropout = s.useDropout ?? false;
  const lastLayerDropout = s.lastLayerDropout ?? true;
  return {
    layerStructure,
    activationFunc: s.activationFunc === undefined ? 'linear' : s.activationFunc,
    isLayerNorm: s.isLayerNorm ?? false,
    weightInitialization: s.weightInitialization ?? 'Normal',
    useDropout,
    activateOutput: s.activateOutput ?? false,
    lastLayerDropout,
    dropoutStructure: [...(s.dropoutStructure ?? parseDropoutStructure(layerStructure, useDropout, lastLayerDropout))],
    optionalInfo: s.optionalInfo ?? null,
  };
}

/**
 * Settings of a loaded file with A1111's load defaults (`Hypernetwork.load`) for the keys it lacks: [1, 2, 1], no
 * activation, no layer norm, **activate_output true**, **last_layer_dropout false**; use_dropout is true whenever
 * the file's dropout_structure has a non-zero entry.
 */
export function loadedSettings(s: Partial<HypernetworkSettings>): HypernetworkSettings {
  const layerStructure = [...(s.layerStructure ?? [1, 2, 1])];
  const ds = s.dropoutStructure;
  const useDropout = ds !== undefined && ds.some((p) => p !== 0) ? true : (s.useDropout ?? false);
  const lastLayerDropout = s.lastLayerDropout ?? false;
  return {
    layerStructure,
    activationFunc: s.activationFunc ?? null,
    isLayerNorm: s.isLayerNorm ?? false,
    weightInitialization: s.weightInitialization ?? 'Normal',
    useDropout,
    activateOutput: s.activateOutput ?? true,
    lastLayerDropout,
    dropoutStructure: [...(ds ?? parseDropoutStructure(layerStructure, useDropout, lastLayerDropout))],
    optionalInfo: s.optionalInfo ?? null,
  };
}

export interface CreateOptions {
  /** Seed of the initial weights (default 0); ignored when `rng` is given. */
  seed?: number;
  rng?: Rng;
  name?: string;
  /** Make the weights tf.Variables right away (see trainableVariables()). */
  trainable?: boolean;
}

/** Settings, a (k, v) module pair per context width, and the A1111 file metadata. */
export class Hypernetwork {
  name: string;
  step = 0;
  /** Short hash and name of the model it was trained on (A1111's `sd_checkpoint`, `sd_checkpoint_name`). */
  sdCheckpoint: string | null = null;
  sdCheckpointName: string | null = null;
  /** The file it was read from, if any. */
  filename: string | null = null;
  /** Context width → [k module, v module], in file order (A1111's `layers`). */
  readonly layers = new Map<number, [HypernetworkModule, HypernetworkModule]>();
  /** Training mode: dropout active and multiplier 1 (A1111 `train()`); needs `rng` when there is dropout. */
  training = false;
  rng: Rng | undefined;

  /** Modules with empty parameter slots; use `create` or `readHypernetwork`. */
  constructor(
    readonly settings: HypernetworkSettings,
    sizes: readonly number[],
    name = '',
  ) {
    this.name = name;
    for (const size of sizes) {
      if (!Number.isSafeInteger(size) || size < 1) throw new SdtrainError(`hypernetwork context width must be a positive integer, got ${size}`);
      if (this.layers.has(size)) throw new SdtrainError(`hypernetwork context width ${size} is listed twice`);
      this.layers.set(size, [new HypernetworkModule(size, settings), new HypernetworkModule(size, settings)]);
    }
  }

  /** A new hypernetwork, initialised as A1111 does (see `initialiseModule`). */
  static create(settings: Partial<HypernetworkSettings>, sizes: readonly number[], opts: CreateOptions = {}): Hypernetwork {
    const s = creationSettings(settings);
    if (!(WEIGHT_INITIALIZATIONS as readonly string[]).includes(s.weightInitialization)) {
      throw new SdtrainError(`hypernetwork weight_initialization '${s.weightInitialization}' is not one of ${WEIGHT_INITIALIZATIONS.join(', ')}`);
    }
    const hn = new Hypernetwork(s, sizes, opts.name ?? '');
    const rng = opts.rng ?? seededRng(opts.seed ?? 0);
    for (const pair of hn.layers.values()) for (const m of pair) initialiseModule(m, s.weightInitialization, rng);
    if (opts.trainable) hn.trainableVariables();
    return hn;
  }

  get sizes(): number[] {
    return [...this.layers.keys()];
  }

  /** Every parameter as `<width>.<k|v>.linear.N.{weight,bias}`, in file order. */
  namedParams(): Map<string, Param> {
    const out = new Map<string, Param>();
    for (const [size, pair] of this.layers) {
      pair.forEach((m, i) => {
        for (const [key, p] of namedParams(m)) out.set(`${size}.${i === 0 ? 'k' : 'v'}.${key}`, p);
      });
    }
    return out;
  }

  paramCount(): number {
    let n = 0;
    for (const p of this.namedParams().values()) n += p.size;
    return n;
  }

  /** Training mode (dropout from `rng`, multiplier 1). */
  train(rng: Rng): this {
    this.training = true;
    this.rng = rng;
    return this;
  }

  eval(): this {
    this.training = false;
    return this;
  }

  /**
   * The weights as trainable tf.Variables, in `namedParams()` order. The first call turns every parameter into a
   * variable (the tensors it replaces are freed); later calls return the same variables.
   */
  trainableVariables(): tf.Variable[] {
    const out: tf.Variable[] = [];
    for (const p of this.namedParams().values()) {
      if (!(p.value instanceof tf.Variable)) {
        const old = p.t;
        p.value = tf.variable(old, true); // shares the data; freeing `old` drops only its reference
        old.dispose();
      }
      out.push(p.value as tf.Variable);
    }
    return out;
  }

  /**
   * A1111's `apply_single_hypernetwork`: the pair for the width of `ctxK`'s last axis, if any, maps ctxK and ctxV;
   * other widths pass through. Multiplier 0 outside training skips the pair (x + Seq(x)·0 is x).
   */
  apply<T extends tf.Tensor>(ctxK: T, ctxV: T, multiplier: number): [T, T] {
    const pair = this.layers.get(ctxK.shape[ctxK.rank - 1]!);
    if (!pair || (!this.training && multiplier === 0)) return [ctxK, ctxV];
    const opts = { training: this.training, rng: this.rng };
    return [pair[0].forward(ctxK, multiplier, opts), pair[1].forward(ctxV, multiplier, opts)];
  }

  /** Frees every weight (variables too). */
  dispose(): void {
    for (const pair of this.layers.values()) for (const m of pair) disposeModule(m);
  }
}

/**
 * A1111's initialisation of a new module: Linear weights by `weightInit` ("Normal" = N(0, 0.01); Xavier/Kaiming as
 * torch.nn.init with gain 1 and √2, fan_in mode) and zero biases; LayerNorm weights N(0, 0.01) whatever `weightInit`
 * (so a fresh LN hypernetwork starts near the identity), zero biases; PReLU keeps torch's 0.25.
 */
export function initialiseModule(m: HypernetworkModule, weightInit: string, rng: Rng): void {
  for (const [key, p] of namedParams(m)) {
    const [index, what] = key.split('.').slice(1) as [string, string];
    const layer = m.linear[Number(index)]!;
    let values: Float32Array;
    if (layer instanceof Linear && what === 'weight') values = linearInit(weightInit, p.shape[1]!, p.shape[0]!, p.size, rng);
    else if (layer instanceof LayerNorm && what === 'weight') values = normal(p.size, 0.01, rng);
    else if (what === 'bias') values = new Float32Array(p.size);
    else values = new Float32Array(p.size).fill(0.25); // PReLU
    p.set(tf.tensor(values, [...p.shape], 'float32'), key);
  }
}

function linearInit(init: string, fanIn: number, fanOut: number, n: number, rng: Rng): Float32Array {
  switch (init) {
    case 'Normal':
      return normal(n, 0.01, rng);
    case 'XavierUniform':
      return uniform(n, Math.sqrt(6 / (fanIn + fanOut)), rng);
    case 'XavierNormal':
      return normal(n, Math.sqrt(2 / (fanIn + fanOut)), rng);
    case 'KaimingUniform': // gain √2 (relu, or leaky_relu with its default a = 0), bound gain·√(3 / fan_in)
      return uniform(n, Math.sqrt(2) * Math.sqrt(3 / fanIn), rng);
    case 'KaimingNormal':
      return normal(n, Math.sqrt(2) / Math.sqrt(fanIn), rng);
    default:
      throw new SdtrainError(`hypernetwork weight_initialization '${init}' is not one of ${WEIGHT_INITIALIZATIONS.join(', ')}`);
  }
}

/** N(0, std²) by Box–Muller, both values of each pair used. */
function normal(n: number, std: number, rng: Rng): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rng())); // 1 − u ∈ (0, 1]
    const a = 2 * Math.PI * rng();
    out[i] = std * r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = std * r * Math.sin(a);
  }
  return out;
}

function uniform(n: number, bound: number, rng: Rng): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rng() - 1) * bound;
  return out;
}
