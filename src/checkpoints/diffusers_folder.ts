// diffusers pipeline folders: `model_index.json` + `unet/`, `vae/`, `text_encoder/` (each `config.json` + weights),
// `tokenizer/`, `scheduler/`. Our module paths are the diffusers/transformers keys, so loading is the plain walk with
// no key table; writing produces the same layout back (one atomic write per file).
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { writeFileAtomic } from '../formats/atomic.js';
import type { TensorToWrite } from '../formats/dtype.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { CLIPTextModel, parseClipTextConfig } from '../models/clip_text.js';
import { parseUNetConfig, UNet2DConditionModel } from '../models/unet.js';
import { AutoencoderKL, parseVaeConfig } from '../models/vae.js';
import { disposeModule, namedParams, type Module } from '../nn/module.js';
import { oldVaeAttentionKey } from './ldm_keys.js';
import { checkpointShape, lazyTensor, prepareLoad, toCheckpointLayout, type PreparedLoad } from './load.js';
import { buildPipeline, disposePipeline, type Pipeline, type PipelineConfigs } from './pipeline.js';
import { openShardedSource, openSource, withSource, type TensorSource } from './sources.js';

export interface DiffusersFolderOptions {
  /** Prefer `*.<variant>.safetensors` weights (e.g. 'fp16'); the plain files are used when the variant is absent. */
  variant?: string;
}

export interface LoadedDiffusersFolder extends Pipeline {
  /** `<dir>/tokenizer` when present. */
  tokenizerDir?: string;
  /** `scheduler/scheduler_config.json` as plain JSON, for the sampler. */
  schedulerConfig?: Record<string, unknown>;
  modelIndex: Record<string, unknown>;
}

export type ComponentName = 'unet' | 'vae' | 'text_encoder';

/** The model each component folder holds. */
export interface ComponentModels {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  text_encoder: CLIPTextModel;
}

/** How each component's `config.json` is parsed and its (shape-only) model built. */
const COMPONENT_TYPES: {
  [C in ComponentName]: { parse(json: unknown, source: string): PipelineConfigs[C]; build(config: PipelineConfigs[C]): ComponentModels[C] };
} = {
  unet: { parse: parseUNetConfig, build: (c) => new UNet2DConditionModel(c) },
  vae: { parse: parseVaeConfig, build: (c) => new AutoencoderKL(c) },
  text_encoder: { parse: parseClipTextConfig, build: (c) => new CLIPTextModel(c) },
};

async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new FormatError(path, `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, undefined, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new FormatError(path, `not valid JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new FormatError(path, 'expected a JSON object');
  return json as Record<string, unknown>;
}

/** Weight file names in preference order: safetensors before .bin, one file before shards, the variant first. */
function weightCandidates(component: ComponentName, variant?: string): string[] {
  const [st, bin] = component === 'text_encoder' ? ['model', 'pytorch_model'] : ['diffusion_pytorch_model', 'diffusion_pytorch_model'];
  const variants = variant ? [`.${variant}`, ''] : ['', '.fp16'];
  return variants.flatMap((v) => [`${st}${v}.safetensors`, `${st}.safetensors.index${v}.json`, `${bin}${v}.bin`, `${bin}.bin.index${v}.json`]);
}

async function openComponentWeights(dir: string, component: ComponentName, variant?: string): Promise<TensorSource> {
  const candidates = weightCandidates(component, variant);
  const name = candidates.find((n) => existsSync(join(dir, n)));
  if (!name) throw new FormatError(dir, `no weights: expected one of ${candidates.slice(0, 4).join(', ')} (or an fp16 variant)`);
  const path = join(dir, name);
  return name.endsWith('.json') ? openShardedSource(path) : openSource(path);
}

/** A component folder's parsed `config.json`. */
async function readComponentConfig<C extends ComponentName>(dir: string, component: C): Promise<PipelineConfigs[C]> {
  const path = join(dir, 'config.json');
  return COMPONENT_TYPES[component].parse(await readJson(path), path);
}

