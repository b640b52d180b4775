// Hypernetwork training (A1111's Train → Hypernetwork tab, modules/hypernetworks/hypernetwork.py @3157fe28): a new
// hypernetwork, a (k, v) MLP pair per attention context width, is hooked into every transformer attention of the
// frozen U-Net and trained on the ordinary diffusion loss; the text encoder, U-Net and VAE stay plain tensors and
// never change. Only the hypernetwork's weights are trainable variables.
//
// Creation is A1111's `create_hypernetwork`: the config's settings (defaults layer_structure [1, 2, 1], "linear",
// Normal init, no layer norm, no dropout), weights from the run seed. Widths (A1111 "Modules", `enable_sizes`): by
// default the text width the cross-attentions see (768 SD1, 1024 SD2) followed by the block widths the
// self-attentions see, smallest first (SD1: 768, 320, 640, 1280 — A1111's default selection).
//
// Training mode as A1111's `Hypernetwork.train()`: multiplier 1 and dropout (when the settings have it) drawn from a
// generator seeded by the run seed, whose state is checkpointed (`stateDict`) so a resumed run draws the same masks.
// Captions are encoded as A1111 encodes them for training (emphasis syntax and 75-token chunks, each caption on its
// own; captions of different lengths are padded with their last token vector, A1111's `stack_conds`).
//
// Files (per checkpoint and at the end), both carrying step, name, sd_checkpoint (10-hex model hash) and
// sd_checkpoint_name: `<name>.pt`, the dict A1111's `Hypernetwork.load` reads (for its models/hypernetworks folder),
// and `<name>.safetensors` with the same tensors and the settings in the metadata (../hypernetwork/file.ts).
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import type { HypernetworkConfig } from '../config/schema.js';
import { ConfigError, SdtrainError } from '../errors.js';
import type { LoadedTensor, TensorToWrite } from '../formats/dtype.js';
import { attachHypernetworks, transformerAttentions } from '../hypernetwork/apply.js';
import { writeHypernetworkPt, writeHypernetworkSafetensors } from '../hypernetwork/file.js';
import { Hypernetwork, type HypernetworkSettings } from '../hypernetwork/hypernetwork.js';
import type { Rng } from '../hypernetwork/module.js';
import type { CLIPTextModel } from '../models/clip_text.js';
import type { UNet2DConditionModel } from '../models/unet.js';
import { encodePrompts } from '../prompts/conditioning.js';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { embeddingFileStem } from './textual_inversion.js';
import type { StepContext, TrainBatch, TrainingMethod } from './types.js';

export type HypernetworkSection = HypernetworkConfig['hypernetwork'];

export interface HypernetworkTrainingModel {
  textEncoder: CLIPTextModel;
  unet: UNet2DConditionModel;
  tokenizer: CLIPTokenizer;
  /** SD2 encodes prompts differently (OpenCLIP padding, penultimate layer); default 'sd1'. */
  family?: 'sd1' | 'sd2';
}

export interface HypernetworkTrainingOptions {
  hypernetwork: HypernetworkSection;
  /** Stored in the files (A1111 shows it) and, made file-name safe, their stem. Default: `hypernetwork.name`, else 'hypernetwork'. */
  name?: string;
  /** Seed of the initial weights and of the dropout masks (the run seed). */
  seed?: number;
  /** A1111 "CLIP skip" used to encode the captions (default 1). */
  clipSkip?: number;
  /** A1111's `sd_checkpoint` (10-hex short hash of the base model) and `sd_checkpoint_name`. */
  sdCheckpoint?: string;
  sdCheckpointName?: string;
}

/** The state key of the dropout generator in checkpoints (`method.dropout_rng`). */
const RNG_STATE_KEY = 'dropout_rng';

/**
 * A1111's default module widths for a U-Net: the cross-attention context width (the text encoder's) first, then the
 * self-attention widths (the block widths that have attention), ascending, without repeats. SD1: [768, 320, 640, 1280].
 */
