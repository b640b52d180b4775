// Image decoding and preprocessing with sharp: EXIF orientation applied, alpha flattened onto white, converted to
// 8-bit sRGB, resized to cover the target size (kohya's rounding) and cropped, optionally mirrored → NHWC floats in
// [-1, 1]. GIF/WebP animations contribute their first frame. Undecodable files are FormatErrors naming the file; the
// scan decodes every image once and skips (with the reason) the ones that fail, so training never meets them.
import sharp from 'sharp';
import { FormatError } from '../errors.js';
import type { Bucket } from './types.js';

/** Extensions (lower case) the scan picks up as training images. */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set(['.jpg', '.jpeg', '.png', '.webp', '.avif', '.gif']);
/** Image-like extensions that are reported as skipped ("unsupported format") instead of silently ignored. */
export const UNSUPPORTED_IMAGE_EXTENSIONS: ReadonlySet<string> = new Set(['.bmp', '.tif', '.tiff', '.heic', '.heif', '.jxl', '.psd', '.svg', '.ico', '.jp2']);

const FORMATS = new Set(['jpeg', 'png', 'webp', 'gif', 'heif']);

function decodeError(file: string, err: unknown): FormatError {
  const msg = (err as Error).message.replace(/\s+/g, ' ').trim();
  return new FormatError(file, `cannot decode image (${msg || 'unknown error'})`, undefined, { cause: err });
}

/** Size (after EXIF orientation) of an image, after decoding all its pixel data once to prove it is intact. */
export async function probeImage(bytes: Buffer, file: string): Promise<Bucket> {
  let size: Bucket;
  try {
    const meta = await sharp(bytes, { failOn: 'error' }).metadata();
    if (!FORMATS.has(meta.format)) throw new FormatError(file, `unsupported image format '${meta.format}' (use png, jpg, webp, avif or gif)`);
    size = { width: meta.autoOrient.width, height: meta.autoOrient.height };
    // Decode the pixels (shrink-on-load keeps big JPEGs cheap): truncated or corrupt data fails here, not mid-run.
    await sharp(bytes, { failOn: 'error' }).resize(64, 64, { fit: 'inside' }).raw().toBuffer();
  } catch (err) {
    throw err instanceof FormatError ? err : decodeError(file, err);
  }
  if (!(size.width > 0 && size.height > 0)) throw new FormatError(file, `image has no pixels (${size.width}×${size.height})`);
  return size;
}

/**
 * The size an image of `src` is resized to before cropping to `target`: scaled so it covers the target with one side
 * exact (kohya's `int(x * scale + 0.5)` rounding for the other).
 */
export function coverSize(src: Bucket, target: Bucket): Bucket {
  const scale = src.width / src.height > target.width / target.height ? target.height / src.height : target.width / src.width;
  return {
    width: Math.max(target.width, Math.floor(src.width * scale + 0.5)),
    height: Math.max(target.height, Math.floor(src.height * scale + 0.5)),
  };
}

/** Where to crop: the centre, or uniform draws x, y in [0, 1) picking one of the possible offsets on each axis. */
export type CropAt = 'center' | { x: number; y: number };

export function cropOffset(slack: number, at: CropAt, axis: 'x' | 'y'): number {
  if (at === 'center') return Math.floor(slack / 2);
  const u = at[axis];
  return Math.min(slack, Math.max(0, Math.floor(u * (slack + 1))));
}

export interface LoadImageOptions {
  /** Output size in pixels. */
  width: number;
  height: number;
  /** Default 'center'. */
  crop?: CropAt;
  /** Mirror left-right (after cropping, so a flipped variant is the exact mirror of the unflipped one). */
  flip?: boolean;
  /** Name used in errors when `input` is a buffer. */
  file?: string;
}

/** Decodes and preprocesses one image → Float32Array [height · width · 3] (HWC, RGB) in [-1, 1]. */
export async function loadImage(input: string | Buffer, opts: LoadImageOptions): Promise<Float32Array> {
  const file = opts.file ?? (typeof input === 'string' ? input : '<image>');
  const target = { width: opts.width, height: opts.height };
  let data: Buffer;
  try {
    const meta = await sharp(input, { failOn: 'error' }).metadata();
    const resized = coverSize(meta.autoOrient, target);
    const at = opts.crop ?? 'center';
    const left = cropOffset(resized.width - target.width, at, 'x');
    const top = cropOffset(resized.height - target.height, at, 'y');
    const out = await sharp(input, { failOn: 'error' })
      .rotate()
      .flatten({ background: '#ffffff' })
      .resize(resized.width, resized.height, { fit: 'fill' })
      .extract({ left, top, width: target.width, height: target.height })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (out.info.channels !== 3 || out.info.width !== target.width || out.info.height !== target.height) {
      throw new Error(`decoded to ${out.info.width}×${out.info.height}×${out.info.channels}, expected ${target.width}×${target.height}×3`);
    }
    data = out.data;
  } catch (err) {
    throw err instanceof FormatError ? err : decodeError(file, err);
  }
  return toFloats(data, target.width, target.height, opts.flip ?? false);
}

/** uint8 HWC RGB → float32 in [-1, 1] (x / 127.5 − 1), optionally mirrored left-right. */
export function toFloats(data: Uint8Array, width: number, height: number, flip: boolean): Float32Array {
  const out = new Float32Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const src = (y * width + (flip ? width - 1 - x : x)) * 3;
      const dst = (y * width + x) * 3;
      out[dst] = data[src]! / 127.5 - 1;
      out[dst + 1] = data[src + 1]! / 127.5 - 1;
      out[dst + 2] = data[src + 2]! / 127.5 - 1;
    }
  }
  return out;
}