/** The three component configs of a diffusers folder (its `config.json` files), without reading any weights. */
export async function readDiffusersConfigs(dir: string): Promise<PipelineConfigs> {
  return {
    unet: await readComponentConfig(join(dir, 'unet'), 'unet'),
    vae: await readComponentConfig(join(dir, 'vae'), 'vae'),
    text_encoder: await readComponentConfig(join(dir, 'text_encoder'), 'text_encoder'),
  };
}

export interface ComponentFolderOptions<C extends ComponentName> extends DiffusersFolderOptions {
  /** The config to use when the folder has no `config.json` (a bare `vae/` folder); default: it is required. */
  fallbackConfig?: PipelineConfigs[C];
}

/**
 * Loads one diffusers/transformers component folder (e.g. `<model>/unet`): its `config.json` and its weights (one
 * file or shards, safetensors or `.bin`, the fp16 variant when that is all there is), checked like a whole folder's
 * (see prepareComponent). On an error the partly filled model is freed.
 */
export async function loadComponentFolder<C extends ComponentName>(
  dir: string,
  component: C,
  opts: ComponentFolderOptions<C> = {},
): Promise<ComponentModels[C]> {
  const config =
    opts.fallbackConfig && !existsSync(join(dir, 'config.json')) ? opts.fallbackConfig : await readComponentConfig(dir, component);
  const model = COMPONENT_TYPES[component].build(config);
  try {
    await withSource(openComponentWeights(dir, component, opts.variant), (s) => prepareComponent(s, component, model).fill());
  } catch (err) {
    disposeModule(model);
    throw err;
  }
  return model;
}

/**
 * Loads a diffusers pipeline folder. Every component's keys and shapes are checked before any weights are read;
 * a mismatch throws one CheckpointMismatchError per component file.
 */
export async function loadDiffusersFolder(dir: string, opts: DiffusersFolderOptions = {}): Promise<LoadedDiffusersFolder> {
  const indexPath = join(dir, 'model_index.json');
  if (!existsSync(indexPath)) {
    throw new FormatError(dir, 'not a diffusers folder: model_index.json is missing (expected model_index.json, unet/, vae/, text_encoder/)');
  }
  const modelIndex = await readJson(indexPath);
  const configs = await readDiffusersConfigs(dir);
  const pipe = buildPipeline(configs);
  const sources: TensorSource[] = [];
  try {
    const prepared: PreparedLoad[] = [];
    for (const [c, model] of [['unet', pipe.unet], ['vae', pipe.vae], ['text_encoder', pipe.textEncoder]] as const) {
      const source = await openComponentWeights(join(dir, c), c, opts.variant);
      sources.push(source);
      prepared.push(prepareComponent(source, c, model));
    }
    for (const p of prepared) await p.fill();
  } catch (err) {
    disposePipeline(pipe);
    throw err;
  } finally {
    await Promise.all(sources.map((s) => s.close()));
  }
  const tokenizerDir = join(dir, 'tokenizer');
  const schedulerPath = join(dir, 'scheduler', 'scheduler_config.json');
  return {
    ...pipe,
    modelIndex,
    tokenizerDir: existsSync(tokenizerDir) ? tokenizerDir : undefined,
    schedulerConfig: existsSync(schedulerPath) ? await readJson(schedulerPath) : undefined,
  };
}

/**
 * A diffusers-layout component: names are ours. Tolerated extras: transformers < 4.31 saved the text encoder's
 * `position_ids` buffer (an arange, not a weight); VAEs saved before diffusers 0.15 name the mid-block attention
 * `query/key/value/proj_attn` (same Linear weights, renamed module).
 */
