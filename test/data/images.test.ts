import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../src/errors.js';
import { coverSize, cropOffset, loadImage, probeImage } from '../../src/data/images.js';
import { useTmpDir } from '../helpers/tmp.js';
import { fromFn, solid, sub, writeImage, writeText, writeTruncatedPng } from './helpers.js';

const tmp = useTmpDir('sdtrain-images-');

/** Pixel (x, y) of an HWC float image, back in 0..255. */
const px = (a: Float32Array, w: number, x: number, y: number): number[] => [0, 1, 2].map((c) => Math.round((a[(y * w + x) * 3 + c]! + 1) * 127.5));
const near = (got: number[], want: number[], tol = 12): boolean => got.every((v, i) => Math.abs(v - want[i]!) <= tol);

describe('coverSize / crop offsets', () => {
  it('scales so one side is exact and the other covers (kohya rounding)', () => {
    expect(coverSize({ width: 1000, height: 500 }, { width: 512, height: 512 })).toEqual({ width: 1024, height: 512 });
    expect(coverSize({ width: 300, height: 1000 }, { width: 256, height: 512 })).toEqual({ width: 256, height: 853 });
    expect(coverSize({ width: 64, height: 64 }, { width: 128, height: 64 })).toEqual({ width: 128, height: 128 });
  });
  it('center, and random draws reaching every offset', () => {
    expect(cropOffset(10, 'center', 'x')).toBe(5);
    expect(cropOffset(0, { x: 0.99, y: 0 }, 'x')).toBe(0);
    expect(cropOffset(10, { x: 0, y: 0 }, 'x')).toBe(0);
    expect(cropOffset(10, { x: 0.999, y: 0 }, 'x')).toBe(10);
  });
});

describe('loadImage', () => {
  it('returns HWC floats in [-1, 1]', async () => {
    const f = await writeImage(sub(tmp(), 'solid.png'), solid(16, 16, [255, 0, 128]));
    const a = await loadImage(f, { width: 8, height: 8 });
    expect(a).toHaveLength(8 * 8 * 3);
    expect(a[0]).toBeCloseTo(1, 5);
    expect(a[1]).toBeCloseTo(-1, 5);
    expect(a[2]).toBeCloseTo(128 / 127.5 - 1, 5);
  });

  it('applies EXIF orientation (JPEG orientation 6: rotate 90° clockwise)', async () => {
    // Stored 40×20 with the left half red; displayed 20×40 with the top half red.
    const img = fromFn(40, 20, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255])).jpeg({ quality: 95 }).withMetadata({ orientation: 6 });
    const bytes = await img.toBuffer();
    expect((await sharp(bytes).metadata()).orientation).toBe(6);
    const f = writeText(sub(tmp(), 'rot.jpg'), bytes);
    expect(await probeImage(bytes, f)).toEqual({ width: 20, height: 40 });
    const a = await loadImage(f, { width: 20, height: 40 });
    expect(near(px(a, 20, 10, 5), [255, 0, 0])).toBe(true);
    expect(near(px(a, 20, 10, 35), [0, 0, 255])).toBe(true);
  });

  it('flattens alpha onto white (RGBA PNG, GIF first frame)', async () => {
    const rgba = sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } });
    const f = await writeImage(sub(tmp(), 'clear.png'), rgba);
    expect(px(await loadImage(f, { width: 8, height: 8 }), 8, 3, 3)).toEqual([255, 255, 255]);
    const gif = await writeImage(sub(tmp(), 'g.gif'), solid(8, 8, [0, 255, 0]));
    expect(near(px(await loadImage(gif, { width: 8, height: 8 }), 8, 4, 4), [0, 255, 0])).toBe(true);
  });

  it('reads webp and avif', async () => {
    for (const name of ['a.webp', 'a.avif']) {
      const f = await writeImage(sub(tmp(), name), solid(16, 16, [0, 0, 255]));
      expect(near(px(await loadImage(f, { width: 8, height: 8 }), 8, 4, 4), [0, 0, 255], 20)).toBe(true);
    }
  });

  it('center crop keeps the middle; random crop can reach the edges; flip is an exact mirror', async () => {
    // 30×10: red | green | blue thirds → cover 10×10 keeps green in the centre
    const f = await writeImage(sub(tmp(), 'thirds.png'), fromFn(30, 10, (x) => (x < 10 ? [255, 0, 0] : x < 20 ? [0, 255, 0] : [0, 0, 255])));
    const c = await loadImage(f, { width: 10, height: 10 });
    expect(near(px(c, 10, 5, 5), [0, 255, 0])).toBe(true);
    const left = await loadImage(f, { width: 10, height: 10, crop: { x: 0, y: 0 } });
    expect(near(px(left, 10, 2, 5), [255, 0, 0])).toBe(true);
    const right = await loadImage(f, { width: 10, height: 10, crop: { x: 0.9999, y: 0 } });
    expect(near(px(right, 10, 7, 5), [0, 0, 255])).toBe(true);
    const a = await loadImage(f, { width: 10, height: 10, crop: { x: 0.3, y: 0 } });
    const m = await loadImage(f, { width: 10, height: 10, crop: { x: 0.3, y: 0 }, flip: true });
    for (let y = 0; y < 10; y++) for (let x = 0; x < 10; x++) expect(px(m, 10, x, y)).toEqual(px(a, 10, 9 - x, y));
  });

  it('a truncated or non-image file is a FormatError naming it', async () => {
    const t = await writeTruncatedPng(sub(tmp(), 'trunc.png'));
    const e1 = await loadImage(t, { width: 8, height: 8 }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(FormatError);
    expect((e1 as FormatError).file).toBe(t);
    await expect(probeImage(readFileSync(t), t)).rejects.toThrow(/trunc\.png: cannot decode image/);
    await expect(probeImage(Buffer.from('not an image at all'), 'x.png')).rejects.toThrow(/x\.png: cannot decode image/);
  });
});
