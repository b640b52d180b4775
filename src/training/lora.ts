// LoRA training (Hu et al. 2021) as kohya sd-scripts' `networks.lora` does it: a low-rank update
// ΔW = (alpha/rank)·up·down on chosen U-Net (and optionally text-encoder) layers, trained on the ordinary diffusion
// loss while every model weight stays frozen; saved as a kohya `.safetensors` that A1111, ComfyUI, kohya and
// `sdtrain sample --lora` load.
//
// Targets (`lora.targets`), by our (= diffusers) module paths, matching kohya's choices:
//   attention      attn1/attn2 to_q, to_k, to_v, to_out.0 of every transformer block (the diffusers DreamBooth-LoRA set)
//   attention+ff   plus the feed-forward ff.net.0.proj and ff.net.2
//   all            every Linear/Conv2d inside the Transformer2DModels (adds proj_in/proj_out): kohya's default network;
//                  with conv_rank also every layer of the ResNet blocks and down/upsamplers (kohya LoCon, `conv_dim`)
//   [suffixes]     the U-Net (and, with train_text_encoder, text-encoder) layers whose path is or ends in `.<suffix>`
// Linear and 1×1-conv layers use rank/alpha; k×k convs conv_rank/conv_alpha (and get no LoRA without conv_rank), as
// kohya splits network_dim / conv_dim. With train_text_encoder: the text encoder's self-attention q/k/v/out_proj, and
// with attention+ff / all also its MLP fc1/fc2 (kohya's text-encoder set).
//
// Learning rates: `text_encoder_lr` is a real second parameter group: the text-encoder LoRA's variables get
// lr · text_encoder_lr / learning_rate at every step (the same schedule, scaled, as a torch param group under LambdaLR;
// with an A1111 schedule string the ratio is to its first rate). Implemented by `lrScale` (types.ts).
//
// Dropout (`lora.dropout`, kohya `network_dropout`) acts on the down projection's output while training only. Its masks
// are seeded from (run seed, step, micro-batch, module): nothing to checkpoint, and a resumed run draws the same masks.
//
// When the text encoder carries no LoRA it runs outside the gradient tape (a custom gradient with no inputs to
// differentiate): nothing of it is kept for the backward pass.
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { learningRateSchedule, rateAt } from '../config/schedules.js';
import type { DreamboothConfig, LoraConfig } from '../config/schema.js';
import type { DataConfig } from '../data/types.js';
import { deriveSeed } from '../data/rng.js';
import { ConfigError } from '../errors.js';
import { installLoras, type InstalledLoras, type LoraAdapter, type LoraSpec } from '../lora/adapter.js';
import { loraTargets, type LoraTarget } from '../lora/names.js';
import type { LoraModule } from '../lora/read.js';
import { kohyaLoraMetadata, writeKohyaLora, type LoraDType } from '../lora/write.js';
import type { CLIPTextModel } from '../models/clip_text.js';
import type { UNet2DConditionModel } from '../models/unet.js';
import { packageVersion } from '../paths.js';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { classDataConfig, instanceDataConfig } from './dreambooth.js';
import { embeddingFileStem } from './textual_inversion.js';
import type { StepContext, TrainBatch, TrainingMethod } from './types.js';

export type LoraSection = LoraConfig['lora'];
export type LoraTrainingSection = LoraConfig['training'];

export interface LoraTrainingModel {
  textEncoder: CLIPTextModel;
  unet: UNet2DConditionModel;
  tokenizer: CLIPTokenizer;
}

export interface LoraTrainingOptions {
  lora: LoraSection;
  /** Seeds the initial down weights and the dropout masks (the run seed). */
  seed: number;
  /** `training.learning_rate`, for the text encoder's LR ratio (and the metadata). Default: text_encoder_lr ignored. */
  learningRate?: number | string;
  /** The whole `training` section, recorded in the `ss_*` metadata. */
  training?: LoraTrainingSection;
  /** File stem of the export (= the A1111 `<lora:name:1>` keyword). Default 'lora'. */
  name?: string;
  /** Stored precision of the export (default F16, kohya's usual save precision). */
  dtype?: LoraDType;
  /** A1111 "CLIP skip" used to condition the U-Net (default 1). */
  clipSkip?: number;
  /** Base model facts for `ss_v2`, `ss_base_model_version`, `modelspec.*`. */
  v2?: boolean;
  vPrediction?: boolean;
  /** Training resolution [width, height] for `ss_resolution` / `modelspec.resolution`. */
  resolution?: [number, number];
  /** Further metadata (e.g. `ss_tag_frequency`, `ss_sd_model_name` from the CLI); wins over the computed keys. */
  metadata?: Record<string, string>;
}

