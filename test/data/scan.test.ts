import { mkdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { scanDatasets } from '../../src/data/scan.js';
import { SdtrainError } from '../../src/errors.js';
import { useTmpDir } from '../helpers/tmp.js';
import { dataConfig, solid, sub, writeImage, writeText, writeTruncatedPng } from './helpers.js';

const tmp = useTmpDir('sdtrain-scan-');

describe('scanDatasets', () => {
  it('finds images recursively, case-insensitively, in a stable order; skips corrupt and unsupported files', async () => {
    const d = sub(tmp(), 'set');
    await writeImage(sub(d, 'b_cat.PNG'), solid(16, 8, [255, 0, 0]));
    await writeImage(sub(d, 'a_dog.JPG'), solid(8, 16, [0, 255, 0]));
    await writeImage(sub(d, 'nested', 'deeper', 'c_bird.webp'), solid(8, 8, [0, 0, 255]));
    await writeImage(sub(d, 'anim.gif'), solid(8, 8, [9, 9, 9]));
    await writeImage(sub(d, '.hidden', 'x.png'), solid(8, 8, [9, 9, 9]));
    await writeTruncatedPng(sub(d, 'broken.png'));
    writeText(sub(d, 'old.bmp'), 'BM');
    writeText(sub(d, 'notes.txt'), 'not an image');
    writeText(sub(d, 'a_dog.txt'), 'a good dog');
    const warnings: string[] = [];
    const progress: number[] = [];
    const cfg = dataConfig({ datasets: [{ path: d, repeats: 3 }] });
    const { items, skipped } = await scanDatasets(cfg.datasets, { onWarning: (w) => warnings.push(w), onProgress: (n) => progress.push(n) });
    expect(items.map((i) => i.relPath)).toEqual(['a_dog.JPG', 'anim.gif', 'b_cat.PNG', 'nested/deeper/c_bird.webp']);
    expect(items.map((i) => i.index)).toEqual([0, 1, 2, 3]);
    expect(items[0]).toMatchObject({ path: sub(d, 'a_dog.JPG'), subset: 0, width: 8, height: 16, caption: { source: 'sidecar', text: 'a good dog' } });
    expect(items[2]!.caption).toEqual({ source: 'filename', text: 'b cat' });
    expect(items[0]!.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(skipped.map((s) => [s.path, s.reason.split(' (')[0]])).toEqual([
      [sub(d, 'broken.png'), 'cannot decode image'],
      [sub(d, 'old.bmp'), "unsupported image format '.bmp'"],
    ]);
    expect(warnings.filter((w) => w.startsWith('skipped '))).toHaveLength(2);
    expect(progress.at(-1)).toBe(5);
  });

  it('an empty folder (or one with only bad files) is an error naming it', async () => {
    const empty = sub(tmp(), 'empty');
    mkdirSync(empty, { recursive: true });
    const bad = sub(tmp(), 'bad');
    await writeTruncatedPng(sub(bad, 'x.png'));
    const good = sub(tmp(), 'good');
    await writeImage(sub(good, 'ok.png'), solid(8, 8, [1, 1, 1]));
    const err = await scanDatasets(dataConfig({ datasets: [{ path: good }, { path: empty }, { path: bad }] }).datasets).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SdtrainError);
    const msg = (err as Error).message;
    expect(msg).toContain(`${empty} (data.datasets[1].path; no png/jpg/webp/avif/gif files)`);
    expect(msg).toContain(`${bad} (data.datasets[2].path; 1 file(s) skipped)`);
    expect(msg).not.toContain(good);
  });

  it('a missing folder, a file instead of a folder, and no datasets are errors', async () => {
    await expect(scanDatasets(dataConfig({ datasets: [{ path: sub(tmp(), 'nope') }] }).datasets)).rejects.toThrow(/data\.datasets\[0\]\.path: .*nope does not exist/);
    const f = writeText(sub(tmp(), 'file.png'), 'x');
    await expect(scanDatasets(dataConfig({ datasets: [{ path: f }] }).datasets)).rejects.toThrow(/is a file, expected a folder/);
    await expect(scanDatasets([])).rejects.toThrow(/data\.datasets is empty/);
  });

  it('a caption file with invalid UTF-8 is an error naming the caption file', async () => {
    const d = sub(tmp(), 'badcap');
    await writeImage(sub(d, 'a.png'), solid(8, 8, [1, 1, 1]));
    writeText(sub(d, 'a.txt'), new Uint8Array([0xc3, 0x28]));
    await expect(scanDatasets(dataConfig({ datasets: [{ path: d }] }).datasets)).rejects.toThrow(`${sub(d, 'a.txt')}: caption file is not valid UTF-8`);
  });

  it('metadata.jsonl captions (nested jsonl, orphans warned)', async () => {
    const d = sub(tmp(), 'meta');
    await writeImage(sub(d, 'one.png'), solid(8, 8, [1, 1, 1]));
    await writeImage(sub(d, 'part', 'two.png'), solid(8, 8, [1, 1, 1]));
    writeText(sub(d, 'metadata.jsonl'), '{"file_name": "one.png", "text": "caption one"}\n{"file_name": "gone.png", "text": "?"}\n');
    writeText(sub(d, 'part', 'metadata.jsonl'), '{"file_name": "two.png", "text": "caption two"}\n');
    const warnings: string[] = [];
    const cfg = dataConfig({ datasets: [{ path: d, caption: { source: ['metadata', 'filename'] } }] });
    const { items } = await scanDatasets(cfg.datasets, { onWarning: (w) => warnings.push(w) });
    expect(items.map((i) => [i.relPath, i.caption.source, i.caption.text])).toEqual([
      ['one.png', 'metadata', 'caption one'],
      ['part/two.png', 'metadata', 'caption two'],
    ]);
    expect(warnings).toEqual([`${d}: metadata.jsonl names 1 file(s) that are not images in the folder (gone.png)`]);
  });

  it('subsets keep their own caption rules, in config order', async () => {
    const a = sub(tmp(), 'subA');
    const b = sub(tmp(), 'subB');
    await writeImage(sub(a, 'x_one.png'), solid(8, 8, [1, 1, 1]));
    await writeImage(sub(b, 'x_two.png'), solid(8, 8, [1, 1, 1]));
    writeText(sub(b, 'x_two.caption'), 'kohya caption');
    const cfg = dataConfig({ datasets: [{ path: b, caption: { extension: '.caption' } }, { path: a }] });
    const { items } = await scanDatasets(cfg.datasets);
    expect(items.map((i) => [i.subset, i.caption.text])).toEqual([
      [0, 'kohya caption'],
      [1, 'x one'],
    ]);
  });
});
