import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { openDataset, type Batch, type Dataset } from '../../src/data/dataset.js';
import { summarizeDataset } from '../../src/data/summary.js';
import { useTmpDir } from '../helpers/tmp.js';
import { dataConfig, fromFn, solid, sub, writeImage, writeText, writeTruncatedPng } from './helpers.js';

const tmp = useTmpDir('sdtrain-dataset-');

/** Two subsets: 5 squares with captions (repeats 2) and 3 wide images captioned by template. */
async function makeSet(): Promise<{ a: string; b: string }> {
  const a = sub(tmp(), 'squares');
  const b = sub(tmp(), 'wides');
  for (let i = 0; i < 5; i++) {
    await writeImage(sub(a, `sq${i}.png`), fromFn(24, 24, (x, y) => [i * 40, x * 10, y * 10]));
    writeText(sub(a, `sq${i}.txt`), `square ${i}, red, green, blue`);
  }
  for (let i = 0; i < 3; i++) await writeImage(sub(b, `wide_${'abc'[i]}.jpg`), fromFn(48, 16, (x) => [x * 5, i * 60, 0]));
  await writeTruncatedPng(sub(b, 'broken.png'));
  return { a, b };
}

interface Seen {
  cursor: string;
  captions: string[];
  items: number[];
  flipped: boolean[];
  sum: number;
}

async function take(ds: Dataset, n: number, from?: { epoch: number; index: number }): Promise<Seen[]> {
  const out: Seen[] = [];
  for await (const b of ds.batches(from)) {
    out.push(await seen(b));
    if (out.length === n) break;
  }
  return out;
}

async function seen(b: Batch): Promise<Seen> {
  const t = (b.latents ?? b.pixels)!;
  const total = t.sum();
  const sum = (await total.data())[0]!;
  total.dispose();
  t.dispose();
  return { cursor: `${b.cursor.epoch}:${b.cursor.index}`, captions: b.captions, items: b.items.map((i) => i.index), flipped: b.flipped, sum };
}