// U-Net module paths by `targets` level (paths are relative to the U-Net).
const ATTENTION = /(^|\.)attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;
const FEED_FORWARD = /(^|\.)ff\.net\.(0\.proj|2)$/;
// Text encoder (transformers CLIPTextModel paths).
const TE_ATTENTION = /(^|\.)self_attn\.(q_proj|k_proj|v_proj|out_proj)$/;
const TE_MLP = /(^|\.)mlp\.(fc1|fc2)$/;

const matchesSuffix = (path: string, suffix: string): boolean => path === suffix || path.endsWith(`.${suffix}`);
const isKxK = (t: LoraTarget): boolean => t.kind === 'conv' && t.kernelSize > 1;

/**
 * The layers a LoRA section trains, with their rank and alpha, in kohya's order (text encoder first, then the U-Net,
 * each in module order). Throws ConfigError for a `targets` list entry that names nothing trainable.
 */
export function selectLoraSpecs(models: Pick<LoraTrainingModel, 'unet' | 'textEncoder'>, l: LoraSection): LoraSpec[] {
  const all = [...loraTargets(models).values()];
  const unet = all.filter((t) => t.component === 'unet');
  const te = all.filter((t) => t.component === 'text_encoder');
  const chosen = new Set<LoraTarget>();
  const { targets } = l;
  if (typeof targets === 'string') {
    for (const t of unet) {
      if (t.group === 'lora') {
        if (ATTENTION.test(t.path) || (targets !== 'attention' && FEED_FORWARD.test(t.path)) || targets === 'all') chosen.add(t);
      } else if (t.group === 'locon' && targets === 'all' && l.conv_rank !== undefined) chosen.add(t);
    }
    if (l.train_text_encoder) {
      for (const t of te) if (TE_ATTENTION.test(t.path) || (targets !== 'attention' && TE_MLP.test(t.path))) chosen.add(t);
    }
  } else {
    let teHit = false;
    for (const suffix of targets) {
      const hits = [...unet, ...(l.train_text_encoder ? te : [])].filter((t) => matchesSuffix(t.path, suffix));
      const usable = hits.filter((t) => !isKxK(t) || l.conv_rank !== undefined);
      if (usable.length === 0) {
        const why =
          hits.length > 0
            ? `it names only ${hits[0]!.kernelSize}×${hits[0]!.kernelSize} convolutions (e.g. ${hits[0]!.path}), which need lora.conv_rank`
            : te.some((t) => matchesSuffix(t.path, suffix))
              ? 'it names only text-encoder layers; set lora.train_text_encoder: true'
              : `no U-Net${l.train_text_encoder ? ' or text-encoder' : ''} layer path is or ends in '.${suffix}' (e.g. to_q, attn2.to_k, ff.net.2, proj_in, conv1, q_proj, mlp.fc1)`;
        throw new ConfigError(`lora.targets: '${suffix}' selects no layer: ${why}`);
      }
      for (const t of usable) {
        chosen.add(t);
        if (t.component === 'text_encoder') teHit = true;
      }
    }
    // A list that names no text-encoder layer still trains the text encoder's attention when asked to.
    if (l.train_text_encoder && !teHit) for (const t of te) if (TE_ATTENTION.test(t.path)) chosen.add(t);
  }
  return all
    .filter((t) => chosen.has(t))
    .map((target) =>
      isKxK(target) ? { target, rank: l.conv_rank!, alpha: l.conv_alpha ?? l.conv_rank! } : { target, rank: l.rank, alpha: l.alpha },
    );
}

/** Python's str() of a float, as kohya's metadata values are: 1 → "1.0". */
const pyFloat = (x: number): string => (Number.isInteger(x) ? x.toFixed(1) : String(x));
const pyBool = (b: boolean): string => (b ? 'True' : 'False');

export class LoraTraining implements TrainingMethod {
  readonly name = 'lora';
  readonly installed: InstalledLoras;
  readonly fileStem: string;
  /** Learning-rate multiplier of the text-encoder LoRA's variables. */
  readonly textEncoderLrScale: number;
  private readonly vars: tf.Variable[];
  private readonly scales: number[];
  private readonly startedAt = Date.now();
  /** The first caption trained on (not dropped): the default preview prompt. */
  private firstCaption: string | undefined;
  private extraMetadata: Record<string, string> = {};

