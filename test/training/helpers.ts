// The tiny SD1 fixture model and small in-memory datasets for training tests.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDiffusersFolder, type LoadedDiffusersFolder } from '../../src/checkpoints/diffusers_folder.js';
import { EmbedConfigSchema, type EmbedConfig } from '../../src/config/schema.js';
import { namedParams, type Module } from '../../src/nn/module.js';
import { noiseSchedule } from '../../src/schedules/betas.js';
import { parseSchedulerConfig } from '../../src/schedules/config.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { MemoryBatchSource, type MemoryItem } from '../../src/training/memory_source.js';
import { TextualInversion } from '../../src/training/textual_inversion.js';
import type { DiffusionSetup } from '../../src/training/types.js';
import { TINY_SD1 } from '../helpers/parity_case.js';

export interface Tiny {
  model: LoadedDiffusersFolder;
  setup: DiffusionSetup;
  /** A fresh tokenizer (each TI run adds its own placeholder). */
  tokenizer(): Promise<CLIPTokenizer>;
}

export async function loadTiny(): Promise<Tiny> {
  const model = await loadDiffusersFolder(TINY_SD1);
  const sched = parseSchedulerConfig(JSON.parse(readFileSync(join(TINY_SD1, 'scheduler', 'scheduler_config.json'), 'utf8')));
  const setup: DiffusionSetup = {
    alphasCumprod: noiseSchedule(sched).alphasCumprod,
    predictionType: sched.prediction_type,
    scalingFactor: model.vae.scalingFactor,
    encodeImages: (px) => model.vae.encode(px),
  };
  return { model, setup, tokenizer: () => CLIPTokenizer.fromDiffusersFolder(join(TINY_SD1, 'tokenizer')) };
}

/** A full embed config (defaults filled by the schema) with overrides. */
export function embedConfig(training: Record<string, unknown>, embed: Record<string, unknown> = {}, seed = 0): EmbedConfig {
  return EmbedConfigSchema.parse({
    seed,
    data: { datasets: [{ path: '/nonexistent' }] },
    training: { save_every_n_steps: 0, log_every_n_steps: 5, ...training },
    embed: { placeholder_token: '<tiny-concept>', init_word: 'cat', ...embed },
  });
}

export async function tiMethod(tiny: Tiny, cfg: EmbedConfig, name?: string): Promise<TextualInversion> {
  return new TextualInversion(
    { textEncoder: tiny.model.textEncoder, unet: tiny.model.unet, tokenizer: await tiny.tokenizer() },
    { embed: cfg.embed, ...(name !== undefined ? { name } : {}) },
  );
}

/** Four seeded latents [8, 12, 4] with posterior-style moments and TI captions. Caller disposes via disposeItems. */
export function tinyItems(kind: 'latents' | 'latentDist' = 'latents', n = 4): MemoryItem[] {
  const captions = ['a photo of <tiny-concept>', 'a rendering of a <tiny-concept> in the snow', 'a close-up photo of the <tiny-concept>', 'a good photo of a <tiny-concept>'];
  return Array.from({ length: n }, (_, i) => {
    const caption = captions[i % captions.length]!;
    const mean = tf.randomNormal([8, 12, 4], 0, 4, 'float32', 100 + i) as tf.Tensor3D; // ~ unscaled VAE means
    if (kind === 'latentDist') return { caption, latentDist: { mean, logvar: tf.fill([8, 12, 4], -4) as tf.Tensor3D } };
    const latents = mean.mul(0.18215) as tf.Tensor3D;
    mean.dispose();
    return { caption, latents };
  });
}

export function disposeItems(items: MemoryItem[]): void {
  for (const it of items) tf.dispose([it.latents, it.latentDist?.mean, it.latentDist?.logvar].filter((x): x is tf.Tensor3D => x !== undefined));
}

export const memorySource = (items: MemoryItem[], batchSize: number, seed = 0, shuffle = true): MemoryBatchSource =>
  new MemoryBatchSource(items, { batchSize, seed, shuffle });

/** Copies of every weight of the given modules, by key (for bit-identity checks). */
export function snapshotWeights(modules: Record<string, Module>): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [prefix, m] of Object.entries(modules)) {
    for (const [k, p] of namedParams(m)) out.set(`${prefix}.${k}`, Float32Array.from(p.t.dataSync() as Float32Array));
  }
  return out;
}

/** Keys whose bytes differ between two snapshots. */
export function changedWeights(a: Map<string, Float32Array>, b: Map<string, Float32Array>): string[] {
  const changed: string[] = [];
  for (const [k, x] of a) {
    const y = b.get(k)!;
    const xb = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    const yb = new Uint8Array(y.buffer, y.byteOffset, y.byteLength);
    if (xb.length !== yb.length || xb.some((v, i) => v !== yb[i])) changed.push(k);
  }
  return changed;
}
