// The run-config schemas, one per command. A config file is for one command: common keys, `data`, `training` and
// the method's own section (`embed`, `hypernetwork`, `dreambooth` or `lora`); `sdtrain sample` has its own flat shape.
import { z } from 'zod';
import { pathField } from './fields.js';
import { loadConfig, parseConfig, type ConfigOptions, type LoadedConfig } from './load_config.js';
import {
  checkPrior,
  DataSchema,
  int,
  methodKey,
  modelShape,
  pixels,
  priorShape,
  runShape,
  SAMPLERS,
  TRAIN_METHODS,
  trainingSchema,
  type ConfigCommand,
  type TrainingDefaults,
  type TrainMethod,
} from './schema_common.js';

export * from './schema_common.js';

/** A1111's hypernetwork activation names (its own plus torch.nn's element-wise activations, lower-cased). */
export const HYPERNETWORK_ACTIVATIONS = [
  'linear', 'relu', 'leakyrelu', 'elu', 'swish', 'tanh', 'sigmoid', 'gelu', 'silu', 'mish', 'hardswish', 'hardsigmoid',
  'hardtanh', 'relu6', 'celu', 'selu', 'softplus', 'softsign', 'tanhshrink', 'logsigmoid', 'prelu', 'rrelu',
] as const;
export const WEIGHT_INITIALIZATIONS = ['Normal', 'XavierUniform', 'XavierNormal', 'KaimingUniform', 'KaimingNormal'] as const;
export const LORA_TARGETS = ['attention', 'attention+ff', 'all'] as const;

const EmbedSection = z
  .strictObject({
    placeholder_token: z
      .string()
      .regex(/^\S+$/, { error: 'must be one word without spaces, e.g. <my-cat>' })
      .describe('The new token the embedding is trained for and that prompts use, e.g. <my-cat> (A1111 uses the embedding file name).'),
    num_vectors: int().min(1).max(75).default(1).describe('Vectors per token (A1111 num_vectors_per_token); more vectors learn more detail but use up the 75-token prompt.'),
    init_word: z.string().default('*').describe("Word(s) whose token embedding initialises the vectors (diffusers initializer_token, A1111 init_text); '' starts from zeros."),
    init_multi_token: z
      .enum(['mean', 'first', 'error'])
      .default('mean')
      .describe("When init_word tokenizes to several tokens: 'mean' averages them, 'first' takes the first, 'error' refuses. With num_vectors equal to the token count, vector i starts from token i."),
    export: z
      .strictObject({
        safetensors: z.boolean().default(true).describe('Write <name>.safetensors (the diffusers/A1111 "emb_params" layout).'),
        a1111_pt: z.boolean().default(true).describe("Write <name>.pt in A1111's torch format (string_to_param, step, name)."),
        kohya: z.boolean().default(false).describe('Write a kohya-style .safetensors (one tensor per text encoder, e.g. emb_params / clip_l).'),
      })
      .prefault({})
      .describe('File formats written for the trained embedding.'),
  })
  .describe('Textual inversion (sdtrain embed).');

const HypernetworkSection = z
  .strictObject({
    name: z.string().min(1).optional().describe('Name stored in the hypernetwork file and used for its file name. Default: run_name.'),
    layer_structure: z
      .array(z.number().positive())
      .min(2)
      .refine((l) => l[0] === 1 && l.at(-1) === 1, { error: 'must start and end with 1 (sizes are multiples of the attention width), e.g. [1, 2, 1]' })
      .default([1, 2, 1])
      .describe('Layer widths as multiples of the attention width, e.g. [1, 2, 1] (A1111 layer_structure).'),
    activation_func: z.enum(HYPERNETWORK_ACTIVATIONS).default('linear').describe("Activation between layers (A1111's list; 'linear' = none)."),
    is_layer_norm: z.boolean().default(false).describe('Add layer normalisation after each layer (A1111 add_layer_norm).'),
    weight_initialization: z.enum(WEIGHT_INITIALIZATIONS).default('Normal').describe('How layer weights are initialised (A1111 names).'),
    use_dropout: z.boolean().default(false).describe('Use dropout between layers.'),
    dropout_structure: z
      .array(z.number().min(0).lt(1))
      .optional()
      .describe('Dropout rate after each layer, same length as layer_structure, first and last 0 (A1111 dropout_structure). Default with use_dropout: 0.3 on hidden layers.'),
    last_layer_dropout: z.boolean().default(false).describe('Also apply dropout after the last hidden layer (A1111 last_layer_dropout).'),
    activate_output: z.boolean().default(false).describe('Apply the activation after the output layer too (A1111 activate_output).'),
    sizes: z.array(int().positive()).min(1).optional().describe("Context widths that get a hypernetwork module (A1111 enable_sizes). Default: the model's cross-attention width(s)."),
  })
  .superRefine((h, ctx) => {
    const d = h.dropout_structure;
    if (d === undefined) return;
    if (d.length !== h.layer_structure.length) {
      ctx.addIssue({ code: 'custom', path: ['dropout_structure'], message: `needs ${h.layer_structure.length} entries (one per layer_structure entry), got ${d.length}` });
    } else if (d[0] !== 0 || d.at(-1) !== 0) {
      ctx.addIssue({ code: 'custom', path: ['dropout_structure'], message: 'must start and end with 0' });
    }
  })
  .prefault({})
  .describe('Hypernetwork (sdtrain hypernetwork), A1111-compatible.');

