// The learning benchmark (bench/learning.ts, src/shapes/learning.ts): the probes of each concept, success counting
// with `matches`, reading the training command's output, the tables and the docs block (pure functions); the probe
// evaluation leaves no tensors behind (with extra networks applied, on the tiny SD1 fixture); and `--quick` end to end
// on the real tiny-shapes model: every method trains, exports, loads, samples, classifies and prints.
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../src/pipelines/model.js';
import { packagePath } from '../../src/paths.js';
import { CONCEPTS, matches, METHODS } from '../../src/shapes/concepts.js';
import {
  afterRequest,
  afterRewrite,
  conceptProbes,
  evaluateProbes,
  formatMarkdown,
  formatMethodTable,
  formatReport,
  formatScore,
  formatSummary,
  judgeImage,
  methodSucceeded,
  parseTrainingOutput,
  phaseResult,
  pickArtefact,
  probeSeed,
  rate,
  replaceResultsBlock,
  RESULTS_END,
  RESULTS_START,
  score,
  type LearningReport,
  type MethodResult,
  type PhaseResult,
  type Probe,
  type ProbeResult,
} from '../../src/shapes/learning.js';
import { runAsync } from '../helpers/cli.js';
import { fixture, hasShared } from '../helpers/shared.js';

type Attrs = ProbeResult['images'][number]['classification'];
const img = (seed: number, classification: Attrs, expect: Probe['expect']) => ({ seed, classification, success: judgeImage(classification, expect) });

/** A phase whose groups have the given (successes, images) counts. */
function phase(counts: Partial<Record<Probe['group'], [number, number]>>): PhaseResult {
  const probes: ProbeResult[] = Object.entries(counts).map(([group, [ok, n]]) => ({
    group: group as Probe['group'],
    prompt: `a red circle on a white background (${group})`,
    expect: { shape: 'circle', colour: 'red', background: 'white' },
    images: Array.from({ length: n }, (_, i) => ({ seed: i, classification: { shape: i < ok ? 'circle' : 'square', colour: 'red', background: 'white' }, success: i < ok })),
  }));
  return phaseResult(probes, { model: 'checkpoints/tiny-shapes', seconds: 1 });
}

const training = (seconds: number, exitCode = 0) => ({ args: [], exitCode, seconds, steps: 400, lossFirst: 0.3, lossLast: 0.12, files: [] });

describe('probes', () => {
  it('lists concept, prior and unrelated prompts in a fixed order; before uses the base model\'s wording', () => {
    const c = CONCEPTS.embed;
    const before = conceptProbes(c, 'before');
    const after = conceptProbes(c, 'after', afterRewrite('embed', '<yellow-star>', '/runs/embed/yellow-star.safetensors'));
    expect(before).toHaveLength(c.concept.length + c.unrelated.length);
    expect(after).toHaveLength(before.length);
    expect(before[0]).toEqual({ group: 'concept', prompt: 'a yellow star on a white background', expect: { shape: 'star', colour: 'yellow', background: 'white' } });
    // The embedding is prompted by its file name, as `sdtrain sample --embeddings` and A1111 load it.
    expect(after[0]!.prompt).toBe('a yellow-star on a white background');
    expect(after.slice(c.concept.length)).toEqual(before.slice(c.concept.length));
    expect(before.map((p) => p.group)).toEqual([...c.concept.map(() => 'concept'), ...c.unrelated.map(() => 'unrelated')]);
    const db = conceptProbes(CONCEPTS.dreambooth, 'before');
    expect(db.map((p) => p.group)).toEqual([...CONCEPTS.dreambooth.concept.map(() => 'concept'), ...CONCEPTS.dreambooth.prior!.map(() => 'prior'), ...CONCEPTS.dreambooth.unrelated.map(() => 'unrelated')]);
    // The same probe index gets the same seeds before and after.
    expect(probeSeed({ seed: 1000, samplesPerPrompt: 8 }, 2)).toBe(1016);
  });

  it('rewrites prompts only for embeddings', () => {
    expect(afterRewrite('lora', undefined, 'x/cross.safetensors')('a red cross')).toBe('a red cross');
    expect(afterRewrite('embed', '<yellow-star>', 'C:\\runs\\yellow-star.pt')('a <yellow-star> on a gray background')).toBe('a yellow-star on a gray background');
  });
});

