// Small image sets for the data-pipeline tests, written with sharp into temporary folders.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { DataSchema } from '../../src/config/schema_common.js';
import type { DataConfig } from '../../src/data/types.js';

export type Rgb = [number, number, number];

/** Raw RGB pixels of a w×h image where pixel (x, y) has colour f(x, y). */
export function rawImage(w: number, h: number, f: (x: number, y: number) => Rgb): Buffer {
  const buf = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) buf.set(f(x, y), (y * w + x) * 3);
  return buf;
}

/** Left half red, right half blue. */
export const leftRed = (w: number): ((x: number) => Rgb) => (x) => (x < w / 2 ? [255, 0, 0] : [0, 0, 255]);

export function solid(w: number, h: number, rgb: Rgb): Sharp {
  return sharp(rawImage(w, h, () => rgb), { raw: { width: w, height: h, channels: 3 } });
}

export function fromFn(w: number, h: number, f: (x: number, y: number) => Rgb): Sharp {
  return sharp(rawImage(w, h, f), { raw: { width: w, height: h, channels: 3 } });
}

/** Writes `img` as png/jpg/webp/gif/avif according to the file's extension, creating folders. */
export async function writeImage(file: string, img: Sharp): Promise<string> {
  mkdirSync(dirname(file), { recursive: true });
  const ext = file.slice(file.lastIndexOf('.') + 1).toLowerCase();
  const out = ext === 'png' ? img.png() : ext === 'webp' ? img.webp({ lossless: true }) : ext === 'gif' ? img.gif() : ext === 'avif' ? img.avif() : img.jpeg({ quality: 95 });
  writeFileSync(file, await out.toBuffer());
  return file;
}

export function writeText(file: string, text: string | Uint8Array): string {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

/** A truncated PNG: a valid header, half the data. */
export async function writeTruncatedPng(file: string): Promise<string> {
  const png = await solid(32, 32, [10, 200, 30]).png({ compressionLevel: 0 }).toBuffer();
  return writeText(file, png.subarray(0, Math.floor(png.length / 2)));
}

/** A validated `data` section (defaults filled) from a partial one. */
export function dataConfig(partial: Record<string, unknown>): DataConfig {
  return DataSchema.parse(partial);
}

export const sub = (dir: string, ...parts: string[]): string => join(dir, ...parts);
