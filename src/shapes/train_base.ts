// The base-model stage of the tiny-shapes model: the U-Net and a CLIP-architecture text encoder (the real CLIP
// tokenizer and its 49408-token table) trained together from scratch on the shared training loop (training/loop.ts),
// which supplies noise, timesteps, min-SNR weighting and the 10% conditioning dropout (a dropped caption is "", the
// unconditional prompt classifier-free guidance uses). Every U-Net and text-encoder parameter is a tf.Variable.
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { writeDiffusersFolder } from '../checkpoints/diffusers_folder.js';
import type { CLIPTextModel } from '../models/clip_text.js';
import type { UNet2DConditionModel } from '../models/unet.js';
import type { AutoencoderKL } from '../models/vae.js';
import { initModule } from '../nn/init.js';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { MemoryBatchSource, type MemoryItem } from '../training/memory_source.js';
import type { StepContext, TrainBatch, TrainingMethod } from '../training/types.js';
import { makeTrainable } from './variables.js';

/**
 * LDM's `zero_module` targets: the last layer of every residual branch (ResNet conv2, transformer proj_out) and the
 * U-Net's output conv start at zero, so every block starts as the identity and the first prediction is 0.
 */
export const zeroInitialised = (name: string): boolean =>
  /(^|\.)resnets\.\d+\.conv2\.(weight|bias)$/.test(name) || /(^|\.)attentions\.\d+\.proj_out\.(weight|bias)$/.test(name) || /^conv_out\.(weight|bias)$/.test(name);

/** transformers' CLIP initialisation of the embedding tables (std 0.02 tokens, 0.01 positions). */
export const clipEmbeddingStd = (name: string): number => (name.includes('position_embedding') ? 0.01 : 0.02);

/** Seeded from-scratch initialisation of the networks given (PyTorch defaults, plus the two rules above). */
export function initTinyModels(m: { unet?: UNet2DConditionModel; vae?: AutoencoderKL; textEncoder?: CLIPTextModel }, seed: number): void {
  if (m.vae) initModule(m.vae, { seed });
  if (m.unet) initModule(m.unet, { seed, zero: zeroInitialised });
  if (m.textEncoder) initModule(m.textEncoder, { seed, embeddingStd: clipEmbeddingStd });
}

export interface BaseModel {
  unet: UNet2DConditionModel;
  textEncoder: CLIPTextModel;
  vae: AutoencoderKL;
  tokenizer: CLIPTokenizer;
}

export interface BaseTrainingOptions {
  /** `scheduler/scheduler_config.json` written with every saved model. */
  schedulerConfig: Record<string, unknown>;
  /** A tokenizer folder copied into every saved model. */
  tokenizerDir: string;
}

/** The TrainingMethod: loss = lossOf(unet(x_t, t, text_encoder(captions))). Saves a whole diffusers folder (fp16). */
export class BaseModelTraining implements TrainingMethod {
  readonly name = 'tiny_base';
  private readonly vars: tf.Variable[];
  private readonly ids = new Map<string, number[]>();

  constructor(
    readonly model: BaseModel,
    readonly opts: BaseTrainingOptions,
  ) {
    this.vars = [...makeTrainable(model.unet, 'sdtrain/base/unet'), ...makeTrainable(model.textEncoder, 'sdtrain/base/text_encoder')];
  }

  trainableVariables(): tf.Variable[] {
    return this.vars;
  }

  /** 77 token ids per caption (cached: the world has a few hundred captions). */
  tokenize(captions: readonly string[]): number[][] {
    return captions.map((c) => {
      let ids = this.ids.get(c);
      if (!ids) this.ids.set(c, (ids = this.model.tokenizer.tokenize(c).inputIds));
      return ids;
    });
  }

  loss(_batch: TrainBatch, ctx: StepContext): tf.Scalar {
    const ids = tf.tensor2d(this.tokenize(ctx.captions), undefined, 'int32'); // [B, 77]
    const hidden = this.model.textEncoder.forward(ids).lastHiddenState; // [B, 77, hidden]
    const slice = ctx.attentionSliceSize !== undefined ? { attentionSliceSize: ctx.attentionSliceSize } : {};
    return ctx.lossOf(this.model.unet.forward(ctx.noisyLatents, ctx.timesteps, hidden, slice));
  }

  async save(dir: string, _step: number, _kind: 'checkpoint' | 'final'): Promise<string[]> {
    const out = join(dir, 'model');
    const { unet, vae, textEncoder } = this.model;
    const configs = { unet: unet.config, vae: vae.config, text_encoder: textEncoder.config };
    await writeDiffusersFolder(out, { unet, vae, textEncoder, configs }, { fp16: true, schedulerConfig: this.opts.schedulerConfig, tokenizerDir: this.opts.tokenizerDir });
    return [out];
  }
}

/** In-memory training items: one posterior [h, w, c] per image with its caption (the tensors are the caller's). */
export function posteriorItems(post: { mean: Float32Array; logvar: Float32Array; shape: [number, number, number] }, captions: readonly string[]): MemoryItem[] {
  const [h, w, c] = post.shape;
  const per = h * w * c;
  return captions.map((caption, i) => ({
    caption,
    latentDist: {
      mean: tf.tensor3d(post.mean.subarray(i * per, (i + 1) * per), [h, w, c]),
      logvar: tf.tensor3d(post.logvar.subarray(i * per, (i + 1) * per), [h, w, c]),
    },
  }));
}

export function posteriorSource(items: readonly MemoryItem[], batchSize: number, seed: number): MemoryBatchSource {
  return new MemoryBatchSource(items, { batchSize, seed });
}
