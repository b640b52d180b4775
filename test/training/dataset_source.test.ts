// The real data pipeline (image folder → cached latents → seeded batches) feeding the loop: exact resume end to end.
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { openDataset, type Dataset } from '../../src/data/dataset.js';
import { DatasetBatchSource } from '../../src/training/dataset_source.js';
import { train } from '../../src/training/loop.js';
import { dataConfig, fromFn, writeImage } from '../data/helpers.js';
import { hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { embedConfig, loadTiny, tiMethod, type Tiny } from './helpers.js';

const tmp = useTmpDir('sdtrain-dsrc-');

describe.runIf(hasShared)('DatasetBatchSource', () => {
  let tiny: Tiny;
  let ds: Dataset;
  beforeAll(async () => {
    tiny = await loadTiny();
    const images = join(tmp(), 'images');
    for (let i = 0; i < 3; i++) await writeImage(join(images, `img${i}.png`), fromFn(40, 32, (x, y) => [(x * 6 + i * 80) % 256, (y * 8) % 256, i * 100]));
    const data = dataConfig({ resolution: 32, datasets: [{ path: images, caption: { source: ['template'], templates: ['a photo of [name]', 'a [name] toy'] } }] });
    ds = await openDataset(data, { seed: 5, batchSize: 2, token: '<tiny-concept>', vae: tiny.model.vae, cacheDir: join(tmp(), 'cache') });
  });
  afterAll(() => disposePipeline(tiny.model));

  it('yields captions with the token and scaled latents; cursor and seek follow the batch stream', async () => {
    const src = new DatasetBatchSource(ds);
    expect(src.cursor()).toEqual({ epoch: 0, index: 0 });
    const b0 = await src.next();
    expect(b0.latents!.shape.slice(1)).toEqual([4, 4, 4]); // 3 images in batches of 2: one batch per epoch has 1
    expect(b0.latents!.shape[0]).toBe(b0.captions.length);
    expect(b0.captions.every((c) => c.includes('<tiny-concept>'))).toBe(true);
    const after1 = src.cursor();
    const b1 = await src.next();
    src.seek(after1);
    const again = await src.next();
    expect(again.captions).toEqual(b1.captions);
    expect(Array.from(again.latents!.dataSync())).toEqual(Array.from(b1.latents!.dataSync()));
    tf.dispose([b0.latents!, b1.latents!, again.latents!]);
    await src.close();
  });

  it('interrupted + resumed equals uninterrupted on dataset batches', async () => {
    const cfg = embedConfig({ max_train_steps: 4, batch_size: 2, learning_rate: 0.05, cond_dropout: 0.2 }, {}, 5);
    const straight = await tiMethod(tiny, cfg);
    const a: number[] = [];
    const s1 = new DatasetBatchSource(ds);
    await train(straight, s1, cfg, { runDir: join(tmp(), 'a'), diffusion: tiny.setup, onEvent: (e) => e.kind === 'step' && a.push(e.loss) });
    await s1.close();
    const rows = Array.from(straight.rows.dataSync());
    straight.dispose();

    const runDir = join(tmp(), 'b');
    const abort = new AbortController();
    const b: number[] = [];
    const first = await tiMethod(tiny, cfg);
    const s2 = new DatasetBatchSource(ds);
    await train(first, s2, cfg, {
      runDir,
      diffusion: tiny.setup,
      signal: abort.signal,
      onEvent: (e) => {
        if (e.kind !== 'step') return;
        b.push(e.loss);
        if (e.step === 2) abort.abort();
      },
    });
    await s2.close();
    first.dispose();
    const second = await tiMethod(tiny, cfg);
    const s3 = new DatasetBatchSource(ds);
    await train(second, s3, cfg, { runDir, diffusion: tiny.setup, resume: 'latest', onEvent: (e) => e.kind === 'step' && b.push(e.loss) });
    await s3.close();
    expect(b).toEqual(a);
    expect(Array.from(second.rows.dataSync())).toEqual(rows);
    second.dispose();
  });
});
