// A shapes dataset on disk: `<out>/00000.png` + `00000.txt` (the caption, for sdtrain's sidecar captions), one JSON
// line per image in `labels.jsonl` (file, caption, shape, colour, background, bbox, ...) and `world.json` (how the set
// was made). Written in index order, files replaced atomically, so the same options write the same bytes.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { FormatError } from '../errors.js';
import { writeFileAtomic } from '../formats/atomic.js';
import { allowedTriples, caption, SHAPES, comboKey, renderShape, sampleSpec, specBox, type ColourName, type Combo, type ShapeName, type ShapeSpec, type WorldOptions } from './render.js';

export interface ShapesDatasetOptions extends WorldOptions {
  n: number;
  seed: number;
  /** The caption of an image (its `.txt` and its labels.jsonl `caption`). Default: `caption` ("a red circle on a white background"). */
  caption?: (s: Pick<ShapeSpec, 'shape' | 'colour' | 'background'>) => string;
}

/** One line of labels.jsonl. bbox = [x0, y0, x1, y1] in pixels (the shape's box edges, fractional). */
export interface ShapeLabel {
  file: string;
  caption: string;
  shape: ShapeName;
  colour: ColourName;
  background: ColourName;
  bbox: [number, number, number, number];
  cx: number;
  cy: number;
  size: number;
  index: number;
}

export interface WorldInfo {
  seed: number;
  n: number;
  image_size: number;
  min_scale: number;
  max_scale: number;
  margin: number;
  hold_out: string[];
  shapes: string[];
  /** The shape and background colours drawn: only written when restricted (WorldOptions.colours/backgrounds). */
  colours?: string[];
  backgrounds?: string[];
  /** How many (shape, colour, background) triples can occur. */
  triples: number;
}

export const LABELS_FILE = 'labels.jsonl';
export const WORLD_FILE = 'world.json';

export const imageName = (index: number): string => `${String(index).padStart(5, '0')}.png`;

const r3 = (x: number) => Math.round(x * 1000) / 1000;

export function labelOf(spec: ShapeSpec, index: number, captionOf: (s: ShapeSpec) => string = caption): ShapeLabel {
  const b = specBox(spec);
  return {
    file: imageName(index),
    caption: captionOf(spec),
    shape: spec.shape,
    colour: spec.colour,
    background: spec.background,
    bbox: [r3(b.x0), r3(b.y0), r3(b.x1), r3(b.y1)],
    cx: spec.cx,
    cy: spec.cy,
    size: spec.size,
    index,
  };
}

const writeText = (path: string, text: string) => writeFileAtomic(path, (fh) => fh.writeFile(text));

/**
 * Writes `n` images with their captions and labels into `outDir` (created if needed). `onProgress(done, n)` is
 * called as images are written. Returns the labels.
 */
export async function writeShapesDataset(outDir: string, o: ShapesDatasetOptions, onProgress?: (done: number, n: number) => void): Promise<ShapeLabel[]> {
  await mkdir(outDir, { recursive: true });
  const labels: ShapeLabel[] = [];
  const holdOut = o.holdOut ?? [];
  const chunk = 16; // sharp renders on libuv's thread pool: a few images at a time
  for (let start = 0; start < o.n; start += chunk) {
    const idx = Array.from({ length: Math.min(chunk, o.n - start) }, (_, k) => start + k);
    await Promise.all(
      idx.map(async (i) => {
        const spec = sampleSpec(o.seed, i, o);
        const { png } = await renderShape(spec, o.imageSize);
        const label = labelOf(spec, i, o.caption);
        await writeFileAtomic(join(outDir, label.file), (fh) => fh.writeFile(png));
        await writeText(join(outDir, label.file.replace(/\.png$/, '.txt')), `${label.caption}\n`);
        labels[i] = label;
      }),
    );
    onProgress?.(Math.min(start + chunk, o.n), o.n);
  }
  await writeText(join(outDir, LABELS_FILE), labels.map((l) => `${JSON.stringify(l)}\n`).join(''));
  const info: WorldInfo = {
    seed: o.seed,
    n: o.n,
    image_size: o.imageSize,
    min_scale: o.minScale ?? 0.5,
    max_scale: o.maxScale ?? 0.8,
    margin: o.margin ?? 2,
    hold_out: holdOut.map(comboKey),
    shapes: [...(o.shapes ?? SHAPES)],
    ...(o.colours !== undefined ? { colours: [...o.colours] } : {}),
    ...(o.backgrounds !== undefined ? { backgrounds: [...o.backgrounds] } : {}),
    triples: allowedTriples(holdOut, o.shapes, o.colours, o.backgrounds).length,
  };
  await writeText(join(outDir, WORLD_FILE), `${JSON.stringify(info, null, 2)}\n`);
  return labels;
}

/** The labels of a dataset folder. */
export async function readLabels(dir: string): Promise<ShapeLabel[]> {
  const path = join(dir, LABELS_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new FormatError(path, `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); make the dataset with scripts/make_shapes`);
  }
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as ShapeLabel;
      } catch (err) {
        throw new FormatError(path, `line ${i + 1} is not JSON: ${(err as Error).message}`);
      }
    });
}

/** An image file as 8-bit RGB (HWC). */
export async function readRgb(path: string): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}

/** Images of a dataset as one Float32Array [N, H, W, 3] in [-1, 1] (what the VAE takes), in label order. */
export async function readImagesAsFloats(dir: string, labels: readonly ShapeLabel[]): Promise<{ data: Float32Array; size: number }> {
  let size = 0;
  let data = new Float32Array(0);
  for (let i = 0; i < labels.length; i++) {
    const img = await readRgb(join(dir, labels[i]!.file));
    if (i === 0) {
      size = img.width;
      data = new Float32Array(labels.length * size * size * 3);
    }
    if (img.width !== size || img.height !== size) throw new FormatError(join(dir, labels[i]!.file), `is ${img.width}×${img.height}, expected ${size}×${size} like the first image`);
    const off = i * size * size * 3;
    for (let k = 0; k < img.rgb.length; k++) data[off + k] = img.rgb[k]! / 127.5 - 1;
  }
  return { data, size };
}

export type { Combo };
