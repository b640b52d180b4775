// The contract between the generic training loop (loop.ts) and the pieces around it: where batches come from
// (BatchSource), what a training method provides (TrainingMethod), what it gets per micro-batch (StepContext) and
// what the loop reports (TrainEvent). Nothing here is about a particular method.
import type * as tf from '@tensorflow/tfjs';
import type { LoadedTensor, TensorToWrite } from '../formats/dtype.js';
import type { PredictionType } from '../schedules/config.js';

/** A VAE posterior as cached by the data pipeline (unscaled moments; logvar already clamped to [-30, 20]). */
export interface LatentDistribution {
  mean: tf.Tensor4D;
  logvar: tf.Tensor4D;
}

/**
 * One batch as the data pipeline yields it. Exactly one of `latentDist`, `pixels`, `latents` is set. The loop owns
 * the tensors once `next()` returned them and disposes them after the micro-batch.
 */
export interface TrainBatch {
  /** Captions, templates applied (`[name]` already replaced by the placeholder/instance token). */
  captions: string[];
  /** Cached posterior [B, h, w, 4]: the loop samples `mean + exp(logvar/2)·ε` with the run's generator, × scalingFactor. */
  latentDist?: LatentDistribution;
  /** Images [B, H, W, 3] in [-1, 1]: encoded by `DiffusionSetup.encodeImages`, then sampled like latentDist. */
  pixels?: tf.Tensor4D;
  /** Ready U-Net latents (already scaled) [B, h, w, 4]; no posterior sampling (tests, precomputed data). */
  latents?: tf.Tensor4D;
  /** Per-sample loss weights (DreamBooth prior preservation: prior_loss_weight on class images); default 1. */
  lossWeights?: number[];
}

/**
 * Where the data stream stands: the next batch starts at position `index` of epoch `epoch` (a batch number for the
 * data pipeline's Dataset, an item number for MemoryBatchSource). The order must be a function of seed and epoch.
 */
export interface DataCursor {
  epoch: number;
  index: number;
}

/** A resumable, endless stream of batches (it wraps around epochs itself). */
export interface BatchSource {
  next(): Promise<TrainBatch>;
  /** Position of the batch `next()` would return; saved in checkpoints. */
  cursor(): DataCursor;
  /** Continue from a saved position. */
  seek(cursor: DataCursor): void;
  /** Identifies what the batch order depends on (files, seed, batch size); a change is reported on resume. */
  readonly fingerprint?: string;
}

/** The noise schedule and latent scaling the loop needs; see `diffusionSetup()` in loop.ts. */
export interface DiffusionSetup {
  /** `alphas_cumprod` of the model's training schedule (float32, length T). */
  alphasCumprod: Float32Array;
  /** The model's prediction type (`training.prediction_type` overrides it). */
  predictionType: PredictionType;
  /** VAE scaling factor: posterior samples × this are U-Net latents. */
  scalingFactor: number;
  /** Pixels → posterior; needed only when the source yields `pixels`. Called outside any gradient. */
  encodeImages?: (pixels: tf.Tensor4D) => LatentDistribution;
}

/** What a method's `loss` receives for one micro-batch; its tensors live until the micro-batch ends (do not dispose). */
export interface StepContext {
  /** 0-based optimizer step (the one the schedules are evaluated at). */
  step: number;
  /** Index of this micro-batch within the gradient-accumulation group. */
  micro: number;
  /** Captions after conditioning dropout: a dropped one is "" (and for textual inversion carries no gradient). */
  captions: string[];
  dropped: boolean[];
  /** x_t = addNoise(x0, noise, t) [B, h, w, 4]. */
  noisyLatents: tf.Tensor4D;
  /** One integer timestep in [0, T) per sample. */
  timesteps: number[];
  /** ε or v, by prediction type. */
  target: tf.Tensor4D;
  predictionType: PredictionType;
  attentionSliceSize?: number;
  /** MSE of a U-Net prediction against `target`, with min-SNR-γ and per-sample weights as configured: the loss. */
  lossOf(prediction: tf.Tensor4D): tf.Scalar;
}

/**
 * A training method (textual inversion, hypernetwork, LoRA, DreamBooth): only what differs between them. The loop
 * owns the optimizer, gradient accumulation, schedules, checkpoints, previews and events.
 */
export interface TrainingMethod {
  /** 'textual_inversion', 'hypernetwork', ... (saved in checkpoints, checked on resume). */
  readonly name: string;
  /** The tf.Variables to optimise, always in the same order (optimizer state is stored by position). */
  trainableVariables(): tf.Variable[];
  /**
   * Per-variable learning-rate multiplier (parameter groups, e.g. LoRA's text_encoder_lr): variable `index` of
   * trainableVariables() is updated at lr · lrScale(index) (weight decay included, as a torch param group). Read once
   * at the start of a run. Default 1 for every variable.
   */
  lrScale?(index: number): number;
  /** The scalar loss of one micro-batch. Called inside the loop's gradient scope: synchronous math, no tidy needed. */
  loss(batch: TrainBatch, ctx: StepContext): tf.Scalar;
  /**
   * Writes the method's usable outputs (e.g. the embedding files) into `dir` and returns their paths: a checkpoint
   * folder (kind 'checkpoint') or the run folder at the end ('final'). Must write atomically.
   */
  save(dir: string, step: number, kind: 'checkpoint' | 'final'): Promise<string[]>;
  /**
   * Called after every optimizer update with the number of completed steps (DreamBooth's EMA of the weights). The
   * variables hold the updated values; synchronous.
   */
  afterStep?(step: number): void;
  /** State besides the trainable variables (which the loop saves itself) needed for an exact resume, e.g. EMA weights. */
  stateDict?(): Map<string, TensorToWrite>;
  loadState?(state: Map<string, LoadedTensor>): void;
  /** Prompts for previews: the configured ones with `[name]` replaced, or a default. */
  previewPrompts?(configured: readonly string[]): string[];
}

/** Why a run ended without an error. */
export type StopReason = 'finished' | 'aborted';

export interface TrainSummary {
  reason: StopReason;
  /** Optimizer steps completed (counting those before a resume). */
  steps: number;
  firstLoss: number | undefined;
  /** Mean loss of the last `log_every_n_steps` steps. */
  recentLoss: number | undefined;
  seconds: number;
  /** The last checkpoint folder written, and the final files (empty when aborted). */
  checkpointDir: string | undefined;
  files: string[];
}

/** What the loop reports; the CLI renders these, the library never prints. `step` counts completed optimizer steps. */
export type TrainEvent =
  | { kind: 'start'; step: number; maxSteps: number; runDir: string; resumedFrom?: string; trainableParams: number; method: string }
  | { kind: 'step'; step: number; loss: number; lr: number; gradNorm: number; seconds: number; cursor: DataCursor }
  | { kind: 'log'; step: number; loss: number; lr: number; stepsPerSecond: number }
  | { kind: 'checkpoint'; step: number; dir: string; files: string[] }
  | { kind: 'preview'; step: number; files: string[] }
  | { kind: 'warning'; step: number; message: string }
  | { kind: 'done'; summary: TrainSummary };
