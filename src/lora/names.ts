// LoRA module names. kohya names a module `lora_unet_` / `lora_te_` + its diffusers/transformers module path with every
// '.' replaced by '_'. Module names contain '_' themselves, so a name cannot be split back: the map is built forward,
// from our own modules (as A1111 does), and files are looked up in it. Also here: A1111's compvis names
// (`convert_diffusers_name_to_compvis`) and the dotted LDM single-file module paths.
import { PREFIX, textEncoderLayoutOf, textEncoderToOriginal, unetToOriginal } from '../checkpoints/ldm_keys.js';
import { Transformer2DModel } from '../models/attention.js';
import { CLIPAttention, CLIPMLP, type CLIPTextModel } from '../models/clip_text.js';
import { Downsample2D, ResnetBlock2D, Upsample2D } from '../models/resnet.js';
import type { UNet2DConditionModel } from '../models/unet.js';
import { Conv2d, Linear } from '../nn/layers.js';
import { Module, type Param } from '../nn/module.js';

export type LoraComponent = 'unet' | 'text_encoder';
export type LoraKind = 'linear' | 'conv';

/**
 * Which kohya `networks.lora` option targets a module:
 * - `lora`: the default targets (Linear/Conv2d inside Transformer2DModel; CLIPAttention and CLIPMLP in the text encoder);
 * - `locon`: added by `conv_dim` (Linear/Conv2d inside ResnetBlock2D, Downsample2D, Upsample2D);
 * - `extra`: never targeted by kohya (conv_in, conv_out, time_embedding), but LyCORIS and others write them.
 */
export type LoraGroup = 'lora' | 'locon' | 'extra';

/** The two models a LoRA touches (a Pipeline satisfies this). */
export interface LoraModels {
  unet: UNet2DConditionModel;
  textEncoder: CLIPTextModel;
}

export interface LoraTarget {
  /** kohya name, e.g. `lora_unet_down_blocks_0_attentions_0_proj_in`. */
  name: string;
  component: LoraComponent;
  /** Our (= diffusers/transformers) module path inside the component, e.g. `down_blocks.0.attentions.0.proj_in`. */
  path: string;
  kind: LoraKind;
  group: LoraGroup;
  layer: Linear | Conv2d;
  /** The weight the LoRA changes: Linear [out, in], Conv2d HWIO [kh, kw, in, out]. */
  weight: Param;
  inFeatures: number;
  outFeatures: number;
  /** 1 for Linear. */
  kernelSize: number;
}

export type LoraTargetMap = Map<string, LoraTarget>;

const COMPONENT_PREFIX: Record<LoraComponent, string> = { unet: 'lora_unet_', text_encoder: 'lora_te_' };

/** kohya name of a module: `lora_unet_` / `lora_te_` + path with '.' → '_'. */
export function kohyaName(component: LoraComponent, path: string): string {
  return COMPONENT_PREFIX[component] + path.replaceAll('.', '_');
}

function groupOf(node: Module, component: LoraComponent): LoraGroup | undefined {
  if (component === 'text_encoder') return node instanceof CLIPAttention || node instanceof CLIPMLP ? 'lora' : undefined;
  if (node instanceof Transformer2DModel) return 'lora';
  if (node instanceof ResnetBlock2D || node instanceof Downsample2D || node instanceof Upsample2D) return 'locon';
  return undefined;
}

function walk(node: unknown, path: string, component: LoraComponent, group: LoraGroup | undefined, out: LoraTargetMap): void {
  const at = (key: string | number) => (path ? `${path}.${key}` : String(key));
  if (node instanceof Linear || node instanceof Conv2d) {
    const linear = node instanceof Linear;
    const name = kohyaName(component, path);
    out.set(name, {
      name,
      component,
      path,
      kind: linear ? 'linear' : 'conv',
      // The text encoder has no Linear outside CLIPAttention/CLIPMLP; the U-Net has a few (time embedding).
      group: group ?? 'extra',
      layer: node,
      weight: node.weight,
      inFeatures: linear ? node.inFeatures : node.inChannels,
      outFeatures: linear ? node.outFeatures : node.outChannels,
      kernelSize: linear ? 1 : node.kernelSize,
    });
  } else if (Array.isArray(node)) {
    node.forEach((child, i) => walk(child, at(i), component, group, out));
  } else if (node instanceof Module) {
    const g = groupOf(node, component) ?? group;
    for (const [key, child] of Object.entries(node)) walk(child, at(key), component, g, out);
  }
}

/**
 * Every Linear/Conv2d of the U-Net and text encoder, by kohya name. Works on shape-only skeletons (no weights needed).
 * Filter by `group` for what kohya would train: `lora` alone, or `lora` + `locon` with conv_dim.
 */
