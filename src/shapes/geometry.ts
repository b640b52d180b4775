// The shapes of the synthetic shapes world as polygons in a unit box, shared by the renderer (render.ts turns them
// into SVG paths for sharp) and the classifier (classify.ts rasterises them as templates). Every shape fills the box
// [-1, 1]² exactly (x right, y down, as SVG), so a shape drawn at size s has an s×s bounding box, whatever the shape.
// A shape is a list of closed rings filled with the even-odd rule (the ring's hole is its second ring).

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'heart', 'ring', 'diamond', 'cross'] as const;
export type ShapeName = (typeof SHAPES)[number];

export type Point = readonly [number, number];
export type Polygon = readonly Point[];

/** Inner radius of the ring as a fraction of the outer one. */
export const RING_INNER = 0.55;
/** Half-width of the cross's arms (the box is 2 wide). */
export const CROSS_ARM = 0.34;
/** Inner radius of the five-pointed star as a fraction of the outer one (0.382: the regular pentagram's). */
export const STAR_INNER = 0.382;

const CIRCLE_SEGMENTS = 72;

function circle(r: number): Polygon {
  return Array.from({ length: CIRCLE_SEGMENTS }, (_, i) => {
    const a = (2 * Math.PI * i) / CIRCLE_SEGMENTS;
    return [r * Math.cos(a), r * Math.sin(a)] as const;
  });
}

/** Scale and shift rings so that together they span exactly [-1, 1]² (per axis). */
function fitBox(rings: Polygon[]): Polygon[] {
  const xs = rings.flat().map((p) => p[0]);
  const ys = rings.flat().map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  return rings.map((r) => r.map(([x, y]) => [((x - x0) / (x1 - x0)) * 2 - 1, ((y - y0) / (y1 - y0)) * 2 - 1] as const));
}

function star(): Polygon {
  // 10 vertices alternating outer/inner, the first point straight up
  return Array.from({ length: 10 }, (_, i) => {
    const r = i % 2 === 0 ? 1 : STAR_INNER;
    const a = -Math.PI / 2 + (i * Math.PI) / 5;
    return [r * Math.cos(a), r * Math.sin(a)] as const;
  });
}

function heart(): Polygon {
  // the classic parametric heart: x = 16 sin³t, y = 13 cos t − 5 cos 2t − 2 cos 3t − cos 4t (y flipped: SVG's y is down)
  const n = 96;
  return Array.from({ length: n }, (_, i) => {
    const t = (2 * Math.PI * i) / n;
    const x = 16 * Math.sin(t) ** 3;
    const y = 13 * Math.cos(t) - 5 * Math.cos(2 * t) - 2 * Math.cos(3 * t) - Math.cos(4 * t);
    return [x, -y] as const;
  });
}

function cross(): Polygon {
  const a = CROSS_ARM;
  return [
    [-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a],
  ];
}

const GEOMETRY: Record<ShapeName, Polygon[]> = {
  circle: [circle(1)],
  square: [[[-1, -1], [1, -1], [1, 1], [-1, 1]]],
  triangle: [[[0, -1], [1, 1], [-1, 1]]],
  star: fitBox([star()]),
  heart: fitBox([heart()]),
  ring: [circle(1), circle(RING_INNER)],
  diamond: [[[0, -1], [1, 0], [0, 1], [-1, 0]]],
  cross: [cross()],
};

/** The rings of a shape in the unit box [-1, 1]² (even-odd fill). */
export function shapeRings(shape: ShapeName): readonly Polygon[] {
  return GEOMETRY[shape];
}

/** Even-odd point-in-shape test in unit-box coordinates. */
export function insideShape(rings: readonly Polygon[], x: number, y: number): boolean {
  let inside = false;
  for (const ring of rings) {
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i]!;
      const [xj, yj] = ring[j]!;
      if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
  }
  return inside;
}

/** A pixel-space box: the shape's unit box [-1, 1]² maps onto [x0, x1] × [y0, y1] (pixel edges, not centres). */
export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/** Resolution of the cached unit-box bitmaps that templates are sampled from (0.01 px at a 26-pixel shape). */
const BITMAP_RES = 512;
const bitmaps = new Map<ShapeName, Uint8Array>();

/** The shape's unit box as a BITMAP_RES² inside/outside bitmap (cell centres tested), computed once per shape. */
function shapeBitmap(shape: ShapeName): Uint8Array {
  let bm = bitmaps.get(shape);
  if (!bm) {
    const rings = shapeRings(shape);
    bm = new Uint8Array(BITMAP_RES * BITMAP_RES);
    for (let j = 0; j < BITMAP_RES; j++) {
      const y = ((j + 0.5) / BITMAP_RES) * 2 - 1;
      for (let i = 0; i < BITMAP_RES; i++) bm[j * BITMAP_RES + i] = insideShape(rings, ((i + 0.5) / BITMAP_RES) * 2 - 1, y) ? 1 : 0;
    }
    bitmaps.set(shape, bm);
  }
  return bm;
}

/**
 * Coverage of each pixel of a width×height image by the shape stretched onto `box`, estimated with ss×ss samples per
 * pixel (each looked up in the shape's cached bitmap): [0, 1] per pixel, row-major.
 */
export function rasterizeShape(shape: ShapeName, box: Box, width: number, height: number, ss = 4): Float32Array {
  const bm = shapeBitmap(shape);
  const out = new Float32Array(width * height);
  const bw = box.x1 - box.x0;
  const bh = box.y1 - box.y0;
  if (!(bw > 0 && bh > 0)) return out;
  const px0 = Math.max(0, Math.floor(box.x0));
  const px1 = Math.min(width, Math.ceil(box.x1));
  const py0 = Math.max(0, Math.floor(box.y0));
  const py1 = Math.min(height, Math.ceil(box.y1));
  const cell = (v: number): number => Math.floor(v * BITMAP_RES); // v in [0, 1) of the box
  for (let py = py0; py < py1; py++) {
    for (let px = px0; px < px1; px++) {
      let hits = 0;
      for (let sy = 0; sy < ss; sy++) {
        const v = (py + (sy + 0.5) / ss - box.y0) / bh;
        if (v < 0 || v >= 1) continue;
        const row = cell(v) * BITMAP_RES;
        for (let sx = 0; sx < ss; sx++) {
          const u = (px + (sx + 0.5) / ss - box.x0) / bw;
          if (u >= 0 && u < 1) hits += bm[row + cell(u)]!;
        }
      }
      out[py * width + px] = hits / (ss * ss);
    }
  }
  return out;
}
