// The CLIP text encoder of Stable Diffusion, in transformers' `CLIPTextModel` layout (the diffusers `text_encoder/`
// folder and, under `cond_stage_model.transformer.`, the SD1 single file): SD 1.x uses OpenAI's ViT-L/14 text tower
// (768 wide, 12 layers, quick_gelu), SD 2.x OpenCLIP ViT-H/14 (1024 wide, exact gelu) stored by diffusers with 23 of
// its 24 layers, because SD2 conditions on the penultimate block.
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SdtrainError } from '../errors.js';
import { attention, causalMask, gelu, quickGelu } from '../nn/functional.js';
import { Embedding, LayerNorm, Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';

/** transformers' `CLIPTextConfig` (config.json keys) as far as the text model uses them. */
export interface CLIPTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: 'quick_gelu' | 'gelu';
  layer_norm_eps: number;
  /** Only used by CLIPTextModelWithProjection (not here); kept so a config round-trips. */
  projection_dim: number;
  bos_token_id: number;
  /** 2 in every real SD config: selects the legacy "argmax(input_ids)" pooling (see `pooledIndex`). */
  eos_token_id: number;
  pad_token_id: number;
}

/** transformers 4.36 `CLIPTextConfig.__init__` defaults. */
export const CLIP_TEXT_CONFIG_DEFAULTS: CLIPTextConfig = {
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  projection_dim: 512,
  bos_token_id: 49406,
  eos_token_id: 49407,
  pad_token_id: 1,
};

const INT_KEYS = [
  'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
  'max_position_embeddings', 'projection_dim', 'bos_token_id', 'eos_token_id', 'pad_token_id',
] as const;
const POSITIVE_KEYS = new Set<string>([
  'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
  'max_position_embeddings', 'projection_dim',
]);
const ACTIVATIONS = ['quick_gelu', 'gelu'] as const;

/**
 * A text_encoder `config.json` (already JSON-parsed) → a complete config: missing keys take transformers' defaults,
 * unknown keys (`architectures`, `dropout`, `torch_dtype`, ...) are ignored. A full `CLIPConfig` (`model_type: clip`)
 * is accepted through its `text_config`. `source` names the file in error messages.
 */
export function parseClipTextConfig(json: unknown, source = 'text_encoder/config.json'): CLIPTextConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ConfigError(`${source}: expected a JSON object, got ${json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json}`);
  }
  let obj = json as Record<string, unknown>;
  if (obj.hidden_size === undefined && obj.text_config && typeof obj.text_config === 'object') {
    obj = obj.text_config as Record<string, unknown>;
    source = `${source} (text_config)`;
  }
  const cfg: CLIPTextConfig = { ...CLIP_TEXT_CONFIG_DEFAULTS };
  for (const key of INT_KEYS) {
    const v = obj[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || (POSITIVE_KEYS.has(key) ? v < 1 : v < 0)) {
      throw new ConfigError(`${source}: '${key}' must be a ${POSITIVE_KEYS.has(key) ? 'positive' : 'non-negative'} integer, got ${JSON.stringify(v)}`);
    }
    cfg[key] = v;
  }
  if (obj.hidden_act !== undefined) {
    if (!(ACTIVATIONS as readonly unknown[]).includes(obj.hidden_act)) {
      throw new ConfigError(`${source}: 'hidden_act' must be one of ${ACTIVATIONS.map((a) => `'${a}'`).join(', ')} (SD1: quick_gelu, SD2: gelu), got ${JSON.stringify(obj.hidden_act)}`);
    }
    cfg.hidden_act = obj.hidden_act as CLIPTextConfig['hidden_act'];
  }
  if (obj.layer_norm_eps !== undefined) {
    const eps = obj.layer_norm_eps;
    if (typeof eps !== 'number' || !(eps > 0)) throw new ConfigError(`${source}: 'layer_norm_eps' must be a positive number, got ${JSON.stringify(eps)}`);
    cfg.layer_norm_eps = eps;
  }
  if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
    throw new ConfigError(`${source}: 'hidden_size' (${cfg.hidden_size}) must be divisible by 'num_attention_heads' (${cfg.num_attention_heads})`);
  }
  return cfg;
}

// Ported from transformers 4.36 (the fixtures' reference), src/transformers/models/clip/modeling_clip.py:
// https://github.com/huggingface/transformers/blob/815ea8e8a23a85482225d371f7218cacc3e99e5b/src/transformers/models/clip/modeling_clip.py
// (CLIPTextEmbeddings, CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPEncoder, CLIPTextTransformer, CLIPTextModel).
// Text path only: no vision tower, no attention_mask (SD pipelines pass none), no dropout (0 in every SD config).

