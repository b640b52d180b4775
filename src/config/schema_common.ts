// Building blocks shared by the run-config schemas: common keys, `data`, `training` (with per-method defaults).
import path from 'node:path';
import { z } from 'zod';
import { packageRoot, pathField, suggest } from './fields.js';
import { A1111_SCHEDULE_HINT, checkStepSchedule, parseA1111Schedule } from './schedules.js';

export const TRAIN_METHODS = ['embed', 'hypernetwork', 'dreambooth', 'lora'] as const;
export type TrainMethod = (typeof TRAIN_METHODS)[number];
export const COMMANDS = [...TRAIN_METHODS, 'sample'] as const;
export type ConfigCommand = (typeof COMMANDS)[number];

export const BACKENDS = ['auto', 'gpu', 'node', 'wasm', 'cpu'] as const;
export const SAMPLERS = ['ddim', 'plms', 'euler', 'euler_a', 'dpmpp_2m', 'dpmpp_2m_karras', 'ddpm'] as const;
export const LR_SCHEDULERS = ['constant', 'linear', 'cosine', 'constant_with_warmup', 'cosine_with_restarts'] as const;
export const OPTIMIZERS = ['adamw', 'sgd', 'lion', 'adafactor'] as const;
export const CAPTION_SOURCES = ['sidecar', 'metadata', 'filename', 'template'] as const;

/** The checkpoint bundled with sdtrain, used when `model` is not given. */
export const DEFAULT_MODEL = 'checkpoints/tiny-shapes';
export const defaultModelPath = (): string => path.join(packageRoot(), DEFAULT_MODEL);

export const int = (): z.ZodNumber => z.number().int();
/** A positive whole number of pixels divisible by 8 (the VAE downsamples by 8). */
export const pixels = (): z.ZodNumber => int().positive().multipleOf(8);

/** `method:` — optional in the file; when present it must name the command that reads the file. */
export function methodKey<C extends ConfigCommand>(command: C): z.ZodDefault<z.ZodType<C, string>> {
  // A refined string rather than z.literal so the mismatch message can name both commands; typed as the literal.
  return z
    .string()
    .refine((v) => v === command, {
      error: (issue) => {
        const given = String(issue.input);
        if ((COMMANDS as readonly string[]).includes(given)) {
          return `this config is for 'sdtrain ${given}' (method: ${given}), but the command is 'sdtrain ${command}' — run 'sdtrain ${given}', or change method: to ${command}`;
        }
        const s = suggest(given, COMMANDS);
        return `unknown method '${given}' — this command expects method: ${command}${s !== undefined ? ` (did you mean '${s}'?)` : ''}`;
      },
    })
    .default(command)
    .meta({ const: command })
    .describe(`Which command this file is for. Optional; when present it must be '${command}' (a mismatch is an error). Write it first so editors pick the right schema.`) as unknown as z.ZodDefault<z.ZodType<C, string>>;
}

/** Keys every config has: the model and where to run it. */
export const modelShape = {
  model: pathField()
    .default(defaultModelPath)
    .meta({ default: DEFAULT_MODEL })
    .describe('The base model: a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single .safetensors/.ckpt checkpoint. Default: the tiny-shapes checkpoint bundled with sdtrain.'),
  vae: pathField().optional().describe("A VAE to use instead of the model's own: a diffusers vae/ folder or a single file. Default: the model's VAE."),
  backend: z
    .enum(BACKENDS)
    .default('auto')
    .describe("TensorFlow.js backend: 'auto' picks the best available (gpu > node > wasm > cpu); the others insist on one."),
};

/** Keys every training config has (besides the model). */
export const runShape = {
  seed: int().min(0).default(0).describe('Random seed for noise, timesteps, dropout, shuffling and augmentation; the same seed and config give the same run.'),
  output_dir: pathField().default('runs').describe('Folder that holds run folders; each run writes into <output_dir>/<run_name>/.'),
  run_name: z
    .string()
    .regex(/^[^/\\]+$/, { error: 'must be a single folder name (no / or \\)' })
    .optional()
    .describe('Name of this run\'s folder inside output_dir. Default: "<method>-<YYYYMMDD-HHMMSS>".'),
};

