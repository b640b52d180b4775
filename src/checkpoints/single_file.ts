// Original single-file checkpoints (`.safetensors` / `.ckpt`, CompVis/Stability layout): read the architecture from
// the tensor shapes, build the three models, and fill them through the one key table (ldm_keys.ts). And the reverse:
// write a pipeline back in that layout.
import { statSync } from 'node:fs';
import { FormatError } from '../errors.js';
import type { TensorToWrite } from '../formats/dtype.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { SD_SCHEDULER, type PredictionType } from '../models/presets.js';
import { AutoencoderKL, type AutoencoderKLConfig } from '../models/vae.js';
import { disposeModule, namedParams, type Module } from '../nn/module.js';
import { deriveConfigs, type ConfigOverrides, type Family } from './derive_config.js';
import { loadComponentFolder } from './diffusers_folder.js';
import {
  componentKeys,
  fillTensor,
  isOriginalOnlyKey,
  oldVaeAttentionKey,
  openClipExtras,
  PREFIX,
  scheduleBuffers,
  textEncoderLayoutOf,
  vaeToOriginal,
  type ComponentKeys,
  type KeyOp,
} from './ldm_keys.js';
import { checkpointShape, lazyTensor, prepareLoad, toCheckpointLayout, type LoadPart, type PreparedLoad } from './load.js';
import { buildPipeline, disposePipeline, type Pipeline } from './pipeline.js';
import { openSource, withSource, type TensorSource } from './sources.js';

export interface SingleFileOptions {
  /** What the U-Net predicts. The weights cannot tell; default 'epsilon' (and the result says it was assumed). */
  predictionType?: PredictionType;
  /** Config values to use instead of the derived ones (e.g. a text encoder whose head count is not width/64). */
  overrides?: ConfigOverrides;
  /** A standalone VAE file (original or diffusers layout, any container) to use instead of the checkpoint's. */
  vae?: string;
}

export interface LoadedSingleFile extends Pipeline {
  family: Family;
  predictionType: PredictionType;
  /** What could not be read from the weights and was assumed, one line each. */
  assumed: string[];
  /** A diffusers scheduler config for the LDM training schedule, with the prediction type. */
  schedulerConfig: Record<string, unknown>;
  /** safetensors `__metadata__` of the checkpoint (empty for .ckpt). */
  metadata: Record<string, string>;
}

/** The key table of each component for a pipeline's configs. */
function tables(configs: Pipeline['configs']): Record<'unet' | 'vae' | 'text_encoder', ComponentKeys> {
  return {
    unet: componentKeys('unet', configs.unet),
    vae: componentKeys('vae', configs.vae),
    text_encoder: componentKeys('text_encoder', textEncoderLayoutOf(configs.text_encoder)),
  };
}

/** The configs, family and assumptions derived from a single file's tensor shapes, without reading any weights. */
export async function readSingleFileConfigs(path: string, opts: SingleFileOptions = {}): Promise<ReturnType<typeof deriveConfigs>> {
  return withSource(openSource(path), async (source) => deriveConfigs(source.shapes, path, withStoredConfigs(source.metadata, opts)));
}

