// Image I/O for the pipeline: loading with fill/crop or exact size, masks (size check, blur), the outpainting canvas,
// quantization, PNG encoding, and the grid.
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { readPngText } from '../../src/formats/png_text.js';
import { gridShape, makeGrid } from '../../src/pipelines/grid.js';
import { blurMask, encodePng, imageSize, loadImage, loadMask, outpaintCanvas, toUint8, type FloatImage } from '../../src/pipelines/images.js';
import { maxDiff } from './helpers.js';

/** A PNG of w×h with pixel (x, y) = [x, y, 7] (gray: x). */
async function png(w: number, h: number, channels: 1 | 3 = 3): Promise<Buffer> {
  const px = new Uint8Array(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px.set(channels === 3 ? [x, y, 7] : [x], (y * w + x) * channels);
  return encodePng(px, w, h, channels);
}

describe('loading images and masks', () => {
  it('loads RGB as [-1, 1] HWC at the same size unchanged', async () => {
    const img = await loadImage(await png(16, 8), { width: 16, height: 8 });
    expect([img.width, img.height, img.channels, img.data.length]).toEqual([16, 8, 3, 16 * 8 * 3]);
    const at = (x: number, y: number) => Array.from(img.data.subarray((y * 16 + x) * 3, (y * 16 + x) * 3 + 3));
    expect(at(5, 3)).toEqual([5, 3, 7].map((v) => (v / 255) * 2 - 1).map(Math.fround));
  });

  it("'fill' scales to cover and crops the middle; 'exact' refuses another size", async () => {
    const src = await png(32, 8); // 4:1 into 16×8 (2:1): scaled to 32×8 (no change), then the middle 16 columns
    const img = await loadImage(src, { width: 16, height: 8 });
    expect([img.width, img.height]).toEqual([16, 8]);
    expect(Math.round(((img.data[0]! + 1) / 2) * 255)).toBe(8); // column 8 of the source
    await expect(loadImage(src, { width: 16, height: 8, resize: 'exact', what: 'init.png' })).rejects.toThrow(
      /init\.png is 32×8 \(width×height\); 16×8 is needed/,
    );
    expect(await imageSize(src)).toEqual({ width: 32, height: 8 });
  });

  it('masks: gray in [0, 1]; a size different from the init image is an error naming both sizes', async () => {
    const mask = await loadMask(await png(16, 8, 1), { width: 16, height: 8, imageSize: { width: 16, height: 8 } });
    expect(mask.channels).toBe(1);
    expect(mask.data[3]).toBeCloseTo(3 / 255, 7);
    await expect(loadMask(await png(8, 8, 1), { width: 16, height: 8, imageSize: { width: 16, height: 8 } })).rejects.toThrow(
      /the mask is 8×8 but the init image is 16×8 \(width×height\): they must be the same size/,
    );
  });

  it('an unreadable file is a FormatError naming it', async () => {
    await expect(loadImage(Buffer.from('not an image'), { width: 8, height: 8, what: 'bytes.png' })).rejects.toThrow(/bytes\.png: cannot read the image/);
  });

  it("mask blur is cv2.GaussianBlur(σ): kernel 2·⌊2.5σ+0.5⌋+1, reflect-101 borders, mass preserved", () => {
    const w = 21;
    const data = new Float32Array(w * w);
    data[10 * w + 10] = 1;
    const out = blurMask({ width: w, height: w, channels: 1, data }, 2);
    const row = Array.from(out.data.subarray(10 * w, 11 * w));
    expect(row[10]! > row[9]! && row[9] === row[11]).toBe(true);
    expect(row[10 - 5]).toBeGreaterThan(0); // radius ⌊2.5·2 + 0.5⌋ = 5
    expect(row[10 - 6]).toBe(0);
    expect(out.data.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    const ones = blurMask({ width: 4, height: 3, channels: 1, data: new Float32Array(12).fill(1) }, 3);
    expect(maxDiff(ones.data, new Float32Array(12).fill(1))).toBeLessThan(1e-6); // borders reflect: no darkening
    expect(blurMask({ width: 1, height: 1, channels: 1, data: Float32Array.of(0.5) }, 0).data[0]).toBe(0.5);
  });

  it('the outpainting canvas copies border pixels outwards and masks exactly the new area', () => {
    const img: FloatImage = { width: 8, height: 8, channels: 3, data: Float32Array.from({ length: 192 }, (_, i) => (i % 3 === 0 ? Math.floor(i / 3) % 8 : 0) / 8) };
    const { image, mask } = outpaintCanvas(img, { left: 8, top: 16 });
    expect([image.width, image.height, mask.width, mask.height]).toEqual([16, 24, 16, 24]);
    expect(image.data[(20 * 16 + 0) * 3]).toBe(0); // left of column 0: column 0's value
    expect(image.data[(0 * 16 + 15) * 3]).toBe(7 / 8); // above row 0, column 7: column 7's value
    expect(mask.data[16 * 16 + 8]).toBe(0);
    expect(mask.data[15 * 16 + 8]).toBe(1);
    expect(mask.data.reduce((a, b) => a + b, 0)).toBe(16 * 24 - 64);
    expect(() => outpaintCanvas(img, { right: 12 })).toThrow(/outpaint right must be .* a multiple of 8, got 12/);
  });
});

describe('output', () => {
  it('quantizes round(clamp(x/2 + 0.5)·255) with round-half-even and encodes a PNG', async () => {
    const x = tf.tensor4d([-2, -1, 0, 1, 2, 1 / 255 - 1], [1, 1, 2, 3]); // 1/255-1 → 0.5 → 0 (half to even)
    const q = await toUint8(x);
    x.dispose();
    expect(Array.from(q)).toEqual([0, 0, 128, 255, 255, 0]);
    const file = await encodePng(q, 2, 1);
    const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([2, 1, 3]);
    expect(Array.from(data)).toEqual(Array.from(q));
  });

  it("A1111's grid layout: rows = round(√n), cols = ⌈n / rows⌉", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 9, 10].map((n) => gridShape(n))).toEqual([
      { rows: 1, cols: 1 },
      { rows: 1, cols: 2 },
      { rows: 2, cols: 2 },
      { rows: 2, cols: 2 },
      { rows: 2, cols: 3 },
      { rows: 2, cols: 3 },
      { rows: 3, cols: 3 },
      { rows: 3, cols: 3 },
      { rows: 3, cols: 4 },
    ]);
    expect(gridShape(3, 5)).toEqual({ rows: 3, cols: 1 });
  });

  it('makes a grid PNG with the infotext, images placed row by row', async () => {
    const tile = (v: number) => encodePng(new Uint8Array(8 * 4 * 3).fill(v), 8, 4);
    const grid = await makeGrid([await tile(10), await tile(20), await tile(30)], { infotext: 'a\nSteps: 1, Seed: 2, Size: 8x4' });
    const { data, info } = await sharp(grid).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([16, 8]);
    const at = (x: number, y: number) => data[(y * 16 + x) * info.channels]!;
    expect([at(0, 0), at(8, 0), at(0, 4), at(8, 4)]).toEqual([10, 20, 30, 0]);
    expect(readPngText(grid).parameters).toBe('a\nSteps: 1, Seed: 2, Size: 8x4');
    await expect(makeGrid([await tile(1), await encodePng(new Uint8Array(12), 2, 2)])).rejects.toThrow(/image 2 is 2×2, the first is 8×4/);
  });
});