describe('openDataset (pixels, no VAE)', () => {
  it('batches are deterministic under a seed and resume exactly from a saved cursor', async () => {
    const { a, b } = await makeSet();
    const data = dataConfig({
      datasets: [
        { path: a, repeats: 2, caption: { shuffle_tags: true, keep_tokens: 1 } },
        { path: b, caption: { source: ['template', 'filename'], templates: ['a photo of [name], [filewords]', '[filewords] by [name]'] } },
      ],
      resolution: 16,
      crop: 'random',
      flip: true,
      cache_latents: false,
      bucketing: { enabled: true, min_size: 8, max_size: 32, step: 8 },
    });
    const warnings: string[] = [];
    const open = () => openDataset(data, { seed: 7, batchSize: 2, token: '<tok>', onWarning: (w) => warnings.push(w) });
    const ds = await open();
    expect(ds.numItems).toBe(8);
    expect(ds.entriesPerEpoch).toBe(13);
    expect(ds.skipped.map((s) => s.path)).toEqual([sub(b, 'broken.png')]);
    // buckets with area ≤ 16² and sides in 8..32: 8x24, 8x32, 16x16, 24x8, 32x8; squares → 16x16, 3:1 images → 24x8
    const sizes = new Set(ds.items.map((it) => `${ds.buckets[ds.itemBuckets[it.index]!]!.width}x${ds.buckets[ds.itemBuckets[it.index]!]!.height}`));
    expect(sizes).toEqual(new Set(['16x16', '24x8']));
    expect(ds.batchesPerEpoch).toBe(Math.ceil(10 / 2) + Math.ceil(3 / 2));

    const total = ds.batchesPerEpoch * 2 + 1;
    const first = await take(ds, total);
    expect(first.map((s) => s.cursor).slice(0, 3)).toEqual(['0:0', '0:1', '0:2']);
    expect(first[ds.batchesPerEpoch]!.cursor).toBe('1:0');

    // the same seed → the same stream, from a fresh dataset
    const reopened = await open();
    expect(reopened.fingerprint).toBe(ds.fingerprint);
    expect(reopened.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    const again = await take(reopened, total);
    expect(again).toEqual(first);
    // resume mid-epoch: the same batches from there on
    const resumed = await take(await open(), total - 3, { epoch: 0, index: 3 });
    expect(resumed).toEqual(first.slice(3));
    // epochs differ in order; a different seed differs
    expect(first.slice(0, ds.batchesPerEpoch).map((s) => s.items)).not.toEqual(first.slice(ds.batchesPerEpoch, 2 * ds.batchesPerEpoch).map((s) => s.items));
    const seed8 = await openDataset(data, { seed: 8, batchSize: 2, token: '<tok>' });
    expect(seed8.fingerprint).not.toBe(ds.fingerprint);
    const other = await take(seed8, 4);
    expect(other).not.toEqual(first.slice(0, 4));

    // captions: squares keep their first tag and shuffle the rest; wides use the templates with the token
    const caps = first.flatMap((s) => s.captions);
    for (const c of caps) expect(c.startsWith('square ') || c.includes('<tok>')).toBe(true);
    expect(caps.filter((c) => c.startsWith('square ')).every((c) => /^square \d, /.test(c))).toBe(true);
    expect(caps.some((c) => c === 'a photo of <tok>, wide a' || c === 'wide a by <tok>')).toBe(true);
    expect(first.some((s) => s.flipped.includes(true)) && first.some((s) => s.flipped.includes(false))).toBe(true);
    // the squares' sidecar captions never contain the token
    expect(warnings.some((w) => /5 of 8 images can get a caption without <tok>/.test(w))).toBe(true);
  });

  it('batchAt gives the same batch as the stream; tensors are the caller’s', async () => {
    const d = sub(tmp(), 'few');
    for (let i = 0; i < 3; i++) await writeImage(sub(d, `img_${'xyz'[i]}.png`), solid(20, 20, [i * 100, 0, 0]));
    const data = dataConfig({ datasets: [{ path: d }], resolution: 8, cache_latents: false });
    const ds = await openDataset(data, { seed: 1, batchSize: 2 });
    const before = tf.memory().numTensors;
    const b = await ds.batchAt({ epoch: 5, index: 1 });
    expect(b.pixels!.shape).toEqual([b.items.length, 8, 8, 3]);
    expect(ds.plan(5).map((p) => p.items.length).sort()).toEqual([1, 2]);
    expect(b.latents).toBeUndefined();
    expect(b.next).toEqual({ epoch: 6, index: 0 });
    const s = await seen(b);
    const [fromStream] = await take(ds, 1, { epoch: 5, index: 1 });
    expect(fromStream).toEqual(s);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('summary: per-subset counts, caption sources, skipped files, buckets, examples', async () => {
    const { a, b } = await makeSet();
    const data = dataConfig({
      datasets: [{ path: a, repeats: 2 }, { path: b, caption: { source: ['sidecar', 'template'] } }],
      resolution: 16,
      cache_latents: false,
      bucketing: { enabled: true, min_size: 8, max_size: 32, step: 8 },
    });
    const ds = await openDataset(data, { seed: 0, batchSize: 4, token: '<x>' });
    const s = summarizeDataset(ds, { examples: 2 });
    expect(s).toMatchObject({ resolution: 16, bucketing: true, batchSize: 4, totalImages: 8, entriesPerEpoch: 13, totalSkipped: 1 });
    expect(s.subsets[0]).toMatchObject({ folder: a, images: 5, repeats: 2, entriesPerEpoch: 10, withoutToken: 5, skipped: [] });
    expect(s.subsets[0]!.captionSources).toEqual({ sidecar: 5, metadata: 0, filename: 0, template: 0, none: 0 });
    expect(s.subsets[0]!.examples).toEqual([
      { relPath: 'sq0.png', caption: 'square 0, red, green, blue' },
      { relPath: 'sq1.png', caption: 'square 1, red, green, blue' },
    ]);
    expect(s.subsets[1]).toMatchObject({ images: 3, withoutToken: 0 });
    expect(s.subsets[1]!.captionSources.template).toBe(3);
    expect(s.subsets[1]!.skipped.map((f) => f.reason)).toEqual([expect.stringMatching(/^cannot decode image/)]);
    expect(s.subsets[1]!.examples[0]!.caption).toContain('<x>');
    expect(s.buckets).toEqual([
      { width: 16, height: 16, images: 5, entriesPerEpoch: 10, batchesPerEpoch: 3 },
      { width: 24, height: 8, images: 3, entriesPerEpoch: 3, batchesPerEpoch: 1 },
    ]);
    expect(s.batchesPerEpoch).toBe(4);
  });

  it('template [name] without a token fails before scanning', async () => {
    const data = dataConfig({ datasets: [{ path: sub(tmp(), 'does-not-exist'), caption: { source: ['template'] } }] });
    await expect(openDataset(data, { seed: 0 })).rejects.toThrow(/templates use \[name\]/);
  });
});