export function loraTargets(models: LoraModels): LoraTargetMap {
  const out: LoraTargetMap = new Map();
  walk(models.textEncoder, '', 'text_encoder', undefined, out);
  walk(models.unet, '', 'unet', undefined, out);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// A1111

const RESNET_SUFFIX: Record<string, string> = {
  conv1: 'in_layers_2',
  conv2: 'out_layers_3',
  norm1: 'in_layers_0',
  norm2: 'out_layers_0',
  time_emb_proj: 'emb_layers_1',
  conv_shortcut: 'skip_connection',
};

/**
 * A1111's `convert_diffusers_name_to_compvis` (extensions-builtin/Lora/lora_convert.py), verbatim in behaviour: the
 * compvis module name with '_' (e.g. `diffusion_model_input_blocks_1_1_proj_in`), or the name unchanged when no rule
 * matches. Its block arithmetic is SD's (3 entries per level); `ldmModuleName` derives it from the config instead.
 */
export function a1111Name(name: string, isSd2 = false): string {
  let m: RegExpExecArray | null;
  const n = (s: string | undefined) => Number(s);
  if ((m = /^lora_unet_conv_in(.*)/.exec(name))) return `diffusion_model_input_blocks_0_0${m[1]}`;
  if ((m = /^lora_unet_conv_out(.*)/.exec(name))) return `diffusion_model_out_2${m[1]}`;
  if ((m = /^lora_unet_time_embedding_linear_(\d+)(.*)/.exec(name))) return `diffusion_model_time_embed_${n(m[1]) * 2 - 2}${m[2]}`;
  const suffix = (kind: string, rest: string) => (kind === 'resnets' ? (RESNET_SUFFIX[rest] ?? rest) : rest);
  if ((m = /^lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)/.exec(name))) {
    return `diffusion_model_input_blocks_${1 + n(m[1]) * 3 + n(m[3])}_${m[2] === 'attentions' ? 1 : 0}_${suffix(m[2]!, m[4]!)}`;
  }
  if ((m = /^lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)/.exec(name))) {
    return `diffusion_model_middle_block_${m[1] === 'attentions' ? 1 : n(m[2]) * 2}_${suffix(m[1]!, m[3]!)}`;
  }
  if ((m = /^lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)/.exec(name))) {
    return `diffusion_model_output_blocks_${n(m[1]) * 3 + n(m[3])}_${m[2] === 'attentions' ? 1 : 0}_${suffix(m[2]!, m[4]!)}`;
  }
  if ((m = /^lora_unet_down_blocks_(\d+)_downsamplers_0_conv/.exec(name))) return `diffusion_model_input_blocks_${3 + n(m[1]) * 3}_0_op`;
  if ((m = /^lora_unet_up_blocks_(\d+)_upsamplers_0_conv/.exec(name))) {
    return `diffusion_model_output_blocks_${2 + n(m[1]) * 3}_${n(m[1]) > 0 ? 2 : 1}_conv`;
  }
  if ((m = /^lora_te_text_model_encoder_layers_(\d+)_(.+)/.exec(name))) {
    const rest = m[2]!;
    if (!isSd2) return `transformer_text_model_encoder_layers_${m[1]}_${rest}`;
    if (rest.includes('mlp_fc1')) return `model_transformer_resblocks_${m[1]}_${rest.replace('mlp_fc1', 'mlp_c_fc')}`;
    if (rest.includes('mlp_fc2')) return `model_transformer_resblocks_${m[1]}_${rest.replace('mlp_fc2', 'mlp_c_proj')}`;
    return `model_transformer_resblocks_${m[1]}_${rest.replace('self_attn', 'attn')}`;
  }
  return name;
}

/**
 * The module's dotted path in an original single-file checkpoint, e.g. `model.diffusion_model.input_blocks.1.1.proj_in`
 * or `cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj`, from the checkpoint key table.
 * SD 2.x q/k/v are row blocks of OpenCLIP's fused projection: `cond_stage_model.model.transformer.resblocks.N.attn.in_proj`.
 */
export function ldmModuleName(target: LoraTarget, models: LoraModels): string | undefined {
  const key = `${target.path}.weight`;
  if (target.component === 'unet') {
    const op = unetToOriginal(key, models.unet.config);
    return op && PREFIX.unet + op.key.replace(/\.weight$/, '');
  }
  const layout = textEncoderLayoutOf(models.textEncoder.config);
  const op = textEncoderToOriginal(key, layout);
  return op && (layout === 'clip' ? PREFIX.clip : PREFIX.openclip) + op.key.replace(/[._]weight$/, '');
}