export function prepareComponent(source: TensorSource, component: ComponentName, model: Module): PreparedLoad {
  const map =
    component === 'vae'
      ? (k: string) => ({ key: source.shapes.has(k) ? k : (oldVaeAttentionKey(k) ?? k), op: 'rename' as const })
      : undefined;
  const ignore = component === 'text_encoder' ? (k: string) => /(^|\.)embeddings\.position_ids$/.test(k) : undefined;
  return prepareLoad(source, [{ model, map }], { component, ignore });
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

export interface WriteDiffusersOptions {
  /** Store weights as float16 in `*.fp16.safetensors` (diffusers' variant naming); default float32 plain names. */
  fp16?: boolean;
  /** Written as `scheduler/scheduler_config.json`; default none. */
  schedulerConfig?: Record<string, unknown>;
  /** A tokenizer folder to copy as `tokenizer/` (vocab.json, merges.txt, ...). */
  tokenizerDir?: string;
}

/** The diffusers version whose config format we write (the fixtures' reference). */
const DIFFUSERS_VERSION = '0.27.2';

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, async (fh) => {
    await fh.writeFile(`${JSON.stringify(value, null, 2)}\n`);
  });
}

/** Writes `pipeline` as a diffusers folder (created if needed); each file is replaced atomically. */
export async function writeDiffusersFolder(
  dir: string,
  pipeline: Pick<Pipeline, 'unet' | 'vae' | 'textEncoder' | 'configs'>,
  opts: WriteDiffusersOptions = {},
): Promise<void> {
  const { configs } = pipeline;
  const suffix = opts.fp16 ? '.fp16' : '';
  const dtype = opts.fp16 ? 'F16' : 'F32';
  for (const c of ['unet', 'vae', 'text_encoder', ...(opts.schedulerConfig ? ['scheduler'] : [])]) await mkdir(join(dir, c), { recursive: true });

  await writeJson(join(dir, 'unet', 'config.json'), { _class_name: 'UNet2DConditionModel', _diffusers_version: DIFFUSERS_VERSION, ...configs.unet });
  await writeJson(join(dir, 'vae', 'config.json'), { _class_name: 'AutoencoderKL', _diffusers_version: DIFFUSERS_VERSION, ...configs.vae });
  await writeJson(join(dir, 'text_encoder', 'config.json'), {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    ...configs.text_encoder,
    torch_dtype: opts.fp16 ? 'float16' : 'float32',
  });
  // transformers refuses safetensors without `format` metadata; diffusers writes the same.
  const meta = { format: 'pt' };
  await writeSafetensors(join(dir, 'unet', `diffusion_pytorch_model${suffix}.safetensors`), stateDict(pipeline.unet, dtype), meta);
  await writeSafetensors(join(dir, 'vae', `diffusion_pytorch_model${suffix}.safetensors`), stateDict(pipeline.vae, dtype), meta);
  await writeSafetensors(join(dir, 'text_encoder', `model${suffix}.safetensors`), stateDict(pipeline.textEncoder, dtype), meta);

  if (opts.schedulerConfig) {
    await writeJson(join(dir, 'scheduler', 'scheduler_config.json'), { _diffusers_version: DIFFUSERS_VERSION, ...opts.schedulerConfig });
  }
  if (opts.tokenizerDir) {
    await mkdir(join(dir, 'tokenizer'), { recursive: true });
    for (const entry of await readdir(opts.tokenizerDir, { withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const bytes = await readFile(join(opts.tokenizerDir, entry.name));
      await writeFileAtomic(join(dir, 'tokenizer', entry.name), (fh) => fh.writeFile(bytes));
    }
  }
  const scheduler = opts.schedulerConfig?._class_name;
  await writeJson(join(dir, 'model_index.json'), {
    _class_name: 'StableDiffusionPipeline',
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: typeof scheduler === 'string' ? ['diffusers', scheduler] : [null, null],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: opts.tokenizerDir ? ['transformers', 'CLIPTokenizer'] : [null, null],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  });
}

/** A model's parameters under their own names in PyTorch layout, converted when the writer reads them. */
function stateDict(model: Module, dtype: 'F32' | 'F16'): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  for (const [key, param] of namedParams(model)) {
    out.set(key, lazyTensor(checkpointShape(param.shape), dtype, () => toCheckpointLayout(param.t).data));
  }
  return out;
}
