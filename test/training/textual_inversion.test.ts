// Textual inversion on the tiny SD1 fixture: diffusers' gradient, init rules, exports, and a 30-step run.
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { loadEmbedding } from '../../src/embeddings/load.js';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { train } from '../../src/training/loop.js';
import { buildStepContext } from '../../src/training/micro_batch.js';
import { embeddingFileStem } from '../../src/training/textual_inversion.js';
import { loadParityCase, maxAbsDiff } from '../helpers/parity_case.js';
import { runPythonJson, torchPython } from '../helpers/python_torch.js';
import { hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { changedWeights, disposeItems, embedConfig, loadTiny, memorySource, snapshotWeights, tiMethod, tinyItems, type Tiny } from './helpers.js';

const tmp = useTmpDir('sdtrain-ti-');

describe.runIf(hasShared)('textual inversion (tiny SD1)', () => {
  let tiny: Tiny;
  beforeAll(async () => {
    tiny = await loadTiny();
  });
  afterAll(() => disposePipeline(tiny.model));

  it('grad_ti_dreambooth: loss and d loss / d placeholder row match diffusers through TextualInversion.loss', async () => {
    const fx = await loadParityCase('grad_ti_dreambooth');
    const args = fx.json.args as { prompts: string[]; placeholder_token: string; initializer_token: string };
    const ti = await tiMethod(tiny, embedConfig({}, { placeholder_token: args.placeholder_token, init_word: args.initializer_token }));
    expect(ti.tokenIds).toEqual([49408]);
    // our tokenisation of the prompts is the fixture's input_ids, and init_word 'cat' gives the fixture's initial row
    const ids = fx.tensor('inputs/input_ids');
    expect(ti.tokenize(args.prompts)).toEqual(await ids.array());
    const init = fx.tensor('inputs/placeholder_embedding');
    expect(Array.from(ti.rows.dataSync())).toEqual(Array.from(init.dataSync()));

    const x0 = fx.nhwc('inputs/latents');
    const noise = fx.nhwc('inputs/noise');
    const timesteps = Array.from(fx.tensor('inputs/timesteps').dataSync());
    const mb = buildStepContext({ x0, noise, timesteps, captions: args.prompts }, tiny.setup, { step: 0, micro: 0 });
    const { value, grads } = tf.variableGrads(() => ti.loss({ captions: args.prompts }, mb.ctx), ti.trainableVariables());
    const g = grads[ti.rows.name]!;
    expect(g.shape).toEqual([1, 32]);

    const refLoss = fx.tensor('outputs/loss');
    const refGrad = fx.tensor('outputs/grad_placeholder_embedding');
    const lossErr = await maxAbsDiff(value.reshape([1]), refLoss);
    const gradErr = await maxAbsDiff(g.reshape([32]), refGrad);
    console.log(`TI loss err ${lossErr.toExponential(2)} (atol ${fx.atol('loss')}), grad err ${gradErr.toExponential(2)} (atol ${fx.atol('grad_placeholder_embedding')})`);
    expect(lossErr).toBeLessThanOrEqual(fx.atol('loss'));
    expect(gradErr).toBeLessThanOrEqual(fx.atol('grad_placeholder_embedding'));
    tf.dispose([value, g, ids, init, x0, noise, refLoss, refGrad]);
    mb.dispose();
    ti.dispose();
  });

  it('initialisation: one token, k tokens for k vectors, mean / first / error, zeros; placeholder clashes are config errors', async () => {
    const table = tiny.model.textEncoder.text_model.embeddings.token_embedding.weight.t;
    const row = (id: number) => Array.from(table.slice([id, 0], [1, 32]).dataSync());
    const tok = await tiny.tokenizer();
    const [a, b] = tok.encode('tabby cat'); // two tokens
    const make = async (embed: Record<string, unknown>) => tiMethod(tiny, embedConfig({}, embed));

    const one = await make({ num_vectors: 3, init_word: 'cat' });
    expect(one.tokens).toEqual(['<tiny-concept>', '<tiny-concept>_1', '<tiny-concept>_2']);
    expect(Array.from(one.rows.dataSync())).toEqual([...row(2368), ...row(2368), ...row(2368)]);
    // the 3 vectors fill 3 prompt slots
    expect(one.tokenize(['a <tiny-concept> toy'])[0]!.slice(0, 7)).toEqual([49406, 320, 49408, 49409, 49410, 5988, 49407]);
    one.dispose();

    const pair = await make({ num_vectors: 2, init_word: 'tabby cat' });
    expect(Array.from(pair.rows.dataSync())).toEqual([...row(a!), ...row(b!)]);
    pair.dispose();

    const mean = await make({ num_vectors: 1, init_word: 'tabby cat', init_multi_token: 'mean' });
    const expected = row(a!).map((x, i) => (x + row(b!)[i]!) / 2);
    Array.from(mean.rows.dataSync()).forEach((x, i) => expect(x).toBeCloseTo(expected[i]!, 7));
    mean.dispose();

    const first = await make({ num_vectors: 1, init_word: 'tabby cat', init_multi_token: 'first' });
    expect(Array.from(first.rows.dataSync())).toEqual(row(a!));
    first.dispose();

    await expect(make({ init_word: 'tabby cat', init_multi_token: 'error' })).rejects.toThrow(/embed\.init_word: "tabby cat" is 2 tokens/);
    const zeros = await make({ num_vectors: 2, init_word: '' });
    expect(Array.from(zeros.rows.dataSync()).every((x) => x === 0)).toBe(true);
    zeros.dispose();

    const clash = make({ placeholder_token: 'cat' });
    await expect(clash).rejects.toBeInstanceOf(ConfigError);
    await expect(make({ placeholder_token: 'cat' })).rejects.toThrow(/^embed\.placeholder_token: token "cat" is already in the CLIP vocabulary/);
  });

  it('exports: <name>.safetensors (sdtrain), A1111 .pt and kohya emb_params all load through loadEmbedding', async () => {
    const cfg = embedConfig({}, { num_vectors: 2, export: { safetensors: true, a1111_pt: true, kohya: true } });
    const ti = await tiMethod(tiny, cfg);
    const dir = join(tmp(), 'exports');
    await (await import('node:fs/promises')).mkdir(dir, { recursive: true });
    const files = await ti.save(dir, 7, 'final');
    expect(files.map((f) => f.slice(dir.length + 1))).toEqual(['tiny-concept.safetensors', 'tiny-concept.pt', 'kohya/tiny-concept.safetensors']);
    const rows = Float32Array.from(ti.rows.dataSync());
    const [ours, a1111, kohya] = await Promise.all(files.map((f) => loadEmbedding(f)));
    for (const e of [ours!, a1111!, kohya!]) {
      expect(e.name).toBe('tiny-concept'); // the A1111 keyword = file stem
      expect(e.shape).toEqual([2, 32]);
      expect(Array.from(e.vectors)).toEqual(Array.from(rows));
    }
    expect([ours!.source, a1111!.source, kohya!.source]).toEqual(['sdtrain', 'a1111', 'kohya']);
    expect(ours!.storedName).toBe('<tiny-concept>');
    expect(a1111!.step).toBe(7);
    expect(a1111!.storedName).toBe('tiny-concept');
    expect(embeddingFileStem('<my:cat?>')).toBe('mycat');
    if (torchPython) {
      // what A1111's Embedding loader sees (torch.load of the .pt)
      const seen = await runPythonJson<Record<string, unknown>>(
        `import json, sys, torch\nd = torch.load(sys.argv[1])\np = d['string_to_param']['*']\nprint(json.dumps({'keys': sorted(d), 'token': d['string_to_token'], 'shape': list(p.shape), 'requires_grad': p.requires_grad, 'dtype': str(p.dtype), 'name': d['name'], 'step': d['step'], 'ckpt': d['sd_checkpoint'], 'sum': float(p.double().sum())}))`,
        [files[1]!],
      );
      expect(seen).toMatchObject({
        keys: ['name', 'sd_checkpoint', 'sd_checkpoint_name', 'step', 'string_to_param', 'string_to_token'],
        token: { '*': 265 },
        shape: [2, 32],
        requires_grad: true,
        dtype: 'torch.float32',
        name: 'tiny-concept',
        step: 7,
        ckpt: null,
      });
      expect(seen.sum as number).toBeCloseTo(rows.reduce((a, b) => a + b, 0), 5);
    }
    ti.dispose();
  });

  it('30 steps: the loss goes down against the same steps with a frozen embedding; frozen weights bit-identical; run folder complete', async () => {
    const items = tinyItems('latents', 4);
    const weightsBefore = snapshotWeights({ unet: tiny.model.unet, vae: tiny.model.vae, text_encoder: tiny.model.textEncoder });
    const run = async (lr: number, runDir: string) => {
      const cfg = embedConfig({ max_train_steps: 30, batch_size: 2, learning_rate: lr, save_every_n_steps: 10 });
      const ti = await tiMethod(tiny, cfg);
      const losses: number[] = [];
      const tensors: number[] = [];
      const summary = await train(ti, memorySource(items, 2), cfg, {
        runDir,
        diffusion: tiny.setup,
        onEvent: (e) => {
          if (e.kind !== 'step') return;
          losses.push(e.loss);
          tensors.push(tf.memory().numTensors);
        },
      });
      return { ti, losses, tensors, summary };
    };
    // Same seed ⇒ the same batches, timesteps and noise at every step: the paired difference isolates the embedding.
    const frozen = await run(1e-30, join(tmp(), 'frozen'));
    frozen.ti.dispose();
    const runDir = join(tmp(), 'ti-run');
    const before = tf.memory().numTensors;
    const { ti, losses, tensors, summary } = await run(0.05, runDir);
    const diff = losses.map((l, i) => l - frozen.losses[i]!);
    console.log(`TI 30 steps: loss − frozen-embedding loss (×1e4): ${diff.map((d) => (d * 1e4).toFixed(1)).join(' ')}`);
    expect(diff[0]).toBe(0); // step 1 runs before any update
    const last10 = diff.slice(-10);
    expect(last10.every((d) => d < 0)).toBe(true);
    expect(last10.reduce((a, b) => a + b, 0) / 10).toBeLessThan(diff.slice(1, 11).reduce((a, b) => a + b, 0) / 10);

    // memory: the same tensor count after every step, and nothing left once train() returned (but the method's rows)
    expect(new Set(tensors).size).toBe(1);
    expect(tf.memory().numTensors).toBe(before + 1);

    expect(changedWeights(weightsBefore, snapshotWeights({ unet: tiny.model.unet, vae: tiny.model.vae, text_encoder: tiny.model.textEncoder }))).toEqual([]);
    expect(summary).toMatchObject({ reason: 'finished', steps: 30, checkpointDir: join(runDir, 'checkpoints', 'step-30') });
    expect(summary.files.map((f) => f.slice(runDir.length + 1))).toEqual(['tiny-concept.safetensors', 'tiny-concept.pt']);
    const exported = await loadEmbedding(join(runDir, 'tiny-concept.safetensors'));
    expect(Array.from(exported.vectors)).toEqual(Array.from(ti.rows.dataSync()));
    const log = readFileSync(join(runDir, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number; lr: number; time: number });
    expect(log.map((r) => r.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(log.map((r) => r.loss)).toEqual(losses);
    expect(log.every((r) => r.lr === 0.05 && r.time > 0)).toBe(true);
    expect(readFileSync(join(runDir, 'loss.png')).subarray(1, 4).toString()).toBe('PNG');
    expect(readFileSync(join(runDir, 'config.resolved.yaml'), 'utf8')).toContain('placeholder_token: <tiny-concept>');
    for (const s of [10, 20, 30]) expect(existsSync(join(runDir, 'checkpoints', `step-${s}`, 'trainer_state.safetensors'))).toBe(true);
    ti.dispose();
    disposeItems(items);
  });

  it('a dropped caption carries no gradient to the embedding', async () => {
    const ti = await tiMethod(tiny, embedConfig({}));
    const x0 = tf.randomNormal([2, 8, 12, 4], 0, 1, 'float32', 3) as tf.Tensor4D;
    const noise = tf.randomNormal([2, 8, 12, 4], 0, 1, 'float32', 4) as tf.Tensor4D;
    const captions = ['a photo of <tiny-concept>', 'a <tiny-concept>'];
    const mb = buildStepContext({ x0, noise, timesteps: [10, 500], captions, dropped: [true, true] }, tiny.setup, { step: 0, micro: 0 });
    expect(mb.ctx.captions).toEqual(['', '']);
    const { value, grads } = tf.variableGrads(() => ti.loss({ captions }, mb.ctx), ti.trainableVariables());
    expect(Array.from(grads[ti.rows.name]!.dataSync()).every((x) => x === 0)).toBe(true);
    tf.dispose([value, ...Object.values(grads), x0, noise]);
    mb.dispose();
    ti.dispose();
  });
});