export class CLIPTextEmbeddings extends Module {
  readonly token_embedding: Embedding;
  readonly position_embedding: Embedding;
  // transformers' `position_ids` is a buffer (arange), not a parameter: never declared here, ignored when loading.
  constructor(cfg: CLIPTextConfig) {
    super();
    this.token_embedding = new Embedding(cfg.vocab_size, cfg.hidden_size);
    this.position_embedding = new Embedding(cfg.max_position_embeddings, cfg.hidden_size);
  }

  /** Token embeddings plus positions 0..T-1. `tokenEmbeds` [B, T, C] replaces the table lookup (inputs_embeds). */
  forward(tokenEmbeds: tf.Tensor3D): tf.Tensor3D {
    const [, t, c] = tokenEmbeds.shape;
    const pos = this.position_embedding.weight.t.slice([0, 0], [t, c]); // [T, C]
    return tokenEmbeds.add(pos); // [B, T, C]
  }
}

export class CLIPAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(
    dim: number,
    readonly heads: number,
  ) {
    super();
    this.q_proj = new Linear(dim, dim);
    this.k_proj = new Linear(dim, dim);
    this.v_proj = new Linear(dim, dim);
    this.out_proj = new Linear(dim, dim);
  }

  forward(x: tf.Tensor3D, mask: tf.Tensor): tf.Tensor3D {
    // q is scaled by head_dim^-0.5 before Q·Kᵀ (attention()'s default), as CLIPAttention does
    const h = attention(this.q_proj.forward(x), this.k_proj.forward(x), this.v_proj.forward(x), this.heads, { mask }); // [B, T, C]
    return this.out_proj.forward(h);
  }
}

export class CLIPMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(
    dim: number,
    hidden: number,
    readonly act: CLIPTextConfig['hidden_act'],
  ) {
    super();
    this.fc1 = new Linear(dim, hidden);
    this.fc2 = new Linear(hidden, dim);
  }

  forward(x: tf.Tensor3D): tf.Tensor3D {
    const h = this.fc1.forward(x); // [B, T, intermediate]
    // quick_gelu (x·σ(1.702x)) is OpenAI CLIP's (SD1); OpenCLIP ViT-H (SD2) uses the exact erf GELU
    return this.fc2.forward(this.act === 'quick_gelu' ? quickGelu(h) : gelu(h));
  }
}

/** Pre-LN block: x += attn(LN1(x)); x += mlp(LN2(x)). */
export class CLIPEncoderLayer extends Module {
  readonly self_attn: CLIPAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: CLIPMLP;
  readonly layer_norm2: LayerNorm;
  constructor(cfg: CLIPTextConfig) {
    super();
    this.self_attn = new CLIPAttention(cfg.hidden_size, cfg.num_attention_heads);
    this.layer_norm1 = new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps);
    this.mlp = new CLIPMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act);
    this.layer_norm2 = new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps);
  }

  forward(x: tf.Tensor3D, mask: tf.Tensor): tf.Tensor3D {
    const h = x.add(this.self_attn.forward(this.layer_norm1.forward(x), mask)) as tf.Tensor3D; // [B, T, C]
    return h.add(this.mlp.forward(this.layer_norm2.forward(h)));
  }
}

export class CLIPEncoder extends Module {
  readonly layers: CLIPEncoderLayer[];
  constructor(cfg: CLIPTextConfig) {
    super();
    this.layers = Array.from({ length: cfg.num_hidden_layers }, () => new CLIPEncoderLayer(cfg));
  }
}

export class CLIPTextTransformer extends Module {
  readonly embeddings: CLIPTextEmbeddings;
  readonly encoder: CLIPEncoder;
  readonly final_layer_norm: LayerNorm;
  constructor(cfg: CLIPTextConfig) {
    super();
    this.embeddings = new CLIPTextEmbeddings(cfg);
    this.encoder = new CLIPEncoder(cfg);
    this.final_layer_norm = new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps);
  }
}

export interface CLIPTextForwardOptions {
  /**
   * A1111's "CLIP skip" N >= 1 (default 1): condition on `final_layer_norm(hidden_states[-N])`. 1 is transformers'
   * `last_hidden_state`; 2 is A1111 "CLIP skip: 2" == diffusers `encode_prompt(clip_skip=1)`. The layers after
   * hidden_states[-N] are not run.
   */
  clipSkip?: number;
  /**
   * Token embeddings [B, T, C] to use instead of looking `inputIds` up in the table (transformers' `inputs_embeds`;
   * positions are still added). Textual inversion substitutes its rows here. `inputIds` still decides the pooled row.
   */
  inputsEmbeds?: tf.Tensor3D;
  /** Also return `hiddenStates` (transformers' `output_hidden_states=True`). */
  outputHiddenStates?: boolean;
}

