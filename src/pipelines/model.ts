// A Stable Diffusion model ready to sample from: the three networks, the tokenizer, the scheduler config and what
// the infotext says about it (name, A1111 "Model hash"). Loads a diffusers folder or an original single file.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import type { ConfigOverrides } from '../checkpoints/derive_config.js';
import { loadDiffusersFolder, readDiffusersConfigs } from '../checkpoints/diffusers_folder.js';
import { disposePipeline, type Pipeline, type PipelineConfigs } from '../checkpoints/pipeline.js';
import { loadSingleFile, loadVaeOverride, readSingleFileConfigs } from '../checkpoints/single_file.js';
import { FormatError } from '../errors.js';
import type { CLIPTextModel } from '../models/clip_text.js';
import { SD_SCHEDULER } from '../models/presets.js';
import type { UNet2DConditionModel } from '../models/unet.js';
import type { AutoencoderKL } from '../models/vae.js';
import { disposeModule } from '../nn/module.js';
import { parseSchedulerConfig, type PredictionType, type SchedulerConfig } from '../schedules/config.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';

/** SD 1.x (CLIP ViT-L text encoder, pads with EOS) or SD 2.x (OpenCLIP ViT-H, pads with 0). */
export type ModelFamily = 'sd1' | 'sd2';

export interface SdModel {
  readonly unet: UNet2DConditionModel;
  readonly vae: AutoencoderKL;
  readonly textEncoder: CLIPTextModel;
  readonly tokenizer: CLIPTokenizer;
  /** The model's scheduler config (a diffusers folder's own, else the LDM schedule), prediction type applied. */
  readonly schedulerConfig: SchedulerConfig;
  readonly family: ModelFamily;
  readonly predictionType: PredictionType;
  /** A 9-channel inpainting U-Net (4 latents + 1 mask + 4 masked-image latents). */
  readonly inpainting: boolean;
  /** A1111 "Model": the file name without extension, or the folder's name. */
  readonly name: string;
  readonly path: string;
  /** A1111 "VAE": the separate VAE's file (or folder) name without extension, when one was given. */
  readonly vaeName?: string;
  readonly vaePath?: string;
  /** What could not be read from a single file and was assumed (empty for diffusers folders). */
  readonly assumed: readonly string[];
  /** A1111 "Model hash": first 10 hex digits of sha256 of the checkpoint file (a folder's U-Net weights file); streamed once, then cached. */
  hash(): Promise<string>;
  /** A1111 "VAE hash" of the separate VAE (first 10 hex of sha256 of its weights file), or undefined without one. */
  vaeHash(): Promise<string | undefined>;
  /** Frees every weight tensor. */
  dispose(): void;
}

export interface LoadModelOptions {
  /** A VAE to use instead of the model's: a diffusers `vae/` folder, or a file (original or diffusers key layout). */
  vae?: string;
  /** What the U-Net predicts. Default: the folder's scheduler config says; single files 'epsilon' (see `assumed`). */
  predictionType?: PredictionType;
  /** Single files: config values the weights cannot tell (e.g. a text encoder whose head count is not width/64). */
  overrides?: ConfigOverrides;
}

/** sha256 (hex) of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A lazily computed, cached hash prefix of a file (A1111 shows 10 hex digits). */
function lazyHash(path: string | undefined, digits = 10): () => Promise<string> {
  let p: Promise<string> | undefined;
  return () => (p ??= path ? sha256File(path).then((h) => h.slice(0, digits)) : Promise.resolve(''));
}

const stem = (p: string): string => basename(p.replace(/[\\/]+$/, ''), extname(p.replace(/[\\/]+$/, '')));
const isDir = (p: string): boolean => existsSync(p) && statSync(p).isDirectory();

const WEIGHT_FILES = ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin', 'diffusion_pytorch_model.fp16.safetensors'];

/** The weights file of a diffusers component folder (first match) whose sha256 is its A1111 hash. */
function componentWeights(dir: string): string | undefined {
  return WEIGHT_FILES.map((n) => join(dir, n)).find((p) => existsSync(p));
}

/** SD2 text encoders are OpenCLIP's (exact GELU); SD1's CLIP ViT-L uses quick_gelu. */
const familyOf = (te: CLIPTextModel): ModelFamily => (te.config.hidden_act === 'gelu' ? 'sd2' : 'sd1');

