// The training dataset: scan → captions → buckets → epoch plans → batches of latents (or pixels), ready for the loop.
//
//   const ds = await openDataset(config.data, { seed: config.seed, batchSize: config.training.batch_size,
//                                              token, vae, cacheDir, onWarning });
//   for await (const batch of ds.batches(resumeCursor)) {   // endless: epoch after epoch
//     ... train on batch.latents and batch.captions ...; batch.latents.dispose(); save batch.next to resume
//   }
//
// Every random choice of a batch (order, random crop offsets, flips, tag shuffles, template lines, the latent sample
// ε) is drawn from generators seeded by (seed, epoch, batch index), so a batch is a pure function of (files, config,
// seed, cursor): restoring a saved cursor replays the same batches exactly. Conditioning dropout, noise and timesteps
// are the loop's. Latents are sampled from the VAE posterior per use and multiplied by `vae.scalingFactor`.
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { SdtrainError } from '../errors.js';
import { vaeScaleFactor, type AutoencoderKL } from '../models/vae.js';
import { EpochPlanner, checkCursor, nextCursor, type PlannedBatch } from './batches.js';
import { assignBucket, planBuckets } from './buckets.js';
import { canLackToken, captionRule, renderCaption, type CaptionRule } from './captions.js';
import { loadImage, type CropAt } from './images.js';
import { LatentCache, hashVaeWeights, type LatentVariant } from './latent_cache.js';
import { generatorFor, uniform } from './rng.js';
import { scanDatasets } from './scan.js';
import type { Bucket, DataConfig, DataCursor, DataItem, SkippedFile, Warn } from './types.js';

export interface OpenDatasetOptions {
  /** The run seed (`seed:`); every draw of the data pipeline derives from it. */
  seed: number;
  /** Images per batch (`training.batch_size`). Default 1. */
  batchSize?: number;
  /** Replaces [name] / {} in caption templates: `embed.placeholder_token`, or a DreamBooth instance token. */
  token?: string;
  /** With a VAE, batches carry latents; without one, pixels (and nothing is cached). */
  vae?: AutoencoderKL;
  /** Identifies the VAE weights in cache keys. Default: hashVaeWeights(vae) (reads every weight once). */
  vaeHash?: string;
  /** Where latents are cached (`data.cache_dir`, default <output_dir>/cache); needed with cache_latents and a VAE. */
  cacheDir?: string;
  onWarning?: Warn;
  onProgress?: (p: { phase: 'scan' | 'cache'; done: number; total: number }) => void;
}

export interface Batch {
  /** This batch's position; `next` is the one after it (save `next` to resume with the following batch). */
  cursor: DataCursor;
  next: DataCursor;
  /** Pixel size of every image in the batch (the bucket). */
  size: Bucket;
  items: DataItem[];
  /** The prompt text for each image, already rendered (templates filled, tags shuffled). */
  captions: string[];
  /** Whether each image was mirrored. */
  flipped: boolean[];
  /** With a VAE: [B, height/8, width/8, C] posterior samples × scalingFactor. The caller disposes it. */
  latents?: tf.Tensor4D;
  /** Without a VAE: [B, height, width, 3] in [-1, 1]. The caller disposes it. */
  pixels?: tf.Tensor4D;
}

/** A batch before tensors exist (host memory only), so the next one can be prepared while the loop trains. */
interface Prepared {
  base: Omit<Batch, 'latents' | 'pixels'>;
  latents?: Float32Array;
  pixels?: Float32Array;
  /** ε for sampling the posterior of `pixels` when a VAE encodes them at materialise time. */
  eps?: Float32Array;
}

export class Dataset {
  /** Bucket index of each item. */
  readonly itemBuckets: number[];
  readonly batchSize: number;
  /** One caption rule per subset. */
  readonly rules: CaptionRule[];
  private readonly planner: EpochPlanner;
  private readonly seed: number;