/** Loads an original single-file checkpoint; every tensor is checked (names, shapes) before any data is read. */
export async function loadSingleFile(path: string, opts: SingleFileOptions = {}): Promise<LoadedSingleFile> {
  return withSource(openSource(path), async (source) => {
    const derived = deriveConfigs(source.shapes, path, withStoredConfigs(source.metadata, opts));
    const predictionType = opts.predictionType ?? 'epsilon';
    const pipe = buildPipeline(derived.configs);
    const keys = tables(derived.configs);
    const textLayers = derived.configs.text_encoder.num_hidden_layers;
    const parts: LoadPart[] = [
      { model: pipe.unet, map: keys.unet.map },
      { model: pipe.textEncoder, map: keys.text_encoder.map },
    ];
    if (!opts.vae) parts.push({ model: pipe.vae, map: keys.vae.map });
    const ignore = (k: string) => isOriginalOnlyKey(k, textLayers) || (opts.vae !== undefined && k.startsWith(PREFIX.vae));
    const main = prepareLoad(source, parts, { component: 'checkpoint', ignore });
    try {
      if (opts.vae) {
        // The override is checked before the checkpoint's data is read, so a wrong VAE fails fast.
        await withSource(openSource(opts.vae), async (vaeSource) => {
          const vaeLoad = prepareVaeOverride(vaeSource, pipe.vae);
          await main.fill();
          await vaeLoad.fill();
        });
      } else {
        await main.fill();
      }
    } catch (err) {
      disposePipeline(pipe);
      throw err;
    }
    return {
      ...pipe,
      family: derived.family,
      predictionType,
      assumed: derived.assumed,
      schedulerConfig: { ...SD_SCHEDULER, prediction_type: predictionType },
      metadata: { ...source.metadata },
    };
  });
}

/**
 * A standalone VAE file: original layout with or without `first_stage_model.`, or diffusers layout (old `query/key/
 * value/proj_attn` attention names accepted). Why `loss.*` and `model_ema.*` are skipped: released VAE .ckpt files
 * (e.g. vae-ft-mse-840000) still carry the training loss's discriminator/LPIPS weights and EMA counters; A1111 drops
 * them too.
 */
export function prepareVaeOverride(source: TensorSource, vae: AutoencoderKL): PreparedLoad {
  const cfg = vae.config;
  const names = [...source.shapes.keys()];
  const diffusers = names.some((n) => n.startsWith('encoder.down_blocks.'));
  const prefix = !diffusers && names.some((n) => n.startsWith(PREFIX.vae)) ? PREFIX.vae : '';
  if (!diffusers && !source.shapes.has(`${prefix}encoder.down.0.block.0.conv1.weight`)) {
    throw new FormatError(source.label, 'not a VAE: no encoder.down_blocks.* (diffusers) or encoder.down.* (original) tensors');
  }
  const map = (k: string): KeyOp | undefined => {
    if (diffusers) return { key: source.shapes.has(k) ? k : (oldVaeAttentionKey(k) ?? k), op: 'rename' };
    const r = vaeToOriginal(k, cfg);
    return r && { ...r, key: prefix + r.key };
  };
  const ignore = (k: string) => k.startsWith('loss.') || k.startsWith('model_ema.') || !k.startsWith(prefix);
  return prepareLoad(source, [{ model: vae, map }], { component: 'vae', ignore });
}

/**
 * Loads a standalone VAE to use instead of a model's: a diffusers `vae/` folder (its own config.json; `config` when it
 * has none), or one file in the original or the diffusers layout (see prepareVaeOverride), built with `config`.
 */
export async function loadVaeOverride(path: string, config: AutoencoderKLConfig): Promise<AutoencoderKL> {
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) return loadComponentFolder(path, 'vae', { fallbackConfig: config });
  const vae = new AutoencoderKL(config);
  try {
    await withSource(openSource(path), (source) => prepareVaeOverride(source, vae).fill());
  } catch (err) {
    disposeModule(vae);
    throw err;
  }
  return vae;
}

export interface WriteSingleFileOptions {
  /** safetensors `__metadata__` (string values; training settings go here). */
  metadata?: Record<string, string>;
  /** Stored element type; default F32. */
  dtype?: 'F32' | 'F16';
  /** Also write LatentDiffusion's DDPM schedule buffers (`betas`, `alphas_cumprod`, ...); default false, as diffusers' converter. */
  scheduleBuffers?: boolean;
}

/**
 * Writes a pipeline as an original-layout single `.safetensors` (atomically). SD 2.x text encoders get the tensors
 * diffusers dropped (last OpenCLIP block, text_projection, logit_scale) synthesised, so strict LDM loaders accept it.
 * Tensors are converted one at a time while the file is written.
 */
