// configs/tiny-shapes.yaml: how the embedded default model (checkpoints/tiny-shapes/) is made — the synthetic data,
// the three model configs (diffusers/transformers config.json keys), the VAE stage, the U-Net + text encoder stage (the
// shared training loop's `training` section, docs/config.md) and the evaluation that measures prompt fidelity.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { trainingSchema } from '../config/schema_common.js';
import { parseClipTextConfig, type CLIPTextConfig } from '../models/clip_text.js';
import { parseUNetConfig, type UNet2DConditionConfig } from '../models/unet.js';
import { parseVaeConfig, type AutoencoderKLConfig } from '../models/vae.js';
import { SAMPLERS } from '../config/schema_common.js';
import { parseCombos, parseShapes, SHAPES, type Combo, type ShapeName } from './render.js';

const int = () => z.number().int();
const Json = z.record(z.string(), z.unknown());

const DataSection = z.strictObject({
  n: int().min(1).default(8000).describe('Training images.'),
  seed: int().min(0).default(0).describe('Seed of the shapes world (image i depends only on seed and i).'),
  image_size: int().min(8).multipleOf(8).default(32).describe('Image side in pixels.'),
  shapes: z.array(z.enum(SHAPES)).min(1).default([...SHAPES]).describe('Shapes drawn; the others stay unknown to the model.'),
  hold_out: z.array(z.string()).default([]).describe("Colour×shape pairs never drawn and never captioned, e.g. 'yellow star'."),
  min_scale: z.number().gt(0).max(1).default(0.5),
  max_scale: z.number().gt(0).max(1).default(0.8),
});

const VaeSection = z.strictObject({
  steps: int().min(1).default(2000),
  batch_size: int().min(1).default(32),
  learning_rate: z.number().positive().default(1e-3),
  warmup_steps: int().min(0).default(100).describe('Linear warm-up, then cosine decay to 0 at the last step.'),
  weight_decay: z.number().min(0).default(0),
  max_grad_norm: z.number().min(0).default(1),
  reconstruction: z.enum(['l1', 'mse']).default('l1').describe("Reconstruction error per pixel and channel: 'l1' (LDM's) or 'mse'."),
  kl_weight: z.number().min(0).default(1e-5).describe('Weight of the KL term (mean over latent elements) against the mean reconstruction error.'),
  log_every_n_steps: int().min(1).default(50),
  save_every_n_steps: int().min(0).default(500),
});

const EvalSection = z.strictObject({
  samples_per_prompt: int().min(1).default(2),
  steps: int().min(1).default(25),
  cfg_scale: z.number().min(0).default(4),
  sampler: z.enum(SAMPLERS).default('ddim'),
  seed: int().min(0).default(1000),
  batch_size: int().min(1).default(8),
});

export const TinyShapesConfigSchema = z.strictObject({
  seed: int().min(0).default(0).describe('Seed of the training runs (initialisation, noise, dropout, order).'),
  data: DataSection.prefault({}),
  model: z.strictObject({ vae: Json, unet: Json, text_encoder: Json }),
  vae: VaeSection.prefault({}),
  training: trainingSchema({ learning_rate: 5e-4, max_train_steps: 6000, cond_dropout: 0.1 }),
  eval: EvalSection.prefault({}),
});

type Parsed = z.infer<typeof TinyShapesConfigSchema>;

export interface TinyShapesConfig extends Omit<Parsed, 'model' | 'data'> {
  data: Omit<Parsed['data'], 'hold_out' | 'shapes'> & { hold_out: Combo[]; shapes: ShapeName[] };
  model: { vae: AutoencoderKLConfig; unet: UNet2DConditionConfig; text_encoder: CLIPTextConfig };
}

export type VaeTrainingConfig = TinyShapesConfig['vae'];
export type EvalConfig = TinyShapesConfig['eval'];

/** Validates a parsed YAML document. `source` names the file in errors. */
export function parseTinyShapesConfig(doc: unknown, source = 'tiny-shapes config'): TinyShapesConfig {
  const r = TinyShapesConfigSchema.safeParse(doc);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ConfigError(`${source}:\n${lines.join('\n')}`);
  }
  const c = r.data;
  const model = {
    vae: parseVaeConfig(c.model.vae, `${source}: model.vae`),
    unet: parseUNetConfig(c.model.unet, `${source}: model.unet`),
    text_encoder: parseClipTextConfig(c.model.text_encoder, `${source}: model.text_encoder`),
  };
  if (model.unet.cross_attention_dim !== model.text_encoder.hidden_size) {
    throw new ConfigError(`${source}: model.unet.cross_attention_dim (${model.unet.cross_attention_dim}) must equal model.text_encoder.hidden_size (${model.text_encoder.hidden_size})`);
  }
  if (model.unet.in_channels !== model.vae.latent_channels || model.unet.out_channels !== model.vae.latent_channels) {
    throw new ConfigError(`${source}: the U-Net's in/out channels must equal the VAE's latent_channels (${model.vae.latent_channels})`);
  }
  let holdOut: Combo[];
  let shapes: ShapeName[];
  try {
    holdOut = parseCombos(c.data.hold_out);
    shapes = parseShapes(c.data.shapes);
  } catch (err) {
    throw new ConfigError(`${source}: data: ${(err as Error).message}`);
  }
  return { ...c, data: { ...c.data, hold_out: holdOut, shapes }, model };
}

export async function loadTinyShapesConfig(path: string): Promise<{ config: TinyShapesConfig; text: string }> {
  const text = await readFile(path, 'utf8');
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid YAML: ${(err as Error).message}`);
  }
  return { config: parseTinyShapesConfig(doc, path), text };
}
