// LoRA training on the tiny SD1 fixture: target selection, step 0 = base model bit for bit, only the LoRA variables
// change, the kohya export reads back (readLora) to the same deltas and names, merged (applyLoras) = live adapters,
// weight 0 = base, text-encoder LoRA with its own learning rate, dropout, LoCon convs, exact resume, no leaks.
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { LoraConfigSchema, type LoraConfig } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { applyLoras, loraDelta } from '../../src/lora/apply.js';
import { installLoras } from '../../src/lora/adapter.js';
import { loraTargets } from '../../src/lora/names.js';
import { readLora } from '../../src/lora/read.js';
import { sshsHashes } from '../../src/lora/write.js';
import { train } from '../../src/training/loop.js';
import { LoraTraining, selectLoraSpecs } from '../../src/training/lora.js';
import { buildStepContext } from '../../src/training/micro_batch.js';
import type { TrainEvent } from '../../src/training/types.js';
import { hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { changedWeights, disposeItems, loadTiny, memorySource, snapshotWeights, tinyItems, type Tiny } from './helpers.js';

const tmp = useTmpDir('sdtrain-lora-train-');

function loraConfig(training: Record<string, unknown>, lora: Record<string, unknown> = {}, seed = 0): LoraConfig {
  return LoraConfigSchema.parse({
    seed,
    data: { datasets: [{ path: '/nonexistent' }] },
    training: { save_every_n_steps: 0, log_every_n_steps: 5, cond_dropout: 0, ...training },
    lora,
  });
}

const bits = (t: tf.Tensor): Buffer => Buffer.from((t.dataSync() as Float32Array).buffer.slice(0));
const maxAbs = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => a.sub(b).abs().max().dataSync()[0]!);

