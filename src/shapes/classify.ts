// The pixel classifier of the shapes world (docs/shapes.md): what shape, in what colour, on what background an RGB
// image shows, from pixels alone. No learning, so it can judge a model's samples without sharing its mistakes.
//
//   1. Background = the median colour of the 1-pixel border (shapes keep a margin from it), named by the nearest
//      palette colour.
//   2. Foreground mask = pixels farther from that colour than half the typical foreground distance (the 98th
//      percentile of all distances): the half-coverage line of anti-aliased edges. Connected pieces smaller than a
//      fifth of the largest are dropped as speckle.
//   3. Colour = the mean of the mask's core pixels (at least 3/4 of the typical distance away, so edge pixels mixed
//      with the background do not count), named by the nearest palette colour other than the background's.
//   4. Shape = the template that best overlaps the mask: every shape's outline is stretched onto the mask's bounding
//      box and rasterised (4×4 samples per pixel); the score is the intersection over union of template coverage and
//      mask. Fill ratio, convexity, symmetry and the ring's hole are all in that one comparison; `fill` and
//      `holeFraction` are reported for diagnosis.
import { rasterizeShape, SHAPES, type Box, type ShapeName } from './geometry.js';
import { COLOUR_NAMES, PALETTE, type ColourName } from './render.js';

export interface Classification {
  /** null when nothing stands out from the background. */
  shape: ShapeName | null;
  colour: ColourName | null;
  background: ColourName;
  /** Template IoU of every shape (0 without a foreground). */
  shapeScores: Record<ShapeName, number>;
  /** The mask's bounding box (pixel edges), or null. */
  bbox: Box | null;
  /** Mask pixels / bounding-box pixels. */
  fill: number;
  /** Background pixels enclosed by the shape (not reachable from the box's edge) / mask pixels: the ring's hole. */
  holeFraction: number;
  foregroundPixels: number;
  /** Measured mean colours (RGB, 0..255). */
  backgroundRgb: [number, number, number];
  foregroundRgb: [number, number, number] | null;
}

type Rgb = readonly [number, number, number];

const dist = (a: Rgb, b: Rgb): number => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

/** The palette colour nearest to `c` (RGB distance) among `names`. */
export function nearestColour(c: Rgb, names: readonly ColourName[] = COLOUR_NAMES): ColourName {
  let best = names[0]!;
  let bestD = Infinity;
  for (const n of names) {
    const d = dist(c, PALETTE[n]);
    if (d < bestD) (bestD = d), (best = n);
  }
  return best;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** Foreground distances below this (RGB units) are background noise: no shape. */
const MIN_CONTRAST = 40;

/** Classifies an 8-bit RGB image (HWC, row-major). */
export function classifyImage(rgb: Uint8Array, width: number, height: number): Classification {
  const n = width * height;
  if (rgb.length !== n * 3) throw new RangeError(`classifyImage: ${rgb.length} bytes for a ${width}×${height} RGB image`);
  const px = (i: number): Rgb => [rgb[3 * i]!, rgb[3 * i + 1]!, rgb[3 * i + 2]!];

  // 1. background from the border
  const border: number[] = [];
  for (let x = 0; x < width; x++) border.push(x, (height - 1) * width + x);
  for (let y = 1; y < height - 1; y++) border.push(y * width, y * width + width - 1);
  const bg: [number, number, number] = [0, 1, 2].map((c) => median(border.map((i) => rgb[3 * i + c]!))) as [number, number, number];
  const background = nearestColour(bg);

  const scores = Object.fromEntries(SHAPES.map((s) => [s, 0])) as Record<ShapeName, number>;
  const none: Classification = {
    shape: null, colour: null, background, shapeScores: scores, bbox: null, fill: 0, holeFraction: 0, foregroundPixels: 0,
    backgroundRgb: bg, foregroundRgb: null,
  };

  // 2. foreground mask
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = dist(px(i), bg);
  const sorted = Float32Array.from(d).sort();
  const typical = sorted[Math.min(n - 1, Math.floor(0.98 * n))]!;
  if (typical < MIN_CONTRAST) return none;
  const threshold = typical / 2;
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) mask[i] = d[i]! > threshold ? 1 : 0;
  keepMainComponents(mask, width, height, 0.2);

  let x0 = width, y0 = height, x1 = -1, y1 = -1, area = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!mask[y * width + x]) continue;
      area++;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  if (area === 0) return none;
  const bbox: Box = { x0, y0, x1: x1 + 1, y1: y1 + 1 };

  // 3. colour of the core pixels
  const sum = [0, 0, 0];
  let core = 0;
  for (let i = 0; i < n; i++) {
    if (!mask[i] || d[i]! < 0.75 * typical) continue;
    for (let c = 0; c < 3; c++) sum[c]! += rgb[3 * i + c]!;
    core++;
  }
  const fg = sum.map((s) => s / Math.max(1, core)) as [number, number, number];
  const colour = nearestColour(fg, COLOUR_NAMES.filter((c) => c !== background));

  // 4. shape by template IoU
  let shape: ShapeName = SHAPES[0];
  for (const s of SHAPES) {
    const t = rasterizeShape(s, bbox, width, height);
    let inter = 0;
    let union = 0;
    for (let y = bbox.y0; y < bbox.y1; y++) {
      for (let x = bbox.x0; x < bbox.x1; x++) {
        const i = y * width + x;
        const m = mask[i]!;
        inter += Math.min(t[i]!, m);
        union += Math.max(t[i]!, m);
      }
    }
    scores[s] = union > 0 ? inter / union : 0;
    if (scores[s] > scores[shape]) shape = s;
  }
  const boxArea = (bbox.x1 - bbox.x0) * (bbox.y1 - bbox.y0);
  return {
    shape, colour, background, shapeScores: scores, bbox, fill: area / boxArea, holeFraction: enclosedHoles(mask, width, bbox) / area,
    foregroundPixels: area, backgroundRgb: bg, foregroundRgb: fg,
  };
}