export function defaultHypernetworkSizes(unet: UNet2DConditionModel): number[] {
  const attentions = transformerAttentions(unet);
  // transformerAttentions lists attn1, attn2 of each block: odd positions are the cross-attentions
  const cross = attentions.filter((_, i) => i % 2 === 1).map((a) => a.to_k.inFeatures);
  const self = attentions.filter((_, i) => i % 2 === 0).map((a) => a.to_k.inFeatures).sort((a, b) => a - b);
  return [...new Set([...cross, ...self])];
}

/** The hypernetwork settings a config section asks for (A1111 creation defaults for what it leaves out). */
export function settingsFromConfig(h: HypernetworkSection): Partial<HypernetworkSettings> {
  if (h.dropout_structure !== undefined && !h.use_dropout) {
    throw new ConfigError('hypernetwork.dropout_structure: set use_dropout: true as well (A1111 ignores dropout_structure without it)');
  }
  if (h.use_dropout && h.dropout_structure === undefined && !h.last_layer_dropout && h.layer_structure.length <= 3) {
    // A1111's parse_dropout_structure puts 0.3 after the hidden layers but the last, which needs last_layer_dropout
    throw new ConfigError(
      `hypernetwork.use_dropout: with layer_structure [${h.layer_structure.join(', ')}] (one hidden layer) there is no dropout unless ` +
        `last_layer_dropout: true (A1111's default when creating), or give it directly, e.g. dropout_structure: [0, 0.3, 0]`,
    );
  }
  return {
    layerStructure: [...h.layer_structure],
    activationFunc: h.activation_func,
    isLayerNorm: h.is_layer_norm,
    weightInitialization: h.weight_initialization,
    useDropout: h.use_dropout,
    lastLayerDropout: h.last_layer_dropout,
    activateOutput: h.activate_output,
    ...(h.dropout_structure !== undefined ? { dropoutStructure: [...h.dropout_structure] } : {}),
  };
}

/** splitmix32 (as ../hypernetwork/module.ts `seededRng`) with its state readable, for checkpoints. */
class StatefulRng {
  constructor(public state: number) {
    this.state >>>= 0;
  }

  readonly next: Rng = () => {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return ((z ^ (z >>> 15)) >>> 0) / 4294967296;
  };
}

export class HypernetworkTraining implements TrainingMethod {
  readonly name = 'hypernetwork';
  readonly hn: Hypernetwork;
  /** File stem of the exports (the name, file-name safe): A1111 lists the hypernetwork under it. */
  readonly fileStem: string;
  private readonly rng: StatefulRng;
  private readonly vars: tf.Variable[];
  /** The last caption trained on that was not dropped: the default preview prompt (A1111 previews the training prompt). */
  private lastCaption: string | undefined;

  constructor(
    readonly model: HypernetworkTrainingModel,
    readonly opts: HypernetworkTrainingOptions,
  ) {
    const h = opts.hypernetwork;
    const widths = new Set(transformerAttentions(model.unet).map((a) => a.to_k.inFeatures));
    if (widths.size === 0) throw new SdtrainError('this U-Net has no transformer attention layers for a hypernetwork to act on');
    const sizes = h.sizes ?? defaultHypernetworkSizes(model.unet);
    const unknown = sizes.filter((s) => !widths.has(s));
    if (unknown.length > 0) {
      throw new ConfigError(
        `hypernetwork.sizes: ${unknown.join(', ')} ${unknown.length === 1 ? 'is not a context width' : 'are not context widths'} of this model's attention layers ` +
          `(it has ${[...widths].sort((a, b) => a - b).join(', ')}); a module for another width would never run`,
      );
    }
    if (new Set(sizes).size !== sizes.length) throw new ConfigError(`hypernetwork.sizes: a width is listed twice in [${sizes.join(', ')}]`);
    const name = opts.name ?? h.name ?? 'hypernetwork';
    const seed = opts.seed ?? 0;
    try {
      this.hn = Hypernetwork.create(settingsFromConfig(h), sizes, { seed, name, trainable: true });
    } catch (err) {
      if (err instanceof SdtrainError && !(err instanceof ConfigError)) throw new ConfigError(`hypernetwork: ${err.message}`, { cause: err });
      throw err;
    }
    this.hn.sdCheckpoint = opts.sdCheckpoint ?? null;
    this.hn.sdCheckpointName = opts.sdCheckpointName ?? null;
    this.vars = this.hn.trainableVariables();
    // a stream of its own, apart from the initial weights' (same seed, shifted by a constant)
    this.rng = new StatefulRng((seed ^ 0x68796e74) >>> 0);
    this.hn.train(this.rng.next);
    this.fileStem = embeddingFileStem(name);
  }