  constructor(
    readonly config: DataConfig,
    readonly items: readonly DataItem[],
    readonly skipped: readonly SkippedFile[],
    readonly buckets: readonly Bucket[],
    private readonly opts: OpenDatasetOptions,
    /** Present when latents are cached; `cache.stats` counts hits and encodes. */
    readonly cache: LatentCache | undefined,
  ) {
    this.seed = opts.seed;
    this.batchSize = opts.batchSize ?? 1;
    this.rules = config.datasets.map((d, i) => captionRule(d.caption, opts.token, i));
    this.itemBuckets = items.map((it) => assignBucket(buckets, it.width, it.height));
    this.planner = new EpochPlanner({
      buckets: this.itemBuckets,
      repeats: items.map((it) => config.datasets[it.subset]!.repeats),
      batchSize: this.batchSize,
      seed: this.seed,
    });
  }

  /** The token templates' [name] becomes (OpenDatasetOptions.token). */
  get token(): string | undefined {
    return this.opts.token;
  }

  get numItems(): number {
    return this.items.length;
  }

  /** Images per epoch, repeats counted. */
  get entriesPerEpoch(): number {
    return this.items.reduce((n, it) => n + this.config.datasets[it.subset]!.repeats, 0);
  }

  get batchesPerEpoch(): number {
    return this.planner.perEpoch;
  }

  /**
   * Identifies everything the batch order depends on (files and their bytes, subsets, buckets, batch size, seed).
   * Store it with a saved cursor: a different value on resume means the batches will not replay exactly.
   */
  get fingerprint(): string {
    const h = createHash('sha256');
    h.update(JSON.stringify([this.seed, this.batchSize, this.buckets, this.config.datasets.map((d) => [d.repeats, d.caption])]));
    for (const it of this.items) h.update(`${it.subset}|${it.relPath}|${it.sha256}|${this.itemBuckets[it.index]}\n`);
    return h.digest('hex');
  }

  /** The batches of an epoch (item indices only). */
  plan(epoch: number): readonly PlannedBatch[] {
    return this.planner.plan(epoch);
  }

  /** Endless batches from `from` (default the start), epoch after epoch; the next batch is prepared in the background. */
  async *batches(from: DataCursor = { epoch: 0, index: 0 }): AsyncGenerator<Batch, never, undefined> {
    let pending = this.prepare(checkCursor(from, this.batchesPerEpoch));
    for (;;) {
      const ready = await pending;
      pending = this.prepare(ready.base.next);
      pending.catch(() => undefined); // surfaced when awaited; avoids an unhandled rejection if the consumer stops
      yield this.materialise(ready);
    }
  }

  /** One batch by cursor. */
  async batchAt(cursor: DataCursor): Promise<Batch> {
    return this.materialise(await this.prepare(checkCursor(cursor, this.batchesPerEpoch)));
  }

  private async prepare(cursor: DataCursor): Promise<Prepared> {
    const planned = this.planner.at(cursor);
    const size = this.buckets[planned.bucket]!;
    const rng = generatorFor(this.seed, 'batch', cursor.epoch, cursor.index);
    const items = planned.items.map((i) => this.items[i]!);
    const flipped: boolean[] = [];
    const crops: CropAt[] = [];
    const captions: string[] = [];
    for (const it of items) {
      flipped.push(this.config.flip && uniform(rng) < 0.5);
      crops.push(this.config.crop === 'random' ? { x: uniform(rng), y: uniform(rng) } : 'center');
      captions.push(renderCaption(it.caption, this.rules[it.subset]!, rng));
    }
    const base = { cursor, next: nextCursor(cursor, this.batchesPerEpoch), size, items, captions, flipped };
    if (this.cache) {
      const cache = this.cache;
      const posts = await Promise.all(items.map((it, k) => cache.load(it.path, variant(it, size, flipped[k]!))));
      const [h, w, c] = posts[0]!.shape;
      const n = h * w * c;
      const eps = rng.randn([items.length, h, w, c]);
      const scale = this.opts.vae!.scalingFactor;
      const latents = new Float32Array(items.length * n);
      posts.forEach((p, k) => {
        for (let j = 0; j < n; j++) latents[k * n + j] = (p.mean[j]! + Math.exp(0.5 * p.logvar[j]!) * eps[k * n + j]!) * scale;
      });
      return { base, latents };
    }
    const per = size.width * size.height * 3;
    const pixels = new Float32Array(items.length * per);
    const loaded = await Promise.all(items.map((it, k) => loadImage(it.path, { ...size, crop: crops[k]!, flip: flipped[k]! })));
    loaded.forEach((p, k) => pixels.set(p, k * per));
    const vae = this.opts.vae;
    if (vae) {
      // ε for the posterior sample comes from the batch generator, after the per-image draws (as in the cached path).
      const f = vaeScaleFactor(vae.config);
      const eps = rng.randn([items.length, size.height / f, size.width / f, vae.config.latent_channels]);
      return { base, pixels, eps };
    }
    return { base, pixels };
  }