/** Loads a diffusers folder (model_index.json) or an original single-file checkpoint for sampling. */
export async function loadModel(pathOrDir: string, opts: LoadModelOptions = {}): Promise<SdModel> {
  if (!existsSync(pathOrDir)) throw new FormatError(pathOrDir, 'no such file or folder');
  if (isDir(pathOrDir)) {
    const p = await loadDiffusersFolder(pathOrDir);
    try {
      const family = familyOf(p.textEncoder);
      if (opts.vae) {
        const vae = await loadVaeOverride(opts.vae, p.vae.config);
        disposeModule(p.vae);
        p.vae = vae;
      }
      const raw = { ...(p.schedulerConfig ?? SD_SCHEDULER) };
      if (opts.predictionType) raw.prediction_type = opts.predictionType;
      const schedulerConfig = parseSchedulerConfig(raw, join(pathOrDir, 'scheduler', 'scheduler_config.json'));
      const tokenizer = p.tokenizerDir
        ? await CLIPTokenizer.fromDiffusersFolder(p.tokenizerDir)
        : await CLIPTokenizer.fromBundled({ padWith: family === 'sd2' ? 'zero' : 'eos' });
      return makeModel(p, {
        tokenizer,
        schedulerConfig,
        family,
        path: pathOrDir,
        hashPath: componentWeights(join(pathOrDir, 'unet')),
        vaePath: opts.vae,
        assumed: [],
      });
    } catch (err) {
      disposePipeline(p);
      throw err;
    }
  }
  const p = await loadSingleFile(pathOrDir, { predictionType: opts.predictionType, vae: opts.vae, overrides: opts.overrides });
  try {
    const family: ModelFamily = p.family.startsWith('sd2') ? 'sd2' : 'sd1';
    const schedulerConfig = parseSchedulerConfig(p.schedulerConfig, `${pathOrDir} (LDM schedule)`);
    const tokenizer = await CLIPTokenizer.fromBundled({ padWith: family === 'sd2' ? 'zero' : 'eos' });
    return makeModel(p, { tokenizer, schedulerConfig, family, path: pathOrDir, hashPath: pathOrDir, vaePath: opts.vae, assumed: p.assumed });
  } catch (err) {
    disposePipeline(p);
    throw err;
  }
}

/** The component configs of a model without loading it (for memory estimates before a backend is chosen). */
export async function readModelConfigs(pathOrDir: string, opts: Pick<LoadModelOptions, 'overrides'> = {}): Promise<PipelineConfigs> {
  if (!existsSync(pathOrDir)) throw new FormatError(pathOrDir, 'no such file or folder');
  if (isDir(pathOrDir)) return readDiffusersConfigs(pathOrDir);
  return (await readSingleFileConfigs(pathOrDir, { overrides: opts.overrides })).configs;
}

export interface ModelParts {
  tokenizer: CLIPTokenizer;
  schedulerConfig: SchedulerConfig;
  family?: ModelFamily;
  /** Where the model came from (its `name` is derived from it). */
  path: string;
  /** The file whose sha256 is the "Model hash"; none: the hash is ''. */
  hashPath?: string;
  vaePath?: string;
  assumed?: readonly string[];
}

/** An SdModel around networks already loaded (tests, the parity runner, a training loop sampling previews). */
export function makeModel(p: Pick<Pipeline, 'unet' | 'vae' | 'textEncoder'>, parts: ModelParts): SdModel {
  const vaeFile = parts.vaePath && (isDir(parts.vaePath) ? componentWeights(parts.vaePath) : parts.vaePath);
  const vaeHash = lazyHash(vaeFile);
  let disposed = false;
  return {
    unet: p.unet,
    vae: p.vae,
    textEncoder: p.textEncoder,
    tokenizer: parts.tokenizer,
    schedulerConfig: parts.schedulerConfig,
    family: parts.family ?? familyOf(p.textEncoder),
    predictionType: parts.schedulerConfig.prediction_type,
    inpainting: p.unet.config.in_channels === 4 + 1 + p.vae.config.latent_channels,
    name: stem(parts.path),
    path: parts.path,
    ...(parts.vaePath ? { vaeName: stem(parts.vaePath), vaePath: parts.vaePath } : {}),
    assumed: parts.assumed ?? [],
    hash: lazyHash(parts.hashPath),
    vaeHash: async () => (vaeFile ? vaeHash() : undefined),
    dispose() {
      if (disposed) return;
      disposed = true;
      disposePipeline(this);
    },
  };
}
