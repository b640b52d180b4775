// The learning benchmark's concepts (src/shapes/concepts.ts): their run configs load with the real config loader and
// point at their datasets; the committed datasets are exactly what the generator writes, captioned as the concepts
// say; and the training images show only what each concept is meant to teach (never a pair the base model saw,
// when the concept is something it did not see).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCommandConfig } from '../../src/config/schema.js';
import { fillTemplate } from '../../src/data/captions.js';
import { classifyImage } from '../../src/shapes/classify.js';
import { conceptDatasetOptions, writeConceptDataset } from '../../src/shapes/concept_dataset.js';
import { BASE_HOLD_OUT, CONCEPTS, matches, METHODS, type Concept } from '../../src/shapes/concepts.js';
import { loadTinyShapesConfig } from '../../src/shapes/config.js';
import { readLabels, readRgb, type ShapeLabel } from '../../src/shapes/dataset.js';
import { allowed, allowedTriples, BACKGROUND_COLOURS, SHAPE_COLOURS, sampleSpec } from '../../src/shapes/render.js';
import { useTmpDir } from '../helpers/tmp.js';

const root = resolve(import.meta.dirname, '../..');
const tmp = useTmpDir('sdtrain-concepts-');
const filesOf = (dir: string): Map<string, Buffer> => new Map(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f))]));
const configOf = (c: Concept) => parseCommandConfig(c.method, readFileSync(join(root, c.config), 'utf8'), join(root, c.config)).config;
const labelsOf = (c: Concept): Promise<ShapeLabel[]> => readLabels(join(root, c.dataset));
const pair = (l: { colour: string; shape: string }) => `${l.colour} ${l.shape}`;

describe('concept run configs', () => {
  it.each(METHODS)('configs/shapes-%s.yaml loads, trains on its dataset and previews its probe prompts', (method) => {
    const c = CONCEPTS[method];
    expect(c.method).toBe(method);
    expect(c.config).toBe(`configs/shapes-${method}.yaml`);
    const cfg = configOf(c);
    // The default model (the bundled tiny-shapes checkpoint), at its native size, into <repo>/runs/shapes-<method>.
    expect(readFileSync(join(root, c.config), 'utf8')).not.toMatch(/^model:/m);
    expect(cfg.model).toBe(join(root, 'checkpoints/tiny-shapes'));
    expect(cfg.data.resolution).toBe(32);
    expect(cfg.output_dir).toBe(join(root, 'runs'));
    expect(cfg.run_name).toBe(`shapes-${method}`);
    const dirs = cfg.data.datasets.map((d) => d.path);
    if (cfg.method === 'dreambooth') dirs.push(cfg.dreambooth.instance_data_dir!);
    expect(dirs).toEqual([join(root, c.dataset)]);
    const preview = cfg.training.preview.prompts;
    for (const p of c.concept) expect(preview).toContain(p.prompt);
    expect(cfg.training.preview.every_n_steps).toBeGreaterThan(0);
    // a few minutes on a CPU: a bounded number of steps
    expect(cfg.training.max_train_steps).toBeLessThanOrEqual(1500);
  });

  it('embed: the template puts the token before the sidecar text, giving the probe prompts', async () => {
    const c = CONCEPTS.embed;
    const cfg = configOf(c);
    if (cfg.method !== 'embed') throw new Error('not an embed config');
    expect(cfg.embed.placeholder_token).toBe(c.name);
    expect(cfg.training.cond_dropout).toBe(0);
    const caption = cfg.data.datasets[0]!.caption;
    expect(caption.source).toEqual(['template', 'sidecar']);
    const templates = caption.templates as string[];
    expect(Array.isArray(templates)).toBe(true);
    for (const l of await labelsOf(c)) {
      const probe = c.concept.find((p) => p.expect.background === l.background)!;
      for (const t of templates) expect(fillTemplate(t, l.caption, c.name)).toBe(probe.prompt);
    }
  });

  it('hypernetwork and lora: sidecar captions; dreambooth: instance and class prompts with prior preservation', () => {
    for (const m of ['hypernetwork', 'lora'] as const) {
      const cfg = configOf(CONCEPTS[m]);
      expect(cfg.data.datasets[0]!.caption.source).toEqual(['sidecar']);
      expect(cfg.training.cond_dropout).toBe(0.1);
    }
    const c = CONCEPTS.dreambooth;
    const cfg = configOf(c);
    if (cfg.method !== 'dreambooth') throw new Error('not a dreambooth config');
    const d = cfg.dreambooth;
    expect(d.instance_prompt).toBe('a red sks square on a white background');
    expect(d.instance_prompt).toBe(c.concept[0]!.prompt);
    expect(d.with_prior_preservation).toBe(true);
    expect(d.class_prompt).toBe('a red square on a white background');
    expect(c.prior!.map((p) => p.prompt)).toContain(d.class_prompt);
    // class images are the base model's: generated next to the runs, never into datasets/
    expect(d.class_data_dir).toBe(join(root, 'runs/shapes-dreambooth-class'));
    expect(cfg.training.cond_dropout).toBe(0.1);
  });
});