const CaptionSchema = z
  .strictObject({
    source: z
      .array(z.enum(CAPTION_SOURCES))
      .min(1)
      .refine((l) => new Set(l).size === l.length, { error: 'lists a source more than once' })
      .default(['sidecar', 'metadata', 'filename'])
      .describe(
        "Where captions come from, tried in order until one gives a caption: 'sidecar' (a UTF-8 text file next to the image, see extension), 'metadata' (the image's line in a metadata.jsonl in its folder, {\"file_name\": \"a.png\", \"text\": \"...\"} per line as in Hugging Face ImageFolder datasets; else the prompt embedded in a PNG's A1111 parameters or its Description text), 'filename' (the file name without extension, '_' as space, a leading A1111 counter like '00012-0-' and a trailing (n) or number dropped), 'template' (a line from templates, drawn anew each time the image is used; listed first, it always applies and [filewords] takes the caption from the sources after it).",
      ),
    extension: z
      .string()
      .regex(/^\.[^./\\\s]+$/, { error: "must be a file extension starting with '.', like '.txt'" })
      .default('.txt')
      .describe("Extension of sidecar caption files: image.png is captioned by image.txt (kohya uses '.caption' too)."),
    templates: z
      .union([z.enum(['object', 'style']), z.array(z.string().min(1)).min(1)])
      .default('object')
      .describe("Prompt templates for the 'template' source: a built-in set ('object': \"a photo of a [name]\" ..., 'style': \"a painting in the style of [name]\" ...) or your own list. [name] is replaced by the placeholder/instance token, [filewords] by the image's caption from the other sources."),
    shuffle_tags: z.boolean().default(false).describe('Shuffle comma-separated tags in each caption every time it is used (kohya shuffle_caption).'),
    keep_tokens: int().min(0).default(0).describe('With shuffle_tags: keep this many leading tags in place (kohya keep_tokens).'),
  })
  .prefault({})
  .describe('How images in this subset get their captions.');

const DatasetSchema = z.strictObject({
  path: pathField().describe('Folder of training images (png/jpg/webp/avif/gif, searched recursively), relative to the config file.'),
  repeats: int().min(1).default(1).describe('How many times each image of this subset counts per epoch (kohya num_repeats); balances small subsets against big ones.'),
  caption: CaptionSchema,
});

const BucketingSchema = z
  .strictObject({
    enabled: z.boolean().default(false).describe('Group images by aspect ratio into buckets of about resolution² pixels instead of cropping everything square (kohya enable_bucket).'),
    min_size: pixels().default(256).describe('Smallest bucket side in pixels (kohya min_bucket_reso).'),
    max_size: pixels().default(1024).describe('Largest bucket side in pixels (kohya max_bucket_reso).'),
    step: pixels().default(64).describe('Bucket sides are multiples of this many pixels (kohya bucket_reso_steps).'),
  })
  .superRefine((b, ctx) => {
    if (b.min_size > b.max_size) ctx.addIssue({ code: 'custom', path: ['min_size'], message: `must not exceed max_size (${b.max_size})` });
    for (const k of ['min_size', 'max_size'] as const) {
      if (b[k] % b.step !== 0) ctx.addIssue({ code: 'custom', path: [k], message: `must be a multiple of step (${b.step}), got ${b[k]}` });
    }
  })
  .prefault({})
  .describe('Aspect-ratio bucketing.');

export const DataSchema = z
  .strictObject({
    datasets: z.array(DatasetSchema).default([]).describe('Image subsets to train on, each with its own folder, repeats and caption rules.'),
    resolution: pixels()
      .default(512)
      .describe('Training resolution in pixels (the side of the square crop, or the bucket area with bucketing); must be a multiple of 8.'),
    crop: z.enum(['center', 'random']).default('center').describe("How images are cropped to the training size: 'center' (diffusers --center_crop) or 'random' (kohya random_crop; needs cache_latents: false)."),
    flip: z.boolean().default(false).describe('Randomly mirror images left-right (kohya flip_aug); with cache_latents the mirrored latent is cached too.'),
    bucketing: BucketingSchema,
    cache_latents: z.boolean().default(true).describe('Encode every image through the VAE once and reuse the latents (faster; needs crop: center).'),
    cache_dir: pathField().optional().describe('Where cached latents are kept. Default: <output_dir>/cache, shared by the runs in that folder.'),
  })
  .superRefine((d, ctx) => {
    if (d.crop === 'random' && d.cache_latents) {
      ctx.addIssue({ code: 'custom', path: ['crop'], message: "'random' needs cache_latents: false (a cached latent is one fixed crop)" });
    }
  })
  .prefault({})
  .describe('Training images and how they are prepared.');

