// The one key-translation table in sdtrain: diffusers/transformers names (our module paths) ↔ the original
// CompVis/Stability single-file layout. Everything else loads by walking `namedParams`, so this file is the only
// place that knows `input_blocks.4.0.in_layers.2`. The renames are data (tables below); the few rules that need
// arithmetic (U-Net block indices, reversed VAE decoder, SD2 q|k|v rows) take the sizes from the config, so the same
// code serves SD 1.x/2.x and the 3-level tiny fixture. Checked per key against the manifests'
// `mapping_diffusers_to_original` (test/checkpoints/ldm_keys.test.ts).
//
// Upstream: diffusers `convert_ldm_unet_checkpoint` / `convert_ldm_vae_checkpoint` / `convert_open_clip_checkpoint`
// (pipelines/stable_diffusion/convert_from_ckpt.py @ v0.25.0) and `scripts/convert_diffusers_to_original_stable_diffusion.py`.

/** How a diffusers tensor is stored in the original file. */
export type KeyOp =
  /** Same values, same shape (the loader's rank-4 OIHW→HWIO rule still applies). */
  | { key: string; op: 'rename' }
  /** VAE attention: diffusers Linear [out, in] ↔ original 1x1 Conv2d [out, in, 1, 1]. */
  | { key: string; op: 'reshape' }
  /** SD2 text encoder: q/k/v are row blocks `part` of `parts` of OpenCLIP's fused `in_proj_weight`/`in_proj_bias`. */
  | { key: string; op: 'slice_rows'; part: number; parts: number };

/** Key prefixes of the components in an original single file. */
export const PREFIX = {
  unet: 'model.diffusion_model.',
  vae: 'first_stage_model.',
  /** SD 1.x: OpenAI CLIP ViT-L/14 through transformers, so the rest of the key is the transformers key. */
  clip: 'cond_stage_model.transformer.',
  /** SD 2.x: OpenCLIP ViT-H/14 text tower, OpenCLIP's own names. */
  openclip: 'cond_stage_model.model.',
} as const;

/** The sizes the index arithmetic needs; the real config objects satisfy these structurally. */
export interface UNetKeyConfig {
  layers_per_block: number;
  up_block_types: readonly string[];
}
export interface VaeKeyConfig {
  block_out_channels: readonly number[];
}
export type TextEncoderLayout = 'clip' | 'openclip';

// ---------------------------------------------------------------------------------------------------------------
// Tables (diffusers name → original name). A key matches an entry when it equals it or continues with '.'.

/** U-Net modules outside the down/mid/up blocks. */
const UNET_TOP: Record<string, string> = {
  conv_in: 'input_blocks.0.0',
  'time_embedding.linear_1': 'time_embed.0',
  'time_embedding.linear_2': 'time_embed.2',
  conv_norm_out: 'out.0',
  conv_out: 'out.2',
};

/** diffusers ResnetBlock2D ↔ LDM ResBlock (its `in_layers`/`out_layers` are Sequentials: norm, SiLU, conv). */
const UNET_RESNET: Record<string, string> = {
  norm1: 'in_layers.0',
  conv1: 'in_layers.2',
  time_emb_proj: 'emb_layers.1',
  norm2: 'out_layers.0',
  conv2: 'out_layers.3',
  conv_shortcut: 'skip_connection',
};
// Inside U-Net attention blocks (Transformer2DModel ↔ SpatialTransformer) the names are identical.

/** VAE resnets: only the shortcut is renamed. */
const VAE_RESNET: Record<string, string> = {
  norm1: 'norm1',
  conv1: 'conv1',
  norm2: 'norm2',
  conv2: 'conv2',
  conv_shortcut: 'nin_shortcut',
};

/** VAE mid-block attention: diffusers Attention ↔ LDM AttnBlock (1x1 convs q, k, v, proj_out). */
const VAE_ATTENTION: Record<string, string> = {
  group_norm: 'norm',
  to_q: 'q',
  to_k: 'k',
  to_v: 'v',
  'to_out.0': 'proj_out',
};

/**
 * diffusers VAE attention names before 0.15 (`AttentionBlock`), still found in many VAE files on the hub. Why a
 * rename and not an error: the tensors are the same Linear weights, only the module was renamed upstream.
 */