const DreamboothSection = z
  .strictObject({
    ...priorShape,
    train_text_encoder: z.boolean().default(false).describe('Fine-tune the text encoder as well as the UNet.'),
    text_encoder_lr: z.number().positive().optional().describe('Learning rate for the text encoder. Default: training.learning_rate.'),
    ema: z
      .strictObject({
        enabled: z.boolean().default(false).describe('Keep an exponential moving average of the UNet weights and export it.'),
        decay: z.number().gt(0).lt(1).default(0.9999).describe('EMA decay per step.'),
      })
      .prefault({})
      .describe('Exponential moving average of the weights.'),
    gradient_checkpointing: z.boolean().default(false).describe('Recompute activations in the backward pass to save memory (slower).'),
    export: z
      .strictObject({
        diffusers: z.boolean().default(true).describe('Write the fine-tuned model as a diffusers folder.'),
        single_file: z.boolean().default(true).describe('Write the fine-tuned model as one .safetensors checkpoint (original SD key names).'),
      })
      .prefault({})
      .describe('Formats the fine-tuned model is written in.'),
  })
  .superRefine(checkPrior)
  .prefault({})
  .describe('DreamBooth full fine-tuning (sdtrain dreambooth).');

const LoraSection = z
  .strictObject({
    rank: int().min(1).default(4).describe('Rank (dimension) of the low-rank update (kohya network_dim).'),
    alpha: z.number().positive().optional().describe('Scale: the update is multiplied by alpha/rank (kohya network_alpha). Default: equal to rank (scale 1).'),
    dropout: z.number().min(0).lt(1).default(0).describe('Dropout on the LoRA down-projection output.'),
    targets: z
      .union([z.enum(LORA_TARGETS), z.array(z.string().min(1)).min(1)])
      .default('attention')
      .describe("Which UNet modules get LoRA: 'attention' (to_q, to_k, to_v, to_out.0), 'attention+ff' (plus the feed-forward layers), 'all' (plus proj_in/proj_out and the resnet convs), or a list of module-name suffixes."),
    conv_rank: int().min(1).optional().describe("Rank for 3×3 convolutions (LoCon, kohya conv_dim); only with targets 'all' or a list naming convs. Default: convs get no LoRA."),
    conv_alpha: z.number().positive().optional().describe('Alpha for the convolution LoRA. Default: equal to conv_rank.'),
    train_text_encoder: z.boolean().default(false).describe('Also put LoRA on the text encoder attention layers.'),
    text_encoder_lr: z.number().positive().optional().describe('Learning rate for the text-encoder LoRA. Default: training.learning_rate.'),
    ...priorShape,
  })
  .superRefine((l, ctx) => {
    checkPrior(l, ctx);
    if (l.conv_rank !== undefined && (l.targets === 'attention' || l.targets === 'attention+ff')) {
      ctx.addIssue({ code: 'custom', path: ['conv_rank'], message: `has no effect with targets: ${l.targets} (no convolutions are targeted); use targets: all` });
    }
    if (l.conv_alpha !== undefined && l.conv_rank === undefined) {
      ctx.addIssue({ code: 'custom', path: ['conv_alpha'], message: 'needs conv_rank' });
    }
  })
  .transform((l) => ({ ...l, alpha: l.alpha ?? l.rank, conv_alpha: l.conv_alpha ?? l.conv_rank }))
  .prefault({})
  .describe('LoRA (sdtrain lora), saved in kohya format.');

const DEFAULTS: Record<TrainMethod, TrainingDefaults> = {
  embed: { learning_rate: 5e-3, max_train_steps: 3000, cond_dropout: 0 },
  hypernetwork: { learning_rate: 1e-5, max_train_steps: 3000, cond_dropout: 0.1 },
  dreambooth: { learning_rate: 5e-6, max_train_steps: 800, cond_dropout: 0.1 },
  lora: { learning_rate: 1e-4, max_train_steps: 1000, cond_dropout: 0.1 },
};