  constructor(
    readonly model: LoraTrainingModel,
    readonly opts: LoraTrainingOptions,
  ) {
    const l = opts.lora;
    const specs = selectLoraSpecs(model, l);
    if (specs.length === 0) throw new ConfigError('lora.targets: no layer of this model is selected');
    const base = opts.learningRate === undefined ? undefined : rateAt(learningRateSchedule(opts.learningRate), 0);
    this.textEncoderLrScale = l.text_encoder_lr !== undefined && base !== undefined ? l.text_encoder_lr / base : 1;
    this.installed = installLoras(specs, { seed: opts.seed, dropout: l.dropout });
    this.vars = this.installed.variables();
    this.scales = this.installed.adapters.flatMap((a) => {
      const s = a.target.component === 'text_encoder' ? this.textEncoderLrScale : 1;
      return [s, s];
    });
    this.fileStem = embeddingFileStem(opts.name ?? 'lora');
  }

  /** Adds metadata for the files written from now on (e.g. the dataset's `ss_tag_frequency`, known once it is open). */
  addMetadata(meta: Record<string, string>): void {
    this.extraMetadata = { ...this.extraMetadata, ...meta };
  }

  get adapters(): readonly LoraAdapter[] {
    return this.installed.adapters;
  }

  /** True when some text-encoder layer carries a LoRA. */
  get trainsTextEncoder(): boolean {
    return this.adapters.some((a) => a.target.component === 'text_encoder');
  }

  trainableVariables(): tf.Variable[] {
    return this.vars;
  }

  lrScale(index: number): number {
    return this.scales[index] ?? 1;
  }

  /** Token ids [B, 77] of captions (plain CLIP tokenisation, truncated to 75 tokens, as kohya). */
  tokenize(captions: readonly string[]): number[][] {
    return captions.map((c) => this.model.tokenizer.tokenize(c).inputIds);
  }