describe('success counting', () => {
  it('counts an image as a success when every expected attribute matches (matches)', () => {
    const full = { shape: 'star', colour: 'yellow', background: 'black' } as const;
    expect(judgeImage({ shape: 'star', colour: 'yellow', background: 'black' }, full)).toBe(true);
    expect(judgeImage({ shape: 'star', colour: 'orange', background: 'black' }, full)).toBe(false);
    expect(judgeImage({ shape: null, colour: null, background: 'black' }, full)).toBe(false);
    // A partial expectation judges only what it names: the hypernetwork's style is the background.
    expect(judgeImage({ shape: 'heart', colour: 'pink', background: 'black' }, { background: 'black' })).toBe(true);
    expect(judgeImage({ shape: null, colour: null, background: 'black' }, { background: 'black' })).toBe(true);
    expect(judgeImage({ shape: 'circle', colour: 'red', background: 'white' }, {})).toBe(true);
    expect(judgeImage({ shape: 'circle', colour: 'red', background: 'white' }, full)).toBe(matches({ shape: 'circle', colour: 'red', background: 'white' }, full));
  });

  it('scores groups of probes', () => {
    const e = { shape: 'cross', colour: 'red', background: 'black' } as const;
    const results: ProbeResult[] = [
      { group: 'concept', prompt: 'p1', expect: e, images: [img(1, e, e), img(2, { ...e, shape: 'diamond' }, e)] },
      { group: 'concept', prompt: 'p2', expect: e, images: [img(3, e, e), img(4, e, e)] },
      { group: 'unrelated', prompt: 'p3', expect: e, images: [img(5, { ...e, background: 'gray' }, e)] },
    ];
    expect(score(results)).toEqual({ successes: 3, images: 5 });
    const p = phaseResult(results, { model: 'm', seconds: 2, warnings: ['w', 'w'] });
    expect(p.scores).toEqual({ concept: { successes: 3, images: 4 }, unrelated: { successes: 0, images: 1 } });
    expect(p.scores.prior).toBeUndefined();
    expect(p.warnings).toEqual(['w']);
    expect(rate(p.scores.concept!)).toBe(0.75);
    expect(Number.isNaN(rate({ successes: 0, images: 0 }))).toBe(true);
    expect(formatScore(p.scores.concept)).toBe('3/4 (75%)');
    expect(formatScore(undefined)).toBe('-');
  });
});

describe('training output', () => {
  it('reads steps, losses and files from the CLI summary and picks each method\'s artefact', () => {
    const out = [
      'done: 400 steps in 95.3 s, loss 0.2100 → 0.1200',
      'last checkpoint: /w/dreambooth/checkpoints/step-400',
      'wrote /w/dreambooth/dreambooth.safetensors',
      'wrote /w/dreambooth/dreambooth',
    ].join('\n');
    const p = parseTrainingOutput(out);
    expect(p).toEqual({ steps: 400, lossFirst: 0.21, lossLast: 0.12, files: ['/w/dreambooth/dreambooth.safetensors', '/w/dreambooth/dreambooth'] });
    expect(pickArtefact('dreambooth', p.files)).toBe('/w/dreambooth/dreambooth');
    expect(pickArtefact('embed', ['/w/e/yellow-star.safetensors', '/w/e/yellow-star.pt'])).toBe('/w/e/yellow-star.safetensors');
    expect(pickArtefact('hypernetwork', ['/w/h/dark.safetensors', '/w/h/dark.pt'])).toBe('/w/h/dark.pt');
    expect(pickArtefact('lora', ['/w/l/lora.safetensors'])).toBe('/w/l/lora.safetensors');
    expect(pickArtefact('lora', [])).toBeUndefined();
    expect(parseTrainingOutput('stopped: 3 steps in 1.0 s, loss - → -\n')).toEqual({ steps: 3, files: [] });
    expect(afterRequest('hypernetwork', 'h.pt', 'base')).toEqual({ model: 'base', extras: { hypernetworks: [{ path: 'h.pt', strength: 1 }] } });
    expect(afterRequest('lora', 'l.safetensors', 'base')).toEqual({ model: 'base', extras: { loras: [{ path: 'l.safetensors', weight: 1 }] } });
    expect(afterRequest('embed', 'e.safetensors', 'base')).toEqual({ model: 'base', extras: { embeddings: ['e.safetensors'] } });
    expect(afterRequest('dreambooth', '/w/db', 'base')).toEqual({ model: '/w/db', extras: {} });
  });
});