const TITLES: Record<ConfigCommand, string> = {
  embed: 'sdtrain embed — textual inversion run config',
  hypernetwork: 'sdtrain hypernetwork — hypernetwork run config',
  dreambooth: 'sdtrain dreambooth — DreamBooth run config',
  lora: 'sdtrain lora — LoRA run config',
  sample: 'sdtrain sample — sampling config',
};

/** Keys every training config has, with the method's defaults. */
function trainShape<M extends TrainMethod>(method: M) {
  return { method: methodKey(method), ...modelShape, ...runShape, data: DataSchema, training: trainingSchema(DEFAULTS[method]) };
}

/** Root-level check: there must be training images somewhere. */
function requireImages(method: TrainMethod) {
  return (c: { data: { datasets: unknown[] } } & Record<string, unknown>, ctx: z.core.$RefinementCtx): void => {
    const section = c[method] as { instance_data_dir?: string } | undefined;
    if (c.data.datasets.length === 0 && section?.instance_data_dir === undefined) {
      const alternative = method === 'dreambooth' || method === 'lora' ? ` (or set ${method}.instance_data_dir)` : '';
      ctx.addIssue({ code: 'custom', path: ['data', 'datasets'], message: `no training images: add at least one entry with a path${alternative}` });
    }
  };
}

export const EmbedConfigSchema = z
  .strictObject({ ...trainShape('embed'), embed: EmbedSection })
  .superRefine(requireImages('embed'))
  .meta({ title: TITLES.embed });
export const HypernetworkConfigSchema = z
  .strictObject({ ...trainShape('hypernetwork'), hypernetwork: HypernetworkSection })
  .superRefine(requireImages('hypernetwork'))
  .meta({ title: TITLES.hypernetwork });
export const DreamboothConfigSchema = z
  .strictObject({ ...trainShape('dreambooth'), dreambooth: DreamboothSection })
  .superRefine(requireImages('dreambooth'))
  .meta({ title: TITLES.dreambooth });
export const LoraConfigSchema = z
  .strictObject({ ...trainShape('lora'), lora: LoraSection })
  .superRefine(requireImages('lora'))
  .meta({ title: TITLES.lora });

/** "FILE[:strength]" or {path, strength}; always {path, strength} after parsing. */
function weightedFile(what: string) {
  return z
    .union([
      z.string().min(1),
      z.strictObject({
        path: pathField().describe(`The ${what} file.`),
        strength: z.number().default(1).describe('Multiplier for its effect (1 = as trained).'),
      }),
    ])
    .transform((v): { path: string; strength: number } => (typeof v === 'string' ? splitStrength(v) : v));
}

