// Memory estimates for `--backend auto`: the peak bytes of all live tensors of a sampling or training job, from the
// model configs alone (no tensors are made; the skeletons only declare parameter shapes). `auto` compares the total
// with WASM_BUDGET_BYTES, and the CLI can print the breakdown.
//
// The model (docs/backends.md "Memory" has the measured check):
//
// - Weights: every parameter in float32 (what the loaders widen fp16/bf16 files to), counted from the skeletons'
//   `namedParams`, or from a checkpoint's tensor listing.
// - Activations are counted op by op as our models run them, in float32 elements per pixel (or token) and channel:
//   a GroupNorm leaves 4 full-size tensors (x−mean, ·rsqrt, ·γ, +β), SiLU 2, a conv or linear with bias 2, and so
//   on (reshapes share their input's buffer and are free). The U-Net runs each block in its own `tf.tidy`, and the
//   VAE encoder and decoder each block in its own scope: so the peak is the largest block's whole scope (every
//   intermediate of the block is alive until the block ends) plus what outlives the blocks (the U-Net's skips and
//   block outputs; the VAE's current feature map).
// - Attention maps [B·heads, T, T] (scores and softmax): without slicing every map of every transformer of a block
//   stays alive to the end of the block; with `attentionSliceSize` s, only s maps at a time. (That is the design;
//   until `attention()` in src/nn/functional.ts frees each slice's maps in a tf.tidy, the slices' maps also stay
//   alive to the end of the block and slicing saves nothing: measured, docs/backends.md.)
// - Sampling: weights of all three models + the larger of the text-encoder pass, the U-Net pass (batch × 2 with
//   classifier-free guidance) and the VAE decode at full resolution (the whole batch at once).
// - Training: weights + gradients + optimizer state of the trainable part + the activations of the backward pass:
//   tfjs keeps every tensor an op saves for its gradient and every activation's gradient until the gradient call
//   returns, so this is the sum over all U-Net blocks (coefficients fitted on wasm, see TRAIN_*), plus one attention
//   call's maps on top. On wasm each saved tensor is a copy (the wasm Identity kernel copies; cpu shares), the
//   weights of every layer included ("saved weight copies"); `backend: 'cpu'` drops those and scales the activations
//   by the measured cpu/wasm ratio.
//   Gradient checkpointing (modelled, not implemented by the trainer yet): block outputs + one block's backward.
//   Encoding the training images with the VAE is a separate phase (the larger of the two counts) unless the latents
//   are cached.
//
// Not counted: wasm's kernel scratch buffers and allocator fragmentation (that is why WASM_BUDGET_BYTES is 85% of the
// heap), JS-side copies, the Node runtime itself (RSS is ~100-200 MB more), a few small tensors (time embedding,
// latents, noise).
import { buildPipeline, type PipelineConfigs } from '../checkpoints/pipeline.js';
import type { TensorInfo } from '../formats/dtype.js';
import type { CLIPTextConfig } from '../models/clip_text.js';
import { headsPerDownBlock, type UNet2DConditionConfig } from '../models/unet.js';
import { vaeScaleFactor, type AutoencoderKLConfig } from '../models/vae.js';
import { namedParams, type Module } from '../nn/module.js';

/** Bytes per float32 element: every tensor our models compute with. */
const F32 = 4;

export type Component = 'unet' | 'vae' | 'text_encoder';