describe.runIf(hasShared)('LoRA training (tiny SD1)', () => {
  let tiny: Tiny;
  const make = async (cfg: LoraConfig, extra: Partial<ConstructorParameters<typeof LoraTraining>[1]> = {}) =>
    new LoraTraining(
      { textEncoder: tiny.model.textEncoder, unet: tiny.model.unet, tokenizer: await tiny.tokenizer() },
      { lora: cfg.lora, seed: cfg.seed, learningRate: cfg.training.learning_rate, training: cfg.training, name: 'tiny-lora', ...extra },
    );

  /** Fixed inputs for one forward pass: latents [2, 8, 8, 4], timesteps, captions. */
  const fixed = () => {
    const x0 = tf.randomNormal([2, 8, 8, 4], 0, 1, 'float32', 11) as tf.Tensor4D;
    const noise = tf.randomNormal([2, 8, 8, 4], 0, 1, 'float32', 12) as tf.Tensor4D;
    const captions = ['a photo of a red ball', 'a blue square on white'];
    const mb = buildStepContext({ x0, noise, timesteps: [100, 700], captions }, tiny.setup, { step: 0, micro: 0 });
    return { mb, captions, dispose: () => (tf.dispose([x0, noise]), mb.dispose()) };
  };
  /** U-Net prediction with plain (untaped) conditioning. */
  const predict = (lora: LoraTraining | undefined, f: ReturnType<typeof fixed>): tf.Tensor =>
    tf.tidy(() => {
      const hidden = lora ? lora.encode(f.captions) : encodeBase(f.captions);
      return tiny.model.unet.forward(f.mb.ctx.noisyLatents, f.mb.ctx.timesteps, hidden);
    });
  let tokenizer: Awaited<ReturnType<Tiny['tokenizer']>>;
  const encodeBase = (captions: string[]) =>
    tiny.model.textEncoder.forward(tf.tensor2d(captions.map((c) => tokenizer.tokenize(c).inputIds), undefined, 'int32')).lastHiddenState;

  beforeAll(async () => {
    tiny = await loadTiny();
    tokenizer = await tiny.tokenizer();
  });
  afterAll(() => disposePipeline(tiny.model));

  it('selects kohya targets: attention, attention+ff, all, all + conv_rank (LoCon), text encoder, suffix lists', () => {
    const m = tiny.model;
    const count = (lora: Record<string, unknown>) => selectLoraSpecs(m, loraConfig({}, lora).lora);
    // tiny SD1: 5 transformer blocks (2 down, 1 mid, 2 up... as configured) × 2 attentions × 4 projections
    const attn = count({});
    expect(attn.every((s) => /attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(s.target.path) && s.rank === 4 && s.alpha === 4)).toBe(true);
    const blocks = [...loraTargets(m).values()].filter((t) => t.path.endsWith('attn1.to_q')).length;
    expect(attn.length).toBe(blocks * 8);
    expect(count({ targets: 'attention+ff' }).length).toBe(blocks * 10);
    const all = count({ targets: 'all' });
    expect(all.length).toBe([...loraTargets(m).values()].filter((t) => t.component === 'unet' && t.group === 'lora').length);
    expect(all.some((s) => s.target.path.endsWith('proj_in'))).toBe(true);
    const locon = count({ targets: 'all', conv_rank: 2, conv_alpha: 1 });
    const conv3 = locon.filter((s) => s.target.kernelSize === 3);
    expect(conv3.length).toBeGreaterThan(0);
    expect(conv3.every((s) => s.rank === 2 && s.alpha === 1 && /(resnets\.\d+\.conv[12]|samplers\.0\.conv)$/.test(s.target.path))).toBe(true);
    // 1×1 and linear layers of the ResNets (time_emb_proj, conv_shortcut) get rank/alpha, as kohya's conv_dim does
    expect(locon.find((s) => s.target.path.endsWith('time_emb_proj'))).toMatchObject({ rank: 4, alpha: 4 });
    expect(locon.some((s) => s.target.path === 'conv_in')).toBe(false);
    const te = count({ train_text_encoder: true });
    expect(te.filter((s) => s.target.component === 'text_encoder').length).toBe(3 * 4);
    expect(te[0]!.target.component).toBe('text_encoder'); // kohya order: text encoder first
    expect(count({ targets: 'all', train_text_encoder: true }).filter((s) => s.target.component === 'text_encoder').length).toBe(3 * 6);
    expect(count({ targets: ['attn2.to_k', 'attn2.to_v'] }).length).toBe(blocks * 2);
    expect(count({ targets: ['to_k', 'q_proj'], train_text_encoder: true }).filter((s) => s.target.component === 'text_encoder').length).toBe(3);
    expect(() => count({ targets: ['to_kk'] })).toThrow(ConfigError);
    expect(() => count({ targets: ['to_kk'] })).toThrow(/lora\.targets: 'to_kk' selects no layer/);
    expect(() => count({ targets: ['conv1'] })).toThrow(/need lora\.conv_rank/);
    expect(() => count({ targets: ['q_proj'] })).toThrow(/train_text_encoder/);
    expect(count({ targets: ['conv1'], conv_rank: 2 }).every((s) => s.target.path.endsWith('conv1') && s.rank === 2)).toBe(true);
  });

  it('step 0 reproduces the base model bit for bit (U-Net and text-encoder LoRA, LoCon convs), and remove() leaves no trace', async () => {
    const f = fixed();
    const base = predict(undefined, f);
    const before = tf.memory().numTensors;
    const lora = await make(loraConfig({}, { targets: 'all', conv_rank: 2, train_text_encoder: true, dropout: 0.5 }));
    expect(lora.adapters.length).toBeGreaterThan(50);
    const adapted = predict(lora, f);
    expect(bits(adapted).equals(bits(base))).toBe(true);
    // with the training loss too (dropout on: still zero with up = 0)
    const lossA = tf.tidy(() => lora.loss({ captions: f.captions }, f.mb.ctx));
    const lossB = tf.tidy(() => f.mb.ctx.lossOf(base as tf.Tensor4D));
    expect(lossA.dataSync()[0]).toBe(lossB.dataSync()[0]);
    tf.dispose([adapted, lossA, lossB]);
    lora.dispose();
    expect(tf.memory().numTensors).toBe(before);
    for (const t of loraTargets(tiny.model).values()) expect(t.layer.adapter).toBeUndefined();
    expect(Object.keys([...loraTargets(tiny.model).values()][0]!.layer)).not.toContain('adapter');
    tf.dispose(base);
    f.dispose();
  });

  it('trains only the LoRA variables; the export reads back to the same deltas, names and metadata; merged = live; weight 0 = base', async () => {
    const cfg = loraConfig({ max_train_steps: 4, learning_rate: 1e-2, batch_size: 2 }, { rank: 4, alpha: 2, targets: 'all', conv_rank: 2, train_text_encoder: true });
    const modelsBefore = snapshotWeights({ unet: tiny.model.unet, te: tiny.model.textEncoder, vae: tiny.model.vae });
    const lora = await make(cfg, { dtype: 'F32', v2: false, resolution: [64, 64] });
    const start = lora.trainableVariables().map((v) => Float32Array.from(v.dataSync() as Float32Array));
    const items = tinyItems('latents', 4);
    const runDir = join(tmp(), 'run');
    const counts: number[] = [];
    const summary = await train(lora, memorySource(items, 2, 3), cfg, {
      runDir,
      diffusion: tiny.setup,
      onEvent: (e: TrainEvent) => e.kind === 'step' && counts.push(tf.memory().numTensors),
    });
    expect(summary.reason).toBe('finished');
    expect(summary.files).toEqual([join(runDir, 'tiny-lora.safetensors')]);
    expect(new Set(counts.slice(1)).size).toBe(1); // no tensor leak per step
    // every model weight is bit-identical; every LoRA up moved off zero
    expect(changedWeights(modelsBefore, snapshotWeights({ unet: tiny.model.unet, te: tiny.model.textEncoder, vae: tiny.model.vae }))).toEqual([]);
    const after = lora.trainableVariables().map((v) => v.dataSync() as Float32Array);
    const moved = after.filter((a, i) => a.some((x, j) => x !== start[i]![j])).length;
    expect(moved).toBe(after.length);

    // read back through readLora: every trained module resolves under its kohya name, with the same numbers
    const file = await readLora(summary.files[0]!, tiny.model);
    expect(file.layout).toBe('kohya');
    expect(file.unknown).toEqual([]);
    expect(file.dtype).toBe('F32');
    const trained = await lora.modules();
    expect(file.modules.map((m) => m.name).sort()).toEqual(trained.map((m) => m.name).sort());
    const targets = loraTargets(tiny.model);
    for (const m of trained) {
      const r = file.modules.find((x) => x.name === m.name)!;
      expect(r.down.shape).toEqual(m.down.shape);
      expect(r.up.shape).toEqual(m.up.shape);
      expect(Buffer.from(r.down.data.buffer).equals(Buffer.from(m.down.data.buffer))).toBe(true);
      expect(Buffer.from(r.up.data.buffer).equals(Buffer.from(m.up.data.buffer))).toBe(true);
      expect(r.alpha).toBe(2); // alpha 2; conv_alpha defaults to conv_rank (2)
      expect(targets.get(m.name)!.component).toBe(m.component);
    }
    expect(trained.some((m) => m.name.startsWith('lora_te_text_model_encoder_layers_0_self_attn_q_proj'))).toBe(true);
    expect(trained.some((m) => m.down.shape.length === 4 && m.down.shape[2] === 3)).toBe(true);
    // the delta of the live adapter equals loraDelta of the file module (our layout, conv HWIO)
    for (const a of lora.adapters.filter((_, i) => i % 7 === 0)) {
      const live = tf.tidy(() => {
        const t = a.target;
        const up = a.up; // [out, r]
        if (t.kind === 'linear') return tf.matMul(up, a.down).mul(a.scale); // [out, in]
        const [kh, kw, inp, r] = a.down.shape as [number, number, number, number];
        return tf.matMul(a.down.reshape([kh * kw * inp, r]), up, false, true).reshape([kh, kw, inp, t.outFeatures]).mul(a.scale);
      });
      const fromFile = loraDelta(file.modules.find((m) => m.name === a.target.name)!, a.target, 1);
      expect(maxAbs(live, fromFile)).toBeLessThan(1e-6);
      tf.dispose([live, fromFile]);
    }

    // kohya metadata
    const st = await SafetensorsFile.open(summary.files[0]!);
    const meta = st.metadata;
    await st.close();
    expect(meta).toMatchObject({
      ss_network_module: 'networks.lora',
      ss_network_dim: '4',
      ss_network_alpha: '2.0',
      ss_network_args: '{"conv_dim": "2", "conv_alpha": "2.0"}',
      ss_base_model_version: 'sd_v1',
      ss_v2: 'False',
      ss_steps: '4',
      ss_max_train_steps: '4',
      ss_learning_rate: '0.01',
      ss_resolution: '(64, 64)',
      ss_output_name: 'tiny-lora',
      'modelspec.architecture': 'stable-diffusion-v1/lora',
      'modelspec.resolution': '64x64',
    });
    expect(await sshsHashes(summary.files[0]!)).toEqual({ sshs_model_hash: meta.sshs_model_hash, sshs_legacy_hash: meta.sshs_legacy_hash });

    // live adapters vs the export merged into the weights (adapters detached): the same prediction within float error
    const f = fixed();
    const live = predict(lora, f);
    for (const a of lora.adapters) a.multiplier = 0;
    const zero = predict(lora, f);
    const base = predict(undefined, f);
    expect(maxAbs(live, base)).toBeGreaterThan(1e-4); // the LoRA does something
    const detached = installLorasOff(lora);
    const merged = applyLoras(tiny.model, [{ file, weight: 1 }]);
    const viaMerge = predict(undefined, f);
    merged.remove();
    const atZero = applyLoras(tiny.model, [{ file, weight: 0 }]);
    expect(atZero.mergedWeights).toBe(0);
    const viaZero = predict(undefined, f);
    atZero.remove();
    detached.restore();
    console.log(`LoRA effect max |Δ| ${maxAbs(live, base).toExponential(2)}; merged vs live max |Δ| ${maxAbs(viaMerge, live).toExponential(2)}`);
    expect(maxAbs(viaMerge, live)).toBeLessThan(2e-5 * Math.max(1, tf.tidy(() => live.abs().max().dataSync()[0]!)));
    expect(bits(viaZero).equals(bits(base))).toBe(true);
    // multiplier 0 on the live adapters adds exact zeros
    expect(bits(zero).equals(bits(base))).toBe(true);
    tf.dispose([live, zero, base, viaMerge, viaZero]);
    f.dispose();

    const values = lora.trainableVariables().map((v) => tf.tensor(v.dataSync(), v.shape));
    const n = tf.memory().numTensors;
    lora.dispose();
    expect(tf.memory().numTensors).toBe(n - after.length);
    disposeItems(items);

    // F16 export (the default) reads back within half precision
    const f16 = await make(cfg, { name: 'half' });
    f16.trainableVariables().forEach((v, i) => v.assign(values[i]!));
    tf.dispose(values);
    const [half] = await f16.save(tmp(), 4, 'final');
    const h = await readLora(half!, tiny.model);
    expect(h.dtype).toBe('F16');
    f16.dispose();
    for (const m of trained) {
      const r = h.modules.find((x) => x.name === m.name)!;
      m.up.data.forEach((x, i) => expect(Math.abs(r.up.data[i]! - x)).toBeLessThanOrEqual(Math.abs(x) * 1e-3 + 1e-7));
    }
  });

  it('text_encoder_lr is a real second learning rate (SGD: the text-encoder update scales with it, the U-Net one does not)', async () => {
    const run = async (teLr: number) => {
      const cfg = loraConfig(
        { max_train_steps: 1, learning_rate: 0.1, max_grad_norm: 0, optimizer: { type: 'sgd', weight_decay: 0 } },
        { train_text_encoder: true, text_encoder_lr: teLr },
        5,
      );
      const lora = await make(cfg);
      expect(lora.textEncoderLrScale).toBeCloseTo(teLr / 0.1, 12);
      const items = tinyItems('latents', 2);
      await train(lora, memorySource(items, 2, 1), cfg, { runDir: join(tmp(), `te-${teLr}`), diffusion: tiny.setup });
      const ups = lora.adapters.map((a) => ({ te: a.target.component === 'text_encoder', up: Float32Array.from(a.up.dataSync() as Float32Array) }));
      lora.dispose();
      disposeItems(items);
      return ups;
    };
    const a = await run(0.1);
    const b = await run(0.3);
    const ratio = (i: number) => {
      const x = a[i]!.up;
      const y = b[i]!.up;
      let num = 0;
      let den = 0;
      x.forEach((v, j) => ((num += y[j]! * v), (den += v * v)));
      return num / den;
    };
    const teIdx = a.map((u, i) => (u.te ? i : -1)).filter((i) => i >= 0);
    const unetIdx = a.map((u, i) => (u.te ? -1 : i)).filter((i) => i >= 0);
    // step 1 from up = 0: Δup = −lr·scale·g with the same g in both runs
    for (const i of teIdx) expect(ratio(i)).toBeCloseTo(3, 4);
    for (const i of unetIdx.slice(0, 8)) expect(ratio(i)).toBeCloseTo(1, 5);
  });

  it('a frozen text encoder runs off the tape: the same loss and gradients as taping it, no leak per step', async () => {
    const cfg = loraConfig({ max_train_steps: 3, learning_rate: 1e-3 }, { targets: 'attention+ff' });
    const lora = await make(cfg);
    expect(lora.trainsTextEncoder).toBe(false);
    for (const a of lora.adapters) a.up.assign(tf.tidy(() => tf.randomNormal(a.up.shape, 0, 0.1, 'float32', 4)));
    const f = fixed();
    const vars = lora.trainableVariables();
    const viaMethod = tf.variableGrads(() => lora.loss({ captions: f.captions }, f.mb.ctx), vars);
    const taped = tf.variableGrads(() => f.mb.ctx.lossOf(tiny.model.unet.forward(f.mb.ctx.noisyLatents, f.mb.ctx.timesteps, encodeBase(f.captions))), vars);
    expect(viaMethod.value.dataSync()[0]).toBe(taped.value.dataSync()[0]);
    for (const v of vars) expect(bits(viaMethod.grads[v.name]!).equals(bits(taped.grads[v.name]!)), v.name).toBe(true);
    tf.dispose([viaMethod.value, taped.value, ...Object.values(viaMethod.grads), ...Object.values(taped.grads)]);
    f.dispose();

    const start = tf.memory().numTensors;
    const items = tinyItems('latents', 2);
    const counts: number[] = [];
    await train(lora, memorySource(items, 1, 0), cfg, { runDir: join(tmp(), 'frozen-te'), diffusion: tiny.setup, onEvent: (e) => e.kind === 'step' && counts.push(tf.memory().numTensors) });
    expect(new Set(counts.slice(1)).size).toBe(1);
    disposeItems(items);
    lora.dispose();
    expect(tf.memory().numTensors).toBe(start - vars.length);
  });

  it('dropout: seeded per step, micro-batch and module; off outside the loss', async () => {
    const cfg = loraConfig({}, { dropout: 0.5 }, 9);
    const lora = await make(cfg);
    for (const a of lora.adapters) a.up.assign(tf.tidy(() => tf.randomNormal(a.up.shape, 0, 0.5, 'float32', 3)));
    const f = fixed();
    const loss = (step: number, micro: number) =>
      tf.tidy(() => lora.loss({ captions: f.captions }, { ...f.mb.ctx, step, micro }).dataSync()[0]!);
    const a = loss(0, 0);
    expect(loss(0, 0)).toBe(a);
    expect(loss(0, 1)).not.toBe(a);
    expect(loss(1, 0)).not.toBe(a);
    const noDrop = tf.tidy(() => f.mb.ctx.lossOf(predict(lora, f) as tf.Tensor4D).dataSync()[0]!);
    expect(noDrop).not.toBe(a);
    expect(lora.adapters.every((x) => x.dropoutSeed === undefined)).toBe(true);
    lora.dispose();
    f.dispose();
  });

  it('Ctrl-C then resume gives the uninterrupted losses and LoRA weights exactly', async () => {
    const cfg = loraConfig({ max_train_steps: 4, learning_rate: 5e-3, cond_dropout: 0.3, lr_scheduler: 'cosine' }, { dropout: 0.2, train_text_encoder: true, text_encoder_lr: 1e-3 }, 77);
    const items = tinyItems('latentDist', 3);
    const losses = (events: TrainEvent[]) => events.flatMap((e) => (e.kind === 'step' ? [e.loss] : []));

    const straight = await make(cfg);
    const ev1: TrainEvent[] = [];
    await train(straight, memorySource(items, 1, 2), cfg, { runDir: join(tmp(), 'straight'), diffusion: tiny.setup, onEvent: (e) => ev1.push(e) });
    const want = straight.trainableVariables().map((v) => Float32Array.from(v.dataSync() as Float32Array));
    straight.dispose();

    const runDir = join(tmp(), 'interrupted');
    const first = await make(cfg);
    const abort = new AbortController();
    const ev2: TrainEvent[] = [];
    await train(first, memorySource(items, 1, 2), cfg, {
      runDir,
      diffusion: tiny.setup,
      signal: abort.signal,
      onEvent: (e) => (ev2.push(e), e.kind === 'step' && e.step === 2 && abort.abort()),
    });
    first.dispose();
    const second = await make(cfg);
    await train(second, memorySource(items, 1, 2), cfg, { runDir, diffusion: tiny.setup, resume: 'latest', onEvent: (e) => ev2.push(e) });
    expect(losses(ev2)).toEqual(losses(ev1));
    second.trainableVariables().forEach((v, i) => expect(Buffer.from((v.dataSync() as Float32Array).buffer).equals(Buffer.from(want[i]!.buffer))).toBe(true));
    second.dispose();
    disposeItems(items);
  });

  it('refuses a second LoRA training on the same layers, leaving the first intact', async () => {
    const cfg = loraConfig({});
    const a = await make(cfg);
    await expect(make(cfg)).rejects.toThrow(/already has an adapter/);
    expect(a.adapters.every((x) => x.target.layer.adapter === x)).toBe(true);
    a.dispose();
    const specs = selectLoraSpecs(tiny.model, cfg.lora);
    const again = installLoras(specs, { seed: 1 });
    again.remove();
    again.remove(); // idempotent
  });
});

/** Detaches a training's adapters from their layers (without freeing them) and gives a way to put them back. */
function installLorasOff(lora: LoraTraining): { restore(): void } {
  for (const a of lora.adapters) delete a.target.layer.adapter;
  return { restore: () => lora.adapters.forEach((a) => (a.target.layer.adapter = a)) };
}