/** 'file.pt:0.8' → {path: 'file.pt', strength: 0.8}; without a numeric suffix the whole string is the path (C:\x works). */
export function splitStrength(s: string): { path: string; strength: number } {
  const m = /^(.+):([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)$/i.exec(s);
  return m ? { path: m[1]!, strength: Number(m[2]) } : { path: s, strength: 1 };
}

export const SampleConfigSchema = z
  .strictObject({
    method: methodKey('sample'),
    ...modelShape,
    prompt: z.string().describe('What to draw. Embedding tokens, and A1111 (emphasis:1.2) / [de-emphasis] syntax, work.'),
    negative_prompt: z.string().default('').describe('What to steer away from (the unconditional prompt of classifier-free guidance).'),
    steps: int().min(1).default(20).describe('Sampling steps.'),
    cfg_scale: z.number().min(0).default(7).describe('Classifier-free guidance scale (flag --cfg-scale); 1 = no guidance.'),
    sampler: z.enum(SAMPLERS).default('euler_a').describe('Sampler (A1111 names in snake_case: euler_a is "Euler a", dpmpp_2m_karras is "DPM++ 2M Karras").'),
    width: pixels().optional().describe("Image width in pixels (a multiple of 8). Default: the model's native size, unet sample_size × the VAE's downscale (512 for SD 1.x, 768 for SD 2.x-v, 32 for tiny-shapes), as diffusers does."),
    height: pixels().optional().describe("Image height in pixels (a multiple of 8). Default: the model's native size, like width."),
    batch_size: int().min(1).default(1).describe('Images generated together in one batch.'),
    n_iter: int().min(1).default(1).describe('Number of batches (total images = batch_size × n_iter).'),
    seed: int().min(-1).default(-1).describe('Seed of the first image (each next image uses seed+1); -1 = random.'),
    clip_skip: int().min(1).max(12).default(1).describe('Use the output of the n-th last text-encoder layer (A1111 "Clip skip"; 1 = the last).'),
    init_image: pathField().optional().describe('Start from this image (img2img) instead of pure noise.'),
    strength: z.number().min(0).max(1).default(0.75).describe('img2img denoising strength: 0 keeps init_image, 1 ignores it.'),
    mask: pathField().optional().describe('Inpainting mask for init_image: white = repaint, black = keep.'),
    mask_blur: int().min(0).default(4).describe('Blur radius in pixels applied to the mask edges.'),
    outpaint: z
      .strictObject({
        left: int().min(0).multipleOf(8).default(0).describe('Pixels to add on the left.'),
        right: int().min(0).multipleOf(8).default(0).describe('Pixels to add on the right.'),
        top: int().min(0).multipleOf(8).default(0).describe('Pixels to add at the top.'),
        bottom: int().min(0).multipleOf(8).default(0).describe('Pixels to add at the bottom.'),
      })
      .optional()
      .describe('Outpainting: extend init_image by these many pixels (multiples of 8) and paint the new area.'),
    embeddings: z.array(pathField()).default([]).describe('Textual-inversion embedding files (or folders of them) to load; their names become prompt tokens.'),
    hypernetworks: z.array(weightedFile('hypernetwork')).prefault([]).describe('Hypernetworks to apply: "FILE[:strength]" strings or {path, strength} mappings.'),
    loras: z.array(weightedFile('LoRA')).prefault([]).describe('LoRAs to apply: "FILE[:strength]" strings or {path, strength} mappings.'),
    out: pathField().default('outputs').describe('Output folder for the images (named <seed>-<n>.png).'),
    grid: z.boolean().default(false).describe('Also write a grid image of all the images.'),
  })
  .superRefine((c, ctx) => {
    for (const k of ['mask', 'outpaint'] as const) {
      if (c[k] !== undefined && c.init_image === undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'needs init_image' });
    }
    if (c.mask !== undefined && c.outpaint !== undefined) ctx.addIssue({ code: 'custom', path: ['mask'], message: 'cannot be combined with outpaint (outpaint makes its own mask)' });
  })
  .meta({ title: TITLES.sample });

export const CONFIG_SCHEMAS = {
  embed: EmbedConfigSchema,
  hypernetwork: HypernetworkConfigSchema,
  dreambooth: DreamboothConfigSchema,
  lora: LoraConfigSchema,
  sample: SampleConfigSchema,
} as const satisfies Record<ConfigCommand, z.ZodType>;

export type EmbedConfig = z.output<typeof EmbedConfigSchema>;
export type HypernetworkConfig = z.output<typeof HypernetworkConfigSchema>;
export type DreamboothConfig = z.output<typeof DreamboothConfigSchema>;
export type LoraConfig = z.output<typeof LoraConfigSchema>;
export type SampleConfig = z.output<typeof SampleConfigSchema>;
export type TrainConfig = EmbedConfig | HypernetworkConfig | DreamboothConfig | LoraConfig;
export type ConfigFor<C extends ConfigCommand> = z.output<(typeof CONFIG_SCHEMAS)[C]>;

/** Advice for the likeliest wrong top-level key: another method's section. */
export function unknownKeyHintsFor(command: ConfigCommand): Record<string, string> {
  const hints: Record<string, string> = {};
  for (const m of TRAIN_METHODS) {
    if (m !== command) hints[m] = `the '${m}' section belongs to 'sdtrain ${m}' configs; this command (sdtrain ${command}) reads ${command === 'sample' ? 'the top-level sampling keys' : `the '${command}' section`}`;
  }
  return hints;
}

/** loadConfig with the command's schema and hints. */
export function loadCommandConfig<C extends ConfigCommand>(command: C, file: string, opts: ConfigOptions = {}): Promise<LoadedConfig<ConfigFor<C>>> {
  return loadConfig(file, CONFIG_SCHEMAS[command], { unknownKeyHints: unknownKeyHintsFor(command), ...opts }) as Promise<LoadedConfig<ConfigFor<C>>>;
}

/** parseConfig with the command's schema and hints. */
export function parseCommandConfig<C extends ConfigCommand>(command: C, text: string, fileName: string, opts: ConfigOptions = {}): LoadedConfig<ConfigFor<C>> {
  return parseConfig(text, fileName, CONFIG_SCHEMAS[command], { unknownKeyHints: unknownKeyHintsFor(command), ...opts }) as LoadedConfig<ConfigFor<C>>;
}
