// What `sdtrain dataset check` reports: per subset the folder, image count, repeats, where captions came from,
// skipped files with reasons and example captions; the buckets with their image counts. Plain data: the CLI renders it.
import path from 'node:path';
import { canLackToken, renderCaption } from './captions.js';
import type { Dataset } from './dataset.js';
import { generatorFor } from './rng.js';
import type { CaptionSource, SkippedFile } from './types.js';

export interface SubsetSummary {
  /** Index into data.datasets. */
  index: number;
  folder: string;
  images: number;
  repeats: number;
  /** images × repeats. */
  entriesPerEpoch: number;
  /** How many images got their caption from each source ('none': no source gave one, the caption is ''). */
  captionSources: Record<CaptionSource | 'none', number>;
  skipped: SkippedFile[];
  /** A few images with one rendering of their caption (templates filled, tags shuffled as in training). */
  examples: { relPath: string; caption: string }[];
  /** With a token (OpenDatasetOptions.token): images whose caption can come out without it (they teach it nothing). */
  withoutToken?: number;
}

export interface BucketSummary {
  width: number;
  height: number;
  images: number;
  /** Entries (repeats counted) and batches per epoch drawn from this bucket. */
  entriesPerEpoch: number;
  batchesPerEpoch: number;
}

export interface DatasetSummary {
  resolution: number;
  bucketing: boolean;
  batchSize: number;
  totalImages: number;
  entriesPerEpoch: number;
  batchesPerEpoch: number;
  totalSkipped: number;
  subsets: SubsetSummary[];
  /** Buckets that hold at least one image, in (width, height) order. */
  buckets: BucketSummary[];
}

export interface SummaryOptions {
  /** Example captions per subset (default 3). */
  examples?: number;
}

export function summarizeDataset(ds: Dataset, opts: SummaryOptions = {}): DatasetSummary {
  const nExamples = opts.examples ?? 3;
  const subsets = ds.config.datasets.map((d, index): SubsetSummary => {
    const items = ds.items.filter((it) => it.subset === index);
    const captionSources: SubsetSummary['captionSources'] = { sidecar: 0, metadata: 0, filename: 0, template: 0, none: 0 };
    for (const it of items) captionSources[it.caption.source ?? 'none']++;
    const rule = ds.rules[index]!;
    const rng = generatorFor(0, 'summary', index);
    const examples = items.slice(0, nExamples).map((it) => ({ relPath: it.relPath, caption: renderCaption(it.caption, rule, rng) }));
    const s: SubsetSummary = {
      index,
      folder: path.resolve(d.path),
      images: items.length,
      repeats: d.repeats,
      entriesPerEpoch: items.length * d.repeats,
      captionSources,
      skipped: ds.skipped.filter((f) => f.subset === index),
      examples,
    };
    const token = ds.token;
    if (token !== undefined) s.withoutToken = items.filter((it) => canLackToken(it.caption, rule, token)).length;
    return s;
  });
  const buckets = ds.buckets
    .map((b, bi): BucketSummary => {
      const members = ds.items.filter((it) => ds.itemBuckets[it.index] === bi);
      const entries = members.reduce((n, it) => n + ds.config.datasets[it.subset]!.repeats, 0);
      return { ...b, images: members.length, entriesPerEpoch: entries, batchesPerEpoch: Math.ceil(entries / ds.batchSize) };
    })
    .filter((b) => b.images > 0);
  return {
    resolution: ds.config.resolution,
    bucketing: ds.config.bucketing.enabled,
    batchSize: ds.batchSize,
    totalImages: ds.numItems,
    entriesPerEpoch: ds.entriesPerEpoch,
    batchesPerEpoch: ds.batchesPerEpoch,
    totalSkipped: ds.skipped.length,
    subsets,
    buckets,
  };
}
