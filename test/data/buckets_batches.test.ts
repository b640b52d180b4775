import { describe, expect, it } from 'vitest';
import { batchesPerEpoch, checkCursor, cursorAt, nextCursor, planEpoch, type EpochInput } from '../../src/data/batches.js';
import { assignBucket, bucketResolutions, planBuckets } from '../../src/data/buckets.js';

describe('bucket resolutions (kohya make_bucket_resolutions)', () => {
  it('512 with min 256, max 1024, step 64', () => {
    const b = bucketResolutions(512, { min_size: 256, max_size: 1024, step: 64 });
    const keys = b.map((x) => `${x.width}x${x.height}`);
    // kohya's list for SD1.5 at 512 (sorted as Python sorts the tuples)
    expect(keys).toEqual([
      '256x832', '256x896', '256x960', '256x1024', '320x704', '320x768', '384x640', '448x576', '512x512',
      '576x448', '640x384', '704x320', '768x320', '832x256', '896x256', '960x256', '1024x256',
    ]);
    for (const x of b) {
      expect(x.width * x.height).toBeLessThanOrEqual(512 * 512);
      expect(x.width % 64 + (x.height % 64)).toBe(0);
      expect(Math.min(x.width, x.height)).toBeGreaterThanOrEqual(256);
      expect(Math.max(x.width, x.height)).toBeLessThanOrEqual(1024);
      expect(keys).toContain(`${x.height}x${x.width}`); // symmetric
    }
  });

  it('without bucketing there is one square bucket; an impossible range is an error', () => {
    expect(planBuckets({ resolution: 64, bucketing: { enabled: false, min_size: 256, max_size: 1024, step: 64 } })).toEqual([{ width: 64, height: 64 }]);
    expect(() => bucketResolutions(256, { min_size: 512, max_size: 1024, step: 64 })).toThrow(/data\.bucketing: no bucket fits/);
  });

  it('assigns the closest aspect ratio', () => {
    const b = bucketResolutions(512, { min_size: 256, max_size: 1024, step: 64 });
    const at = (w: number, h: number): string => {
      const x = b[assignBucket(b, w, h)]!;
      return `${x.width}x${x.height}`;
    };
    expect(at(1000, 1000)).toBe('512x512');
    expect(at(1920, 1080)).toBe('640x384'); // 1.78 vs 1.667 (640x384) and 2.2 (704x320)
    expect(at(1080, 1920)).toBe('384x640');
    expect(at(4000, 1000)).toBe('1024x256');
    expect(at(800, 600)).toBe('576x448');
  });
});

describe('epoch plans', () => {
  const input: EpochInput = { buckets: [0, 0, 1, 1, 1, 0, 2], repeats: [1, 2, 1, 1, 3, 1, 1], batchSize: 2, seed: 42 };

  it('is a pure function of (seed, epoch), and different epochs/seeds differ', () => {
    expect(planEpoch(input, 3)).toEqual(planEpoch(input, 3));
    expect(planEpoch(input, 3)).not.toEqual(planEpoch(input, 4));
    expect(planEpoch(input, 3)).not.toEqual(planEpoch({ ...input, seed: 43 }, 3));
  });

  it('covers every item repeats times, one bucket per batch, short batches only at a bucket end', () => {
    const plan = planEpoch(input, 0);
    expect(plan).toHaveLength(batchesPerEpoch(input));
    const count = new Map<number, number>();
    for (const b of plan) {
      expect(b.items.length).toBeGreaterThan(0);
      expect(b.items.length).toBeLessThanOrEqual(2);
      for (const i of b.items) {
        expect(input.buckets[i]).toBe(b.bucket);
        count.set(i, (count.get(i) ?? 0) + 1);
      }
    }
    expect([...count.entries()].sort((a, b) => a[0] - b[0]).map(([, n]) => n)).toEqual(input.repeats);
    // bucket 0: 4 entries → 2 full; bucket 1: 5 → 2 full + 1 short; bucket 2: 1 → 1 short
    expect(batchesPerEpoch(input)).toBe(6);
    expect(plan.filter((b) => b.items.length === 1).map((b) => b.bucket).sort()).toEqual([1, 2]);
  });

  it('cursors', () => {
    expect(nextCursor({ epoch: 0, index: 4 }, 6)).toEqual({ epoch: 0, index: 5 });
    expect(nextCursor({ epoch: 0, index: 5 }, 6)).toEqual({ epoch: 1, index: 0 });
    expect(cursorAt(13, 6)).toEqual({ epoch: 2, index: 1 });
    expect(checkCursor({ epoch: 2, index: 6 }, 6)).toEqual({ epoch: 3, index: 0 });
    expect(() => checkCursor({ epoch: 0, index: 7 }, 6)).toThrow(/does not fit this dataset \(6 batches per epoch\)/);
    expect(() => checkCursor({ epoch: -1, index: 0 }, 6)).toThrow(/does not fit/);
  });
});
