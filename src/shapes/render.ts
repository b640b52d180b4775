// The synthetic shapes world: a named colour palette, the scene description of one image (shape, colour, background,
// size and position), its caption, its SVG, and its pixels (rendered by sharp/librsvg). Scene sampling is pure and
// seeded: image i of seed s depends only on (s, i), so `--n 2000` and `--n 4000` share their first 2000 images.
import sharp from 'sharp';
import { SdtrainError } from '../errors.js';
import { generatorFor, randomIndex, uniform } from '../data/rng.js';
import { SHAPES, shapeRings, type Box, type ShapeName } from './geometry.js';

export { SHAPES, type ShapeName } from './geometry.js';

/** The named colours (sRGB). Chosen far apart: the closest pair (orange, red) is 90 apart in RGB. */
export const PALETTE = {
  red: [215, 35, 35],
  green: [40, 170, 60],
  blue: [40, 80, 220],
  yellow: [250, 225, 40],
  orange: [240, 120, 20],
  purple: [140, 60, 190],
  pink: [245, 140, 200],
  brown: [130, 85, 45],
  white: [255, 255, 255],
  black: [0, 0, 0],
  gray: [128, 128, 128],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof PALETTE;
export const COLOUR_NAMES = Object.keys(PALETTE) as ColourName[];

/** Colours a shape can have. */
export const SHAPE_COLOURS: readonly ColourName[] = ['red', 'green', 'blue', 'yellow', 'orange', 'purple', 'pink', 'brown', 'white', 'black'];
/** Colours a background can have. */
export const BACKGROUND_COLOURS: readonly ColourName[] = ['white', 'black', 'gray'];

/** A colour×shape pair, e.g. held out of the training captions. */
export interface Combo {
  colour: ColourName;
  shape: ShapeName;
}

/** One image: what is drawn where. `cx`, `cy`, `size` in pixels (fractional); the bounding box is size×size. */
export interface ShapeSpec {
  shape: ShapeName;
  colour: ColourName;
  background: ColourName;
  cx: number;
  cy: number;
  size: number;
}

export interface WorldOptions {
  /** Image side in pixels (square images). */
  imageSize: number;
  /** Shape size range as fractions of the image side (default 0.5 to 0.8). */
  minScale?: number;
  maxScale?: number;
  /** Pixels kept free between the shape's box and the image border (default 2: the classifier reads the border). */
  margin?: number;
  /** Colour×shape pairs never drawn (so never captioned). */
  holdOut?: readonly Combo[];
  /** The shapes drawn (default all of SHAPES); the others never occur, e.g. to be taught later as a new concept. */
  shapes?: readonly ShapeName[];
  /** The shape colours drawn (default SHAPE_COLOURS), e.g. only yellow for a concept's training images. */
  colours?: readonly ColourName[];
  /** The background colours drawn (default BACKGROUND_COLOURS). */
  backgrounds?: readonly ColourName[];
}

const article = (word: string): string => (/^[aeiou]/.test(word) ? 'an' : 'a');

/** "a red circle on a white background", "an orange star on a black background" */
export function caption(s: Pick<ShapeSpec, 'shape' | 'colour' | 'background'>): string {
  return `${article(s.colour)} ${s.colour} ${s.shape} on a ${s.background} background`;
}

export const comboKey = (c: Combo): string => `${c.colour} ${c.shape}`;

/** "circle, star" → shape names; throws naming an unknown one. */
export function parseShapes(text: string | readonly string[]): ShapeName[] {
  const items = (typeof text === 'string' ? text.split(',') : [...text]).map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new SdtrainError('no shapes given');
  for (const s of items) if (!(SHAPES as readonly string[]).includes(s)) throw new SdtrainError(`unknown shape '${s}' (one of ${SHAPES.join(', ')})`);
  return [...new Set(items)] as ShapeName[];
}

/** "blue star, green heart" → combos; throws naming the unknown colour or shape. */
export function parseCombos(text: string | readonly string[]): Combo[] {
  const items = (typeof text === 'string' ? text.split(',') : [...text]).map((s) => s.trim()).filter((s) => s !== '');
  return items.map((item) => {
    const [colour, shape, ...rest] = item.split(/\s+/);
    if (rest.length > 0 || colour === undefined || shape === undefined) throw new SdtrainError(`'${item}' is not '<colour> <shape>' (e.g. 'blue star')`);
    if (!SHAPE_COLOURS.includes(colour as ColourName)) throw new SdtrainError(`'${item}': unknown shape colour '${colour}' (one of ${SHAPE_COLOURS.join(', ')})`);
    if (!(SHAPES as readonly string[]).includes(shape)) throw new SdtrainError(`'${item}': unknown shape '${shape}' (one of ${SHAPES.join(', ')})`);
    return { colour: colour as ColourName, shape: shape as ShapeName };
  });
}

/** Whether (colour, shape, background) can occur: the colours differ and the pair is not held out. */
export function allowed(s: Pick<ShapeSpec, 'shape' | 'colour' | 'background'>, holdOut: readonly Combo[] = []): boolean {
  return s.colour !== s.background && !holdOut.some((h) => h.colour === s.colour && h.shape === s.shape);
}

/** "yellow, white" → colour names; throws naming an unknown one. */
export function parseColours(text: string | readonly string[]): ColourName[] {
  const items = (typeof text === 'string' ? text.split(',') : [...text]).map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new SdtrainError('no colours given');
  for (const c of items) if (!(COLOUR_NAMES as readonly string[]).includes(c)) throw new SdtrainError(`unknown colour '${c}' (one of ${COLOUR_NAMES.join(', ')})`);
  return [...new Set(items)] as ColourName[];
}

/** Every (shape, colour, background) triple the world draws, in a fixed order. */
export function allowedTriples(
  holdOut: readonly Combo[] = [],
  shapes: readonly ShapeName[] = SHAPES,
  colours: readonly ColourName[] = SHAPE_COLOURS,
  backgrounds: readonly ColourName[] = BACKGROUND_COLOURS,
): Array<Pick<ShapeSpec, 'shape' | 'colour' | 'background'>> {
  const out: Array<Pick<ShapeSpec, 'shape' | 'colour' | 'background'>> = [];
  for (const shape of shapes) for (const colour of colours) for (const background of backgrounds) {
    if (allowed({ shape, colour, background }, holdOut)) out.push({ shape, colour, background });
  }
  return out;
}

/**
 * Image `index` of the world with `seed`: shape, colour and background uniform over the allowed triples (rejection
 * sampling: each drawn uniformly from its list, redrawn together when the triple is not allowed), size uniform in
 * [minScale, maxScale]·imageSize, centre uniform where the box keeps `margin` free. With the default lists the draws
 * are the same as before `colours`/`backgrounds` existed (same bytes).
 */
export function sampleSpec(seed: number, index: number, opts: WorldOptions): ShapeSpec {
  const g = generatorFor(seed, 'shapes', index);
  const n = opts.imageSize;
  const { minScale = 0.5, maxScale = 0.8, margin = 2, holdOut = [], shapes = SHAPES, colours = SHAPE_COLOURS, backgrounds = BACKGROUND_COLOURS } = opts;
  for (const [what, list] of [['shapes', shapes], ['colours', colours], ['backgrounds', backgrounds]] as const) {
    if (list.length === 0) throw new SdtrainError(`no ${what} to draw from`);
  }
  for (const c of [...colours, ...backgrounds]) if (!(c in PALETTE)) throw new SdtrainError(`unknown colour '${c}' (one of ${COLOUR_NAMES.join(', ')})`);
  if (allowedTriples(holdOut, shapes, colours, backgrounds).length === 0) {
    throw new SdtrainError('no (shape, colour, background) triple can be drawn: every pair is held out or every colour equals every background');
  }
  if (!(minScale > 0 && minScale <= maxScale && maxScale <= 1)) throw new SdtrainError(`shape scales must satisfy 0 < min (${minScale}) <= max (${maxScale}) <= 1`);
  for (;;) {
    const shape = shapes[randomIndex(g, shapes.length)]!;
    const colour = colours[randomIndex(g, colours.length)]!;
    const background = backgrounds[randomIndex(g, backgrounds.length)]!;
    if (!allowed({ shape, colour, background }, holdOut)) continue;
    const size = Math.min(n - 2 * margin, n * (minScale + (maxScale - minScale) * uniform(g)));
    const free = n - 2 * margin - size; // room for the box's left/top edge to move
    const cx = margin + size / 2 + free * uniform(g);
    const cy = margin + size / 2 + free * uniform(g);
    const r = (x: number) => Math.round(x * 1000) / 1000; // stable text in labels and SVG
    return { shape, colour, background, cx: r(cx), cy: r(cy), size: r(size) };
  }
}

/** The shape's box in pixels. */
export function specBox(s: ShapeSpec): Box {
  const h = s.size / 2;
  return { x0: s.cx - h, y0: s.cy - h, x1: s.cx + h, y1: s.cy + h };
}

const rgb = (c: ColourName): string => `rgb(${PALETTE[c].join(',')})`;
const num = (x: number): string => String(Math.round(x * 1000) / 1000);

/** The scene as an SVG document of imageSize×imageSize pixels. */
export function shapeSvg(s: ShapeSpec, imageSize: number): string {
  const h = s.size / 2;
  const d = shapeRings(s.shape)
    .map((ring) => `M${ring.map(([x, y]) => `${num(s.cx + x * h)} ${num(s.cy + y * h)}`).join('L')}Z`)
    .join('');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${imageSize}" height="${imageSize}" viewBox="0 0 ${imageSize} ${imageSize}">` +
    `<rect width="${imageSize}" height="${imageSize}" fill="${rgb(s.background)}"/>` +
    `<path d="${d}" fill="${rgb(s.colour)}" fill-rule="evenodd"/>` +
    `</svg>`
  );
}

export interface RenderedShape {
  /** 8-bit RGB, row-major HWC. */
  rgb: Uint8Array;
  /** The same pixels as a PNG (deterministic bytes). */
  png: Buffer;
}

/** Renders the scene with sharp (librsvg): anti-aliased edges, exact palette colours elsewhere. */
export async function renderShape(s: ShapeSpec, imageSize: number): Promise<RenderedShape> {
  const { data, info } = await sharp(Buffer.from(shapeSvg(s, imageSize)), { density: 72 })
    .flatten({ background: rgb(s.background) })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== imageSize || info.height !== imageSize || info.channels !== 3) {
    throw new Error(`rendered ${info.width}×${info.height}×${info.channels}, expected ${imageSize}×${imageSize}×3`);
  }
  const pixels = new Uint8Array(data.buffer, data.byteOffset, data.length);
  const png = await sharp(pixels, { raw: { width: imageSize, height: imageSize, channels: 3 } }).png({ compressionLevel: 9 }).toBuffer();
  return { rgb: Uint8Array.from(pixels), png };
}