  private materialise(p: Prepared): Batch {
    const { base } = p;
    const b = base.items.length;
    const { width, height } = base.size;
    const vae = this.opts.vae;
    if (this.cache) {
      const c = vae!.config.latent_channels;
      const f = vaeScaleFactor(vae!.config);
      return { ...base, latents: tf.tensor4d(p.latents!, [b, height / f, width / f, c]) };
    }
    if (vae) {
      const latents = tf.tidy(() => {
        const { mean, logvar } = vae.encode(tf.tensor4d(p.pixels!, [b, height, width, 3]));
        const eps = tf.tensor4d(p.eps!, mean.shape);
        return vae.sample(mean, logvar, eps).mul(vae.scalingFactor) as tf.Tensor4D;
      });
      return { ...base, latents };
    }
    return { ...base, pixels: tf.tensor4d(p.pixels!, [b, height, width, 3]) };
  }
}

function variant(it: DataItem, size: Bucket, flip: boolean): LatentVariant {
  return { sha256: it.sha256, width: size.width, height: size.height, crop: 'center', flip };
}

/** Scans the subsets, assigns buckets and, with a VAE and cache_latents, fills the latent cache before returning. */
export async function openDataset(data: DataConfig, opts: OpenDatasetOptions): Promise<Dataset> {
  const warn = opts.onWarning ?? (() => undefined);
  // Template rules are checked before the (slow) scan so a missing token fails fast.
  data.datasets.forEach((d, i) => captionRule(d.caption, opts.token, i));
  const { items, skipped } = await scanDatasets(data.datasets, {
    onWarning: warn,
    onProgress: opts.onProgress && ((done, total) => opts.onProgress!({ phase: 'scan', done, total })),
  });
  const buckets = planBuckets(data);
  let cache: LatentCache | undefined;
  if (opts.vae && data.cache_latents) {
    if (data.crop !== 'center') throw new SdtrainError("data.crop: 'random' needs cache_latents: false (a cached latent is one fixed crop)");
    if (opts.cacheDir === undefined) throw new SdtrainError('openDataset: cacheDir is required when data.cache_latents is true and a VAE is given');
    cache = new LatentCache(opts.cacheDir, opts.vae, opts.vaeHash ?? (await hashVaeWeights(opts.vae)), warn);
  }
  const ds = new Dataset(data, items, skipped, buckets, opts, cache);
  if (opts.token !== undefined) {
    const lacking = items.filter((it) => canLackToken(it.caption, ds.rules[it.subset]!, opts.token!)).length;
    if (lacking > 0) {
      warn(
        `${lacking} of ${items.length} images can get a caption without ${opts.token}; those steps teach the token nothing ` +
          "(use caption source 'template' with [name] in every template, or write the token into the captions)",
      );
    }
  }
  if (cache) {
    const variants = items.flatMap((it) => {
      const size = buckets[ds.itemBuckets[it.index]!]!;
      return (data.flip ? [false, true] : [false]).map((flip) => ({ it, v: variant(it, size, flip) }));
    });
    let done = 0;
    for (const { it, v } of variants) {
      await cache.ensure(it.path, v);
      opts.onProgress?.({ phase: 'cache', done: ++done, total: variants.length });
    }
  }
  return ds;
}