export const OLD_VAE_ATTENTION: Record<string, string> = {
  to_q: 'query',
  to_k: 'key',
  to_v: 'value',
  'to_out.0': 'proj_attn',
};

/** `…mid_block.attentions.0.to_q.weight` → `…mid_block.attentions.0.query.weight` (OLD_VAE_ATTENTION); else undefined. */
export function oldVaeAttentionKey(key: string): string | undefined {
  const m = /^(.*mid_block\.attentions\.0\.)(to_q|to_k|to_v|to_out\.0)(\.(?:weight|bias))$/.exec(key);
  return m ? `${m[1]}${OLD_VAE_ATTENTION[m[2]!]}${m[3]}` : undefined;
}

/** Encoder/decoder modules with the same name in both layouts. */
const VAE_SAME = ['conv_in', 'conv_out'];
const VAE_RENAMED: Record<string, string> = { conv_norm_out: 'norm_out' };
const VAE_TOP_SAME = ['quant_conv', 'post_quant_conv'];

/** transformers CLIPEncoderLayer ↔ OpenCLIP ResidualAttentionBlock. */
const OPENCLIP_LAYER: Record<string, string> = {
  layer_norm1: 'ln_1',
  layer_norm2: 'ln_2',
  'self_attn.out_proj': 'attn.out_proj',
  'mlp.fc1': 'mlp.c_fc',
  'mlp.fc2': 'mlp.c_proj',
};
/** Rows of OpenCLIP's fused in_proj (nn.MultiheadAttention): q | k | v. */
const OPENCLIP_QKV: Record<string, number> = { q_proj: 0, k_proj: 1, v_proj: 2 };
const OPENCLIP_TOP: Record<string, string> = {
  // OpenCLIP stores the positional embedding as a bare nn.Parameter, hence no `.weight`.
  'text_model.embeddings.position_embedding.weight': 'positional_embedding',
  'text_model.embeddings.token_embedding': 'token_embedding',
  'text_model.final_layer_norm': 'ln_final',
};

/** Rewrites the leading module path of `key` through `table`; undefined when no entry matches. */
function viaTable(key: string, table: Record<string, string>): string | undefined {
  for (const [from, to] of Object.entries(table)) {
    if (key === from) return to;
    if (key.startsWith(`${from}.`)) return to + key.slice(from.length);
  }
  return undefined;
}

const rename = (key: string | undefined): KeyOp | undefined => (key === undefined ? undefined : { key, op: 'rename' });

// ---------------------------------------------------------------------------------------------------------------
// Rules

/**
 * U-Net key → original key (without the `model.diffusion_model.` prefix). LDM numbers its blocks flat:
 * `input_blocks.0` is conv_in, then each level has L resnets (+ their attention at `.1`) and one downsampler;
 * `output_blocks` have L+1 resnets per level and the upsampler sits after the attention when there is one.
 */
export function unetToOriginal(key: string, cfg: UNetKeyConfig): KeyOp | undefined {
  const L = cfg.layers_per_block;
  const top = viaTable(key, UNET_TOP);
  if (top) return rename(top);
  let m = /^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(key);
  if (m) {
    const i = Number(m[1]) * (L + 1) + Number(m[3]) + 1;
    return rename(m[2] === 'resnets' ? resnet(`input_blocks.${i}.0`, m[4]!) : `input_blocks.${i}.1.${m[4]}`);
  }
  m = /^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/.exec(key);
  if (m) return rename(`input_blocks.${(Number(m[1]) + 1) * (L + 1)}.0.op.${m[2]}`);
  m = /^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(key);
  if (m) {
    // middle_block = [ResBlock, SpatialTransformer, ResBlock]
    if (m[1] === 'attentions') return m[2] === '0' ? rename(`middle_block.1.${m[3]}`) : undefined;
    return m[2] === '0' || m[2] === '1' ? rename(resnet(`middle_block.${Number(m[2]) * 2}`, m[3]!)) : undefined;
  }
  m = /^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(key);
  if (m) {
    const i = Number(m[1]) * (L + 1) + Number(m[3]);
    return rename(m[2] === 'resnets' ? resnet(`output_blocks.${i}.0`, m[4]!) : `output_blocks.${i}.1.${m[4]}`);
  }
  m = /^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/.exec(key);
  if (m) {
    const b = Number(m[1]);
    const hasAttention = (cfg.up_block_types[b] ?? '').startsWith('CrossAttn');
    return rename(`output_blocks.${b * (L + 1) + L}.${hasAttention ? 2 : 1}.conv.${m[2]}`);
  }
  return undefined;
}