/** Keeps the largest 8-connected component of `mask` and those at least `minFraction` of its size (in place). */
function keepMainComponents(mask: Uint8Array, width: number, height: number, minFraction: number): void {
  const label = new Int32Array(mask.length).fill(-1);
  const sizes: number[] = [];
  const stack: number[] = [];
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || label[start] !== -1) continue;
    const id = sizes.length;
    let size = 0;
    label[start] = id;
    stack.push(start);
    while (stack.length > 0) {
      const i = stack.pop()!;
      size++;
      const x = i % width;
      const y = (i - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= width || ny >= height) continue;
          const j = ny * width + nx;
          if (mask[j] && label[j] === -1) {
            label[j] = id;
            stack.push(j);
          }
        }
      }
    }
    sizes.push(size);
  }
  const largest = Math.max(0, ...sizes);
  for (let i = 0; i < mask.length; i++) if (mask[i] && sizes[label[i]!]! < minFraction * largest) mask[i] = 0;
}

/** Non-mask pixels inside the box that a 4-connected walk from the box's edge cannot reach. */
function enclosedHoles(mask: Uint8Array, width: number, b: Box): number {
  const w = b.x1 - b.x0;
  const h = b.y1 - b.y0;
  const seen = new Uint8Array(w * h);
  const stack: number[] = [];
  const visit = (x: number, y: number) => {
    const k = y * w + x;
    if (seen[k] || mask[(b.y0 + y) * width + b.x0 + x]) return;
    seen[k] = 1;
    stack.push(k);
  };
  for (let x = 0; x < w; x++) (visit(x, 0), visit(x, h - 1));
  for (let y = 0; y < h; y++) (visit(0, y), visit(w - 1, y));
  while (stack.length > 0) {
    const k = stack.pop()!;
    const x = k % w;
    const y = (k - x) / w;
    if (x > 0) visit(x - 1, y);
    if (x < w - 1) visit(x + 1, y);
    if (y > 0) visit(x, y - 1);
    if (y < h - 1) visit(x, y + 1);
  }
  let holes = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (!seen[y * w + x] && !mask[(b.y0 + y) * width + b.x0 + x]) holes++;
  return holes;
}

/** What a label or prompt says an image shows. */
export interface Expected {
  shape: ShapeName;
  colour: ColourName;
  background: ColourName;
}

/** Whether each attribute matches, and all three together. */
export function judge(c: Classification, e: Expected): { shape: boolean; colour: boolean; background: boolean; all: boolean } {
  const shape = c.shape === e.shape;
  const colour = c.colour === e.colour;
  const background = c.background === e.background;
  return { shape, colour, background, all: shape && colour && background };
}

/** "a blue star on a black background" → its parts, or undefined if the prompt is not in that form. */
export function parseCaption(prompt: string): Expected | undefined {
  const m = /^an? (\w+) (\w+) on an? (\w+) background$/.exec(prompt.trim().toLowerCase());
  if (!m) return undefined;
  const [, colour, shape, background] = m;
  if (!(colour! in PALETTE) || !(background! in PALETTE) || !(SHAPES as readonly string[]).includes(shape!)) return undefined;
  return { colour: colour as ColourName, shape: shape as ShapeName, background: background as ColourName };
}
