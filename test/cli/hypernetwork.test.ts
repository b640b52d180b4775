// `sdtrain hypernetwork` end to end with the built binary on the tiny fixture model and a small generated image set:
// train (A1111 learning-rate string, default 10% conditioning dropout, a preview that samples with the hypernetwork),
// the loss is lower than the same run without learning, `sdtrain sample --hypernetwork FILE:0` gives exactly the
// pixels of no hypernetwork and `:1` others, and Ctrl-C + --resume gives exactly the uninterrupted losses.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { readPngText } from '../../src/formats/png_text.js';
import { readHypernetwork } from '../../src/hypernetwork/file.js';
import { BIN, sdtrain } from '../helpers/cli.js';
import { fixture } from '../helpers/shared.js';

let dir: string;
let config: string;

const losses = (runDir: string): number[] =>
  readFileSync(join(runDir, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
const lrs = (runDir: string): number[] =>
  readFileSync(join(runDir, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { lr: number }).lr);

const train = (name: string, ...set: string[]) =>
  sdtrain(['hypernetwork', '--config', config, '--backend', 'wasm', '--set', `run_name=${name}`, ...set.flatMap((s) => ['--set', s])], { cwd: dir });

const pixels = async (file: string): Promise<Buffer> => sharp(file).raw().toBuffer();

/** `sdtrain sample` of a fixed prompt and seed with the given --hypernetwork flags; returns the image file. */
async function sample(name: string, hypernetworks: string[]): Promise<string> {
  const out = join(dir, 'samples', name);
  const r = await sdtrain([
    'sample', '--model', fixture('tiny-sd1'), '-p', 'a photo of a ball', '--steps', '3', '-W', '64', '-H', '64', '--seed', '11',
    '--sampler', 'ddim', '--backend', 'wasm', '--out', out, ...hypernetworks.flatMap((h) => ['--hypernetwork', h]),
  ]);
  if (r.code !== 0) throw new Error(`sdtrain sample failed (${r.code}): ${r.stderr}`);
  expect(r.stderr).not.toMatch(/warning/);
  return join(out, readdirSync(out)[0]!);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sdtrain-hn-'));
  const images = join(dir, 'images');
  mkdirSync(images);
  for (const [i, color] of ['#d33', '#3a3', '#33d', '#dd3'].entries()) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="#fff"/><circle cx="${28 + i * 3}" cy="32" r="18" fill="${color}"/></svg>`;
    await sharp(Buffer.from(svg)).png().toFile(join(images, `ball_${i}.png`));
  }
  config = join(dir, 'ball.yaml');
  writeFileSync(
    config,
    [
      'method: hypernetwork',
      `model: ${fixture('tiny-sd1')}`,
      'output_dir: runs',
      'data:',
      '  resolution: 64',
      '  datasets:',
      '    - path: images',
      '      caption: { source: [template], templates: ["a photo of a [name]", "a [name] on a table"] }',
      'hypernetwork:',
      '  name: ballnet',
      'training:',
      '  max_train_steps: 8',
      '  batch_size: 4', // every image each step: steadier gradients than batch 1, so 8 steps show the loss going down
      '  learning_rate: "0.01:4, 0.005:8"',
      '  save_every_n_steps: 4',
      '  log_every_n_steps: 1',
      '  preview: { every_n_steps: 0, steps: 2 }',
      '',
    ].join('\n'),
  );
});

describe('sdtrain hypernetwork', () => {
  it('trains with an A1111 learning-rate string; the loss is lower than the same run without learning; files and preview', async () => {
    const r = await train('learn', 'training.preview.every_n_steps=8');
    expect(r.stderr).not.toMatch(/error|warning/i);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/hypernetwork: [\d,]+ trainable parameters/);
    const run = join(dir, 'runs', 'learn');
    for (const f of ['config.resolved.yaml', 'loss.jsonl', 'loss.png', 'ballnet.safetensors', 'ballnet.pt', 'checkpoints/step-4/ballnet.pt', 'checkpoints/step-8', 'previews/step-000008-0.png']) {
      expect(existsSync(join(run, f)), f).toBe(true);
    }
    expect(r.stdout).toMatch(/done: 8 steps/);
    expect(readFileSync(join(run, 'config.resolved.yaml'), 'utf8')).toMatch(/cond_dropout: 0\.1\b/); // the hypernetwork default
    expect(lrs(run)).toEqual([0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005]);
    // the preview sampled with the hypernetwork saved at that step (A1111's <hypernet:name:m> tag in its infotext)
    expect(readPngText(readFileSync(join(run, 'previews', 'step-000008-0.png'))).parameters).toMatch(/<hypernet:ballnet:1>/);

    const hn = await readHypernetwork(join(run, 'ballnet.pt'));
    expect([hn.name, hn.step, hn.sizes, hn.sdCheckpointName]).toEqual(['ballnet', 8, [32, 64], 'tiny-sd1']);
    expect(hn.sdCheckpoint).toMatch(/^[0-9a-f]{10}$/);
    hn.dispose();

    const frozen = await train('frozen', 'training.learning_rate=1e-12'); // lr > 0 is required; 1e-12 moves nothing that matters
    expect(frozen.code).toBe(0);
    // Same seed: same batches, dropout, timesteps and noise; only the hypernetwork differs.
    const a = losses(run);
    const b = losses(join(dir, 'runs', 'frozen'));
    expect(a[0]).toBe(b[0]);
    const mean = (x: number[]) => x.reduce((s, v) => s + v, 0) / x.length;
    console.log(`hypernetwork CLI: losses ${a.map((x) => x.toFixed(4)).join(' ')} vs frozen ${b.map((x) => x.toFixed(4)).join(' ')}`);
    expect(mean(a.slice(4))).toBeLessThan(mean(b.slice(4)));
    expect(mean(a.slice(1))).toBeLessThan(mean(b.slice(1)));
  });

  it('sample --hypernetwork FILE:0 is pixel-identical to no hypernetwork, FILE:1 differs; several at once', async () => {
    const file = join(dir, 'runs', 'learn', 'ballnet.pt');
    const none = await pixels(await sample('none', []));
    const zero = await pixels(await sample('zero', [`${file}:0`]));
    const one = await pixels(await sample('one', [`${file}:1`]));
    expect(zero.equals(none)).toBe(true);
    expect(one.equals(none)).toBe(false);
    let changed = 0;
    for (let i = 0; i < one.length; i++) if (one[i] !== none[i]) changed++;
    console.log(`hypernetwork at strength 1 changes ${changed} of ${one.length} pixel bytes`);
    // the .safetensors holds the same weights: the same image; and two hypernetworks apply one after the other
    const st = await pixels(await sample('st', [join(dir, 'runs', 'learn', 'ballnet.safetensors')]));
    expect(st.equals(one)).toBe(true);
    const two = await sample('two', [`${file}:0.5`, `${join(dir, 'runs', 'learn', 'checkpoints', 'step-4', 'ballnet.safetensors')}:0.5`]);
    expect((await pixels(two)).equals(none)).toBe(false);
    expect(readPngText(readFileSync(two)).parameters).toMatch(/<hypernet:ballnet:0\.5> <hypernet:ballnet:0\.5>/);
  });

  it('interrupted (Ctrl-C) then resumed gives exactly the uninterrupted losses', async () => {
    const name = 'interrupted';
    const child = spawn(process.execPath, [BIN, 'hypernetwork', '--config', config, '--backend', 'wasm', '--set', `run_name=${name}`], { cwd: dir });
    let err = '';
    await new Promise<void>((done) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (/training 3\/8/.test(err) && !child.killed) child.kill('SIGINT');
      });
      child.on('exit', () => done());
    });
    expect(err).toMatch(/interrupted: saving a checkpoint/);
    const runDir = join(dir, 'runs', name);
    expect(readdirSync(join(runDir, 'checkpoints')).length).toBeGreaterThan(0);
    expect(existsSync(join(runDir, 'ballnet.pt'))).toBe(false); // no final export after an interrupt
    const resumed = await sdtrain(['hypernetwork', '--config', config, '--backend', 'wasm', '--set', `run_name=${name}`, '--resume'], { cwd: dir });
    expect(resumed.stderr).toMatch(/resumed from/);
    expect(resumed.code).toBe(0);
    expect(losses(runDir)).toEqual(losses(join(dir, 'runs', 'learn')));
  });

  it('bad input: a width the model lacks is a config error', async () => {
    const r = await train('bad', 'hypernetwork.sizes=[32, 768]');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/hypernetwork\.sizes: 768 is not a context width/);
  });
});