function resnet(at: string, rest: string): string | undefined {
  const r = viaTable(rest, UNET_RESNET);
  return r === undefined ? undefined : `${at}.${r}`;
}

/** VAE key → original key (without `first_stage_model.`). The decoder's up blocks are numbered from the bottom. */
export function vaeToOriginal(key: string, cfg: VaeKeyConfig): KeyOp | undefined {
  const levels = cfg.block_out_channels.length;
  for (const k of VAE_TOP_SAME) if (key.startsWith(`${k}.`)) return rename(key);
  const m = /^(encoder|decoder)\.(.+)$/.exec(key);
  if (!m) return undefined;
  const [, coder, rest] = m as unknown as [string, string, string];
  const to = (s: string | undefined) => rename(s === undefined ? undefined : `${coder}.${s}`);
  if (VAE_SAME.some((k) => rest.startsWith(`${k}.`))) return to(rest);
  const renamed = viaTable(rest, VAE_RENAMED);
  if (renamed) return to(renamed);
  let r = /^(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(rest);
  if (r) {
    const part = viaTable(r[4]!, VAE_RESNET);
    return to(part && `${r[1]}.${level(r[1]!, Number(r[2]), levels)}.block.${r[3]}.${part}`);
  }
  r = /^(down|up)_blocks\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(.+)$/.exec(rest);
  if (r) return to(`${r[1]}.${level(r[1]!, Number(r[2]), levels)}.${r[1]}sample.conv.${r[4]}`);
  r = /^mid_block\.resnets\.(\d+)\.(.+)$/.exec(rest);
  if (r) {
    const part = viaTable(r[2]!, VAE_RESNET);
    return to(part && `mid.block_${Number(r[1]) + 1}.${part}`);
  }
  r = /^mid_block\.attentions\.0\.(.+)$/.exec(rest);
  if (r) {
    const part = viaTable(r[1]!, VAE_ATTENTION);
    if (part === undefined) return undefined;
    // q/k/v/proj_out are 1x1 convs in LDM, Linear layers in diffusers: [out, in, 1, 1] ↔ [out, in].
    const op = part !== 'norm.weight' && part.endsWith('.weight') ? 'reshape' : 'rename';
    return { key: `${coder}.mid.attn_1.${part}`, op };
  }
  return undefined;
}

/** diffusers' decoder.up_blocks.0 is the lowest resolution; LDM's decoder.up.0 is the highest. */
const level = (dir: string, i: number, levels: number): number => (dir === 'up' ? levels - 1 - i : i);

/** Text-encoder key (transformers CLIPTextModel) → original key, without the component prefix. */
export function textEncoderToOriginal(key: string, layout: TextEncoderLayout): KeyOp | undefined {
  if (layout === 'clip') return key.startsWith('text_model.') ? rename(key) : undefined;
  const top = viaTable(key, OPENCLIP_TOP);
  if (top) return rename(top);
  const m = /^text_model\.encoder\.layers\.(\d+)\.(.+)$/.exec(key);
  if (!m) return undefined;
  const block = `transformer.resblocks.${m[1]}`;
  const qkv = /^self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)$/.exec(m[2]!);
  if (qkv) return { key: `${block}.attn.in_proj_${qkv[2]}`, op: 'slice_rows', part: OPENCLIP_QKV[qkv[1]!]!, parts: 3 };
  const part = viaTable(m[2]!, OPENCLIP_LAYER);
  return rename(part && `${block}.${part}`);
}

/**
 * Which text-encoder layout a config belongs to. Why the activation: OpenCLIP ViT-H (SD 2.x) uses exact GELU and
 * OpenAI CLIP ViT-L (SD 1.x) QuickGELU; it is the one config field that differs by family rather than by size.
 */
