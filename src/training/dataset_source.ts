// The data pipeline's Dataset (src/data/dataset.ts) as the loop's BatchSource. Its batches are a pure function of
// (files, config, seed, cursor), so a saved cursor is all a resume needs; seek() restarts the stream there.
// Batches carry latents already sampled and scaled (dataset opened with a VAE) or pixels (without one: the loop then
// encodes them with DiffusionSetup.encodeImages and samples the posterior with the run's generator).
import type { Dataset } from '../data/dataset.js';
import type { BatchSource, DataCursor, TrainBatch } from './types.js';

export class DatasetBatchSource implements BatchSource {
  private pos: DataCursor;
  private stream: AsyncGenerator<Awaited<ReturnType<Dataset['batchAt']>>, never, undefined> | undefined;

  constructor(
    readonly dataset: Dataset,
    from: DataCursor = { epoch: 0, index: 0 },
  ) {
    this.pos = { ...from };
  }

  get fingerprint(): string {
    return this.dataset.fingerprint;
  }

  cursor(): DataCursor {
    return { ...this.pos };
  }

  seek(cursor: DataCursor): void {
    void this.stream?.return(undefined as never); // drop the batch it was preparing
    this.stream = undefined;
    this.pos = { ...cursor };
  }

  async next(): Promise<TrainBatch> {
    this.stream ??= this.dataset.batches(this.pos);
    const { value: b } = await this.stream.next();
    this.pos = { ...b.next };
    if (b.latents) return { captions: b.captions, latents: b.latents };
    if (b.pixels) return { captions: b.captions, pixels: b.pixels };
    throw new Error(`dataset batch ${JSON.stringify(b.cursor)} holds neither latents nor pixels`);
  }

  /** Ends the background preparation (call when training is over). */
  async close(): Promise<void> {
    await this.stream?.return(undefined as never);
    this.stream = undefined;
  }
}
