// Hypernetwork training on the tiny SD1 fixture: default widths, the hook only during the loss, every module gets a
// gradient, a run changes only the hypernetwork (U-Net, text encoder and VAE bit-identical) and lowers the loss,
// memory is flat, the trained .pt is what A1111's loader (real torch) reads, and a resume with dropout is exact.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { HypernetworkConfigSchema, type HypernetworkConfig } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { transformerAttentions } from '../../src/hypernetwork/apply.js';
import { readHypernetwork } from '../../src/hypernetwork/file.js';
import { namedParams } from '../../src/nn/module.js';
import { defaultHypernetworkSizes, HypernetworkTraining } from '../../src/training/hypernetwork.js';
import { train } from '../../src/training/loop.js';
import { buildStepContext } from '../../src/training/micro_batch.js';
import { runPythonJson, torchPython } from '../helpers/python_torch.js';
import { hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { changedWeights, disposeItems, loadTiny, memorySource, snapshotWeights, tinyItems, type Tiny } from './helpers.js';

const tmp = useTmpDir('sdtrain-hn-train-');

function hnConfig(training: Record<string, unknown>, hypernetwork: Record<string, unknown> = {}, seed = 0): HypernetworkConfig {
  return HypernetworkConfigSchema.parse({
    seed,
    data: { datasets: [{ path: '/nonexistent' }] },
    training: { save_every_n_steps: 0, log_every_n_steps: 5, ...training },
    hypernetwork,
  });
}

describe.runIf(hasShared)('hypernetwork training (tiny SD1)', () => {
  let tiny: Tiny;
  beforeAll(async () => {
    tiny = await loadTiny();
  });
  afterAll(() => disposePipeline(tiny.model));

  const method = async (cfg: HypernetworkConfig, extra: { name?: string; sdCheckpoint?: string; sdCheckpointName?: string } = {}) =>
    new HypernetworkTraining(
      { textEncoder: tiny.model.textEncoder, unet: tiny.model.unet, tokenizer: await tiny.tokenizer() },
      { hypernetwork: cfg.hypernetwork, seed: cfg.seed, name: 'tiny-hn', ...extra },
    );

  it("default widths: the text width, then the attention block widths (A1111's 768, 320, 640, 1280 for SD1)", async () => {
    expect(defaultHypernetworkSizes(tiny.model.unet)).toEqual([32, 64]); // cross 32; self 32 (down/up) and 64 (mid)
    const m = await method(hnConfig({}));
    expect(m.hn.sizes).toEqual([32, 64]);
    expect(m.hn.settings).toMatchObject({ layerStructure: [1, 2, 1], activationFunc: 'linear', weightInitialization: 'Normal', useDropout: false, dropoutStructure: [0, 0, 0] });
    // 2 widths × (k, v) × two Linear layers (w, b)
    expect(m.trainableVariables()).toHaveLength(16);
    expect(m.trainableVariables().every((v) => v.trainable)).toBe(true);
    m.dispose();
    const only = await method(hnConfig({}, { sizes: [64], activation_func: 'relu', is_layer_norm: true }));
    expect(only.hn.sizes).toEqual([64]);
    expect(only.hn.layers.get(64)![0].describe()).toEqual(['Linear(64->128)', 'ReLU', 'LayerNorm', 'Linear(128->64)', 'LayerNorm']);
    only.dispose();
  });

  it('config errors: a width the model lacks, dropout_structure without use_dropout', async () => {
    await expect(method(hnConfig({}, { sizes: [32, 768] }))).rejects.toThrow(/^hypernetwork\.sizes: 768 is not a context width of this model's attention layers \(it has 32, 64\)/);
    await expect(method(hnConfig({}, { dropout_structure: [0, 0.1, 0] }))).rejects.toBeInstanceOf(ConfigError);
    // [1, 2, 1] has one hidden layer: A1111's default structure drops out after it only with last_layer_dropout
    await expect(method(hnConfig({}, { use_dropout: true }))).rejects.toThrow(/^hypernetwork\.use_dropout: .*no dropout unless last_layer_dropout: true/);
    const ok = await method(hnConfig({}, { use_dropout: true, last_layer_dropout: true }));
    expect(ok.hn.settings.dropoutStructure).toEqual([0, 0.3, 0]);
    ok.dispose();
    const given = await method(hnConfig({}, { use_dropout: true, dropout_structure: [0, 0.1, 0] }));
    expect(given.hn.settings.dropoutStructure).toEqual([0, 0.1, 0]);
    given.dispose();
  });

  it('the loss runs through the hook (attached only during the loss), every module gets a gradient, captions of different lengths pad', async () => {
    const m = await method(hnConfig({}));
    const x0 = tf.randomNormal([2, 8, 12, 4], 0, 1, 'float32', 3) as tf.Tensor4D;
    const noise = tf.randomNormal([2, 8, 12, 4], 0, 1, 'float32', 4) as tf.Tensor4D;
    const long = Array<string>(90).fill('cat').join(' '); // 90 tokens: two 75-token chunks
    const captions = ['a photo of a ball', long];
    const enc = m.encode(captions);
    expect(enc.shape).toEqual([2, 154, 32]);
    // A1111 stack_conds: the one-chunk caption is padded with its last vector
    const rows = enc.arraySync() as number[][][];
    expect(rows[0]![153]).toEqual(rows[0]![76]);
    enc.dispose();

    const mb = buildStepContext({ x0, noise, timesteps: [10, 500], captions }, tiny.setup, { step: 0, micro: 0 });
    const vars = m.trainableVariables();
    const { value, grads } = tf.variableGrads(() => m.loss({ captions }, mb.ctx), vars);
    expect(transformerAttentions(tiny.model.unet).every((a) => a.kvTransform === undefined)).toBe(true);
    const norms = vars.map((v) => tf.tidy(() => tf.norm(grads[v.name]!).dataSync()[0]!));
    expect(norms.every((n) => n > 0 && Number.isFinite(n))).toBe(true);

    // the same loss without the hypernetwork differs (its initial weights are small but not zero) ...
    const plain = tf.tidy(() => mb.ctx.lossOf(tiny.model.unet.forward(mb.ctx.noisyLatents, mb.ctx.timesteps, m.encode(mb.ctx.captions))));
    expect(plain.dataSync()[0]).not.toBe(value.dataSync()[0]);
    // ... and equals it once every output layer is zero (x + Seq(x)·1 = x)
    for (const pair of m.hn.layers.values()) {
      for (const mod of pair) {
        const params = [...namedParams(mod)].filter(([k]) => k.startsWith(`linear.${mod.linear.length - 1}.`));
        for (const [, p] of params) (p.value as tf.Variable).assign(tf.zerosLike(p.t));
      }
    }
    const zeroed = tf.tidy(() => m.loss({ captions }, mb.ctx));
    expect(zeroed.dataSync()[0]).toBe(plain.dataSync()[0]);
    tf.dispose([value, plain, zeroed, ...Object.values(grads), x0, noise]);
    mb.dispose();
    m.dispose();
  });

  it('12 steps: the loss goes down against a frozen run; only the hypernetwork changes; flat memory; files written', async () => {
    const items = tinyItems('latents', 4);
    const frozenWeights = () => snapshotWeights({ unet: tiny.model.unet, vae: tiny.model.vae, text_encoder: tiny.model.textEncoder });
    const before = frozenWeights();
    const run = async (lr: number, runDir: string) => {
      const cfg = hnConfig({ max_train_steps: 12, batch_size: 2, learning_rate: lr, save_every_n_steps: 6 });
      const m = await method(cfg, { sdCheckpoint: '0123456789', sdCheckpointName: 'tiny-sd1' });
      const losses: number[] = [];
      const tensors: number[] = [];
      const summary = await train(m, memorySource(items, 2), cfg, {
        runDir,
        diffusion: tiny.setup,
        onEvent: (e) => {
          if (e.kind !== 'step') return;
          losses.push(e.loss);
          tensors.push(tf.memory().numTensors);
        },
      });
      return { m, losses, tensors, summary };
    };
    const frozen = await run(1e-30, join(tmp(), 'frozen'));
    frozen.m.dispose();
    const runDir = join(tmp(), 'hn-run');
    const start = tf.memory().numTensors;
    const initial = await method(hnConfig({}));
    const initialWeights = new Map([...initial.hn.namedParams()].map(([k, p]) => [k, Float32Array.from(p.t.dataSync() as Float32Array)]));
    initial.dispose();
    const { m, losses, tensors, summary } = await run(3e-3, runDir);
    const diff = losses.map((l, i) => l - frozen.losses[i]!);
    console.log(`HN 12 steps: loss − frozen loss (×1e4): ${diff.map((d) => (d * 1e4).toFixed(1)).join(' ')}`);
    expect(diff[0]).toBe(0); // step 1 runs before any update
    const late = diff.slice(-6);
    expect(late.reduce((a, b) => a + b, 0) / late.length).toBeLessThan(0);

    expect(new Set(tensors).size).toBe(1);
    expect(tf.memory().numTensors).toBe(start + m.trainableVariables().length);

    expect(changedWeights(before, frozenWeights())).toEqual([]);
    const trained = [...m.hn.namedParams()].filter(([k, p]) => !Buffer.from((p.t.dataSync() as Float32Array).buffer).equals(Buffer.from(initialWeights.get(k)!.buffer)));
    expect(trained.length).toBe(initialWeights.size); // every hypernetwork tensor moved

    expect(summary.files.map((f) => f.slice(runDir.length + 1))).toEqual(['tiny-hn.safetensors', 'tiny-hn.pt']);
    for (const f of summary.files) {
      const back = await readHypernetwork(f);
      expect([back.name, back.step, back.sdCheckpoint, back.sdCheckpointName, back.sizes]).toEqual(['tiny-hn', 12, '0123456789', 'tiny-sd1', [32, 64]]);
      for (const [k, p] of m.hn.namedParams()) expect(Array.from(back.namedParams().get(k)!.t.dataSync()), k).toEqual(Array.from(p.t.dataSync()));
      back.dispose();
    }
    const ck = await readHypernetwork(join(runDir, 'checkpoints', 'step-6', 'tiny-hn.pt'));
    expect(ck.step).toBe(6);
    ck.dispose();

    if (torchPython) {
      // A1111's loader (a1111_reference.py: torch.load + Hypernetwork.load's strict load_state_dict) on the trained file
      const script = readFileSync(fileURLToPath(new URL('../hypernetwork/a1111_reference.py', import.meta.url)), 'utf8');
      const pt = summary.files[1]!;
      const ref = await runPythonJson<{ files: Record<string, { int_keys: number[]; types: Record<string, unknown>; metadata: Record<string, unknown>; sequences: Record<string, string[]>; outputs: Record<string, Record<string, [number[][][], number[][][]]>> }> }>(script, [pt]);
      const r = ref.files[pt]!;
      expect(r.int_keys).toEqual([32, 64]);
      expect(r.types).toMatchObject({
        '32': { tuple: [{ OrderedDict: { 'linear.0.weight': 'Tensor torch.float32 [64, 32] grad=False', 'linear.0.bias': 'Tensor torch.float32 [64] grad=False', 'linear.1.weight': 'Tensor torch.float32 [32, 64] grad=False', 'linear.1.bias': 'Tensor torch.float32 [32] grad=False' } }, { OrderedDict: {} }] },
        step: 'int', name: 'str', layer_structure: ['float', 'float', 'float'], activation_func: 'str', sd_checkpoint: 'str', sd_checkpoint_name: 'str',
      });
      expect(r.metadata).toMatchObject({ step: 12, name: 'tiny-hn', layer_structure: [1, 2, 1], activation_func: 'linear', is_layer_norm: false, weight_initialization: 'Normal', sd_checkpoint: '0123456789', sd_checkpoint_name: 'tiny-sd1', activate_output: false, use_dropout: false, dropout_structure: [0, 0, 0], last_layer_dropout: false, optional_info: null });
      expect(r.sequences).toEqual({ '32': ['Linear', 'Linear'], '64': ['Linear', 'Linear'] });
      // what A1111 computes with the loaded file is what we compute with the trained weights (eval mode)
      m.hn.eval();
      let max = 0;
      for (const size of [32, 64]) {
        for (const mult of ['1.0', '0.5']) {
          const ctx = context(size);
          const got = tf.tidy(() => m.hn.apply(ctx, ctx, Number(mult)).map((t) => (t.arraySync() as number[][][]).flat(2)));
          ctx.dispose();
          r.outputs[size]![mult]!.forEach((want, i) => want.flat(2).forEach((x, j) => (max = Math.max(max, Math.abs(got[i]![j]! - x)))));
        }
      }
      console.log(`trained hypernetwork: A1111 loader output vs ours, max abs difference ${max.toExponential(2)}`);
      expect(max).toBeLessThan(1e-5);
    }
    m.dispose();
    disposeItems(items);
  });

  it('with dropout: interrupted and resumed gives exactly the uninterrupted losses and weights', async () => {
    const items = tinyItems('latentDist', 4);
    const hn = { use_dropout: true, last_layer_dropout: true, layer_structure: [1, 2, 2, 1], activation_func: 'relu' };
    const cfg = hnConfig({ max_train_steps: 6, batch_size: 2, learning_rate: 3e-3, save_every_n_steps: 3, cond_dropout: 0.3 }, hn, 5);
    const straight = await method(cfg);
    expect(straight.hn.settings.dropoutStructure).toEqual([0, 0.3, 0.3, 0]);
    const a: number[] = [];
    await train(straight, memorySource(items, 2, 5), cfg, { runDir: join(tmp(), 'straight'), diffusion: tiny.setup, onEvent: (e) => e.kind === 'step' && a.push(e.loss) });

    const runDir = join(tmp(), 'resumed');
    const ac = new AbortController();
    const first = await method(cfg);
    const b: number[] = [];
    const s1 = await train(first, memorySource(items, 2, 5), cfg, {
      runDir,
      diffusion: tiny.setup,
      signal: ac.signal,
      onEvent: (e) => {
        if (e.kind !== 'step') return;
        b.push(e.loss);
        if (e.step === 2) ac.abort();
      },
    });
    expect(s1).toMatchObject({ reason: 'aborted', steps: 2 });
    first.dispose();
    const second = await method(cfg);
    await train(second, memorySource(items, 2, 5), cfg, { runDir, diffusion: tiny.setup, resume: 'latest', onEvent: (e) => e.kind === 'step' && b.push(e.loss) });
    console.log(`HN with dropout, straight vs resumed losses: ${a.map((x) => x.toFixed(5)).join(' ')} | ${b.map((x) => x.toFixed(5)).join(' ')}`);
    expect(b).toEqual(a);
    for (const [k, p] of straight.hn.namedParams()) expect(Array.from(second.hn.namedParams().get(k)!.t.dataSync()), k).toEqual(Array.from(p.t.dataSync()));
    // without restoring the dropout generator the masks (so the losses after the resume) would differ
    const third = await method(cfg);
    const c: number[] = [];
    const noState = join(tmp(), 'nostate');
    const ac3 = new AbortController();
    await train(third, memorySource(items, 2, 5), cfg, { runDir: noState, diffusion: tiny.setup, signal: ac3.signal, onEvent: (e) => e.kind === 'step' && e.step === 2 && ac3.abort() });
    third.dispose();
    const fourth = await method(cfg);
    fourth.loadState = () => undefined;
    await train(fourth, memorySource(items, 2, 5), cfg, { runDir: noState, diffusion: tiny.setup, resume: 'latest', onEvent: (e) => e.kind === 'step' && c.push(e.loss) });
    expect(c[0]).not.toBe(a[2]); // step 3: the first step after the resume, with masks from a fresh generator
    for (const m of [straight, second, fourth]) m.dispose();
    disposeItems(items);
  });

  it('preview prompts: the configured ones with [name], else the last caption trained on', async () => {
    const m = await method(hnConfig({}));
    expect(m.previewPrompts(['[name] style, a ball'])).toEqual(['tiny-hn style, a ball']);
    expect(m.previewPrompts([])).toEqual(['']);
    const x0 = tf.zeros([1, 8, 12, 4]) as tf.Tensor4D;
    const mb = buildStepContext({ x0, noise: x0, timesteps: [5], captions: ['a red ball'] }, tiny.setup, { step: 0, micro: 0 });
    tf.tidy(() => m.loss({ captions: ['a red ball'] }, mb.ctx));
    expect(m.previewPrompts([])).toEqual(['a red ball']);
    mb.dispose();
    x0.dispose();
    m.dispose();
  });
});

/** context [2, 3, size] as a1111_reference.py builds it. */
function context(size: number): tf.Tensor3D {
  const v = new Float32Array(2 * 3 * size);
  for (let i = 0; i < v.length; i++) v[i] = Math.fround(Math.sin(0.1 * (i + 1)));
  return tf.tensor3d(v, [2, 3, size]);
}
