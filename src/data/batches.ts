// Epoch plans: which items form which batch, as a pure function of (items, seed, epoch). Each item appears `repeats`
// times per epoch; the entries of each bucket are shuffled and cut into batches (the last batch of a bucket may be
// short: no image is dropped), then the batches of all buckets are shuffled together (kohya's order). A cursor
// {epoch, index} names a batch, so a resumed run that restores the cursor sees exactly the same batches.
import { SdtrainError } from '../errors.js';
import { generatorFor, shuffleInPlace } from './rng.js';
import type { DataCursor } from './types.js';

export interface EpochInput {
  /** Bucket index of each item. */
  buckets: readonly number[];
  /** Repeats per epoch of each item (≥ 1). */
  repeats: readonly number[];
  batchSize: number;
  seed: number;
}

export interface PlannedBatch {
  bucket: number;
  /** Item indices, in batch order (an item may appear twice when repeats > 1). */
  items: number[];
}

function entriesByBucket(input: EpochInput): Map<number, number[]> {
  const by = new Map<number, number[]>();
  input.buckets.forEach((b, item) => {
    const list = by.get(b) ?? [];
    for (let r = 0; r < input.repeats[item]!; r++) list.push(item);
    by.set(b, list);
  });
  return new Map([...by.entries()].sort((a, b) => a[0] - b[0]));
}

/** Number of batches in every epoch (it does not depend on the epoch). */
export function batchesPerEpoch(input: EpochInput): number {
  let n = 0;
  for (const list of entriesByBucket(input).values()) n += Math.ceil(list.length / input.batchSize);
  return n;
}

/** The batches of one epoch, in order. */
export function planEpoch(input: EpochInput, epoch: number): PlannedBatch[] {
  if (!Number.isInteger(input.batchSize) || input.batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${input.batchSize}`);
  const rng = generatorFor(input.seed, 'epoch', epoch);
  const batches: PlannedBatch[] = [];
  for (const [bucket, list] of entriesByBucket(input)) {
    shuffleInPlace(list, rng);
    for (let i = 0; i < list.length; i += input.batchSize) batches.push({ bucket, items: list.slice(i, i + input.batchSize) });
  }
  return shuffleInPlace(batches, rng);
}

/** Checks a cursor (e.g. one read back from a resume file) against the epoch length. */
export function checkCursor(c: DataCursor, perEpoch: number): DataCursor {
  const ok = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (!ok(c.epoch) || !ok(c.index) || c.index > perEpoch) {
    throw new SdtrainError(
      `data cursor {epoch: ${String(c.epoch)}, index: ${String(c.index)}} does not fit this dataset (${perEpoch} batches per epoch); ` +
        'was the dataset or batch_size changed since the run was saved?',
    );
  }
  // index == perEpoch: "after the last batch" is the start of the next epoch.
  return c.index === perEpoch ? { epoch: c.epoch + 1, index: 0 } : { epoch: c.epoch, index: c.index };
}

/** The cursor after `c`. */
export function nextCursor(c: DataCursor, perEpoch: number): DataCursor {
  return c.index + 1 >= perEpoch ? { epoch: c.epoch + 1, index: 0 } : { epoch: c.epoch, index: c.index + 1 };
}

/** The cursor of the n-th batch (from 0) of the whole stream. */
export function cursorAt(n: number, perEpoch: number): DataCursor {
  return { epoch: Math.floor(n / perEpoch), index: n % perEpoch };
}

/** Epoch plans with the current one memoised (computing a plan is O(items)). */
export class EpochPlanner {
  private cached: { epoch: number; plan: PlannedBatch[] } | undefined;
  readonly perEpoch: number;

  constructor(readonly input: EpochInput) {
    this.perEpoch = batchesPerEpoch(input);
  }

  plan(epoch: number): PlannedBatch[] {
    if (this.cached?.epoch !== epoch) this.cached = { epoch, plan: planEpoch(this.input, epoch) };
    return this.cached.plan;
  }

  at(c: DataCursor): PlannedBatch {
    const b = this.plan(c.epoch)[c.index];
    if (!b) throw new RangeError(`no batch ${c.index} in epoch ${c.epoch} (${this.perEpoch} per epoch)`);
    return b;
  }
}