describe('tables', () => {
  const lora: MethodResult = {
    method: 'lora', concept: 'cross', summary: 'a new shape and word (cross)', config: 'configs/shapes-lora.yaml',
    before: phase({ concept: [0, 40], unrelated: [40, 48] }), after: phase({ concept: [30, 40], unrelated: [38, 48] }), training: training(95.3),
  };
  const db: MethodResult = {
    method: 'dreambooth', concept: 'sks square (a red diamond)', summary: 'a new shape', config: 'c.yaml',
    before: phase({ concept: [0, 24], prior: [30, 32], unrelated: [40, 48] }),
    after: phase({ concept: [20, 24], prior: [28, 32], unrelated: [39, 48] }),
    training: training(300),
    withoutPrior: { training: training(150), after: phase({ concept: [22, 24], prior: [5, 32], unrelated: [30, 48] }) },
  };
  const failed: MethodResult = {
    method: 'embed', concept: '<yellow-star>', summary: 's', config: 'c.yaml', before: phase({ concept: [1, 24], unrelated: [40, 48] }),
    training: { ...training(3, 2), error: 'sdtrain: error: bad config' }, error: 'training failed (exit 2): sdtrain: error: bad config',
  };
  const report: LearningReport = {
    date: '2026-01-02T03:04:05.000Z', machine: '2 × CPU', command: 'npm run bench:learning', model: 'checkpoints/tiny-shapes', quick: false,
    sampling: { sampler: 'ddim', steps: 25, cfgScale: 4, seed: 1000, samplesPerPrompt: 8, size: 32 }, methods: [lora, db, failed], seconds: 700,
  };

  it('formats a method: before → after per group, training, errors', () => {
    const t = formatMethodTable(lora);
    expect(t).toMatch(/^lora: cross: a new shape and word \(cross\)\n/);
    expect(t).toMatch(/concept success \(1 prompt\)\s+0\/40 \(0%\)\s+30\/40 \(75%\)/);
    expect(t).toMatch(/unrelated fidelity \(1 prompt\)\s+40\/48 \(83%\)\s+38\/48 \(79%\)/);
    expect(t).toMatch(/training\s+400 steps, 95 s, loss 0\.3000 → 0\.1200/);
    expect(t).not.toMatch(/prior/);
    const d = formatMethodTable(db);
    expect(d.split('\n')[1]).toMatch(/base\s+with prior loss\s+without prior loss/);
    expect(d).toMatch(/class prior kept \(1 prompt\)\s+30\/32 \(94%\)\s+28\/32 \(88%\)\s+5\/32 \(16%\)/);
    expect(d).toMatch(/training\s+400 steps, 300 s.*400 steps, 150 s/);
    const f = formatMethodTable(failed);
    expect(f).toMatch(/concept success \(1 prompt\)\s+1\/24 \(4%\)\s+-/);
    expect(f).toMatch(/failed \(exit 2\) after 3\.0 s/);
    expect(f).toMatch(/error: training failed \(exit 2\): sdtrain: error: bad config/);
    expect(methodSucceeded(lora)).toBe(true);
    expect(methodSucceeded(db)).toBe(true);
    expect(methodSucceeded(failed)).toBe(false);
    expect(methodSucceeded({ ...db, withoutPrior: undefined })).toBe(false);
  });

  it('summarises, and writes the Markdown results block between the markers', () => {
    const s = formatSummary(report);
    expect(s).toContain('lora 0% → 75%');
    expect(s).toContain('dreambooth 0% → 83% (92% without prior loss; class prior 94% base, 88% with prior loss, 16% without)');
    expect(s).toContain('embed 4% → -');
    expect(s).toContain('Training 548 s, all 11.7 min');
    expect(s).toContain('FAILED: embed');
    expect(formatReport(report)).toContain('sampling: ddim, 25 steps, CFG 4, 8 images per prompt from seed 1000 on, 32×32');
    const m = formatMarkdown(report);
    expect(m).toContain('| lora | `cross` | 0/40 (0%) → 30/40 (75%) | 40/48 (83%) → 38/48 (79%) |  | 400 steps, 95 s, loss 0.3000 → 0.1200 |');
    expect(m).toContain('| 30/32 (94%) / 28/32 (88%) / 5/32 (16%) |');
    expect(m).toContain('Run 2026-01-02 on 2 × CPU');
    expect(m).toContain('- embed: training failed (exit 2)');
    const doc = `# Learning\n\nintro\n\n${RESULTS_START}\nnot run yet\n${RESULTS_END}\n\nafter\n`;
    const out = replaceResultsBlock(doc, m);
    expect(out.startsWith(`# Learning\n\nintro\n\n${RESULTS_START}\nRun 2026-01-02`)).toBe(true);
    expect(out.endsWith(`${RESULTS_END}\n\nafter\n`)).toBe(true);
    expect(out).not.toContain('not run yet');
    expect(replaceResultsBlock(out, 'again')).toBe(`# Learning\n\nintro\n\n${RESULTS_START}\nagain\n${RESULTS_END}\n\nafter\n`);
    expect(() => replaceResultsBlock('# no markers', m)).toThrow(/learning-results:start/);
    // docs/learning.md has the block.
    expect(() => replaceResultsBlock(readFileSync(packagePath('docs', 'learning.md'), 'utf8'), 'x')).not.toThrow();
  });
});

