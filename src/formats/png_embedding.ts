// A1111 textual-inversion embeddings stored in PNG training previews (formats.md §4.2): the embedding dict as JSON,
// base64 in a `sd-ti-embedding` text chunk, and also zlib'd JSON hidden in the pixel nibbles of two side panels.
// Read-only: we never write this format.
import sharp from 'sharp';
import { inflateSync } from 'node:zlib';
import { FormatError } from '../errors.js';
import { readPngText } from './png_text.js';

export interface PngEmbedding {
  name?: string;
  step?: number | null;
  sdCheckpoint?: string | null;
  sdCheckpointName?: string | null;
  /** [vectors, dim] */
  shape: [number, number];
  data: Float32Array;
  /** Where the data came from. */
  source: 'text' | 'pixels';
}

export const PNG_EMBEDDING_KEY = 'sd-ti-embedding';

/** Decode from the text chunk if present, else from the pixels; undefined when the PNG holds no embedding. */
export async function readPngEmbedding(png: Buffer, file = '<png>'): Promise<PngEmbedding | undefined> {
  const text = readPngText(png, file)[PNG_EMBEDDING_KEY];
  if (text !== undefined) return fromJson(Buffer.from(text, 'base64').toString('utf8'), file, 'text');
  const json = await jsonFromPixels(png, file);
  return json === undefined ? undefined : fromJson(json, file, 'pixels');
}

function fromJson(json: string, file: string, source: PngEmbedding['source']): PngEmbedding {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(json) as Record<string, unknown>;
  } catch (e) {
    throw new FormatError(file, `embedding JSON in the PNG is malformed: ${(e as Error).message}`);
  }
  const s2p = data.string_to_param as Record<string, { TORCHTENSOR?: unknown }> | undefined;
  const rows = s2p && Object.values(s2p)[0]?.TORCHTENSOR;
  if (!Array.isArray(rows) || !rows.every((r) => Array.isArray(r) && r.every((v) => typeof v === 'number'))) {
    throw new FormatError(file, 'embedding JSON has no string_to_param tensor of shape [vectors, dim]', 'string_to_param');
  }
  const dim = (rows[0] as number[]).length;
  if (!rows.every((r: number[]) => r.length === dim)) throw new FormatError(file, 'ragged embedding rows', 'string_to_param');
  // Values are float32 widened to Python floats, so narrowing back is lossless.
  const out = new Float32Array(rows.length * dim);
  rows.forEach((r: number[], i) => out.set(r, i * dim));
  return {
    name: typeof data.name === 'string' ? data.name : undefined,
    step: typeof data.step === 'number' ? data.step : null,
    sdCheckpoint: (data.sd_checkpoint as string | null | undefined) ?? null,
    sdCheckpointName: (data.sd_checkpoint_name as string | null | undefined) ?? null,
    shape: [rows.length, dim],
    data: out,
    source,
  };
}

/** A1111's `lcg` stream, masked to a nibble: s ← (1664525·s + 1013904223) mod 2³², emit (s mod 255) & 0x0F. */
function xorLcg(block: Uint8Array): void {
  let s = 0;
  for (let i = 0; i < block.length; i++) {
    s = (Math.imul(1664525, s) + 1013904223) >>> 0;
    block[i]! ^= (s % 255) & 0x0f;
  }
}

async function jsonFromPixels(png: Buffer, file: string): Promise<string | undefined> {
  let raw: { data: Buffer; info: { width: number; height: number } };
  try {
    raw = await sharp(png).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new FormatError(file, `cannot decode PNG pixels: ${(e as Error).message}`);
  }
  const { width: W0, height: H0 } = raw.info;
  const px = (y: number, x: number, c: number) => raw.data[(y * W0 + x) * 3 + c]!;
  const blackRow = (y: number) => { for (let x = 0; x < W0; x++) if (px(y, x, 0) | px(y, x, 1) | px(y, x, 2)) return false; return true; };
  const blackCol = (x: number, y0: number, y1: number) => { for (let y = y0; y < y1; y++) if (px(y, x, 0) | px(y, x, 1) | px(y, x, 2)) return false; return true; };
  // Crop the all-black border.
  let top = 0, bottom = H0, left = 0, right = W0;
  while (top < bottom && blackRow(top)) top++;
  while (bottom > top && blackRow(bottom - 1)) bottom--;
  while (left < right && blackCol(left, top, bottom)) left++;
  while (right > left && blackCol(right - 1, top, bottom)) right--;
  const H = bottom - top;
  const W = right - left;
  if (H <= 0 || W <= 0) return undefined;
  // Separator columns: every low nibble over all rows and channels is zero.
  const seps: number[] = [];
  for (let x = 0; x < W; x++) {
    let sum = 0;
    for (let y = 0; y < H && sum === 0; y++) for (let c = 0; c < 3; c++) sum += px(top + y, left + x, c) & 0x0f;
    if (sum === 0) seps.push(x);
  }
  if (seps.length === 0) return undefined;
  const lo0 = 0, lo1 = seps[0]!, hi0 = seps[seps.length - 1]! + 1, hi1 = W;
  const block = (x0: number, x1: number) => {
    const b = new Uint8Array(H * (x1 - x0) * 3); // [H, w, 3] row-major
    let i = 0;
    for (let y = 0; y < H; y++) for (let x = x0; x < x1; x++) for (let c = 0; c < 3; c++) b[i++] = px(top + y, left + x, c) & 0x0f;
    xorLcg(b);
    return b;
  };
  if (lo1 - lo0 !== hi1 - hi0 || lo1 === 0) return undefined;
  const lower = block(lo0, lo1);
  const upper = block(hi0, hi1);
  const bytes = Buffer.alloc(lower.length);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (upper[i]! << 4) | lower[i]!;
  try {
    // zlib ignores the padding after the end of the stream.
    return inflateSync(bytes, { finishFlush: 2 /* Z_SYNC_FLUSH: tolerate trailing bytes */ }).toString('utf8');
  } catch {
    return undefined;
  }
}