const Rate = z.number().min(0).max(1);
export const CondDropoutSchema = z.union([
  Rate,
  z
    .array(
      z.strictObject({
        until_step: int().min(1).optional().describe('This entry applies while the step is below until_step; leave it out on the last entry.'),
        rate: Rate.describe('Probability (0..1) of dropping the caption for an image.'),
      }),
    )
    .min(1)
    .superRefine((entries, ctx) => {
      for (const p of checkStepSchedule(entries)) ctx.addIssue({ code: 'custom', path: [p.index, p.key], message: p.message });
    }),
]);

const LearningRateSchema = z.union([
  z.number().positive(),
  z.string().superRefine((s, ctx) => {
    const parsed = parseA1111Schedule(s);
    if (parsed.ok) return;
    const detail = /[:,]/.test(s) ? `: ${parsed.error}` : '';
    ctx.addIssue({ code: 'custom', message: `expected a number or an A1111 learning-rate schedule (${A1111_SCHEDULE_HINT}), got string ${JSON.stringify(s)}${detail}` });
  }),
]);

const PreviewSchema = z
  .strictObject({
    every_n_steps: int().min(0).default(500).describe('Render preview images every this many steps (0 = never).'),
    prompts: z.array(z.string()).default([]).describe('Prompts to preview; [name] is replaced by the trained token. Default (empty): the caption of a training image.'),
    negative_prompt: z.string().default('').describe('Negative prompt for previews.'),
    steps: int().min(1).default(20).describe('Sampling steps per preview image.'),
    cfg_scale: z.number().min(0).default(7).describe('Classifier-free guidance scale for previews.'),
    sampler: z.enum(SAMPLERS).default('ddim').describe('Sampler for previews.'),
    seed: int().min(-1).default(0).describe('Seed for previews (the same seed every time so previews are comparable; -1 = random each time).'),
  })
  .prefault({})
  .describe('Preview images rendered during training, saved in the run folder.');

const OptimizerSchema = z
  .strictObject({
    type: z.enum(OPTIMIZERS).default('adamw').describe('Optimizer: adamw (diffusers default), sgd, lion, or adafactor.'),
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]).describe('Adam/Lion beta1 and beta2 (diffusers adam_beta1/adam_beta2).'),
    weight_decay: z.number().min(0).default(0.01).describe('Decoupled weight decay (diffusers adam_weight_decay).'),
    eps: z.number().positive().default(1e-8).describe('Adam epsilon (diffusers adam_epsilon).'),
    momentum: z.number().min(0).lt(1).default(0).describe('SGD momentum.'),
  })
  .prefault({})
  .describe('Optimizer and its hyperparameters.');

/** Defaults that differ between training methods. */
export interface TrainingDefaults {
  learning_rate: number;
  max_train_steps: number;
  cond_dropout: number;
}