describe.skipIf(!hasShared)('evaluateProbes (tiny SD1 fixture)', () => {
  it('samples through generate with extra networks, judges every image, and leaves no tensors behind', async () => {
    const model = await loadModel(fixture('tiny-sd1'));
    try {
      const probes: Probe[] = [
        { group: 'concept', prompt: 'a photo of a1111_embedding_tiny', expect: { background: 'white' } },
        { group: 'unrelated', prompt: 'a red circle on a white background', expect: { shape: 'circle', colour: 'red', background: 'white' } },
      ];
      const s = { sampler: 'ddim' as const, steps: 2, cfgScale: 4, seed: 7, samplesPerPrompt: 2, size: 64 };
      const extras = {
        embeddings: [fixture('formats', 'a1111_embedding_tiny.pt')],
        hypernetworks: [{ path: fixture('formats', 'a1111_hypernetwork_tiny_relu.pt'), strength: 1 }],
        loras: [{ path: fixture('formats', 'kohya_lora_tiny_locon.safetensors'), weight: 1 }],
      };
      const before = tf.memory().numTensors;
      const plain = await evaluateProbes(model, probes, s);
      expect(tf.memory().numTensors).toBe(before);
      const warnings: string[] = [];
      const seen: number[] = [];
      const withExtras = await evaluateProbes(model, probes, s, { extras, onWarning: (w) => warnings.push(w), onProbe: (_r, i) => seen.push(i) });
      const again = await evaluateProbes(model, probes, s);
      expect(tf.memory().numTensors).toBe(before);
      expect(seen).toEqual([0, 1]);
      expect(warnings).toEqual([]);
      expect(withExtras.map((r) => r.images.map((i) => i.seed))).toEqual([[7, 8], [9, 10]]);
      for (const r of withExtras) for (const i of r.images) expect(i.success).toBe(matches(i.classification, r.expect));
      // The extras changed the images and were removed afterwards: the plain run repeats exactly.
      expect(withExtras[0]!.images[0]!.png.equals(plain[0]!.images[0]!.png)).toBe(false);
      expect(again.map((r) => r.images.map((i) => i.png.toString('base64')))).toEqual(plain.map((r) => r.images.map((i) => i.png.toString('base64'))));
      expect(phaseResult(withExtras, { model: 'tiny', seconds: 0 }).probes[0]!.images[0]).not.toHaveProperty('png');
    } finally {
      model.dispose();
    }
  });
});