/** A job's estimated peak: `total` = the sum of `parts` (bytes). */
export interface MemoryEstimate {
  total: number;
  /** What the total is made of, e.g. `weights.unet`, `gradients`, `activations (unet)`; sums to `total`. */
  parts: Record<string, number>;
  /** The activation peak of each phase of the job (only the largest is in `parts`/`total`). */
  phases: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------------------------
// Weights

const paramCache = new WeakMap<PipelineConfigs, Record<Component, Map<string, readonly number[]>>>();

/** Parameter shapes of each component, from shape-only skeletons (no tensors are allocated). */
function paramShapes(configs: PipelineConfigs): Record<Component, Map<string, readonly number[]>> {
  let cached = paramCache.get(configs);
  if (!cached) {
    const p = buildPipeline(configs);
    const shapes = (m: Module) => new Map([...namedParams(m)].map(([k, v]) => [k, v.shape] as const));
    cached = { unet: shapes(p.unet), vae: shapes(p.vae), text_encoder: shapes(p.textEncoder) };
    paramCache.set(configs, cached);
  }
  return cached;
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Number of parameters of each component. */
export function paramCounts(configs: PipelineConfigs): Record<Component, number> {
  const s = paramShapes(configs);
  const count = (m: Map<string, readonly number[]>) => [...m.values()].reduce((n, shape) => n + numel(shape), 0);
  return { unet: count(s.unet), vae: count(s.vae), text_encoder: count(s.text_encoder) };
}

/** float32 bytes of each component's weights. */
export function componentWeightBytes(configs: PipelineConfigs): Record<Component, number> {
  const c = paramCounts(configs);
  return { unet: c.unet * F32, vae: c.vae * F32, text_encoder: c.text_encoder * F32 };
}

/**
 * float32 bytes of all weights: of the U-Net, VAE and text encoder built from `configs`, or of every tensor in a
 * checkpoint's listing (each element widened to 4 bytes, as the loaders do; a file's few non-model tensors, such as
 * the original layout's noise-schedule buffers, are counted too).
 */
export function weightBytes(source: PipelineConfigs | readonly TensorInfo[]): number {
  if (Array.isArray(source)) return (source as readonly TensorInfo[]).reduce((n, t) => n + numel(t.shape) * F32, 0);
  const b = componentWeightBytes(source as PipelineConfigs);
  return b.unet + b.vae + b.text_encoder;
}

// ---------------------------------------------------------------------------------------------------------------
// Activations, in float32 elements. Coefficients are per pixel (or token) and per channel, counted from the ops of
// src/models/*.ts and checked against the wasm backend's allocations (docs/backends.md, test/backend/memory.test.ts).

/** ResnetBlock2D: norm1 4·Cin, SiLU 2·Cin, conv1 2, (+temb 1), norm2 4, SiLU 2, conv2 2, (shortcut 2), residual 1. */
const resnetPerPixel = (cin: number, cout: number, temb: boolean): number =>
  6 * cin + (temb ? 12 : 11) * cout + (cin !== cout ? 2 * cout : 0);

/**
 * Transformer2DModel (one BasicTransformerBlock per layer) without its attention maps, per token: GroupNorm 4, proj_in
 * 2, then per layer: LayerNorm 4 + self-attention 12 (q, k, v, head split, scaled q, output, merge, to_out) +
 * residual 1 + LayerNorm 4 + cross-attention 7 + residual 1 + LayerNorm 4 + GEGLU feed-forward 50 (proj 16 at 8·C,
 * split 8, erf-GELU 20, gate 4, out 2) + residual 1; proj_out 2, residual 1.
 */
const transformerPerToken = (c: number, layers: number, sliced: boolean): number =>
  6 * c + layers * (84 + (sliced ? 2 : 0)) * c + 3 * c;

/** The VAE's single-head mid-block attention without its map: GroupNorm 4, q/k/v 6, heads 5, output 2, to_out 2, residual 1. */
const vaeAttentionPerToken = (c: number): number => 20 * c;

/** Attention maps of one attention call: scores + softmax, [maps, Tq, Tk] each. */
const mapElements = (maps: number, tq: number, tk: number): number => 2 * maps * tq * tk;

interface UNetActivationOptions {
  batch: number;
  /** Latent size. */
  h: number;
  w: number;
  contextTokens: number;
  attentionSliceSize?: number;
  /** LoRA on the attention projections: each adds its update (2 × out) per token. */
  loraLinearsPerAttention?: number;
  /** Training: what the backward pass keeps (see the file comment). */
  training?: false | { checkpointing: boolean };
}

// Training coefficients, per pixel/token and channel: what a module adds at the end of the backward pass, when every
// saved activation and every activation gradient is alive (tfjs' tape.ts frees neither before the gradient call
// returns). Fitted on the wasm backend by stacking modules, weights' copies taken out (docs/backends.md): a ResNet
// adds 28·(Cin + Cout) (+3·Cout with a shortcut conv), a transformer layer ~242·C (+15·C around the layers) plus 5
// copies of its attention maps (softmax output, scores, their gradients, the softmax gradient); plain ops keep their
// output and its gradient (2×).
const TRAIN_RESNET = 28;
const TRAIN_RESNET_SHORTCUT = 3;
const TRAIN_TRANSFORMER_LAYER = 242;
const TRAIN_TRANSFORMER_OUTER = 15;
const TRAIN_MAP_COPIES = 5;

/** Peak activation elements of one U-Net forward (or forward + backward when `training`). */
function unetActivations(cfg: UNet2DConditionConfig, o: UNetActivationOptions): number {
  const ch = cfg.block_out_channels;
  const last = ch.length - 1;
  const heads = headsPerDownBlock(cfg);
  const n = o.batch;
  const s = o.contextTokens;
  const layers = cfg.transformer_layers_per_block;
  const sliced = o.attentionSliceSize !== undefined;
  // latent pixels at level i (the U-Net's stride-2 convs round up)
  const side = (x: number, i: number): number => {
    let v = x;
    for (let k = 0; k < i; k++) v = Math.ceil(v / 2);
    return v;
  };
  const px = (i: number): number => side(o.h, i) * side(o.w, i);
  const lora = o.loraLinearsPerAttention ?? 0;

  /** One block (one `tf.tidy` scope of UNet2DConditionModel.forward). */
  class Block {
    /** Forward: all elements the scope allocates (its outputs included), without attention maps. */
    scope = 0;
    /** What the block returns (kept until the forward ends). */
    outputs = 0;
    /** Forward: map elements of all its attention calls (scores + softmax). */
    maps = 0;
    /** Forward: map elements of the largest single attention call (or slice). */
    mapsOne = 0;
    /** Training: what the block leaves alive at the end of the backward pass. */
    train = 0;
    /** Training: the largest transient on top (one attention call's maps). */
    trainTransient = 0;

    resnet(cin: number, cout: number, level: number): void {
      this.scope += n * px(level) * resnetPerPixel(cin, cout, true);
      this.train += n * px(level) * (TRAIN_RESNET * (cin + cout) + (cin !== cout ? TRAIN_RESNET_SHORTCUT * cout : 0));
    }

    transformer(c: number, hd: number, level: number): void {
      const t = px(level);
      const allMaps = n * hd;
      const perCall = sliced ? Math.min(o.attentionSliceSize!, allMaps) : allMaps;
      // context keys/values [N, S, C] for the cross-attention: k, v, their head splits
      const ctx = 5 * n * s * c * layers;
      const loraActs = layers * lora * 2 * c * 2; // two attentions per layer
      this.scope += n * t * (transformerPerToken(c, layers, sliced) + loraActs) + ctx;
      this.maps += layers * (mapElements(perCall, t, t) + mapElements(perCall, t, s)) * (allMaps / perCall);
      this.mapsOne = Math.max(this.mapsOne, mapElements(perCall, t, t) + mapElements(perCall, t, s));
      const mapSet = allMaps * t * (t + s); // one [maps, T, T + S] set, self + cross
      this.train +=
        n * t * (TRAIN_TRANSFORMER_OUTER + layers * TRAIN_TRANSFORMER_LAYER) * c + 3 * (n * t * loraActs + ctx) + layers * TRAIN_MAP_COPIES * mapSet;
      this.trainTransient = Math.max(this.trainTransient, allMaps * t * t);
    }

    /** A plain op output (concat, resize, conv + bias): kept, and its gradient in training. */
    plain(elements: number): void {
      this.scope += elements;
      this.train += 2 * elements;
    }
  }
  const blocks: Block[] = [];

  // down blocks
  cfg.down_block_types.forEach((type, i) => {
    const b = new Block();
    for (let j = 0; j < cfg.layers_per_block; j++) {
      const cin = j === 0 ? (i === 0 ? ch[0]! : ch[i - 1]!) : ch[i]!;
      b.resnet(cin, ch[i]!, i);
      if (type === 'CrossAttnDownBlock2D') b.transformer(ch[i]!, heads[i]!, i);
      b.outputs += n * px(i) * ch[i]!;
    }
    if (i !== last) {
      b.plain(2 * n * px(i + 1) * ch[i]!); // stride-2 conv + bias
      b.outputs += n * px(i + 1) * ch[i]!;
    }
    blocks.push(b);
  });

  // mid block
  {
    const c = ch[last]!;
    const b = new Block();
    b.resnet(c, c, last);
    b.transformer(c, heads[last]!, last);
    b.resnet(c, c, last);
    b.outputs = n * px(last) * c;
    blocks.push(b);
  }

  // up blocks: skip channels in the order they are popped
  const skipChannels: number[] = [ch[0]!];
  cfg.down_block_types.forEach((_, i) => {
    for (let j = 0; j < cfg.layers_per_block; j++) skipChannels.push(ch[i]!);
    if (i !== last) skipChannels.push(ch[i]!);
  });
  const reversed = [...ch].reverse();
  const reversedHeads = [...heads].reverse();
  let hidden = ch[last]!;
  cfg.up_block_types.forEach((type, i) => {
    const level = last - i;
    const out = reversed[i]!;
    const b = new Block();
    for (let j = 0; j <= cfg.layers_per_block; j++) {
      const cin = hidden + skipChannels.pop()!;
      b.plain(n * px(level) * cin); // concat with the skip
      b.resnet(cin, out, level);
      if (type === 'CrossAttnUpBlock2D') b.transformer(out, reversedHeads[i]!, level);
      hidden = out;
    }
    b.outputs = n * px(level) * out;
    if (i !== cfg.up_block_types.length - 1) {
      const up = n * px(level - 1) * out; // nearest ×2 to the next skip's size
      b.plain(3 * up); // resize, conv, bias
      b.outputs = up;
    }
    blocks.push(b);
  });

  // conv_in (conv + bias) before the blocks; conv_norm_out (4), SiLU (2), conv_out (2·out) after: the outer scope
  const outer = 2 * n * px(0) * ch[0]!;
  const tail = n * px(0) * (6 * ch[0]! + 2 * cfg.out_channels);

  if (!o.training) {
    // forward: each block's scope on top of everything returned so far
    let kept = outer;
    let peak = 0;
    for (const b of blocks) {
      peak = Math.max(peak, kept + b.scope + (sliced ? b.mapsOne : b.maps));
      kept += b.outputs;
    }
    return Math.max(peak, kept + tail);
  }
  const transient = Math.max(...blocks.map((b) => b.trainTransient));
  if (o.training.checkpointing) {
    // only block inputs are kept; one block at a time is recomputed and differentiated
    const outputs = blocks.reduce((a, b) => a + 2 * b.outputs, 2 * (outer + tail));
    return outputs + Math.max(...blocks.map((b) => b.train)) + transient;
  }
  return blocks.reduce((a, b) => a + b.train, 2 * (outer + tail)) + transient;
}

/** Peak activation elements of the VAE decoder for latents [B, h, w, c] (image 8h × 8w for SD's 4 levels). */
function vaeDecodeActivations(cfg: AutoencoderKLConfig, batch: number, h: number, w: number, sliceSize?: number): number {
  const ch = cfg.block_out_channels;
  const last = ch.length - 1;
  const n = batch;
  const lat = h * w;
  const cl = ch[last]!;
  const persistent = 2 * n * lat * cfg.latent_channels; // post_quant_conv (in decode's scope)
  // conv_in (2) + mid block: ResNet, attention (one head over all latent pixels), ResNet
  const mapCount = sliceSize !== undefined ? Math.min(sliceSize, n) : n;
  const mid = n * lat * (2 * cl + 2 * resnetPerPixel(cl, cl, false) + vaeAttentionPerToken(cl)) + mapElements(mapCount, lat, lat);
  let peak = persistent + mid;
  let current = n * lat * cl; // the block input, freed after the next block
  const reversed = [...ch].reverse();
  let pixels = lat;
  reversed.forEach((out, i) => {
    const cin = reversed[Math.max(i - 1, 0)]!;
    let scope = 0;
    for (let j = 0; j <= cfg.layers_per_block; j++) scope += n * pixels * resnetPerPixel(j === 0 ? cin : out, out, false);
    let output = n * pixels * out;
    if (i !== last) {
      pixels *= 4;
      output = n * pixels * out;
      scope += 3 * output; // nearest ×2, conv, bias
    }
    peak = Math.max(peak, persistent + current + scope);
    current = output;
  });
  // conv_norm_out (4), SiLU (2), conv_out (2·out)
  peak = Math.max(peak, persistent + current + n * pixels * (6 * ch[0]! + 2 * cfg.out_channels));
  return peak;
}

/** Peak activation elements of the VAE encoder (posterior moments) for images [B, H, W, 3]. */
function vaeEncodeActivations(cfg: AutoencoderKLConfig, batch: number, height: number, width: number): number {
  const ch = cfg.block_out_channels;
  const last = ch.length - 1;
  const n = batch;
  let pixels = height * width;
  let peak = 2 * n * pixels * ch[0]!; // conv_in + bias
  let current = n * pixels * ch[0]!;
  ch.forEach((out, i) => {
    const cin = i === 0 ? ch[0]! : ch[i - 1]!;
    let scope = 0;
    for (let j = 0; j < cfg.layers_per_block; j++) scope += n * pixels * resnetPerPixel(j === 0 ? cin : out, out, false);
    let output = n * pixels * out;
    if (i !== last) {
      pixels = Math.floor(height / 2 ** (i + 1)) * Math.floor(width / 2 ** (i + 1));
      output = n * pixels * out;
      scope += 2 * output; // stride-2 conv + bias
    }
    peak = Math.max(peak, current + scope);
    current = output;
  });
  const cl = ch[last]!;
  const tail =
    n * pixels * (2 * resnetPerPixel(cl, cl, false) + vaeAttentionPerToken(cl) + 6 * cl + 2 * 2 * cfg.latent_channels) +
    mapElements(n, pixels, pixels);
  return Math.max(peak, current + tail);
}

/**
 * The text encoder's activations for `batch` sequences of `tokens` (nothing is freed inside it): per layer and token
 * LayerNorm 4 + q/k/v 6 + heads 5 + output 2 + out_proj 2 + residual 1 + LayerNorm 4 + MLP (fc1 2·I, activation
 * 3·I or 5·I, fc2 2) + residual 1, plus the masked score maps.
 */
function textEncoderActivations(cfg: CLIPTextConfig, batch: number, tokens: number): number {
  const hd = cfg.hidden_size;
  const act = cfg.hidden_act === 'quick_gelu' ? 3 : 5;
  const perLayer = batch * tokens * (27 * hd + (2 + act) * cfg.intermediate_size) + 3 * batch * cfg.num_attention_heads * tokens * tokens;
  return batch * tokens * 6 * hd + cfg.num_hidden_layers * perLayer;
}

/** Peak activation bytes of one U-Net call on latents [batch, h, w, ·] (forward; or forward + backward in training). */
export function unetActivationBytes(
  cfg: UNet2DConditionConfig,
  o: { batch: number; h: number; w: number; contextTokens?: number; attentionSliceSize?: number; training?: boolean; gradientCheckpointing?: boolean },
): number {
  const training = o.training ? { checkpointing: o.gradientCheckpointing ?? false } : false;
  return unetActivations(cfg, { ...o, contextTokens: o.contextTokens ?? 77, training }) * F32;
}

/** Peak activation bytes of a VAE decode of latents [batch, h, w, ·]. */
export function vaeDecodeActivationBytes(cfg: AutoencoderKLConfig, batch: number, h: number, w: number, attentionSliceSize?: number): number {
  return vaeDecodeActivations(cfg, batch, h, w, attentionSliceSize) * F32;
}

/** Peak activation bytes of a VAE encode of images [batch, height, width, ·]. */
export function vaeEncodeActivationBytes(cfg: AutoencoderKLConfig, batch: number, height: number, width: number): number {
  return vaeEncodeActivations(cfg, batch, height, width) * F32;
}

// ---------------------------------------------------------------------------------------------------------------
// Jobs

export interface SamplingJob {
  configs: PipelineConfigs;
  /** Image size in pixels. */
  width: number;
  height: number;
  /** Images per U-Net call (and per VAE decode). */
  batch: number;
  /** Classifier-free guidance (guidance scale ≠ 1): the U-Net runs on batch × 2. */
  cfg: boolean;
  /** Attention slicing: how many of the batch·heads maps at a time (U-Net and VAE). */
  attentionSliceSize?: number;
  /** Context length (77 per 75-token chunk of the longest prompt). Default 77. */
  contextTokens?: number;
}

function weightParts(configs: PipelineConfigs): Record<string, number> {
  const w = componentWeightBytes(configs);
  return { 'weights.unet': w.unet, 'weights.vae': w.vae, 'weights.text_encoder': w.text_encoder };
}

function finish(parts: Record<string, number>, phases: Record<string, number>): MemoryEstimate {
  const [name, bytes] = Object.entries(phases).reduce((a, b) => (b[1] > a[1] ? b : a));
  const all = { ...parts, [`activations (${name})`]: bytes };
  const total = Object.values(all).reduce((a, b) => a + b, 0);
  return { total, parts: all, phases };
}

function sampling(job: SamplingJob): MemoryEstimate {
  const { configs, batch } = job;
  const f = vaeScaleFactor(configs.vae);
  const h = Math.ceil(job.height / f);
  const w = Math.ceil(job.width / f);
  const tokens = job.contextTokens ?? 77;
  const n = batch * (job.cfg ? 2 : 1);
  const phases = {
    text_encoder: textEncoderActivations(configs.text_encoder, job.cfg ? 2 : 1, tokens) * F32,
    unet: unetActivations(configs.unet, { batch: n, h, w, contextTokens: tokens, attentionSliceSize: job.attentionSliceSize }) * F32,
    vae_decode: vaeDecodeActivations(configs.vae, batch, h, w, job.attentionSliceSize) * F32,
  };
  return finish(weightParts(configs), phases);
}

/** Peak bytes of a sampling job (see the file comment for what is counted). */
export function samplingBytes(job: SamplingJob): number {
  return sampling(job).total;
}

export type TrainingMethodName = 'embed' | 'hypernetwork' | 'lora' | 'dreambooth';
export type OptimizerName = 'adamw' | 'sgd' | 'lion' | 'adafactor';

export interface TrainingJob {
  configs: PipelineConfigs;
  method: TrainingMethodName;
  batch: number;
  /** Training image size in pixels (square; the largest bucket side for bucketed data). */
  resolution: number;
  optimizer: OptimizerName;
  /** SGD only: momentum > 0 keeps a buffer. */
  momentum?: number;
  gradientCheckpointing?: boolean;
  gradientAccumulationSteps?: number;
  attentionSliceSize?: number;
  /** embed: vectors per token (default 1). */
  numVectors?: number;
  /** hypernetwork: layer_structure (default [1, 2, 1]) and is_layer_norm. */
  layerStructure?: readonly number[];
  layerNorm?: boolean;
  /** lora: rank (default 4), conv_rank, targets (default 'attention'). */
  rank?: number;
  convRank?: number;
  targets?: 'attention' | 'attention+ff' | 'all' | readonly string[];
  /** dreambooth / lora: also train the text encoder (or its LoRA). */
  trainTextEncoder?: boolean;
  /** dreambooth: an EMA copy of the U-Net. */
  ema?: boolean;
  /** Latents are already cached on disk: no VAE encoding phase. Default false. */
  latentsCached?: boolean;
  /** Context length, default 77. */
  contextTokens?: number;
  /**
   * The backend the figure is for (default 'wasm', what `auto` decides about). On cpu the tensors saved for the
   * backward pass share their buffers: no weight copies, and ~0.75× the activations (measured).
   */
  backend?: 'wasm' | 'cpu';
}

/** cpu training activations over wasm's (saved tensors are shared, not copied): 0.72-0.77 measured, docs/backends.md. */
const CPU_TRAINING_FACTOR = 0.75;

const ATTENTION_PROJ = /attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$/;
const FF = /ff\.net\.(0\.proj|2)\.weight$/;
const PROJ_IO = /attentions\.\d+\.proj_(in|out)\.weight$/;
const CONV3 = /(resnets\.\d+\.conv[12]|downsamplers\.0\.conv|upsamplers\.0\.conv)\.weight$/;
const TE_LORA = /(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))\.weight$/;

/** LoRA parameters: down [r, in] + up [out, r] per targeted linear/1x1 conv; [r, in·k·k] + [out, r] per 3x3 conv. */
function loraParams(configs: PipelineConfigs, job: TrainingJob): { shapes: number[][]; perAttention: number } {
  const shapes = paramShapes(configs);
  const r = job.rank ?? 4;
  const targets = job.targets ?? 'attention';
  const shapesOut: number[][] = [];
  const linear = (shape: readonly number[], rank: number) => {
    // Linear [out, in]; 1x1 conv HWIO [1, 1, in, out]
    const [out, inn] = shape.length === 2 ? [shape[0]!, shape[1]!] : [shape[3]!, shape[2]!];
    shapesOut.push([rank, inn], [out, rank]);
  };
  let perAttention = 4;
  for (const [name, shape] of shapes.unet) {
    let hit = false;
    if (Array.isArray(targets)) hit = (targets as readonly string[]).some((t) => name.endsWith(`${t}.weight`));
    else {
      hit = ATTENTION_PROJ.test(name);
      if (targets !== 'attention') hit ||= FF.test(name);
      if (targets === 'all') hit ||= PROJ_IO.test(name);
    }
    if (hit && (shape.length === 2 || (shape[0] === 1 && shape[1] === 1))) linear(shape, r);
    else if (targets === 'all' && job.convRank !== undefined && CONV3.test(name) && shape.length === 4) {
      const [kh, kw, inn, out] = shape as [number, number, number, number];
      shapesOut.push([job.convRank, inn * kh * kw], [out, job.convRank]);
    }
  }
  if (targets === 'attention+ff') perAttention = 4 + 2;
  if (targets === 'all') perAttention = 4 + 2 + 2;
  if (job.trainTextEncoder) for (const [name, shape] of shapes.text_encoder) if (TE_LORA.test(name)) linear(shape, r);
  return { shapes: shapesOut, perAttention };
}

/** Shapes of the trainable tensors of a method (their gradients and optimizer state are what training adds). */
function trainableShapes(job: TrainingJob): { shapes: Array<readonly number[]>; loraPerAttention: number; textEncoderGrad: boolean } {
  const { configs } = job;
  switch (job.method) {
    case 'embed':
      return { shapes: [[job.numVectors ?? 1, configs.text_encoder.hidden_size]], loraPerAttention: 0, textEncoderGrad: true };
    case 'hypernetwork': {
      const ls = job.layerStructure ?? [1, 2, 1];
      const dims = [...new Set([configs.unet.cross_attention_dim])];
      const shapes: number[][] = [];
      for (const d of dims) {
        for (let kv = 0; kv < 2; kv++) {
          for (let i = 0; i + 1 < ls.length; i++) {
            const a = Math.floor(d * ls[i]!);
            const b = Math.floor(d * ls[i + 1]!);
            shapes.push([b, a], [b]);
            if (job.layerNorm) shapes.push([b], [b]);
          }
        }
      }
      return { shapes, loraPerAttention: 0, textEncoderGrad: false };
    }
    case 'lora': {
      const l = loraParams(configs, job);
      return { shapes: l.shapes, loraPerAttention: l.perAttention, textEncoderGrad: job.trainTextEncoder ?? false };
    }
    case 'dreambooth': {
      const s = paramShapes(configs);
      const shapes = [...s.unet.values(), ...(job.trainTextEncoder ? [...s.text_encoder.values()] : [])];
      return { shapes, loraPerAttention: 0, textEncoderGrad: job.trainTextEncoder ?? false };
    }
  }
}

/** Optimizer slots in float32 elements for one trainable tensor. */
function optimizerElements(job: TrainingJob, shape: readonly number[]): number {
  const size = numel(shape);
  switch (job.optimizer) {
    case 'adamw':
      return 2 * size; // exp_avg, exp_avg_sq
    case 'lion':
      return size; // exp_avg
    case 'sgd':
      return (job.momentum ?? 0) > 0 ? size : 0;
    case 'adafactor':
      // factored second moment: a row and a column vector per matrix (conv kernels factor over their last two axes)
      return shape.length >= 2 ? size / shape[shape.length - 1]! + size / shape[shape.length - 2]! : size;
  }
}

function training(job: TrainingJob): MemoryEstimate {
  const { configs, batch } = job;
  const f = vaeScaleFactor(configs.vae);
  const lat = Math.ceil(job.resolution / f);
  const tokens = job.contextTokens ?? 77;
  const t = trainableShapes(job);
  const trainable = t.shapes.reduce((n, s) => n + numel(s), 0);
  const parts: Record<string, number> = { ...weightParts(configs) };
  // LoRA weights and hypernetwork modules live beside the model; dreambooth/embed train tensors that are the model's.
  if (job.method === 'lora' || job.method === 'hypernetwork') parts[`weights.${job.method}`] = trainable * F32;
  if (job.method === 'embed') parts['weights.embedding'] = trainable * F32;
  parts.gradients = trainable * F32 * ((job.gradientAccumulationSteps ?? 1) > 1 ? 2 : 1);
  parts['optimizer state'] = t.shapes.reduce((n, s) => n + optimizerElements(job, s), 0) * F32;
  if (job.method === 'dreambooth' && job.ema) parts['ema weights'] = paramCounts(configs).unet * F32;
  // On wasm every tensor the tape saves is a copy (its Identity kernel copies), the weights of each layer included.
  const cpu = job.backend === 'cpu';
  const w = componentWeightBytes(configs);
  if (!cpu) parts['saved weight copies'] = w.unet + (t.textEncoderGrad ? w.text_encoder : 0);

  const unet = unetActivations(configs.unet, {
    batch,
    h: lat,
    w: lat,
    contextTokens: tokens,
    attentionSliceSize: job.attentionSliceSize,
    loraLinearsPerAttention: t.loraPerAttention,
    training: { checkpointing: job.gradientCheckpointing ?? false },
  });
  // the text encoder's activations are kept for backward when it is on the gradient path
  // (taped: saved copies, plus the gradients when the text encoder is on the gradient path)
  const text = textEncoderActivations(configs.text_encoder, batch, tokens) * (t.textEncoderGrad ? 3 : 2);
  const phases: Record<string, number> = { 'training step': Math.round((unet + text) * F32 * (cpu ? CPU_TRAINING_FACTOR : 1)) };
  if (!job.latentsCached) phases.vae_encode = vaeEncodeActivations(configs.vae, batch, job.resolution, job.resolution) * F32;
  return finish(parts, phases);
}

/** Peak bytes of a training job (see the file comment for what is counted). */
export function trainingBytes(job: TrainingJob): number {
  return training(job).total;
}

export type JobSpec = ({ kind: 'sample' } & SamplingJob) | ({ kind: 'train' } & TrainingJob);

/** A job's estimated peak with its breakdown (for `useBackend(..., { estimatedBytes: e.total })` and the CLI). */
export function estimateJob(job: JobSpec): MemoryEstimate {
  return job.kind === 'sample' ? sampling(job) : training(job);
}