/** The `training` section, with a method's own defaults. */
export function trainingSchema(d: TrainingDefaults) {
  return z
    .strictObject({
      max_train_steps: int().min(1).default(d.max_train_steps).describe('Total optimizer steps to train.'),
      batch_size: int().min(1).default(1).describe('Images per forward/backward pass (diffusers train_batch_size).'),
      gradient_accumulation_steps: int().min(1).default(1).describe('Accumulate gradients over this many batches per optimizer step (effective batch = batch_size × this).'),
      learning_rate: LearningRateSchema.default(d.learning_rate).describe(
        'Learning rate: a number, or an A1111 schedule string "rate:until_step, ..., rate" (e.g. "5e-3:100, 1e-3:1000, 1e-4"; -1 as a step means "to the end"). With a schedule string, lr_scheduler must be constant. Unlike A1111, training does not stop at the last step: the last rate holds to max_train_steps.',
      ),
      lr_scheduler: z.enum(LR_SCHEDULERS).default('constant').describe('Learning-rate schedule over max_train_steps (diffusers names).'),
      lr_warmup_steps: int().min(0).default(0).describe('Steps of linear warm-up from 0 at the start.'),
      lr_num_cycles: int().min(1).default(1).describe('Number of restarts for cosine_with_restarts.'),
      optimizer: OptimizerSchema,
      max_grad_norm: z.number().min(0).default(1).describe('Clip the gradient norm to this value (0 = no clipping).'),
      prediction_type: z.enum(['epsilon', 'v_prediction']).optional().describe("What the UNet predicts. Default: from the model's scheduler config (SD 1.x epsilon, SD 2.x-768 v_prediction)."),
      min_snr_gamma: z.number().positive().optional().describe('Min-SNR loss weighting gamma (5 is the paper\'s value). Default: off.'),
      noise_offset: z.number().min(0).default(0).describe('Offset noise strength (e.g. 0.05–0.1 helps very dark/bright images). 0 = off.'),
      cond_dropout: CondDropoutSchema.default(d.cond_dropout).describe(
        `Conditioning dropout: probability of training an image with an empty caption (helps classifier-free guidance). A number, or a schedule list [{until_step: 500, rate: 0}, {rate: 0.1}] (every entry but the last has an increasing until_step). Default: 0 for embed — a dropped caption has no placeholder token, so it carries no gradient to the embedding and only wastes the step; 0.1 for hypernetwork, dreambooth and lora.`,
      ),
      save_every_n_steps: int().min(0).default(500).describe('Save a checkpoint every this many steps (0 = only at the end).'),
      preview: PreviewSchema,
      log_every_n_steps: int().min(1).default(10).describe('Print and record loss/learning rate every this many steps.'),
      attention_slice_size: int().min(1).optional().describe('Compute attention in slices of this many heads×batch to save memory (slower). Default: no slicing.'),
    })
    .superRefine((t, ctx) => {
      if (typeof t.learning_rate === 'string' && t.lr_scheduler !== 'constant') {
        ctx.addIssue({ code: 'custom', path: ['lr_scheduler'], message: `must be 'constant' when learning_rate is a schedule string (the string already is the schedule), got '${t.lr_scheduler}'` });
      }
    })
    .prefault({})
    .describe('Optimisation, schedules, checkpoints and previews.');
}

/** Prior preservation / instance keys shared by dreambooth and lora. */
export const priorShape = {
  instance_data_dir: pathField().optional().describe('Folder of images of the subject; every one is captioned with instance_prompt. Adds to data.datasets.'),
  instance_prompt: z.string().min(1).optional().describe('Caption for the instance images, with a rare identifier, e.g. "a photo of sks dog".'),
  with_prior_preservation: z.boolean().default(false).describe('Also train on class images with class_prompt so the model keeps its idea of the class (DreamBooth prior preservation).'),
  class_data_dir: pathField().optional().describe('Folder of class images; missing ones (up to num_class_images) are generated with the base model first.'),
  class_prompt: z.string().min(1).optional().describe('Prompt for the class images, e.g. "a photo of a dog".'),
  num_class_images: int().min(1).default(100).describe('How many class images to use (generated if the folder has fewer).'),
  prior_loss_weight: z.number().min(0).default(1).describe('Weight of the class-image loss against the instance loss.'),
};

type PriorKeys = { instance_data_dir?: string | undefined; instance_prompt?: string | undefined; with_prior_preservation: boolean; class_data_dir?: string | undefined; class_prompt?: string | undefined };

/** Cross-key checks for the prior-preservation keys of a section. */
export function checkPrior(s: PriorKeys, ctx: z.core.$RefinementCtx<PriorKeys>): void {
  if (s.instance_data_dir !== undefined && s.instance_prompt === undefined) {
    ctx.addIssue({ code: 'custom', path: ['instance_prompt'], message: 'is required when instance_data_dir is set (it captions the instance images)' });
  }
  if (s.with_prior_preservation) {
    for (const k of ['class_data_dir', 'class_prompt'] as const) {
      if (s[k] === undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'is required when with_prior_preservation is true' });
    }
  }
}
