// A contact sheet of a request's images, as A1111 saves its grid: rows = round(√n) (A1111's default `n_rows = -1`),
// columns = ⌈n / rows⌉, images placed row by row on black, the first image's infotext in the PNG.
import sharp from 'sharp';
import { SdtrainError } from '../errors.js';
import { writePngText } from '../formats/png_text.js';

/** A1111's `image_grid` layout for n images (rows fixed when given). */
export function gridShape(n: number, rows?: number): { rows: number; cols: number } {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`a grid needs at least one image, got ${n}`);
  let r = rows ?? Math.round(Math.sqrt(n));
  if (!Number.isInteger(r) || r < 1) throw new RangeError(`grid rows must be a whole number >= 1, got ${r}`);
  r = Math.min(r, n);
  return { rows: r, cols: Math.ceil(n / r) };
}

export interface GridOptions {
  /** Rows (default round(√n)). */
  rows?: number;
  /** Stored under the PNG text key `parameters` (A1111 writes the first image's). */
  infotext?: string;
}

/** PNG images of one size → one PNG grid. */
export async function makeGrid(pngs: readonly Buffer[], opts: GridOptions = {}): Promise<Buffer> {
  const { rows, cols } = gridShape(pngs.length, opts.rows);
  const sizes = await Promise.all(pngs.map((p) => sharp(p).metadata()));
  const { width, height } = sizes[0]!;
  if (!width || !height) throw new SdtrainError('grid: cannot read the size of the first image');
  sizes.forEach((m, i) => {
    if (m.width !== width || m.height !== height) {
      throw new SdtrainError(`grid: image ${i + 1} is ${m.width}×${m.height}, the first is ${width}×${height}; grid images must have one size`);
    }
  });
  const png = await sharp({ create: { width: cols * width, height: rows * height, channels: 3, background: '#000000' } })
    .composite(pngs.map((input, i) => ({ input, left: (i % cols) * width, top: Math.floor(i / cols) * height })))
    .png()
    .toBuffer();
  return opts.infotext === undefined ? png : writePngText(png, { parameters: opts.infotext });
}
