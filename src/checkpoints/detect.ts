// What is this file? Classifies a tensor listing (names, dtypes, shapes, metadata, and for torch files the pickled
// structure) as one of the things Stable Diffusion users pass around. Pure: no I/O, no tfjs.
import type { TensorInfo } from '../formats/dtype.js';

export type Kind =
  | 'checkpoint' // full single-file model (U-Net + VAE + text encoder)
  | 'unet'
  | 'vae'
  | 'text_encoder'
  | 'embedding' // textual inversion
  | 'hypernetwork'
  | 'lora'
  | 'infotext_image' // a generated image carrying A1111 "parameters"
  | 'diffusers_pipeline' // a diffusers folder (model_index.json)
  | 'unknown';

export interface Detection {
  kind: Kind;
  /** Key layout or producer: original | diffusers | a1111 | a1111-png | rinongal | kohya | diffusers-peft | diffusers-legacy | sdxl. */
  layout?: string;
  /** Model family where the weights tell: sd1 | sd2 | sd1-inpainting | sd2-inpainting; text encoders: clip-vit-l-14 | openclip-vit-h-14 | clip. */
  variant?: string;
  /** One human line, e.g. "LoRA (kohya layout): 264 modules (72 text encoder, 192 U-Net), rank 4, alpha 1". */
  summary: string;
  details: Record<string, unknown>;
}

export interface Listing {
  tensors: TensorInfo[];
  metadata: Record<string, string>;
  /** Scalars found beside the tensors in a torch pickle (dotted path → value), e.g. `name`, `step`, `layer_structure`. */
  scalars?: Record<string, unknown>;
}

const UNET_ORIGINAL = 'model.diffusion_model.';

type ShapeOf = (name: string) => number[] | undefined;

/** Model family of a U-Net from its weights. `prefix` is '' (diffusers) or the original layout's names. */
function unetVariant(shape: ShapeOf, original: boolean): { variant: string; inChannels?: number; contextDim?: number } {
  const convIn = shape(original ? `${UNET_ORIGINAL}input_blocks.0.0.weight` : 'conv_in.weight');
  const inChannels = convIn?.[1];
  const projIn = shape(
    original ? `${UNET_ORIGINAL}input_blocks.1.1.proj_in.weight` : 'down_blocks.0.attentions.0.proj_in.weight',
  );
  const toK = shape(
    original
      ? `${UNET_ORIGINAL}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight`
      : 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight',
  );
  const contextDim = toK?.[1];
  // SD2 uses linear proj_in/proj_out (2-D weights) and a 1024-wide OpenCLIP context; SD1 uses 1x1 convs and 768.
  const sd2 = projIn?.length === 2 || contextDim === 1024;
  // Inpainting U-Nets take 9 channels: 4 noisy latents + 1 mask + 4 masked-image latents (diffusers' own test).
  const inpaint = inChannels === 9;
  return { variant: `${sd2 ? 'sd2' : 'sd1'}${inpaint ? '-inpainting' : ''}`, inChannels, contextDim };
}

function textEncoderVariant(width: number | undefined, layers: number): string {
  if (width === 768 && layers === 12) return 'clip-vit-l-14';
  if (width === 1024 && (layers === 23 || layers === 24)) return 'openclip-vit-h-14';
  return 'clip';
}

const countParams = (ts: TensorInfo[]): number => ts.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);