export function textEncoderLayoutOf(cfg: { hidden_act?: string }): TextEncoderLayout {
  return cfg.hidden_act === 'gelu' ? 'openclip' : 'clip';
}

// ---------------------------------------------------------------------------------------------------------------
// Original-only keys: a reader skips them, a writer may synthesise them.

/** DDPM schedule buffers LatentDiffusion registers ([1000] float32 each); the converters ignore them. */
export const SCHEDULE_BUFFERS = [
  'betas',
  'alphas_cumprod',
  'alphas_cumprod_prev',
  'sqrt_alphas_cumprod',
  'sqrt_one_minus_alphas_cumprod',
  'log_one_minus_alphas_cumprod',
  'sqrt_recip_alphas_cumprod',
  'sqrt_recipm1_alphas_cumprod',
  'posterior_variance',
  'posterior_log_variance_clipped',
  'posterior_mean_coef1',
  'posterior_mean_coef2',
] as const;

const SCHEDULE_SET = new Set<string>(SCHEDULE_BUFFERS);

/**
 * The schedule buffers as LatentDiffusion.register_schedule computes them (float64, stored float32): LDM's "linear"
 * schedule is linear in sqrt(beta), i.e. diffusers' scaled_linear; v_posterior = 0.
 */
export function scheduleBuffers(betaStart: number, betaEnd: number, steps: number): Record<(typeof SCHEDULE_BUFFERS)[number], Float32Array> {
  const a = Math.sqrt(betaStart);
  const b = Math.sqrt(betaEnd);
  const betas = Array.from({ length: steps }, (_, i) => (a + ((b - a) * i) / Math.max(steps - 1, 1)) ** 2);
  const cum: number[] = [];
  betas.forEach((beta, i) => cum.push((i === 0 ? 1 : cum[i - 1]!) * (1 - beta)));
  const prev = cum.map((_, i) => (i === 0 ? 1 : cum[i - 1]!));
  const f = (g: (i: number) => number) => Float32Array.from(betas, (_, i) => g(i));
  const variance = (i: number) => (betas[i]! * (1 - prev[i]!)) / (1 - cum[i]!);
  return {
    betas: f((i) => betas[i]!),
    alphas_cumprod: f((i) => cum[i]!),
    alphas_cumprod_prev: f((i) => prev[i]!),
    sqrt_alphas_cumprod: f((i) => Math.sqrt(cum[i]!)),
    sqrt_one_minus_alphas_cumprod: f((i) => Math.sqrt(1 - cum[i]!)),
    log_one_minus_alphas_cumprod: f((i) => Math.log(1 - cum[i]!)),
    sqrt_recip_alphas_cumprod: f((i) => Math.sqrt(1 / cum[i]!)),
    sqrt_recipm1_alphas_cumprod: f((i) => Math.sqrt(1 / cum[i]! - 1)),
    posterior_variance: f(variance),
    posterior_log_variance_clipped: f((i) => Math.log(Math.max(variance(i), 1e-20))),
    posterior_mean_coef1: f((i) => (betas[i]! * Math.sqrt(prev[i]!)) / (1 - cum[i]!)),
    posterior_mean_coef2: f((i) => ((1 - prev[i]!) * Math.sqrt(1 - betas[i]!)) / (1 - cum[i]!)),
  };
}

/**
 * Keys of an original single file that hold no diffusers weight: schedule buffers, EMA shadows (`model_ema.*`,
 * including `decay`/`num_updates`), the `position_ids` buffer older transformers saved, and for SD 2.x OpenCLIP's
 * last block, `text_projection` and `logit_scale`, which SD 2.x never runs (it takes the penultimate layer) and
 * diffusers drops. `textLayers` is the diffusers text encoder's layer count (23 for SD 2.x).
 */