// --quick on the real tiny-shapes model and the concepts' configs and datasets (they land with the checkpoint).
const needed = [
  'checkpoints/tiny-shapes/model_index.json',
  ...METHODS.flatMap((m) => [CONCEPTS[m].config, CONCEPTS[m].dataset]),
];
const missing = needed.filter((p) => !existsSync(packagePath(p)));
const skipReason = missing.length ? ` (skipped: ${missing.join(', ')} missing)` : '';

describe('bench:learning --quick', () => {
  const work = mkdtempSync(join(tmpdir(), 'sdtrain-learning-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it.skipIf(missing.length > 0)(`trains, samples and judges every method end to end on checkpoints/tiny-shapes${skipReason}`, async () => {
    const bench = packagePath('dist', 'bench', 'learning.js');
    if (!existsSync(bench)) throw new Error(`${bench} is missing: run 'npm run build' (npm test does it first)`);
    const json = join(work, 'report.json');
    // --model names the default model explicitly so DreamBooth's class images go to the work folder, not the config's.
    const r = await runAsync(
      process.execPath,
      [bench, '--quick', '--methods', METHODS.join(','), '--model', packagePath('checkpoints', 'tiny-shapes'), '--work', work, '--json', json],
      { cwd: packagePath(), timeoutMs: 240_000 }, // ~1 min on 2 cores
    );
    expect(r.code, r.stderr).toBe(0);
    for (const m of METHODS) {
      expect(r.stdout).toMatch(new RegExp(`^${m}: `, 'm'));
    }
    const rows = (label: string) => r.stdout.split('\n').filter((l) => l.startsWith(label));
    const score = String.raw`\d+/\d+ \(\d+%\)`;
    expect(rows('concept success')).toHaveLength(METHODS.length);
    for (const row of rows('concept success')) expect(row).toMatch(new RegExp(`${score}\\s+${score}`));
    for (const row of rows('unrelated fidelity')) expect(row).toMatch(new RegExp(`${score}\\s+${score}`));
    expect(rows('class prior kept')[0]).toMatch(new RegExp(`${score}\\s+${score}\\s+${score}`));
    expect(rows('training')).toHaveLength(METHODS.length);
    for (const row of rows('training')) expect(row).toMatch(/4 steps, [\d.]+ s/);
    expect(r.stdout).toMatch(/^summary: /m);

    const rep = JSON.parse(readFileSync(json, 'utf8')) as LearningReport;
    expect(rep.quick).toBe(true);
    expect(rep.methods.map((m) => m.method)).toEqual(METHODS);
    for (const m of rep.methods) {
      expect(m.error).toBeUndefined();
      expect(m.before!.scores.concept!.images).toBe(2 * CONCEPTS[m.method].concept.length);
      expect(m.after!.scores.concept!.images).toBe(2 * CONCEPTS[m.method].concept.length);
      expect(m.after!.scores.unrelated!.images).toBe(2 * CONCEPTS[m.method].unrelated.length);
      expect(m.training!.exitCode).toBe(0);
      expect(m.after!.warnings).toBeUndefined();
    }
    const db = rep.methods.find((m) => m.method === 'dreambooth')!;
    expect(db.before!.scores.prior!.images).toBeGreaterThan(0);
    expect(db.after!.scores.prior!.images).toBeGreaterThan(0);
    expect(db.withoutPrior!.after!.scores.prior!.images).toBeGreaterThan(0);
    expect(existsSync(join(work, 'grids', 'lora-after.png'))).toBe(true);
  }, 300_000);
});
