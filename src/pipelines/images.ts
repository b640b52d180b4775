// Images in and out of the sampling pipeline (sharp for decoding, resizing and PNG encoding): init images as RGB in
// [-1, 1], masks as gray in [0, 1] (white = repaint) with A1111's Gaussian mask blur, the outpainting canvas, and
// decoded tensors to 8-bit PNG. Arrays are HWC, row-major.
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { FormatError, SdtrainError } from '../errors.js';

/** An image in memory: HWC float32, RGB in [-1, 1] (3 channels) or a mask in [0, 1] (1 channel). */
export interface FloatImage {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Float32Array;
}

/** An image file's path or its encoded bytes, or pixels already in memory (used as they are: no resizing). */
export type ImageSource = string | Buffer | FloatImage;

const isFloatImage = (src: ImageSource): src is FloatImage => typeof src === 'object' && !Buffer.isBuffer(src);

/**
 * How an image meets the requested size. 'fill': scale (Lanczos) until it covers width×height, then crop the middle
 * (A1111's "Crop and resize"); 'exact': it must already have that size.
 */
export type ResizeMode = 'fill' | 'exact';

export interface LoadImageOptions {
  width: number;
  height: number;
  resize?: ResizeMode;
  /** Names the image in messages (default: the path, or "image"). */
  what?: string;
}

const label = (src: ImageSource, what?: string): string => what ?? (typeof src === 'string' ? src : 'image');

/** Decodes with EXIF orientation applied (A1111's `exif_transpose`) to 8-bit raw pixels. */
async function decode(src: string | Buffer, gray: boolean, what?: string): Promise<{ data: Buffer; width: number; height: number }> {
  try {
    let img = sharp(src).rotate();
    // RGBA masks: transparent counts as black (keep); RGBA images: the alpha channel is dropped.
    img = gray ? img.flatten({ background: '#000000' }).grayscale() : img.removeAlpha().toColourspace('srgb');
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    const want = gray ? 1 : 3;
    if (info.channels !== want) throw new Error(`decoded to ${info.channels} channels, expected ${want}`);
    return { data, width: info.width, height: info.height };
  } catch (err) {
    throw new FormatError(label(src, what), `cannot read the image (${(err as Error).message})`, undefined, { cause: err });
  }
}

/** Width and height as the pipeline sees the image (after EXIF orientation). */
export async function imageSize(src: ImageSource, what?: string): Promise<{ width: number; height: number }> {
  const { width, height } = isFloatImage(src) ? src : await decode(src, false, what);
  return { width, height };
}

async function fitTo(raw: { data: Buffer; width: number; height: number }, channels: 1 | 3, opts: LoadImageOptions, what: string): Promise<Buffer> {
  const { width, height } = opts;
  if (raw.width === width && raw.height === height) return raw.data;
  if ((opts.resize ?? 'fill') === 'exact') {
    throw new SdtrainError(`${what} is ${raw.width}×${raw.height} (width×height); ${width}×${height} is needed (or let it be resized and cropped)`);
  }
  return sharp(raw.data, { raw: { width: raw.width, height: raw.height, channels } })
    .resize(width, height, { fit: 'cover', position: 'centre', kernel: 'lanczos3' })
    .raw()
    .toBuffer();
}

/** In-memory pixels must already have the channels and the size asked for. */
function checkFloat(img: FloatImage, channels: 1 | 3, opts: LoadImageOptions, what: string): FloatImage {
  if (img.channels !== channels || img.data.length !== img.width * img.height * channels) {
    throw new SdtrainError(`${what}: expected ${channels}-channel pixels (${img.width}×${img.height}×${channels} values), got ${img.channels} channels and ${img.data.length} values`);
  }
  if (img.width !== opts.width || img.height !== opts.height) {
    throw new SdtrainError(`${what} is ${img.width}×${img.height} (width×height); ${opts.width}×${opts.height} is needed (in-memory images are not resized)`);
  }
  return img;
}

/** An RGB image file as HWC floats in [-1, 1] at width×height. */
export async function loadImage(src: ImageSource, opts: LoadImageOptions): Promise<FloatImage> {
  const what = label(src, opts.what);
  if (isFloatImage(src)) return checkFloat(src, 3, opts, what);
  const raw = await decode(src, false, what);
  const bytes = await fitTo(raw, 3, opts, what);
  const data = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) data[i] = (bytes[i]! / 255) * 2 - 1;
  return { width: opts.width, height: opts.height, channels: 3, data };
}

export interface LoadMaskOptions extends LoadImageOptions {
  /** A1111 "Mask blur": σ of a Gaussian blur in pixels (0: none). */
  blur?: number;
  /** The init image's size before resizing: the mask must have the same (checked before anything is resized). */
  imageSize?: { width: number; height: number };
}

/**
 * A mask file as gray in [0, 1] (white = repaint, black = keep; transparent = keep), resized exactly like the init
 * image, then blurred by `blur` pixels.
 */
