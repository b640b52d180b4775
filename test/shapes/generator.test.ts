// The shapes generator: seeded and deterministic to the byte, held-out pairs never drawn, captions and labels agree.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readLabels, writeShapesDataset } from '../../src/shapes/dataset.js';
import { parseCaption } from '../../src/shapes/classify.js';
import { allowedTriples, caption, parseCombos, parseShapes, renderShape, sampleSpec, SHAPES } from '../../src/shapes/render.js';
import { useTmpDir } from '../helpers/tmp.js';

const tmp = useTmpDir('sdtrain-shapes-');

const filesOf = (dir: string): Map<string, Buffer> => new Map(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f))]));

describe('shapes generator', () => {
  it('writes the same bytes for the same seed, and different images for another seed', async () => {
    const opts = { n: 24, seed: 7, imageSize: 32, holdOut: parseCombos('blue star') };
    await writeShapesDataset(join(tmp(), 'a'), opts);
    await writeShapesDataset(join(tmp(), 'b'), opts);
    await writeShapesDataset(join(tmp(), 'c'), { ...opts, seed: 8 });
    const a = filesOf(join(tmp(), 'a'));
    const b = filesOf(join(tmp(), 'b'));
    const c = filesOf(join(tmp(), 'c'));
    expect(a.size).toBe(24 * 2 + 2); // png + txt per image, labels.jsonl, world.json
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, bytes] of a) expect(bytes.equals(b.get(name)!), name).toBe(true);
    const differing = [...a].filter(([name, bytes]) => name.endsWith('.png') && !bytes.equals(c.get(name)!));
    expect(differing.length).toBeGreaterThan(20);
  });

  it('image i depends only on (seed, i), not on how many images are made', () => {
    for (let i = 0; i < 20; i++) expect(sampleSpec(3, i, { imageSize: 32 })).toEqual(sampleSpec(3, i, { imageSize: 32 }));
    expect(sampleSpec(3, 5, { imageSize: 32 })).not.toEqual(sampleSpec(4, 5, { imageSize: 32 }));
  });

  it('never draws or captions a held-out colour×shape pair', async () => {
    const holdOut = parseCombos('blue star, green heart ,red circle');
    const dir = join(tmp(), 'held');
    const labels = await writeShapesDataset(dir, { n: 600, seed: 1, imageSize: 32, holdOut });
    const captions = readdirSync(dir).filter((f) => f.endsWith('.txt')).map((f) => readFileSync(join(dir, f), 'utf8'));
    expect(captions).toHaveLength(600);
    for (const text of captions) {
      for (const h of ['blue star', 'green heart', 'red circle']) expect(text).not.toContain(h);
    }
    // the parts of held-out pairs still occur in other pairs
    expect(captions.some((t) => t.includes('blue circle'))).toBe(true);
    expect(captions.some((t) => t.includes('red star'))).toBe(true);
    expect(labels.every((l) => !holdOut.some((h) => h.colour === l.colour && h.shape === l.shape))).toBe(true);
    const world = JSON.parse(readFileSync(join(dir, 'world.json'), 'utf8')) as { hold_out: string[]; triples: number };
    expect(world.hold_out).toEqual(['blue star', 'green heart', 'red circle']);
    expect(world.triples).toBe(allowedTriples(holdOut).length);
  });

  it('captions, sidecar files and labels agree, and boxes stay inside the margin', async () => {
    const dir = join(tmp(), 'labels');
    await writeShapesDataset(dir, { n: 100, seed: 2, imageSize: 32, shapes: parseShapes('circle,star,ring') });
    const labels = await readLabels(dir);
    expect(labels).toHaveLength(100);
    for (const l of labels) {
      expect(readFileSync(join(dir, l.file.replace('.png', '.txt')), 'utf8')).toBe(`${l.caption}\n`);
      expect(l.caption).toBe(caption(l));
      expect(parseCaption(l.caption)).toEqual({ shape: l.shape, colour: l.colour, background: l.background });
      expect(['circle', 'star', 'ring']).toContain(l.shape);
      expect(l.colour).not.toBe(l.background);
      const [x0, y0, x1, y1] = l.bbox;
      expect(Math.min(x0, y0)).toBeGreaterThanOrEqual(2 - 1e-9);
      expect(Math.max(x1, y1)).toBeLessThanOrEqual(30 + 1e-9);
      expect(x1 - x0).toBeGreaterThanOrEqual(16 - 1e-3);
      expect(x1 - x0).toBeLessThanOrEqual(25.6 + 1e-3);
    }
    expect(new Set(labels.map((l) => l.shape)).size).toBe(3);
  });

  it('writes grammatical captions', () => {
    expect(caption({ colour: 'orange', shape: 'star', background: 'black' })).toBe('an orange star on a black background');
    expect(caption({ colour: 'blue', shape: 'ring', background: 'gray' })).toBe('a blue ring on a gray background');
  });

  it('renders exact palette colours away from the edges', async () => {
    const spec = { shape: 'square' as const, colour: 'blue' as const, background: 'black' as const, cx: 16, cy: 16, size: 20 };
    const { rgb } = await renderShape(spec, 32);
    const at = (x: number, y: number) => [...rgb.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3)];
    expect(at(16, 16)).toEqual([40, 80, 220]);
    expect(at(1, 1)).toEqual([0, 0, 0]);
  });

  it('rejects unknown colours and shapes', () => {
    expect(() => parseCombos('teal star')).toThrow(/unknown shape colour 'teal'/);
    expect(() => parseCombos('blue hexagon')).toThrow(/unknown shape 'hexagon'/);
    expect(() => parseCombos('blue')).toThrow(/is not '<colour> <shape>'/);
    expect(() => parseShapes('circle,blob')).toThrow(/unknown shape 'blob'/);
    expect(SHAPES).toContain('heart');
  });

  it.skipIf(!existsSync('dist/scripts/make_shapes.js'))('make_shapes writes a dataset from the command line', () => {
    const out = join(tmp(), 'cli');
    const r = spawnSync(process.execPath, ['dist/scripts/make_shapes.js', '--out', out, '--n', '6', '--seed', '0', '--size', '32', '--hold-out', 'blue star'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/wrote 6 32×32 images/);
    expect(readdirSync(out).filter((f) => f.endsWith('.png'))).toHaveLength(6);
    const bad = spawnSync(process.execPath, ['dist/scripts/make_shapes.js', '--out', out, '--hold-out', 'teal star'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/unknown shape colour 'teal'/);
  });
});