describe('concept datasets', () => {
  it.each(METHODS)('datasets/shapes-%s is what the generator writes', async (method) => {
    const c = CONCEPTS[method];
    const out = join(tmp(), method);
    await writeConceptDataset(out, c.images);
    const want = filesOf(out);
    const have = filesOf(join(root, c.dataset));
    expect([...have.keys()]).toEqual([...want.keys()]);
    for (const [name, bytes] of want) expect(bytes.equals(have.get(name)!), `${c.dataset}/${name} differs: run node dist/scripts/make_concept_datasets.js`).toBe(true);
    expect(want.size).toBe(2 * c.images.n + 2);
  });

  it.each(METHODS)('shapes-%s: captions, labels and pixels show what the concept says', async (method) => {
    const c = CONCEPTS[method];
    const dir = join(root, c.dataset);
    const labels = await labelsOf(c);
    expect(labels).toHaveLength(c.images.n);
    const opts = conceptDatasetOptions(c.images);
    for (const l of labels) {
      expect(sampleSpec(c.images.seed, l.index, opts)).toMatchObject({ shape: l.shape, colour: l.colour, background: l.background });
      expect(l.caption).toBe(c.images.caption(l));
      expect(readFileSync(join(dir, l.file.replace(/\.png$/, '.txt')), 'utf8')).toBe(`${l.caption}\n`);
      expect(c.images.shapes).toContain(l.shape);
      expect(c.images.colours).toContain(l.colour);
      expect(c.images.backgrounds).toContain(l.background);
      expect(allowed(l, c.images.exclude ?? [])).toBe(true);
      // the pixel classifier reads the labelled scene (the images are what the captions claim)
      const img = await readRgb(join(dir, l.file));
      expect([img.width, img.height]).toEqual([32, 32]);
      expect(matches(classifyImage(img.rgb, 32, 32), { shape: l.shape, colour: l.colour, background: l.background }), `${l.file}: ${pair(l)} on ${l.background}`).toBe(true);
    }
    // every allowed triple of a small world occurs; bigger worlds at least vary in every listed dimension
    const triples = allowedTriples(c.images.exclude ?? [], c.images.shapes, c.images.colours, c.images.backgrounds);
    const seen = new Set(labels.map((l) => `${pair(l)} ${l.background}`));
    if (triples.length <= 4) expect(seen.size).toBe(triples.length);
    expect(new Set(labels.map((l) => l.background)).size).toBe(c.images.backgrounds.length);
    expect(new Set(labels.map((l) => l.shape)).size).toBe(c.images.shapes.length);
  });

  it('the training images teach only what the base model never saw', async () => {
    const { config: base } = await loadTinyShapesConfig(join(root, 'configs/tiny-shapes.yaml'));
    const held = new Set(base.data.hold_out.map(pair));
    expect([...held].sort()).toEqual(BASE_HOLD_OUT.map(pair).sort());
    const seenByBase = (l: ShapeLabel) => base.data.shapes.includes(l.shape) && !held.has(pair(l));

    // embed: every image is the held-out pair (yellow star), which the base model never drew
    const embed = await labelsOf(CONCEPTS.embed);
    expect(embed.every((l) => pair(l) === 'yellow star' && held.has(pair(l)))).toBe(true);
    expect(embed.some(seenByBase)).toBe(false);
    // hypernetwork: pairs the base model knows (a style, not a new subject), all on black, no held-out pair
    const hyper = await labelsOf(CONCEPTS.hypernetwork);
    expect(hyper.every((l) => seenByBase(l) && l.background === 'black')).toBe(true);
    expect(hyper.every((l) => !CONCEPTS.hypernetwork.images.caption(l).includes('background'))).toBe(true);
    // dreambooth and lora: shapes the base model never drew
    for (const m of ['dreambooth', 'lora'] as const) {
      const labels = await labelsOf(CONCEPTS[m]);
      expect(labels.every((l) => !base.data.shapes.includes(l.shape)), m).toBe(true);
    }
    expect(new Set((await labelsOf(CONCEPTS.dreambooth)).map((l) => `${pair(l)} ${l.background}`))).toEqual(new Set(['red diamond white']));
    expect(new Set((await labelsOf(CONCEPTS.lora)).map((l) => l.shape))).toEqual(new Set(['cross']));
    // the lora probe's extra colours (purple, orange) are not in its training images: they test composition
    const loraColours = new Set((await labelsOf(CONCEPTS.lora)).map((l) => l.colour));
    expect(CONCEPTS.lora.concept.some((p) => !loraColours.has(p.expect.colour!))).toBe(true);
  });

  it('restricted lists draw only from themselves; the default lists draw as before', () => {
    const restricted = { imageSize: 32, shapes: ['star'], colours: ['yellow'], backgrounds: ['white', 'black'] } as const;
    for (let i = 0; i < 50; i++) {
      const s = sampleSpec(9, i, restricted);
      expect(s.shape).toBe('star');
      expect(s.colour).toBe('yellow');
      expect(['white', 'black']).toContain(s.background);
    }
    for (let i = 0; i < 50; i++) {
      expect(sampleSpec(9, i, { imageSize: 32, colours: SHAPE_COLOURS, backgrounds: BACKGROUND_COLOURS })).toEqual(sampleSpec(9, i, { imageSize: 32 }));
    }
    expect(() => sampleSpec(0, 0, { imageSize: 32, colours: ['white'], backgrounds: ['white'] })).toThrow(/no \(shape, colour, background\) triple/);
    expect(() => sampleSpec(0, 0, { imageSize: 32, colours: [] })).toThrow(/no colours/);
  });

  it.skipIf(!existsSync(join(root, 'dist/scripts/make_concept_datasets.js')))('make_concept_datasets writes the datasets from the command line', () => {
    const out = join(tmp(), 'cli');
    const r = spawnSync(process.execPath, [join(root, 'dist/scripts/make_concept_datasets.js'), '--only', 'embed,dreambooth', '--out-root', out], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/embed: wrote 24 images/);
    expect(readdirSync(join(out, 'datasets')).sort()).toEqual(['shapes-dreambooth', 'shapes-embed']);
    const have = filesOf(join(root, CONCEPTS.embed.dataset));
    for (const [name, bytes] of filesOf(join(out, CONCEPTS.embed.dataset))) expect(bytes.equals(have.get(name)!), name).toBe(true);
    const bad = spawnSync(process.execPath, [join(root, 'dist/scripts/make_concept_datasets.js'), '--only', 'textual'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/unknown method 'textual'/);
  });
});
