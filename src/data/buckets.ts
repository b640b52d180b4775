// Aspect-ratio bucketing, as kohya sd-scripts does it (library/model_util.py make_bucket_resolutions and
// BucketManager.select_bucket without bucket_no_upscale): bucket sides are multiples of `step` between min_size and
// max_size with area ≤ resolution², each image goes to the bucket whose aspect ratio is closest to its own, and is
// then resized to cover the bucket and cropped. Every batch is drawn from one bucket.
import { SdtrainError } from '../errors.js';
import type { Bucket, DataConfig } from './types.js';

export interface BucketOptions {
  min_size: number;
  max_size: number;
  step: number;
}

/** The bucket sizes for a resolution, sorted by (width, height). */
export function bucketResolutions(resolution: number, o: BucketOptions): Bucket[] {
  const maxArea = resolution * resolution;
  const key = (w: number, h: number): string => `${w}x${h}`;
  const set = new Map<string, Bucket>();
  const add = (width: number, height: number): void => void set.set(key(width, height), { width, height });
  // kohya always adds the square; we add it only when it respects min_size/max_size.
  const square = Math.floor(resolution / o.step) * o.step;
  if (square >= o.min_size && square <= o.max_size) add(square, square);
  for (let width = o.min_size; width <= o.max_size; width += o.step) {
    const height = Math.min(o.max_size, Math.floor(Math.floor(maxArea / width) / o.step) * o.step);
    if (height >= o.min_size) {
      add(width, height);
      add(height, width);
    }
  }
  const out = [...set.values()].sort((a, b) => a.width - b.width || a.height - b.height);
  if (out.length === 0) {
    throw new SdtrainError(
      `data.bucketing: no bucket fits — sides between min_size ${o.min_size} and max_size ${o.max_size} (multiples of step ${o.step}) ` +
        `cannot have an area of at most resolution² (${resolution}×${resolution}); lower min_size or raise resolution`,
    );
  }
  return out;
}

/** The training sizes for a data config: the buckets, or just resolution × resolution without bucketing. */
export function planBuckets(data: Pick<DataConfig, 'resolution' | 'bucketing'>): Bucket[] {
  if (!data.bucketing.enabled) return [{ width: data.resolution, height: data.resolution }];
  return bucketResolutions(data.resolution, data.bucketing);
}

/** Index of the bucket whose aspect ratio (width / height) is closest to the image's; ties go to the first. */
export function assignBucket(buckets: readonly Bucket[], width: number, height: number): number {
  const ar = width / height;
  let best = 0;
  let bestErr = Infinity;
  buckets.forEach((b, i) => {
    const err = Math.abs(b.width / b.height - ar);
    if (err < bestErr) {
      bestErr = err;
      best = i;
    }
  });
  return best;
}