  trainableVariables(): tf.Variable[] {
    return this.vars;
  }

  /**
   * The U-Net conditioning [B, 77·k, C] of captions with the frozen text encoder, each caption encoded alone (A1111
   * encodes every training entry by itself) and the shorter ones padded with their last vector (`stack_conds`).
   */
  encode(captions: readonly string[]): tf.Tensor3D {
    const { textEncoder, tokenizer, family } = this.model;
    const opts = { clipSkip: this.opts.clipSkip ?? 1, sd2: family === 'sd2' };
    return tf.tidy(() => {
      const conds = captions.map((c) => encodePrompts(textEncoder, tokenizer, [c], undefined, opts));
      const len = Math.max(...conds.map((c) => c.shape[1]));
      const padded = conds.map((c) => {
        const n = c.shape[1];
        if (n === len) return c;
        const last = c.slice([0, n - 1, 0], [1, 1, -1]);
        return tf.concat([c, tf.tile(last, [1, len - n, 1])], 1);
      });
      return (padded.length === 1 ? padded[0]! : tf.concat(padded, 0)) as tf.Tensor3D;
    });
  }

  loss(_batch: TrainBatch, ctx: StepContext): tf.Scalar {
    const context = this.encode(ctx.captions);
    const kept = ctx.captions.filter((_, i) => !ctx.dropped[i]);
    if (kept.length > 0) this.lastCaption = kept[0];
    // Hooked for this forward only: the backward pass runs on the recorded tape, and previews (which load the saved
    // file into the same U-Net) find it without hooks.
    const handle = attachHypernetworks(this.model.unet, [{ hn: this.hn, strength: 1 }]);
    try {
      const slice = ctx.attentionSliceSize !== undefined ? { attentionSliceSize: ctx.attentionSliceSize } : {};
      return ctx.lossOf(this.model.unet.forward(ctx.noisyLatents, ctx.timesteps, context, slice));
    } finally {
      handle.detach();
    }
  }

  previewPrompts(configured: readonly string[]): string[] {
    if (configured.length > 0) return configured.map((p) => p.replaceAll('[name]', this.hn.name));
    return [this.lastCaption ?? ''];
  }

  /** Writes `<stem>.safetensors` and `<stem>.pt` into `dir`. */
  async save(dir: string, step: number, _kind: 'checkpoint' | 'final'): Promise<string[]> {
    this.hn.step = step;
    const meta = { step, name: this.hn.name, sdCheckpoint: this.hn.sdCheckpoint, sdCheckpointName: this.hn.sdCheckpointName };
    const st = join(dir, `${this.fileStem}.safetensors`);
    const pt = join(dir, `${this.fileStem}.pt`);
    await writeHypernetworkSafetensors(st, this.hn, meta);
    await writeHypernetworkPt(pt, this.hn, meta);
    return [st, pt];
  }

  /** The dropout generator's position (the weights are the loop's trainable variables). */
  stateDict(): Map<string, TensorToWrite> {
    return new Map([[RNG_STATE_KEY, { shape: [1], data: Int32Array.of(this.rng.state | 0) }]]);
  }

  loadState(state: Map<string, LoadedTensor>): void {
    const t = state.get(RNG_STATE_KEY);
    if (t === undefined) return;
    if (!(t.data instanceof Int32Array) || t.data.length !== 1) throw new SdtrainError(`checkpoint: method.${RNG_STATE_KEY} should be one int32, got ${t.dtype} [${t.shape.join(', ')}]`);
    this.rng.state = t.data[0]! >>> 0;
  }

  /** Frees the hypernetwork's weights. */
  dispose(): void {
    this.hn.dispose();
  }
}
