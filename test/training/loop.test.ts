// The generic loop on the tiny model with textual inversion: exact resume, Ctrl-C, NaN, accumulation, dropout schedule.
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { loadEmbedding } from '../../src/embeddings/load.js';
import { findLatestCheckpoint, readCheckpoint } from '../../src/training/checkpoint.js';
import { train, TrainingDivergedError } from '../../src/training/loop.js';
import { lossChartSvg } from '../../src/training/run_files.js';
import type { StepContext, TrainEvent, TrainingMethod } from '../../src/training/types.js';
import { hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { disposeItems, embedConfig, loadTiny, memorySource, tiMethod, tinyItems, type Tiny } from './helpers.js';

const tmp = useTmpDir('sdtrain-loop-');

describe.runIf(hasShared)('training loop (tiny SD1, textual inversion)', () => {
  let tiny: Tiny;
  beforeAll(async () => {
    tiny = await loadTiny();
  });
  afterAll(() => disposePipeline(tiny.model));

  // Everything random switched on: shuffled posterior samples, cosine LR with warm-up, a dropout schedule, offset noise,
  // min-SNR weighting, AdamW, clipping, accumulation.
  const resumeConfig = () =>
    embedConfig(
      {
        max_train_steps: 6,
        batch_size: 1,
        gradient_accumulation_steps: 2,
        learning_rate: 0.02,
        lr_scheduler: 'cosine',
        lr_warmup_steps: 2,
        cond_dropout: [{ until_step: 2, rate: 0 }, { rate: 0.3 }],
        noise_offset: 0.1,
        min_snr_gamma: 5,
        max_grad_norm: 0.01,
        log_every_n_steps: 2,
      },
      { num_vectors: 2 },
      1234,
    );

  it('Ctrl-C saves a checkpoint and stops; resuming gives bit-identical losses and weights to an uninterrupted run', async () => {
    const items = tinyItems('latentDist', 3);
    const cfg = resumeConfig();

    const straightDir = join(tmp(), 'straight');
    const straight = await tiMethod(tiny, cfg);
    const straightLosses: number[] = [];
    await train(straight, memorySource(items, 1, 7), cfg, { runDir: straightDir, diffusion: tiny.setup, onEvent: (e) => e.kind === 'step' && straightLosses.push(e.loss) });
    const straightRows = Array.from(straight.rows.dataSync());
    straight.dispose();

    // interrupted after step 3 (the signal is checked between optimizer steps)
    const runDir = join(tmp(), 'interrupted');
    const first = await tiMethod(tiny, cfg);
    const abort = new AbortController();
    const events: TrainEvent[] = [];
    const summary = await train(first, memorySource(items, 1, 7), cfg, {
      runDir,
      diffusion: tiny.setup,
      signal: abort.signal,
      onEvent: (e) => {
        events.push(e);
        if (e.kind === 'step' && e.step === 3) abort.abort();
      },
    });
    expect(summary).toMatchObject({ reason: 'aborted', steps: 3, files: [], checkpointDir: join(runDir, 'checkpoints', 'step-3') });
    expect(events.filter((e) => e.kind === 'checkpoint').map((e) => (e as { step: number }).step)).toEqual([3]);
    expect(existsSync(join(runDir, 'tiny-concept.safetensors'))).toBe(false); // no final export when aborted
    expect((await readdir(join(runDir, 'checkpoints', 'step-3'))).sort()).toEqual(['tiny-concept.pt', 'tiny-concept.safetensors', 'trainer_state.safetensors']);
    expect(await findLatestCheckpoint(runDir)).toBe(join(runDir, 'checkpoints', 'step-3'));
    const state = await readCheckpoint(join(runDir, 'checkpoints', 'step-3'));
    expect(state).toMatchObject({ step: 3, method: 'textual_inversion', seed: 1234, cursor: { epoch: 2, index: 0 } });
    expect(state.optimizer.step).toBe(3);
    first.dispose();

    // a new process: fresh method (init rows), fresh source, resume: 'latest'
    const second = await tiMethod(tiny, cfg);
    const resumedLosses: number[] = [];
    const resumedEvents: TrainEvent[] = [];
    const done = await train(second, memorySource(items, 1, 7), cfg, {
      runDir,
      diffusion: tiny.setup,
      resume: 'latest',
      onEvent: (e) => {
        resumedEvents.push(e);
        if (e.kind === 'step') resumedLosses.push(e.loss);
      },
    });
    expect(resumedEvents[0]).toMatchObject({ kind: 'start', step: 3, resumedFrom: join(runDir, 'checkpoints', 'step-3') });
    expect(resumedEvents.some((e) => e.kind === 'warning')).toBe(false);
    expect(done).toMatchObject({ reason: 'finished', steps: 6 });
    const interruptedLosses = [...events.filter((e) => e.kind === 'step').map((e) => (e as { loss: number }).loss), ...resumedLosses];
    console.log(`losses straight ${straightLosses.join(', ')}\n       resumed  ${interruptedLosses.join(', ')}`);
    expect(interruptedLosses).toEqual(straightLosses); // bit-identical
    expect(Array.from(second.rows.dataSync())).toEqual(straightRows);
    const log = readFileSync(join(runDir, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number });
    expect(log.map((r) => r.loss)).toEqual(straightLosses);
    expect(Array.from((await loadEmbedding(join(runDir, 'tiny-concept.safetensors'))).vectors)).toEqual(straightRows);
    second.dispose();
    disposeItems(items);
  });

  it('a NaN loss stops with TrainingDivergedError; the last good checkpoint is intact and nothing is saved for the bad step', async () => {
    const items = tinyItems('latents', 2);
    const cfg = embedConfig({ max_train_steps: 10, batch_size: 2, learning_rate: 0.01, save_every_n_steps: 2 });
    const ti = await tiMethod(tiny, cfg);
    // the loss of 0-based step 4 (the 5th) is forced to NaN
    const poisoned: TrainingMethod = {
      name: ti.name,
      trainableVariables: () => ti.trainableVariables(),
      loss: (b, ctx: StepContext) => (ctx.step === 4 ? ti.loss(b, ctx).mul(NaN) : ti.loss(b, ctx)),
      save: (dir, step, kind) => ti.save(dir, step, kind),
    };
    const runDir = join(tmp(), 'nan');
    const before = tf.memory().numTensors;
    const run = train(poisoned, memorySource(items, 2), cfg, { runDir, diffusion: tiny.setup });
    await expect(run).rejects.toBeInstanceOf(TrainingDivergedError);
    await expect(run).rejects.toThrow(/diverged at step 5: the loss is NaN.*last good checkpoint is .*step-4/);
    expect(tf.memory().numTensors).toBe(before); // gradients and optimizer state freed on the error path
    expect(await findLatestCheckpoint(runDir)).toBe(join(runDir, 'checkpoints', 'step-4'));
    expect(existsSync(join(runDir, 'checkpoints', 'step-5'))).toBe(false);
    expect(existsSync(join(runDir, 'tiny-concept.safetensors'))).toBe(false);
    const good = await loadEmbedding(join(runDir, 'checkpoints', 'step-4', 'tiny-concept.safetensors'));
    expect(good.vectors.every(Number.isFinite)).toBe(true);
    expect(Array.from(good.vectors)).toEqual(Array.from(ti.rows.dataSync())); // the rows were not touched by the bad step
    expect((await readCheckpoint(join(runDir, 'checkpoints', 'step-4'))).step).toBe(4);
    expect(readFileSync(join(runDir, 'loss.jsonl'), 'utf8').trim().split('\n')).toHaveLength(4);
    ti.dispose();
    disposeItems(items);
  });

  it('gradient accumulation: batch 1 × 2 micro-batches equals batch 2 × 1 (same samples, same noise)', async () => {
    const items = tinyItems('latents', 4);
    const run = async (batch: number, k: number) => {
      const cfg = embedConfig({ max_train_steps: 3, batch_size: batch, gradient_accumulation_steps: k, learning_rate: 50, optimizer: { type: 'sgd' }, max_grad_norm: 0 });
      const ti = await tiMethod(tiny, cfg);
      const losses: number[] = [];
      await train(ti, memorySource(items, batch, 0, false), cfg, { runDir: join(tmp(), `acc-${batch}-${k}`), diffusion: tiny.setup, onEvent: (e) => e.kind === 'step' && losses.push(e.loss) });
      const rows = Float32Array.from(ti.rows.dataSync());
      const init = tiny.model.textEncoder.text_model.embeddings.token_embedding.weight.t.slice([2368, 0], [1, 32]).dataSync();
      ti.dispose();
      return { losses, rows, moved: Math.max(...rows.map((x, i) => Math.abs(x - init[i]!))) };
    };
    const a = await run(2, 1);
    const b = await run(1, 2);
    const maxDiff = Math.max(...a.rows.map((x, i) => Math.abs(x - b.rows[i]!)));
    console.log(`accumulation: losses ${a.losses.join(', ')} vs ${b.losses.join(', ')}; rows moved ${a.moved.toExponential(2)}, max diff ${maxDiff.toExponential(2)}`);
    a.losses.forEach((l, i) => expect(Math.abs(l - b.losses[i]!)).toBeLessThanOrEqual(1e-6 * l));
    expect(a.moved).toBeGreaterThan(1e-3);
    expect(maxDiff).toBeLessThanOrEqual(1e-5 * a.moved);
    disposeItems(items);
  });

  it('conditioning dropout follows its schedule, deterministically under the seed', async () => {
    const items = tinyItems('latents', 2);
    const cfg = embedConfig({ max_train_steps: 4, batch_size: 2, cond_dropout: [{ until_step: 2, rate: 0 }, { rate: 1 }] });
    const seen: string[][] = [];
    const ti = await tiMethod(tiny, cfg);
    const spy: TrainingMethod = {
      name: ti.name,
      trainableVariables: () => ti.trainableVariables(),
      loss: (b, ctx) => (seen.push([...ctx.captions]), ti.loss(b, ctx)),
      save: async () => [],
    };
    await train(spy, memorySource(items, 2, 0, false), cfg, { runDir: join(tmp(), 'dropout'), diffusion: tiny.setup });
    expect(seen.map((c) => c.map((x) => (x === '' ? 'dropped' : 'kept')))).toEqual([
      ['kept', 'kept'],
      ['kept', 'kept'],
      ['dropped', 'dropped'],
      ['dropped', 'dropped'],
    ]);
    ti.dispose();
    disposeItems(items);
  });

  it('resume refuses another method or shapes and warns about changed settings', async () => {
    const items = tinyItems('latents', 2);
    const runDir = join(tmp(), 'mismatch');
    const cfg = embedConfig({ max_train_steps: 1, batch_size: 2 });
    const ti = await tiMethod(tiny, cfg);
    await train(ti, memorySource(items, 2), cfg, { runDir, diffusion: tiny.setup });
    ti.dispose();
    const wide = await tiMethod(tiny, embedConfig({ max_train_steps: 2, batch_size: 2 }, { num_vectors: 3 }));
    await expect(train(wide, memorySource(items, 2), embedConfig({ max_train_steps: 2 }, { num_vectors: 3 }), { runDir, diffusion: tiny.setup, resume: 'latest' })).rejects.toThrow(
      /trainable tensors \[1, 32\] do not match this run's \[3, 32\]/,
    );
    wide.dispose();
    const again = await tiMethod(tiny, cfg);
    const warnings: string[] = [];
    const longer = embedConfig({ max_train_steps: 2, batch_size: 2 });
    await train(again, memorySource(items, 2), longer, { runDir, diffusion: tiny.setup, resume: 'latest', onEvent: (e) => e.kind === 'warning' && warnings.push(e.message) });
    expect(warnings).toEqual(['training.max_train_steps was 1 in the checkpoint and is 2 now: the resumed run will not match an uninterrupted one']);
    again.dispose();
    await expect(train(again, memorySource(items, 2), cfg, { runDir: join(tmp(), 'empty'), diffusion: tiny.setup, resume: 'latest' })).rejects.toThrow(/has no checkpoint/);
    disposeItems(items);
  });
});

describe('run folder helpers', () => {
  it('findLatestCheckpoint ignores half-written and foreign folders', async () => {
    const runDir = join(tmp(), 'layout');
    for (const d of ['step-2', 'step-10', 'step-12', '.step-14.tmp-1-abcd', 'notes']) await mkdir(join(runDir, 'checkpoints', d), { recursive: true });
    for (const d of ['step-2', 'step-10', '.step-14.tmp-1-abcd']) await writeFile(join(runDir, 'checkpoints', d, 'trainer_state.safetensors'), '');
    expect(await findLatestCheckpoint(runDir)).toBe(join(runDir, 'checkpoints', 'step-10')); // step-12 has no trainer state
    expect(await findLatestCheckpoint(join(tmp(), 'nothing'))).toBeUndefined();
  });

  it('lossChartSvg draws both curves and survives NaN and empty input', () => {
    const svg = lossChartSvg([{ step: 1, loss: 1 }, { step: 2, loss: NaN }, { step: 3, loss: 0.5 }]);
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg).not.toContain('NaN');
    expect(lossChartSvg([])).toContain('<svg');
  });
});