// A type alias, not an interface, so that `tf.tidy(() => model.forward(...))` type-checks (tidy wants an index signature).
export type CLIPTextOutput = {
  /** `final_layer_norm(hidden_states[-clipSkip])` [B, T, C]: with the default clipSkip 1, transformers' last_hidden_state. */
  lastHiddenState: tf.Tensor3D;
  /** `lastHiddenState` at the pooled position of each row [B, C] (see `CLIPTextModel.pooledIndex`). */
  pooledOutput: tf.Tensor2D;
  /**
   * [0] = embedding output, [i] = output of encoder layer i (no final layer norm), as transformers' hidden_states;
   * with clipSkip N > 1 it stops at the last layer run, so its length is num_hidden_layers + 2 - N.
   */
  hiddenStates?: tf.Tensor3D[];
};

export class CLIPTextModel extends Module {
  readonly text_model: CLIPTextTransformer;
  constructor(readonly config: CLIPTextConfig) {
    super();
    this.text_model = new CLIPTextTransformer(config);
  }

  /** The token-embedding lookup alone (no positions) [B, T, C]: what `inputsEmbeds` replaces. */
  embed(inputIds: tf.Tensor2D): tf.Tensor3D {
    return this.text_model.embeddings.token_embedding.forward(inputIds) as tf.Tensor3D; // [B, T, C]
  }

  /**
   * The row each sequence is pooled at [B] (int32). With `eos_token_id == 2` (every real SD config: transformers'
   * legacy path) it is argmax(input_ids), the FIRST position of the largest id: with SD1 padding (pad = eos = 49407)
   * the first EOS, and a textual-inversion id above 49407 takes it over. Otherwise the first position equal to
   * eos_token_id (0 if there is none, as torch's argmax of all-false).
   */
  pooledIndex(inputIds: tf.Tensor2D): tf.Tensor1D {
    const [, t] = inputIds.shape;
    const ids = inputIds.toInt();
    const hit =
      this.config.eos_token_id === 2 ? ids.equal(ids.max(1, true)) : ids.equal(tf.scalar(this.config.eos_token_id, 'int32')); // [B, T]
    // Score hits T + (T-1-j), misses T-1-j: the maximum is unique and is the first hit (or 0 without one), so the
    // result never depends on how a backend's argMax breaks ties.
    const rank = tf.range(t - 1, -1, -1, 'float32'); // [T]: T-1 ... 0
    const score = hit.cast('float32').mul(t).add(rank); // [B, T]
    return score.argMax(1) as tf.Tensor1D; // [B]
  }

  forward(inputIds: tf.Tensor2D, opts: CLIPTextForwardOptions = {}): CLIPTextOutput {
    const { num_hidden_layers: layers, max_position_embeddings: maxPos, hidden_size: c } = this.config;
    const [b, t] = inputIds.shape;
    if (t > maxPos) throw new SdtrainError(`CLIP text encoder: sequence length ${t} exceeds max_position_embeddings ${maxPos}`);
    const clipSkip = opts.clipSkip ?? 1;
    if (!Number.isInteger(clipSkip) || clipSkip < 1 || clipSkip > layers) {
      throw new ConfigError(`clip skip must be an integer from 1 to ${layers} (the number of text encoder layers), got ${clipSkip}`);
    }
    const tokens = opts.inputsEmbeds ?? this.embed(inputIds); // [B, T, C]
    const ts = tokens.shape;
    if (ts[0] !== b || ts[1] !== t || ts[2] !== c) {
      throw new Error(`inputsEmbeds has shape [${ts.join(', ')}], expected [${b}, ${t}, ${c}] to match inputIds`);
    }
    const tm = this.text_model;
    let x = tm.embeddings.forward(tokens); // [B, T, C]
    const hiddenStates = [x];
    // Causal: token i attends to j <= i only. Padding is NOT masked (SD pipelines pass attention_mask=None).
    const mask = causalMask(t); // [T, T], broadcast over batch and heads
    // hidden_states[-N] is the output of layer L + 1 - N: run that many layers
    for (const layer of tm.encoder.layers.slice(0, layers + 1 - clipSkip)) {
      x = layer.forward(x, mask);
      hiddenStates.push(x);
    }
    const lastHiddenState = tm.final_layer_norm.forward(x); // [B, T, C]
    const pick = tf.oneHot(this.pooledIndex(inputIds), t).cast('float32').expandDims(2); // [B, T, 1]
    // A one-hot weighted sum is an exact row selection, and its gradient needs no scatter kernel.
    const pooledOutput = lastHiddenState.mul(pick).sum(1) as tf.Tensor2D; // [B, C]
    return { lastHiddenState, pooledOutput, ...(opts.outputHiddenStates ? { hiddenStates } : {}) };
  }
}
