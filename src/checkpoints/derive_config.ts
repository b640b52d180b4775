// The three diffusers configs of an original single-file checkpoint, read from its tensor names and shapes (what
// diffusers reads from the LDM YAML; the YAML is not in the file, the sizes are). What the weights cannot tell (the
// prediction type, GroupNorm group count, SD 1.x's head count) comes from the released models and is listed in
// `assumed` so callers can say so.
import { ConfigError, FormatError } from '../errors.js';
import type { AutoencoderKLConfig } from '../models/vae.js';
import type { CLIPTextConfig } from '../models/clip_text.js';
import { SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE, SD21_TEXT_ENCODER, type PredictionType } from '../models/presets.js';
import type { UNet2DConditionConfig, UNetDownBlockType, UNetUpBlockType } from '../models/unet.js';
import { PREFIX, type TextEncoderLayout } from './ldm_keys.js';
import type { PipelineConfigs } from './pipeline.js';

export type Family = 'sd1' | 'sd2' | 'sd1-inpainting' | 'sd2-inpainting';

export interface DerivedConfigs {
  configs: PipelineConfigs;
  family: Family;
  textLayout: TextEncoderLayout;
  /** Values not readable from the weights, with what was assumed ("prediction_type: epsilon (default) ..."). */
  assumed: string[];
}

export interface ConfigOverrides {
  unet?: Partial<UNet2DConditionConfig>;
  vae?: Partial<AutoencoderKLConfig>;
  text_encoder?: Partial<CLIPTextConfig>;
}

type Shapes = ReadonlyMap<string, readonly number[]>;

/** Indices N of keys `<prefix>N.` present. */
function indices(shapes: Shapes, prefix: string): number[] {
  const out = new Set<number>();
  for (const k of shapes.keys()) {
    if (!k.startsWith(prefix)) continue;
    const m = /^(\d+)\./.exec(k.slice(prefix.length));
    if (m) out.add(Number(m[1]));
  }
  return [...out].sort((a, b) => a - b);
}

function need(shapes: Shapes, file: string, key: string): readonly number[] {
  const s = shapes.get(key);
  if (!s) throw new FormatError(file, `no tensor '${key}': not a Stable Diffusion 1.x/2.x single-file checkpoint, or an unsupported variant`);
  return s;
}

export function deriveUNetConfig(shapes: Shapes, file: string, sd2: boolean, predictionType: PredictionType): UNet2DConditionConfig {
  const P = PREFIX.unet;
  const inChannels = need(shapes, file, `${P}input_blocks.0.0.weight`)[1]!;
  const inputs = indices(shapes, `${P}input_blocks.`);
  // Each level holds L resnets then one downsampler (`.0.op`); the last level has no downsampler.
  const firstDown = inputs.find((i) => shapes.has(`${P}input_blocks.${i}.0.op.weight`));
  const L = firstDown === undefined ? inputs.length - 1 : firstDown - 1;
  const levels = inputs.length / (L + 1);
  if (L < 1 || !Number.isInteger(levels)) {
    throw new FormatError(file, `U-Net input_blocks 0..${inputs.length - 1} do not form levels of ${L} resnets + a downsampler`);
  }
  const blockOut: number[] = [];
  const down: UNetDownBlockType[] = [];
  const up: UNetUpBlockType[] = [];
  for (let b = 0; b < levels; b++) {
    const first = b * (L + 1) + 1;
    blockOut.push(need(shapes, file, `${P}input_blocks.${first}.0.out_layers.3.weight`)[0]!);
    down.push(shapes.has(`${P}input_blocks.${first}.1.proj_in.weight`) ? 'CrossAttnDownBlock2D' : 'DownBlock2D');
    up.push(shapes.has(`${P}output_blocks.${b * (L + 1)}.1.proj_in.weight`) ? 'CrossAttnUpBlock2D' : 'UpBlock2D');
  }
  const attn = down.indexOf('CrossAttnDownBlock2D');
  const at = `${P}input_blocks.${attn * (L + 1) + 1}.1.`;
  const projIn = attn < 0 ? undefined : need(shapes, file, `${at}proj_in.weight`);
  const toK = attn < 0 ? undefined : need(shapes, file, `${at}transformer_blocks.0.attn2.to_k.weight`);
  return {
    ...SD15_UNET,
    in_channels: inChannels,
    out_channels: need(shapes, file, `${P}out.2.weight`)[0]!,
    down_block_types: down,
    up_block_types: up,
    block_out_channels: blockOut,
    layers_per_block: L,
    cross_attention_dim: toK?.[1] ?? SD15_UNET.cross_attention_dim,
    transformer_layers_per_block: attn < 0 ? 1 : Math.max(1, indices(shapes, `${at}transformer_blocks.`).length),
    // Heads, under diffusers' historical name. SD 1.x fixes 8 heads (`num_heads: 8`); SD 2.x fixes 64-channel heads
    // (`num_head_channels: 64`), so the count grows with the width of each level.
    attention_head_dim: sd2 ? blockOut.map((c) => Math.max(1, Math.floor(c / 64))) : 8,
    use_linear_projection: projIn?.length === 2,
    upcast_attention: sd2 && predictionType === 'v_prediction',
    // Latent size of the native resolution (768 px for the 768-v models, else 512 px; the VAE downsamples 8x).
    sample_size: sd2 && predictionType === 'v_prediction' ? 96 : 64,
  };
}

