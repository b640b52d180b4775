// The VAE latent cache. Each image variant (target size, crop, flip) is encoded once and its posterior {mean, logvar}
// is kept on disk, so later epochs and later runs skip the VAE. Latents are *sampled* per use (mean + exp(logvar/2)·ε,
// ε from the batch's seeded generator; see dataset.ts), as diffusers does every step — not frozen at cache time.
//
// Layout: <cache_dir>/latents/<key[0:2]>/<key>.safetensors, key = sha256 over (format version, sha256 of the image
// bytes, width, height, crop, flip, VAE hash). Any change to one of them is a different key and so a different file;
// nothing is ever overwritten with different content, so runs can share a cache_dir. Files hold F32 `mean` and `logvar`
// [h, w, C] (NHWC without the batch axis) and metadata repeating the key parts, checked on read. Writes are atomic.
// A file that cannot be read or does not match is re-encoded with a warning. Stale files are never deleted.
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { FormatError, SdtrainError } from '../errors.js';
import { SafetensorsFile, writeSafetensors } from '../formats/safetensors.js';
import { vaeScaleFactor, type AutoencoderKL } from '../models/vae.js';
import { namedParams } from '../nn/module.js';
import { loadImage } from './images.js';
import type { Warn } from './types.js';

export const LATENT_CACHE_FORMAT = 'sdtrain-latents/1';

/** One preprocessing variant of one image. The cache only holds deterministic crops. */
export interface LatentVariant {
  /** sha256 (hex) of the image file's bytes. */
  sha256: string;
  /** Target size in pixels. */
  width: number;
  height: number;
  crop: 'center';
  flip: boolean;
}

export interface CachedLatent {
  mean: Float32Array;
  logvar: Float32Array;
  /** [h, w, C] */
  shape: [number, number, number];
}

export type CacheOutcome = 'hit' | 'encoded' | 'reencoded';

function keyParts(v: LatentVariant, vaeHash: string): Record<string, string> {
  return {
    format: LATENT_CACHE_FORMAT,
    image_sha256: v.sha256,
    width: String(v.width),
    height: String(v.height),
    crop: v.crop,
    flip: String(v.flip),
    vae_hash: vaeHash,
  };
}

export function latentKey(v: LatentVariant, vaeHash: string): string {
  return createHash('sha256').update(JSON.stringify(keyParts(v, vaeHash))).digest('hex');
}

export function latentPath(cacheDir: string, key: string): string {
  return path.join(cacheDir, 'latents', key.slice(0, 2), `${key}.safetensors`);
}

/**
 * A hash of a VAE's weights (names, shapes, float32 values) and config. Pass a cheaper one to LatentCache when you
 * have it (e.g. a hash of the weights file); any string that changes whenever the weights change will do.
 */