  /** The U-Net conditioning [B, 77, dim] of captions, with the text encoder's LoRA (if any) as it stands. */
  encode(captions: readonly string[]): tf.Tensor3D {
    const ids = tf.tensor2d(this.tokenize(captions), undefined, 'int32');
    const clipSkip = this.opts.clipSkip ?? 1;
    const te = this.model.textEncoder;
    if (this.trainsTextEncoder) return te.forward(ids, { clipSkip }).lastHiddenState;
    // Outside the tape: a custom gradient's forward pass is not recorded, and its one input (the ids) is not on any
    // path to the variables, so its gradient function is never called.
    const frozen = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      const x = args[0] as tf.Tensor2D;
      return { value: tf.tidy(() => te.forward(x, { clipSkip }).lastHiddenState), gradFunc: () => tf.zerosLike(x) };
    });
    return frozen(ids) as tf.Tensor3D;
  }

  loss(_batch: TrainBatch, ctx: StepContext): tf.Scalar {
    if (this.firstCaption === undefined) this.firstCaption = ctx.captions.find((c, i) => !ctx.dropped[i] && c !== '');
    const dropout = this.opts.lora.dropout > 0;
    if (dropout) this.adapters.forEach((a, i) => (a.dropoutSeed = deriveSeed(this.opts.seed, 'lora-dropout', ctx.step, ctx.micro, i)));
    try {
      const hidden = this.encode(ctx.captions);
      const slice = ctx.attentionSliceSize !== undefined ? { attentionSliceSize: ctx.attentionSliceSize } : {};
      return ctx.lossOf(this.model.unet.forward(ctx.noisyLatents, ctx.timesteps, hidden, slice));
    } finally {
      if (dropout) for (const a of this.adapters) a.dropoutSeed = undefined;
    }
  }

  previewPrompts(configured: readonly string[]): string[] {
    if (configured.length > 0) return [...configured];
    const p = this.firstCaption ?? this.opts.lora.instance_prompt;
    return p !== undefined ? [p] : [];
  }

  /** The trained modules as a LoRA file stores them (float32, PyTorch layout). */
  async modules(): Promise<LoraModule[]> {
    const out: LoraModule[] = [];
    for (const a of this.adapters) out.push(await a.toModule());
    return out;
  }

  /** kohya `ss_*` / `modelspec.*` metadata for the file written at `step`. */
  metadata(modules: readonly LoraModule[], step: number): Record<string, string> {
    const l = this.opts.lora;
    const t = this.opts.training;
    const o = this.opts;
    const ss: Record<string, string> = {
      ss_output_name: this.fileStem,
      ss_steps: String(step),
      ss_max_train_steps: t ? String(t.max_train_steps) : 'None',
      ss_training_started_at: String(this.startedAt / 1000),
      ss_training_finished_at: String(Date.now() / 1000),
      ss_training_comment: `trained with sdtrain ${packageVersion()}`,
      ss_seed: String(o.seed),
      ss_network_dropout: l.dropout > 0 ? pyFloat(l.dropout) : 'None',
      ss_clip_skip: o.clipSkip !== undefined && o.clipSkip > 1 ? String(o.clipSkip) : 'None',
      ss_mixed_precision: 'no',
      ss_full_fp16: 'False',
      ss_resolution: `(${(o.resolution ?? [512, 512]).join(', ')})`,
      ss_text_encoder_lr: l.text_encoder_lr !== undefined ? String(l.text_encoder_lr) : 'None',
      ss_prior_loss_weight: pyFloat(l.prior_loss_weight),
    };
    if (t) {
      const lr = String(t.learning_rate);
      const opt = t.optimizer;
      Object.assign(ss, {
        ss_learning_rate: lr,
        ss_unet_lr: lr,
        ss_lr_scheduler: t.lr_scheduler,
        ss_lr_warmup_steps: String(t.lr_warmup_steps),
        ss_batch_size_per_device: String(t.batch_size),
        ss_total_batch_size: String(t.batch_size * t.gradient_accumulation_steps),
        ss_gradient_accumulation_steps: String(t.gradient_accumulation_steps),
        ss_gradient_checkpointing: 'False',
        ss_optimizer: `${opt.type}(weight_decay=${opt.weight_decay},betas=(${opt.betas.join(', ')}),eps=${opt.eps})`,
        ss_max_grad_norm: pyFloat(t.max_grad_norm),
        ss_noise_offset: t.noise_offset > 0 ? pyFloat(t.noise_offset) : 'None',
        ss_min_snr_gamma: t.min_snr_gamma !== undefined ? pyFloat(t.min_snr_gamma) : 'None',
        ss_caption_dropout_rate: typeof t.cond_dropout === 'number' ? pyFloat(t.cond_dropout) : JSON.stringify(t.cond_dropout),
      });
    }
    const meta = kohyaLoraMetadata({
      modules,
      v2: o.v2 ?? false,
      vPrediction: o.vPrediction ?? false,
      resolution: o.resolution ?? [512, 512],
      title: this.fileStem,
      extra: ss,
    });
    return {
      ...meta,
      'sdtrain.version': packageVersion(),
      'sdtrain.method': this.name,
      'sdtrain.targets': JSON.stringify(l.targets),
      'sdtrain.train_text_encoder': pyBool(this.trainsTextEncoder),
      ...(o.metadata ?? {}),
      ...this.extraMetadata,
    };
  }

  async save(dir: string, step: number, _kind: 'checkpoint' | 'final'): Promise<string[]> {
    const modules = await this.modules();
    const path = join(dir, `${this.fileStem}.safetensors`);
    await writeKohyaLora(path, modules, { dtype: this.opts.dtype ?? 'F16', metadata: this.metadata(modules, step) });
    return [path];
  }

  /** Takes the adapters off the model and frees them. */
  dispose(): void {
    this.installed.remove();
  }
}

// Prior preservation is DreamBooth's (dreambooth.ts, class_images.ts): the same keys in the lora section
// (instance_data_dir, instance_prompt, class_data_dir, class_prompt), so DreamBooth's data configs serve it.
const asPriorConfig = (cfg: Pick<LoraConfig, 'data' | 'lora'>) => ({ data: cfg.data, dreambooth: cfg.lora as unknown as DreamboothConfig['dreambooth'] });

/** The images a LoRA run trains on: data.datasets plus lora.instance_data_dir (every image captioned lora.instance_prompt). */
export const loraInstanceDataConfig = (cfg: Pick<LoraConfig, 'data' | 'lora'>): DataConfig => instanceDataConfig(asPriorConfig(cfg));

/** LoRA's class images (prior preservation) as a dataset. */
export const loraClassDataConfig = (cfg: Pick<LoraConfig, 'data' | 'lora'>): DataConfig => classDataConfig(asPriorConfig(cfg));
