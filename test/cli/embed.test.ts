// `sdtrain embed` end to end with the built binary: the tiny fixture model and a small generated image set.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { BIN, sdtrain } from '../helpers/cli.js';
import { fixture } from '../helpers/shared.js';

let dir: string;
let config: string;

const losses = (runDir: string): number[] =>
  readFileSync(join(runDir, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);

const train = (name: string, ...set: string[]) =>
  sdtrain(['embed', '--config', config, '--backend', 'wasm', '--set', `run_name=${name}`, ...set.flatMap((s) => ['--set', s])]);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sdtrain-embed-'));
  const images = join(dir, 'images');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(images);
  for (const [i, color] of ['#d33', '#3a3', '#33d', '#dd3'].entries()) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="#fff"/><circle cx="${28 + i * 3}" cy="32" r="18" fill="${color}"/></svg>`;
    await sharp(Buffer.from(svg)).png().toFile(join(images, `ball_${i}.png`));
  }
  config = join(dir, 'ball.yaml');
  writeFileSync(
    config,
    [
      'method: embed',
      `model: ${fixture('tiny-sd1')}`,
      'output_dir: runs',
      'data:',
      '  resolution: 64',
      '  datasets:',
      '    - path: images',
      '      caption: { source: [template], templates: ["a photo of a [name]"] }',
      'embed:',
      '  placeholder_token: "<ball>"',
      '  init_word: ball',
      'training:',
      '  max_train_steps: 8',
      '  learning_rate: 0.05',
      '  save_every_n_steps: 4',
      '  log_every_n_steps: 1',
      '  preview: { every_n_steps: 0 }',
      '',
    ].join('\n'),
  );
});

describe('sdtrain embed', () => {
  it('trains, writes the run folder, and the loss is lower than the same run without learning', async () => {
    const r = await train('learn');
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const run = join(dir, 'runs', 'learn');
    for (const f of ['config.resolved.yaml', 'loss.jsonl', 'loss.png', 'ball.safetensors', 'ball.pt', 'checkpoints/step-4', 'checkpoints/step-8']) {
      expect(existsSync(join(run, f)), f).toBe(true);
    }
    expect(r.stdout).toMatch(/done: 8 steps/);
    const frozen = await train('frozen', 'training.learning_rate=1e-12') // the schema wants lr > 0; 1e-12 moves nothing in float32;
    expect(frozen.code).toBe(0);
    // Same seed: same batches, timesteps and noise; only the embedding differs. Learning lowers the late losses.
    const a = losses(run).slice(4);
    const b = losses(join(dir, 'runs', 'frozen')).slice(4);
    const mean = (x: number[]) => x.reduce((s, v) => s + v, 0) / x.length;
    expect(mean(a)).toBeLessThan(mean(b));
  });

  it('the exported embedding loads in sdtrain sample under its file name', async () => {
    const out = join(dir, 'samples');
    const r = await sdtrain(['sample', '--model', fixture('tiny-sd1'), '-p', 'a photo of ball', '--steps', '2', '-W', '64', '-H', '64', '--seed', '1',
      '--embeddings', join(dir, 'runs', 'learn', 'ball.safetensors'), '--out', out]);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toMatch(/skipped/);
    const png = readFileSync(join(out, readdirSync(out)[0]!));
    expect(png.toString('latin1')).toMatch(/TI hashes: "?ball: [0-9a-f]+/);
  });

  it('interrupted (Ctrl-C) then resumed gives exactly the uninterrupted losses', async () => {
    const name = 'interrupted';
    const child = spawn(process.execPath, [BIN, 'embed', '--config', config, '--backend', 'wasm', '--set', `run_name=${name}`], { cwd: dir });
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
    expect(existsSync(join(runDir, 'ball.safetensors'))).toBe(false); // no final export after an interrupt
    const resumed = await sdtrain(['embed', '--config', config, '--backend', 'wasm', '--set', `run_name=${name}`, '--resume'], { cwd: dir });
    expect(resumed.stderr).toMatch(/resumed from/);
    expect(resumed.code).toBe(0);
    expect(losses(runDir)).toEqual(losses(join(dir, 'runs', 'learn')));
  });

  it('bad input: a placeholder that is already a word, and an empty image folder', async () => {
    const r = await sdtrain(['embed', '--config', config, '--backend', 'wasm', '--set', 'embed.placeholder_token=cat']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/embed\.placeholder_token: .*cat/);
    const empty = join(dir, 'empty');
    const { mkdirSync } = require('node:fs') as typeof import('node:fs');
    mkdirSync(empty, { recursive: true });
    const e = await sdtrain(['embed', '--config', config, '--backend', 'wasm', '--set', `data.datasets=[{path: ${empty}}]`]);
    expect(e.code).not.toBe(0);
    expect(e.stderr).toMatch(/empty/);
  });
});