export async function hashVaeWeights(vae: AutoencoderKL): Promise<string> {
  const h = createHash('sha256').update(JSON.stringify(vae.config));
  const params = [...namedParams(vae).entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  for (const [name, p] of params) {
    h.update(`${name}:${p.shape.join('x')};`);
    const data = await p.t.data();
    h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  return h.digest('hex');
}

export class LatentCache {
  readonly stats = { hits: 0, encoded: 0, reencoded: 0 };
  readonly latentChannels: number;
  /** Pixels per latent along each side: 2^(VAE levels − 1) (8 for SD, 4 for the tiny-shapes VAE). */
  readonly factor: number;

  constructor(
    readonly dir: string,
    readonly vae: AutoencoderKL,
    readonly vaeHash: string,
    private readonly onWarning: Warn = () => undefined,
  ) {
    this.latentChannels = vae.config.latent_channels;
    this.factor = vaeScaleFactor(vae.config);
  }

  fileFor(v: LatentVariant): string {
    return latentPath(this.dir, latentKey(v, this.vaeHash));
  }

  /** Makes sure the variant is on disk (header and shapes checked), encoding `image` when it is missing or corrupt. */
  async ensure(image: string, v: LatentVariant): Promise<CacheOutcome> {
    const file = this.fileFor(v);
    const problem = await this.check(file, v);
    if (problem === undefined) {
      this.stats.hits++;
      return 'hit';
    }
    await this.encode(image, v, problem === 'missing' ? undefined : problem);
    return problem === 'missing' ? 'encoded' : 'reencoded';
  }

  /** The cached posterior of a variant; a missing or corrupt file is (re-)encoded first. */
  async load(image: string, v: LatentVariant): Promise<CachedLatent> {
    const file = this.fileFor(v);
    let problem: string;
    try {
      return await this.read(file, v);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') problem = 'missing';
      else problem = (err as Error).message;
    }
    return this.encode(image, v, problem === 'missing' ? undefined : problem);
  }

  /** undefined if the file is usable, 'missing', or what is wrong with it. */
  private async check(file: string, v: LatentVariant): Promise<string | undefined> {
    let st: SafetensorsFile;
    try {
      st = await SafetensorsFile.open(file);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (err as Error).message;
    }
    try {
      this.validate(st, v);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    } finally {
      await st.close();
    }
  }

  private expectedShape(v: LatentVariant): [number, number, number] {
    return [v.height / this.factor, v.width / this.factor, this.latentChannels];
  }

  private validate(st: SafetensorsFile, v: LatentVariant): void {
    for (const [k, want] of Object.entries(keyParts(v, this.vaeHash))) {
      if (st.metadata[k] !== want) throw new FormatError(st.path, `metadata ${k} is ${JSON.stringify(st.metadata[k])}, expected ${JSON.stringify(want)}`);
    }
    const shape = this.expectedShape(v);
    for (const name of ['mean', 'logvar']) {
      const t = st.tensors.find((x) => x.name === name);
      if (!t || t.dtype !== 'F32' || t.shape.join(',') !== shape.join(',')) {
        throw new FormatError(st.path, `expected F32 tensor '${name}' of shape [${shape.join(', ')}]`);
      }
    }
  }

  private async read(file: string, v: LatentVariant): Promise<CachedLatent> {
    const st = await SafetensorsFile.open(file);
    try {
      this.validate(st, v);
      const mean = (await st.read('mean')).data as Float32Array;
      const logvar = (await st.read('logvar')).data as Float32Array;
      return { mean, logvar, shape: this.expectedShape(v) };
    } finally {
      await st.close();
    }
  }

  private async encode(image: string, v: LatentVariant, corrupt: string | undefined): Promise<CachedLatent> {
    const file = this.fileFor(v);
    if (corrupt !== undefined) this.onWarning(`latent cache file ${file} is unusable (${corrupt}); re-encoding ${image}`);
    const bytes = await readFile(image);
    if (createHash('sha256').update(bytes).digest('hex') !== v.sha256) {
      throw new SdtrainError(`${image} changed since the dataset was scanned; restart the run to rescan it`);
    }
    const pixels = await loadImage(bytes, { width: v.width, height: v.height, crop: v.crop, flip: v.flip, file: image });
    const shape = this.expectedShape(v);
    // Kept out of any scope the caller may hold open across awaits, and disposed here.
    const { mean, logvar } = tf.tidy(() => this.vae.encode(tf.tensor4d(pixels, [1, v.height, v.width, 3])));
    tf.keep(mean);
    tf.keep(logvar);
    let out: CachedLatent;
    try {
      out = { mean: (await mean.data()) as Float32Array, logvar: (await logvar.data()) as Float32Array, shape };
    } finally {
      mean.dispose();
      logvar.dispose();
    }
    await mkdir(path.dirname(file), { recursive: true });
    await writeSafetensors(
      file,
      { mean: { shape: [...shape], data: out.mean }, logvar: { shape: [...shape], data: out.logvar } },
      { ...keyParts(v, this.vaeHash), source: image },
    );
    if (corrupt !== undefined) this.stats.reencoded++;
    else this.stats.encoded++;
    return out;
  }
}