export async function loadMask(src: ImageSource, opts: LoadMaskOptions): Promise<FloatImage> {
  const what = label(src, opts.what ?? (typeof src === 'string' ? src : 'mask'));
  const raw = isFloatImage(src) ? src : await decode(src, true, what);
  const ref = opts.imageSize;
  if (ref && (ref.width !== raw.width || ref.height !== raw.height)) {
    throw new SdtrainError(`the mask is ${raw.width}×${raw.height} but the init image is ${ref.width}×${ref.height} (width×height): they must be the same size`);
  }
  if (isFloatImage(src)) return blurMask(checkFloat(src, 1, opts, what), opts.blur ?? 0);
  const bytes = await fitTo(raw as { data: Buffer; width: number; height: number }, 1, opts, what);
  const data = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) data[i] = bytes[i]! / 255;
  return blurMask({ width: opts.width, height: opts.height, channels: 1, data }, opts.blur ?? 0);
}

/** Reflect-101 border index (cv2's default): -1 → 1, n → n-2. */
function reflect101(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  let j = ((i % period) + period) % period;
  if (j >= n) j = period - j;
  return j;
}

/**
 * A1111's mask blur (`cv2.GaussianBlur` with σ = blur and a kernel of 2·⌊2.5σ + 0.5⌋ + 1 taps, reflect-101 borders),
 * separable, in float (A1111 rounds the result to 8 bits; we do not). Returns a new image.
 */
export function blurMask(mask: FloatImage, sigma: number): FloatImage {
  if (!(sigma >= 0) || !Number.isFinite(sigma)) throw new RangeError(`mask blur must be a number >= 0, got ${sigma}`);
  if (sigma === 0) return { ...mask, data: mask.data.slice() };
  const r = Math.floor(2.5 * sigma + 0.5);
  const k = Float64Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
  const sum = k.reduce((a, b) => a + b, 0);
  for (let i = 0; i < k.length; i++) k[i]! /= sum;
  const { width: w, height: h } = mask;
  const tmp = new Float32Array(w * h);
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let d = -r; d <= r; d++) s += k[d + r]! * mask.data[y * w + reflect101(x + d, w)]!;
      tmp[y * w + x] = s;
    }
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let d = -r; d <= r; d++) s += k[d + r]! * tmp[reflect101(y + d, h) * w + x]!;
      out[y * w + x] = Math.min(1, Math.max(0, s));
    }
  }
  return { ...mask, data: out };
}

/** Pixels to add on each side when outpainting (multiples of 8). */
export interface OutpaintPadding {
  left?: number;
  right?: number;
  top?: number;
  bottom?: number;
}

/**
 * The outpainting canvas: the image grown by `pad` with its border pixels copied outwards (edge extension, which,
 * like A1111's "fill" masked content, starts the new area from the neighbouring colours instead of black), and the
 * mask: white over the new area, black over the original, then blurred by `blur` pixels (so the seam is blended).
 */
export function outpaintCanvas(image: FloatImage, pad: OutpaintPadding, blur = 0): { image: FloatImage; mask: FloatImage } {
  const [l, r, t, b] = [pad.left ?? 0, pad.right ?? 0, pad.top ?? 0, pad.bottom ?? 0];
  for (const [side, v] of [['left', l], ['right', r], ['top', t], ['bottom', b]] as const) {
    if (!Number.isInteger(v) || v < 0 || v % 8 !== 0) throw new SdtrainError(`outpaint ${side} must be a whole number of pixels >= 0 and a multiple of 8, got ${v}`);
  }
  const { width: w0, height: h0, channels: c } = image;
  const w = w0 + l + r;
  const h = h0 + t + b;
  const data = new Float32Array(w * h * c);
  const mask = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(h0 - 1, Math.max(0, y - t));
    for (let x = 0; x < w; x++) {
      const sx = Math.min(w0 - 1, Math.max(0, x - l));
      const src = (sy * w0 + sx) * c;
      data.set(image.data.subarray(src, src + c), (y * w + x) * c);
      mask[y * w + x] = y - t === sy && x - l === sx ? 0 : 1;
    }
  }
  return { image: { width: w, height: h, channels: c, data }, mask: blurMask({ width: w, height: h, channels: 1, data: mask }, blur) };
}

/** A FloatImage as a [1, H, W, C] tensor. */
export function imageTensor(img: FloatImage): tf.Tensor4D {
  return tf.tensor4d(img.data, [1, img.height, img.width, img.channels]);
}

/**
 * Decoded RGB [1, H, W, 3] (nominally [-1, 1]) → 8-bit HWC: `round(clamp(x/2 + 0.5, 0, 1)·255)` in float32 with
 * round-half-even, as diffusers' `numpy_to_pil` after `postprocess`.
 */
export async function toUint8(x: tf.Tensor4D): Promise<Uint8Array> {
  const q = tf.tidy(() => tf.round(tf.mul(tf.clipByValue(tf.add(tf.div(x, 2), 0.5), 0, 1), 255)));
  try {
    return Uint8Array.from(await q.data());
  } finally {
    q.dispose();
  }
}

/** 8-bit HWC pixels (RGB or gray) to a PNG. */
export async function encodePng(pixels: Uint8Array, width: number, height: number, channels: 1 | 3 | 4 = 3): Promise<Buffer> {
  return sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width, height, channels } }).png().toBuffer();
}