export async function writeSingleFile(
  path: string,
  pipeline: Pick<Pipeline, 'unet' | 'vae' | 'textEncoder' | 'configs'>,
  opts: WriteSingleFileOptions = {},
): Promise<void> {
  const keys = tables(pipeline.configs);
  const dtype = opts.dtype ?? 'F32';
  const out = new Map<string, TensorToWrite>();
  addComponent(out, pipeline.unet, keys.unet, dtype);
  addComponent(out, pipeline.vae, keys.vae, dtype);
  addComponent(out, pipeline.textEncoder, keys.text_encoder, dtype);
  if (textEncoderLayoutOf(pipeline.configs.text_encoder) === 'openclip') {
    for (const e of openClipExtras(pipeline.configs.text_encoder)) out.set(e.key, { shape: e.shape, data: fillTensor(e.shape, e.fill), dtype });
  }
  if (opts.scheduleBuffers) {
    const s = SD_SCHEDULER as { beta_start: number; beta_end: number; num_train_timesteps: number };
    for (const [k, v] of Object.entries(scheduleBuffers(s.beta_start, s.beta_end, s.num_train_timesteps))) {
      out.set(k, { shape: [v.length], data: v, dtype: 'F32' });
    }
  }
  // Why: a few config values cannot be read back from shapes (a text encoder's head count when its width is not a
  // multiple of 64, GroupNorm groups); files we write carry the configs so they reload exactly.
  await writeSafetensors(path, out, { ...opts.metadata, [CONFIGS_KEY]: JSON.stringify(pipeline.configs) });
}

const CONFIGS_KEY = 'sdtrain.configs';

/** Overrides from the configs a file written by sdtrain carries; the caller's own overrides win. */
function withStoredConfigs(metadata: Readonly<Record<string, string>>, opts: SingleFileOptions): SingleFileOptions {
  const raw = metadata[CONFIGS_KEY];
  if (raw === undefined) return opts;
  let stored: ConfigOverrides;
  try {
    stored = JSON.parse(raw) as ConfigOverrides;
  } catch {
    return opts; // a damaged hint is not worth failing the load: the shapes still give the configs
  }
  const ov = opts.overrides ?? {};
  return {
    ...opts,
    overrides: {
      unet: { ...stored.unet, ...ov.unet },
      vae: { ...stored.vae, ...ov.vae },
      text_encoder: { ...stored.text_encoder, ...ov.text_encoder },
    },
  };
}

/** Adds one model's tensors under their original names, converted when the writer reads them (lazyTensor). */
function addComponent(out: Map<string, TensorToWrite>, model: Module, keys: ComponentKeys, dtype: 'F32' | 'F16'): void {
  const fused = new Map<string, { rows: number; rest: number[]; parts: Array<() => Float32Array> }>();
  for (const [key, param] of namedParams(model)) {
    const op = keys.map(key);
    if (!op) throw new Error(`no original-layout name for parameter '${key}' (ldm_keys.ts is missing a rule)`);
    if (out.has(op.key)) throw new Error(`two parameters map to '${op.key}' (ldm_keys.ts)`);
    if (op.op === 'slice_rows') {
      const f = fused.get(op.key) ?? { rows: 0, rest: param.shape.slice(1), parts: new Array<() => Float32Array>(op.parts) };
      f.rows += param.shape[0]!;
      f.parts[op.part] = () => param.t.dataSync() as Float32Array;
      fused.set(op.key, f);
      continue;
    }
    const shape = op.op === 'reshape' ? [...param.shape, 1, 1] : checkpointShape(param.shape);
    out.set(op.key, lazyTensor(shape, dtype, () => toCheckpointLayout(param.t).data));
  }
  for (const [k, f] of fused) {
    if (f.parts.some((p) => p === undefined)) throw new Error(`'${k}': not every row block of the fused tensor has a parameter`);
    out.set(
      k,
      lazyTensor([f.rows, ...f.rest], dtype, () => {
        const blocks = f.parts.map((p) => p());
        const all = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
        let at = 0;
        for (const b of blocks) {
          all.set(b, at);
          at += b.length;
        }
        return all;
      }),
    );
  }
}