export function deriveVaeConfig(shapes: Shapes, file: string, prefix: string = PREFIX.vae, sampleSize = 512): AutoencoderKLConfig {
  const P = prefix;
  const levels = indices(shapes, `${P}encoder.down.`).length;
  if (levels === 0) throw new FormatError(file, `no VAE encoder tensors under '${P}encoder.down.'`);
  const L = indices(shapes, `${P}encoder.down.0.block.`).length;
  const blockOut = Array.from({ length: levels }, (_, i) => need(shapes, file, `${P}encoder.down.${i}.block.0.conv2.weight`)[0]!);
  return {
    ...SD15_VAE,
    in_channels: need(shapes, file, `${P}encoder.conv_in.weight`)[1]!,
    out_channels: need(shapes, file, `${P}decoder.conv_out.weight`)[0]!,
    down_block_types: blockOut.map(() => 'DownEncoderBlock2D' as const),
    up_block_types: blockOut.map(() => 'UpDecoderBlock2D' as const),
    block_out_channels: blockOut,
    layers_per_block: L,
    latent_channels: need(shapes, file, `${P}post_quant_conv.weight`)[0]!,
    sample_size: sampleSize,
  };
}

export function deriveTextEncoderConfig(shapes: Shapes, file: string, layout: TextEncoderLayout, heads?: number): CLIPTextConfig {
  const openclip = layout === 'openclip';
  const P = openclip ? PREFIX.openclip : `${PREFIX.clip}text_model.`;
  const [vocab, width] = need(shapes, file, `${P}${openclip ? 'token_embedding.weight' : 'embeddings.token_embedding.weight'}`) as [number, number];
  const positions = need(shapes, file, openclip ? `${P}positional_embedding` : `${P}embeddings.position_embedding.weight`)[0]!;
  const layers = indices(shapes, openclip ? `${P}transformer.resblocks.` : `${P}encoder.layers.`).length;
  const fc1 = need(shapes, file, openclip ? `${P}transformer.resblocks.0.mlp.c_fc.weight` : `${P}encoder.layers.0.mlp.fc1.weight`);
  // Every released CLIP text tower uses 64-channel heads (ViT-L 768/12, ViT-H 1024/16); the weights do not say.
  if (heads === undefined && width % 64 !== 0) {
    throw new ConfigError(
      `${file}: the text encoder is ${width} wide, not a multiple of 64, so its head count cannot be assumed: give text_encoder.num_attention_heads`,
    );
  }
  const base = openclip ? SD21_TEXT_ENCODER : SD15_TEXT_ENCODER;
  return {
    ...base,
    vocab_size: vocab,
    hidden_size: width,
    intermediate_size: fc1[0]!,
    // SD 2.x conditions on the penultimate block, so diffusers keeps one layer fewer than OpenCLIP has.
    num_hidden_layers: openclip ? layers - 1 : layers,
    num_attention_heads: heads ?? width / 64,
    max_position_embeddings: positions,
    projection_dim: openclip ? base.projection_dim : width,
  };
}

/** Which text encoder an original file holds, from its key prefix. */
export function textLayoutOf(shapes: Shapes, file: string): TextEncoderLayout {
  for (const k of shapes.keys()) {
    if (k.startsWith(PREFIX.openclip)) return 'openclip';
    if (k.startsWith(`${PREFIX.clip}text_model.`)) return 'clip';
  }
  throw new FormatError(file, `no text encoder (neither '${PREFIX.clip}text_model.*' nor '${PREFIX.openclip}*' keys)`);
}

export function deriveConfigs(
  shapes: Shapes,
  file: string,
  opts: { predictionType?: PredictionType; overrides?: ConfigOverrides } = {},
): DerivedConfigs {
  if (!shapes.has(`${PREFIX.unet}input_blocks.0.0.weight`)) {
    throw new FormatError(file, `not an original-layout Stable Diffusion checkpoint: no '${PREFIX.unet}*' U-Net tensors (a diffusers folder loads with loadDiffusersFolder)`);
  }
  const textLayout = textLayoutOf(shapes, file);
  const sd2 = textLayout === 'openclip';
  const assumed: string[] = [];
  const predictionType = opts.predictionType ?? 'epsilon';
  if (!opts.predictionType) {
    assumed.push(
      sd2
        ? "prediction_type: epsilon (the weights cannot tell SD 2.x 512-base from 768-v; set it to 'v_prediction' for 768-v models)"
        : 'prediction_type: epsilon (the weights do not say; SD 1.x models are epsilon)',
    );
  }
  const ov = opts.overrides ?? {};
  const unet = { ...deriveUNetConfig(shapes, file, sd2, predictionType), ...ov.unet };
  const vae = { ...deriveVaeConfig(shapes, file, PREFIX.vae, (unet.sample_size ?? 64) * 8), ...ov.vae };
  const text_encoder = { ...deriveTextEncoderConfig(shapes, file, textLayout, ov.text_encoder?.num_attention_heads), ...ov.text_encoder };
  if (!ov.unet?.norm_num_groups) assumed.push('norm_num_groups: 32 (GroupNorm groups are not stored)');
  const inpainting = unet.in_channels === 9;
  const family = `${sd2 ? 'sd2' : 'sd1'}${inpainting ? '-inpainting' : ''}` as Family;
  return { configs: { unet, vae, text_encoder }, family, textLayout, assumed };
}
