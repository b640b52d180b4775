// A BatchSource over items held in memory (latents or posteriors with captions): for tests, for small experiments,
// and as the reference behaviour of a resumable source. The item order is an endless sequence of epochs, each a
// permutation that depends only on (seed, epoch), so the cursor {epoch, index} is all a resume needs. Batches take
// the next `batchSize` items of that sequence and may span two epochs (every batch has the full size).
import * as tf from '@tensorflow/tfjs';
import { TorchGenerator } from '../random/torch_rng.js';
import type { BatchSource, DataCursor, TrainBatch } from './types.js';

export interface MemoryItem {
  caption: string;
  /** Ready U-Net latents [h, w, c] (already scaled), or a posterior to sample. */
  latents?: tf.Tensor3D;
  latentDist?: { mean: tf.Tensor3D; logvar: tf.Tensor3D };
  lossWeight?: number;
}

export interface MemorySourceOptions {
  batchSize: number;
  seed?: number;
  /** Shuffle each epoch (default true); false keeps the given order. */
  shuffle?: boolean;
}

/** Epoch `epoch`'s order of n items: Fisher–Yates driven by a generator seeded from (seed, epoch). */
export function epochPermutation(n: number, seed: number, epoch: number, shuffle = true): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  if (!shuffle || n < 2) return order;
  const g = new TorchGenerator((seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
  for (let i = n - 1; i > 0; i--) {
    const j = g.randint(0, i + 1, [1])[0]!;
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** The source owns nothing: items stay the caller's; each batch is a fresh stack the loop disposes. */
export class MemoryBatchSource implements BatchSource {
  private pos: DataCursor = { epoch: 0, index: 0 };
  private order: number[] | undefined;

  constructor(
    readonly items: readonly MemoryItem[],
    readonly opts: MemorySourceOptions,
  ) {
    if (items.length === 0) throw new Error('MemoryBatchSource needs at least one item');
    const kinds = new Set(items.map((it) => (it.latents ? 'latents' : 'latentDist')));
    if (kinds.size !== 1) throw new Error('MemoryBatchSource items must all hold latents or all hold latentDist');
  }

  cursor(): DataCursor {
    return { ...this.pos };
  }

  seek(cursor: DataCursor): void {
    if (!Number.isInteger(cursor.epoch) || !Number.isInteger(cursor.index) || cursor.index < 0 || cursor.index >= this.items.length) {
      throw new RangeError(`cursor ${JSON.stringify(cursor)} is outside a ${this.items.length}-item dataset`);
    }
    this.pos = { ...cursor };
    this.order = undefined;
  }

  private take(): MemoryItem {
    this.order ??= epochPermutation(this.items.length, this.opts.seed ?? 0, this.pos.epoch, this.opts.shuffle ?? true);
    const item = this.items[this.order[this.pos.index]!]!;
    this.pos.index += 1;
    if (this.pos.index === this.items.length) {
      this.pos = { epoch: this.pos.epoch + 1, index: 0 };
      this.order = undefined;
    }
    return item;
  }

  async next(): Promise<TrainBatch> {
    const picked = Array.from({ length: this.opts.batchSize }, () => this.take());
    const captions = picked.map((it) => it.caption);
    const weights = picked.some((it) => it.lossWeight !== undefined) ? { lossWeights: picked.map((it) => it.lossWeight ?? 1) } : {};
    if (picked[0]!.latents) return { captions, latents: tf.stack(picked.map((it) => it.latents!)) as tf.Tensor4D, ...weights };
    return {
      captions,
      latentDist: {
        mean: tf.stack(picked.map((it) => it.latentDist!.mean)) as tf.Tensor4D,
        logvar: tf.stack(picked.map((it) => it.latentDist!.logvar)) as tf.Tensor4D,
      },
      ...weights,
    };
  }
}