function maxIndex(names: string[], re: RegExp): number {
  let max = -1;
  for (const n of names) {
    const m = re.exec(n);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max;
}

export function detect(listing: Listing): Detection {
  const { tensors, metadata } = listing;
  const scalars: Record<string, unknown> = { ...(listing.scalars ?? {}) };
  const names = tensors.map((t) => t.name);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const shape: ShapeOf = (n) => byName.get(n)?.shape;
  const has = (n: string) => byName.has(n);
  const some = (re: RegExp) => names.some((n) => re.test(n));

  // --- full single-file checkpoint (original CompVis/Stability layout) ---
  if (some(/^model\.diffusion_model\./)) {
    const u = unetVariant(shape, true);
    const sd2Te = some(/^cond_stage_model\.model\./);
    const family = sd2Te ? u.variant.replace('sd1', 'sd2') : u.variant;
    const parts = ['unet', some(/^first_stage_model\./) && 'vae', some(/^cond_stage_model\./) && 'text_encoder'].filter(
      Boolean,
    );
    return {
      kind: 'checkpoint',
      layout: 'original',
      variant: family,
      summary: `Stable Diffusion checkpoint (original single-file layout), ${familyLabel(family)}, components: ${parts.join(', ')}`,
      details: { components: parts, in_channels: u.inChannels, context_dim: u.contextDim, has_ema: some(/^model_ema\./) },
    };
  }

  // --- LoRA ---
  if (some(/^lora_(unet|te\d?)_.*\.lora_(down|up)\.weight$/)) {
    const modules = new Set(names.filter((n) => n.endsWith('.lora_down.weight')).map((n) => n.slice(0, -'.lora_down.weight'.length)));
    const te = [...modules].filter((m) => m.startsWith('lora_te')).length;
    const downs = [...modules].map((m) => shape(`${m}.lora_down.weight`)!);
    const ranks = [...new Set(downs.map((s) => s[0]))];
    const conv3 = downs.some((s) => s.length === 4 && s[2] === 3);
    const alphaName = [...modules].map((m) => `${m}.alpha`).find(has);
    const rank = ranks.length === 1 ? ranks[0] : ranks;
    const alpha = metadata.ss_network_alpha !== undefined ? Number(metadata.ss_network_alpha) : undefined;
    return {
      kind: 'lora',
      layout: 'kohya',
      variant: conv3 ? 'locon' : 'lora',
      summary:
        `LoRA (kohya layout${conv3 ? ', LoCon with 3x3 convs' : ''}): ${modules.size} modules (${te} text encoder, ` +
        `${modules.size - te} U-Net), rank ${Array.isArray(rank) ? rank.join('/') : rank}` +
        (alpha !== undefined ? `, alpha ${alpha}` : alphaName ? '' : ', no alpha tensors (alpha = rank)'),
      details: { modules: modules.size, text_encoder_modules: te, rank, alpha, base_model: metadata.ss_base_model_version },
    };
  }
  if (some(/\.lora_[AB]\.weight$/)) {
    const modules = new Set(names.filter((n) => n.endsWith('.lora_A.weight')).map((n) => n.slice(0, -'.lora_A.weight'.length)));
    const te = [...modules].filter((m) => m.startsWith('text_encoder')).length;
    const ranks = [...new Set([...modules].map((m) => shape(`${m}.lora_A.weight`)![0]))];
    return {
      kind: 'lora',
      layout: 'diffusers-peft',
      summary: `LoRA (diffusers/PEFT layout): ${modules.size} modules (${te} text encoder, ${modules.size - te} U-Net), rank ${ranks.join('/')}`,
      details: { modules: modules.size, text_encoder_modules: te, rank: ranks.length === 1 ? ranks[0] : ranks, adapter_metadata: metadata.lora_adapter_metadata !== undefined },
    };
  }
  if (some(/(_lora\.(down|up)\.weight|\.lora\.(down|up)\.weight|lora_linear_layer\.(down|up)\.weight)$/)) {
    const modules = names.filter((n) => /\.down\.weight$/.test(n)).length;
    return {
      kind: 'lora',
      layout: 'diffusers-legacy',
      summary: `LoRA (diffusers attention-processor layout, 2023): ${modules} modules`,
      details: { modules },
    };
  }

  // --- hypernetwork (A1111): integer keys = context widths, each a (k, v) pair of MLP state dicts ---
  // (`.pt`: `<width>.<0|1>.linear.N.*` from the (k, v) tuple; our `.safetensors`: `<width>.<k|v>.linear.N.*`.)
  if (some(/^\d+\.([01]|k|v)\.linear(\.\d+|\d)\.(weight|bias)$/)) {
    const sizes = [...new Set(names.map((n) => /^(\d+)\./.exec(n)?.[1]).filter((s): s is string => !!s))].map(Number).sort((a, b) => a - b);
    const legacy = some(/^\d+\.[01]\.linear\d\./);
    const ours = metadata['sdtrain.format'] === 'hypernetwork';
    if (ours) Object.assign(scalars, JSON.parse(metadata['sdtrain.hypernetwork'] ?? '{}') as Record<string, unknown>);
    const layerStructure = scalars.layer_structure;
    const activation = scalars.activation_func;
    return {
      kind: 'hypernetwork',
      layout: ours ? 'sdtrain' : 'a1111',
      variant: legacy ? 'legacy' : undefined,
      summary:
        `Hypernetwork (${ours ? 'sdtrain .safetensors, A1111 settings' : 'A1111'}${legacy ? ', first 2022 layout' : ''}): widths ${sizes.join('/')}` +
        (layerStructure !== undefined ? `, layer_structure ${JSON.stringify(layerStructure)}` : '') +
        (activation !== undefined ? `, activation ${String(activation)}` : '') +
        (scalars.is_layer_norm === true ? ', layer norm' : '') +
        `, ${countParams(tensors).toLocaleString('en-US')} params`,
      details: { sizes, ...pick(scalars, ['name', 'step', 'layer_structure', 'activation_func', 'is_layer_norm', 'weight_initialization', 'use_dropout', 'activate_output', 'dropout_structure', 'last_layer_dropout', 'sd_checkpoint_name']) },
    };
  }

  // --- textual-inversion embeddings ---
  const emb = (t: TensorInfo, layout: string, name?: unknown): Detection => {
    const [vectors, dim] = t.shape.length === 1 ? [1, t.shape[0]] : [t.shape[0], t.shape[1]];
    const label = { a1111: 'A1111', rinongal: 'original textual_inversion repo', kohya: 'kohya', diffusers: 'diffusers' }[layout] ?? layout;
    return {
      kind: 'embedding',
      layout,
      summary:
        `Textual-inversion embedding (${label}): ${vectors} vector${vectors === 1 ? '' : 's'} x ${dim}` +
        (typeof name === 'string' ? `, name '${name}'` : '') +
        (scalars.step !== undefined && scalars.step !== null ? `, step ${String(scalars.step)}` : '') +
        (dim === 768 ? ' (SD 1.x)' : dim === 1024 ? ' (SD 2.x)' : ''),
      details: { vectors, dim, name, token: t.name, ...pick(scalars, ['step', 'sd_checkpoint', 'sd_checkpoint_name']) },
    };
  };
  const s2p = tensors.filter((t) => /^string_to_param\.(_parameters\.)?[^.]+$/.test(t.name));
  if (s2p.length === 1) {
    const rinongal = s2p[0]!.name.includes('._parameters.') || (has('string_to_token.*') && scalars.name === undefined);
    return emb(s2p[0]!, rinongal ? 'rinongal' : 'a1111', scalars.name);
  }
  if (has('clip_l') && has('clip_g') && tensors.length === 2) {
    const l = shape('clip_l')!;
    return {
      kind: 'embedding',
      layout: 'sdxl',
      summary: `Textual-inversion embedding (SDXL, clip_l + clip_g): ${l[0]} vectors`,
      details: { vectors: l[0], dims: [l[1], shape('clip_g')![1]] },
    };
  }
  if (has('emb_params') && tensors.length === 1) return emb(byName.get('emb_params')!, 'kohya');
  if (tensors.length === 1 && tensors[0]!.shape.length <= 2 && tensors[0]!.dtype.startsWith('F') && !/\.(weight|bias)$/.test(tensors[0]!.name)) {
    // diffusers learned_embeds: { "<token>": [n, dim] } (2022 .bin files hold a 1-D [dim]).
    return emb(tensors[0]!, 'diffusers', tensors[0]!.name);
  }

  // --- single components ---
  if (has('conv_in.weight') && has('time_embedding.linear_1.weight')) {
    const u = unetVariant(shape, false);
    return {
      kind: 'unet',
      layout: 'diffusers',
      variant: u.variant,
      summary: `U-Net (diffusers layout), ${familyLabel(u.variant)}, ${countParams(tensors).toLocaleString('en-US')} params`,
      details: { in_channels: u.inChannels, context_dim: u.contextDim },
    };
  }
  const vaePrefix = ['', 'first_stage_model.', 'vae.'].find((p) => has(`${p}encoder.conv_in.weight`) && has(`${p}decoder.conv_in.weight`));
  if (vaePrefix !== undefined) {
    const original = some(/(^|\.)encoder\.down\.0\.block\.0\./);
    const oldAttn = some(/mid_block\.attentions\.0\.(query|key|value|proj_attn)\./);
    return {
      kind: 'vae',
      layout: original ? 'original' : 'diffusers',
      summary: `VAE (AutoencoderKL, ${original ? 'original' : 'diffusers'} layout${oldAttn ? ', old attention key names' : ''}), latent channels ${(shape(`${vaePrefix}quant_conv.weight`)?.[0] ?? 8) / 2}`,
      details: { latent_channels: (shape(`${vaePrefix}quant_conv.weight`)?.[0] ?? 8) / 2, old_attention_names: oldAttn },
    };
  }
  const teTok = names.find((n) => /(^|\.)text_model\.embeddings\.token_embedding\.weight$/.test(n));
  if (teTok) {
    const width = shape(teTok)?.[1];
    const layers = maxIndex(names, /text_model\.encoder\.layers\.(\d+)\./) + 1;
    const variant = textEncoderVariant(width, layers);
    return {
      kind: 'text_encoder',
      layout: 'transformers',
      variant,
      summary: `CLIP text encoder (transformers layout): width ${width}, ${layers} layers${variant === 'clip' ? '' : ` (${variant === 'clip-vit-l-14' ? 'SD 1.x, OpenAI ViT-L/14' : 'SD 2.x, OpenCLIP ViT-H/14'})`}`,
      details: { width, layers },
    };
  }
  return { kind: 'unknown', summary: 'unrecognised tensor file', details: {} };
}

export function familyLabel(variant: string): string {
  const base = variant.startsWith('sd2') ? 'SD 2.x' : 'SD 1.x';
  return variant.endsWith('-inpainting') ? `${base} inpainting` : base;
}

function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
}