export function isOriginalOnlyKey(key: string, textLayers: number): boolean {
  if (SCHEDULE_SET.has(key) || key.startsWith('model_ema.')) return true;
  if (/^cond_stage_model\.transformer\.(text_model\.)?embeddings\.position_ids$/.test(key)) return true;
  if (key === `${PREFIX.openclip}text_projection` || key === `${PREFIX.openclip}logit_scale`) return true;
  const m = /^cond_stage_model\.model\.transformer\.resblocks\.(\d+)\./.exec(key);
  return m !== null && Number(m[1]) >= textLayers;
}

/** What a synthesised original-only tensor holds. */
export type Fill = 'zeros' | 'ones' | 'identity' | { constant: number };

/**
 * The SD 2.x text-encoder tensors diffusers drops, as the writer recreates them so that strict LDM loaders accept the
 * file. Their values never reach an image (SD 2.x stops at the penultimate block), so the extra block is an identity
 * residual block (zero projections, unit LayerNorms), `text_projection` the identity, and `logit_scale` CLIP's
 * initial ln(1/0.07).
 */
export function openClipExtras(cfg: { hidden_size: number; intermediate_size: number; num_hidden_layers: number }): Array<{
  key: string;
  shape: number[];
  fill: Fill;
}> {
  const w = cfg.hidden_size;
  const b = `${PREFIX.openclip}transformer.resblocks.${cfg.num_hidden_layers}`;
  return [
    { key: `${b}.ln_1.weight`, shape: [w], fill: 'ones' },
    { key: `${b}.ln_1.bias`, shape: [w], fill: 'zeros' },
    { key: `${b}.attn.in_proj_weight`, shape: [3 * w, w], fill: 'zeros' },
    { key: `${b}.attn.in_proj_bias`, shape: [3 * w], fill: 'zeros' },
    { key: `${b}.attn.out_proj.weight`, shape: [w, w], fill: 'zeros' },
    { key: `${b}.attn.out_proj.bias`, shape: [w], fill: 'zeros' },
    { key: `${b}.ln_2.weight`, shape: [w], fill: 'ones' },
    { key: `${b}.ln_2.bias`, shape: [w], fill: 'zeros' },
    { key: `${b}.mlp.c_fc.weight`, shape: [cfg.intermediate_size, w], fill: 'zeros' },
    { key: `${b}.mlp.c_fc.bias`, shape: [cfg.intermediate_size], fill: 'zeros' },
    { key: `${b}.mlp.c_proj.weight`, shape: [w, cfg.intermediate_size], fill: 'zeros' },
    { key: `${b}.mlp.c_proj.bias`, shape: [w], fill: 'zeros' },
    { key: `${PREFIX.openclip}text_projection`, shape: [w, w], fill: 'identity' },
    { key: `${PREFIX.openclip}logit_scale`, shape: [], fill: { constant: Math.log(1 / 0.07) } },
  ];
}

/** The tensor a Fill describes. */
export function fillTensor(shape: readonly number[], fill: Fill): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  if (fill === 'ones') out.fill(1);
  else if (fill === 'identity') for (let i = 0; i < shape[0]!; i++) out[i * shape[1]! + i] = 1;
  else if (typeof fill === 'object') out.fill(fill.constant);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Per-component view: prefix + rule, what the loader and writer use.

export type ComponentName = 'unet' | 'vae' | 'text_encoder';

export interface ComponentKeys {
  /** The component's keys in the original file start with this. */
  prefix: string;
  /** diffusers key → full original key (prefix included) and op. */
  map(key: string): KeyOp | undefined;
}

export function componentKeys(
  component: ComponentName,
  cfg: UNetKeyConfig | VaeKeyConfig | TextEncoderLayout,
): ComponentKeys {
  const withPrefix = (prefix: string, f: (k: string) => KeyOp | undefined): ComponentKeys => ({
    prefix,
    map: (k) => {
      const r = f(k);
      return r && { ...r, key: prefix + r.key };
    },
  });
  if (component === 'unet') return withPrefix(PREFIX.unet, (k) => unetToOriginal(k, cfg as UNetKeyConfig));
  if (component === 'vae') return withPrefix(PREFIX.vae, (k) => vaeToOriginal(k, cfg as VaeKeyConfig));
  const layout = cfg as TextEncoderLayout;
  return withPrefix(PREFIX[layout], (k) => textEncoderToOriginal(k, layout));
}
