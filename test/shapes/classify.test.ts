// The pixel classifier on the generator's own, freshly drawn, labelled images: it must get shape, colour and
// background right on at least 95% (printed), and hold up when the pixels are noisy.
import { describe, expect, it } from 'vitest';
import { classifyImage, judge, nearestColour, parseCaption } from '../../src/shapes/classify.js';
import { generatorFor } from '../../src/data/rng.js';
import { PALETTE, renderShape, sampleSpec, SHAPES, type ShapeSpec } from '../../src/shapes/render.js';

const SIZE = 32;

async function accuracy(n: number, seed: number, noise = 0): Promise<{ all: number; shape: number; colour: number; background: number; misses: string[] }> {
  let all = 0, shape = 0, colour = 0, background = 0;
  const misses: string[] = [];
  const g = generatorFor(seed, 'noise');
  for (let i = 0; i < n; i++) {
    const spec: ShapeSpec = sampleSpec(seed, i, { imageSize: SIZE });
    const { rgb } = await renderShape(spec, SIZE);
    if (noise > 0) {
      const eps = g.randn([rgb.length]);
      for (let k = 0; k < rgb.length; k++) rgb[k] = Math.max(0, Math.min(255, Math.round(rgb[k]! + noise * eps[k]!)));
    }
    const c = classifyImage(rgb, SIZE, SIZE);
    const j = judge(c, spec);
    all += +j.all; shape += +j.shape; colour += +j.colour; background += +j.background;
    if (!j.all) misses.push(`${spec.colour} ${spec.shape} on ${spec.background} (size ${spec.size}) → ${c.colour} ${c.shape} on ${c.background}`);
  }
  return { all: all / n, shape: shape / n, colour: colour / n, background: background / n, misses };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

describe('pixel classifier', () => {
  it('is at least 95% right on freshly generated labelled images (all 8 shapes)', async () => {
    const n = 480;
    const r = await accuracy(n, 20240601);
    console.log(`classifier accuracy on ${n} fresh generator images: ${pct(r.all)} all correct (shape ${pct(r.shape)}, colour ${pct(r.colour)}, background ${pct(r.background)})`);
    if (r.misses.length > 0) console.log(`misses:\n  ${r.misses.slice(0, 10).join('\n  ')}`);
    expect(r.all).toBeGreaterThanOrEqual(0.95);
  });

  it('still mostly right with Gaussian pixel noise (σ = 12)', async () => {
    const n = 160;
    const r = await accuracy(n, 77, 12);
    console.log(`classifier accuracy on ${n} noisy images (σ 12): ${pct(r.all)} (shape ${pct(r.shape)}, colour ${pct(r.colour)}, background ${pct(r.background)})`);
    expect(r.all).toBeGreaterThanOrEqual(0.9);
  });

  it('sees no shape on a plain image, and names plain colours', () => {
    const rgb = new Uint8Array(SIZE * SIZE * 3).fill(128);
    const c = classifyImage(rgb, SIZE, SIZE);
    expect(c.shape).toBeNull();
    expect(c.colour).toBeNull();
    expect(c.background).toBe('gray');
    expect(nearestColour([250, 130, 25])).toBe('orange');
    expect(nearestColour(PALETTE.purple)).toBe('purple');
  });

  it('tells every shape apart at the smallest size', async () => {
    for (const shape of SHAPES) {
      const spec: ShapeSpec = { shape, colour: 'red', background: 'white', cx: 16.3, cy: 15.7, size: 16 };
      const c = classifyImage((await renderShape(spec, SIZE)).rgb, SIZE, SIZE);
      expect(c.shape, shape).toBe(shape);
      if (shape === 'ring') expect(c.holeFraction).toBeGreaterThan(0.2);
      else expect(c.holeFraction).toBe(0);
    }
  });

  it('parses prompts of the world', () => {
    expect(parseCaption('a blue star on a black background')).toEqual({ colour: 'blue', shape: 'star', background: 'black' });
    expect(parseCaption('an orange ring on a white background')).toEqual({ colour: 'orange', shape: 'ring', background: 'white' });
    expect(parseCaption('a photo of a cat')).toBeUndefined();
    expect(parseCaption('a teal star on a black background')).toBeUndefined();
  });
});
