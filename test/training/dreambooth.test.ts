// DreamBooth on the tiny SD1 model: gradient checkpointing (same outputs and gradients), the prior-preservation loss
// (exactly diffusers' inst + λ·prior), EMA (diffusers' EMAModel), what trains and what stays bit-identical, tensor
// leaks, the exports (single file + diffusers folder reload with identical weights), class-image generation.
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDiffusersFolder } from '../../src/checkpoints/diffusers_folder.js';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { loadSingleFile } from '../../src/checkpoints/single_file.js';
import { DreamboothConfigSchema, type DreamboothConfig } from '../../src/config/schema.js';
import { openDataset } from '../../src/data/dataset.js';
import { namedParams, type Module } from '../../src/nn/module.js';
import { makeModel } from '../../src/pipelines/model.js';
import { parseSchedulerConfig } from '../../src/schedules/config.js';
import { classImageName, ensureClassImages } from '../../src/training/class_images.js';
import { classDataConfig, DreamBooth, instanceDataConfig, PriorPreservationSource } from '../../src/training/dreambooth.js';
import { Ema, emaDecay } from '../../src/training/ema.js';
import { checkpointedUNetForward, withoutGradient } from '../../src/training/grad_checkpoint.js';
import { train } from '../../src/training/loop.js';
import { buildStepContext } from '../../src/training/micro_batch.js';
import { loadParityCase, maxAbsDiff } from '../helpers/parity_case.js';
import { hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { changedWeights, disposeItems, loadTiny, memorySource, snapshotWeights, tinyItems, type Tiny } from './helpers.js';

const tmp = useTmpDir('sdtrain-dreambooth-');

/** A full dreambooth config (schema defaults) with overrides. */
function dbConfig(training: Record<string, unknown> = {}, dreambooth: Record<string, unknown> = {}, seed = 0): DreamboothConfig {
  return DreamboothConfigSchema.parse({
    seed,
    data: { datasets: [{ path: '/nonexistent' }], resolution: 64 },
    training: { save_every_n_steps: 0, log_every_n_steps: 5, preview: { every_n_steps: 0 }, ...training },
    dreambooth: { instance_prompt: 'a photo of sks ball', ...dreambooth },
  });
}

const bits = (t: tf.Tensor): Buffer => Buffer.from((t.dataSync() as Float32Array).buffer.slice(0));

describe.runIf(hasShared)('DreamBooth (tiny SD1)', () => {
  let tiny: Tiny;
  beforeAll(async () => {
    tiny = await loadTiny();
  });
  afterAll(() => disposePipeline(tiny.model));

  const method = async (cfg: DreamboothConfig): Promise<DreamBooth> =>
    new DreamBooth({ ...tiny.model, tokenizer: await tiny.tokenizer() }, { dreambooth: cfg.dreambooth, learningRate: cfg.training.learning_rate, name: 'tiny-db' });

  /** Fixed inputs of one micro-batch: latents [B, h, w, 4] (h, w may be odd), noise, timesteps, captions. */
  function fixedInputs(b: number, h: number, w: number) {
    const x0 = tf.randomNormal([b, h, w, 4], 0, 0.8, 'float32', 11) as tf.Tensor4D;
    const noise = tf.randomNormal([b, h, w, 4], 0, 1, 'float32', 12) as tf.Tensor4D;
    const captions = ['a photo of sks ball', 'a photo of a ball', 'a red ball on grass', ''].slice(0, b);
    return { x0, noise, timesteps: [999, 500, 250, 10].slice(0, b), captions };
  }

  describe('gradient checkpointing', () => {
    const cases = [
      { what: '8×8 latents, text encoder frozen', h: 8, w: 8, te: false, slice: undefined },
      { what: '9×13 latents (odd-size path), text encoder trained, attention slicing 3', h: 9, w: 13, te: true, slice: 3 },
    ];
    for (const c of cases) {
      it(`same output and the same gradients for every trainable tensor: ${c.what}`, async () => {
        const m = await method(dbConfig({}, { train_text_encoder: c.te }));
        const inp = fixedInputs(2, c.h, c.w);
        const vars = m.trainableVariables();
        const run = (checkpointing: boolean) => {
          const before = tf.memory().numTensors;
          const mb = buildStepContext(inp, tiny.setup, { step: 0, micro: 0, ...(c.slice ? { attentionSliceSize: c.slice } : {}) });
          const { value, grads } = tf.variableGrads(() => {
            const hidden = c.te ? m.encode(mb.ctx.captions) : withoutGradient(() => m.encode(mb.ctx.captions));
            const slice = c.slice ? { attentionSliceSize: c.slice } : {};
            const pred = checkpointing
              ? checkpointedUNetForward(tiny.model.unet, mb.ctx.noisyLatents, mb.ctx.timesteps, hidden, { ...slice, contextRequiresGrad: c.te })
              : tiny.model.unet.forward(mb.ctx.noisyLatents, mb.ctx.timesteps, hidden, slice);
            return mb.ctx.lossOf(pred);
          }, vars);
          const pred = tf.tidy(() => {
            const hidden = m.encode(mb.ctx.captions);
            return checkpointing
              ? checkpointedUNetForward(tiny.model.unet, mb.ctx.noisyLatents, mb.ctx.timesteps, hidden)
              : tiny.model.unet.forward(mb.ctx.noisyLatents, mb.ctx.timesteps, hidden);
          });
          const out = { loss: value.dataSync()[0]!, pred: bits(pred), grads: vars.map((v) => grads[v.name]!) };
          value.dispose();
          pred.dispose();
          mb.dispose();
          const leaked = tf.memory().numTensors - before - out.grads.length;
          return { ...out, leaked };
        };
        const plain = run(false);
        const ckpt = run(true);
        expect(plain.leaked).toBe(0);
        expect(ckpt.leaked).toBe(0);
        expect(ckpt.loss).toBe(plain.loss);
        expect(ckpt.pred.equals(plain.pred)).toBe(true);
        expect(plain.grads.every((g) => g !== undefined)).toBe(true);
        // Per tensor: the largest difference against the largest gradient entry of the whole model. (Against the
        // tensor's own scale is meaningless for the gradients that are zero up to rounding by construction: a conv
        // bias or time_emb_proj right before a GroupNorm has ~1e-6 noise as its gradient.)
        const globalMax = Math.max(...plain.grads.map((g) => tf.tidy(() => g.abs().max().dataSync()[0]!)));
        let identical = 0;
        let worst = 0;
        let worstName = '';
        vars.forEach((v, i) => {
          const a = plain.grads[i]!.dataSync() as Float32Array;
          const b = ckpt.grads[i]!.dataSync() as Float32Array;
          let diff = 0;
          for (let j = 0; j < a.length; j++) diff = Math.max(diff, Math.abs(a[j]! - b[j]!));
          if (diff === 0) identical++;
          if (diff / globalMax > worst) (worst = diff / globalMax), (worstName = v.name.replace(/^sdtrain\/dreambooth#\d+\//, ''));
        });
        console.log(
          `checkpointing (${c.what}): ${identical}/${vars.length} gradients bit-identical; ` +
            `largest difference ${(worst * globalMax).toExponential(2)} = ${worst.toExponential(2)} × the largest gradient entry (${worstName || '-'})`,
        );
        expect(worst).toBeLessThan(1e-6);
        tf.dispose([...plain.grads, ...ckpt.grads]);
        m.release();
      });
    }
  });

  it('grad_ti_dreambooth (diffusers): the U-Net weight gradients through the checkpointed U-Net match the fixture', async () => {
    const fx = await loadParityCase('grad_ti_dreambooth');
    const tables = await loadParityCase('sched_tables');
    const clip = tiny.model.textEncoder;
    const unet = tiny.model.unet;
    const m = await method(dbConfig());
    const ids = fx.tensor('inputs/input_ids') as tf.Tensor2D;
    const placeholder = fx.tensor('inputs/placeholder_embedding') as tf.Tensor1D;
    const vocab = clip.config.vocab_size;
    const ac = (await tables.tensor('outputs/alphas_cumprod').data()) as Float32Array;
    const ts = Array.from((await fx.tensor('inputs/timesteps').data()) as Int32Array);
    const sqrtA = tf.tensor(ts.map((t) => Math.fround(Math.sqrt(ac[t]!))), [ts.length, 1, 1, 1]);
    const sqrt1mA = tf.tensor(ts.map((t) => Math.fround(Math.sqrt(Math.fround(1 - ac[t]!)))), [ts.length, 1, 1, 1]);
    const noise = fx.nhwc('inputs/noise');
    const noisy = fx.nhwc('inputs/latents').mul(sqrtA).add(noise.mul(sqrt1mA)) as tf.Tensor4D;
    const ctx = tf.tidy(() => {
      const embeds = tf.where(ids.equal(vocab).expandDims(2), placeholder.reshape([1, 1, -1]).tile([ids.shape[0], ids.shape[1], 1]), clip.embed(ids.minimum(vocab - 1) as tf.Tensor2D));
      return clip.forward(ids, { inputsEmbeds: embeds as tf.Tensor3D }).lastHiddenState;
    });
    const keys = ['down_blocks.0.resnets.0.conv1.weight', 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight', 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight'];
    const vars = keys.map((k) => namedParams(unet).get(k)!.t as tf.Variable);
    const { value, grads } = tf.variableGrads(
      () => tf.losses.meanSquaredError(noise, checkpointedUNetForward(unet, noisy, tf.tensor1d(ts, 'int32'), ctx)) as tf.Scalar,
      vars,
    );
    expect(Math.abs(value.dataSync()[0]! - fx.tensor('outputs/loss').dataSync()[0]!)).toBeLessThanOrEqual(fx.atol('loss'));
    for (const [i, k] of keys.entries()) {
      const ref = fx.tensor(`outputs/grad_${k}`);
      const refLayout = ref.rank === 4 ? ref.transpose([2, 3, 1, 0]) : ref; // OIHW → HWIO
      const err = await maxAbsDiff(grads[vars[i]!.name]!, refLayout);
      console.log(`grad_ti_dreambooth grad_${k} (checkpointed): max abs err ${err.toExponential(2)} (atol ${fx.atol(`grad_${k}`)})`);
      expect(err).toBeLessThanOrEqual(fx.atol(`grad_${k}`));
      tf.dispose([ref, refLayout]);
    }
    tf.dispose([value, ...Object.values(grads), ids, placeholder, sqrtA, sqrt1mA, noise, noisy, ctx]);
    m.release();
  });

  it('checkpointing lowers the peak tensor memory of a forward + backward', async () => {
    const m = await method(dbConfig());
    const inp = fixedInputs(2, 8, 8);
    const peak = async (checkpointing: boolean): Promise<number> => {
      const mb = buildStepContext(inp, tiny.setup, { step: 0, micro: 0 });
      m.opts.dreambooth.gradient_checkpointing = checkpointing;
      const info = await tf.profile(() => {
        const { value, grads } = tf.variableGrads(() => m.loss({ captions: inp.captions, latents: inp.x0 }, mb.ctx), m.trainableVariables());
        tf.dispose([value, ...Object.values(grads)]);
      });
      mb.dispose();
      return info.peakBytes;
    };
    const plain = await peak(false);
    const ckpt = await peak(true);
    const weights = m.trainableVariables().reduce((n, v) => n + v.size * 4, 0);
    console.log(`peak tensor bytes (U-Net batch 2, 8×8 latents): ${(plain / 2 ** 20).toFixed(1)} MiB without, ${(ckpt / 2 ** 20).toFixed(1)} MiB with checkpointing (weights ${(weights / 2 ** 20).toFixed(1)} MiB)`);
    expect(ckpt - weights).toBeLessThan(0.75 * (plain - weights));
    m.release();
    tf.dispose([inp.x0, inp.noise]);
  });

  it('prior preservation: instance + class halves, loss = mse(instance) + prior_loss_weight · mse(class) exactly (diffusers)', async () => {
    // two instance images and three class images, opened as the CLI opens them (no VAE here: pixels)
    const root = join(tmp(), 'prior-data');
    const inst = join(root, 'instance');
    const cls = join(root, 'class');
    mkdirSync(inst, { recursive: true });
    mkdirSync(cls, { recursive: true });
    const png = (color: string) => sharp({ create: { width: 64, height: 64, channels: 3, background: color } }).png();
    await png('#c33').toFile(join(inst, 'a.png'));
    await png('#3c3').toFile(join(inst, 'b.png'));
    for (const [i, c] of ['#33c', '#cc3', '#3cc'].entries()) await png(c).toFile(join(cls, `class_000${i}.png`));
    const cfg = DreamboothConfigSchema.parse({
      data: { resolution: 64 },
      training: { batch_size: 2 },
      dreambooth: { instance_data_dir: inst, instance_prompt: 'a photo of sks ball', with_prior_preservation: true, class_data_dir: cls, class_prompt: 'a photo of a ball', prior_loss_weight: 0.7 },
    });
    const open = (data: ReturnType<typeof instanceDataConfig>) => openDataset(data, { seed: 3, batchSize: 2 });
    const source = new PriorPreservationSource(await open(instanceDataConfig(cfg)), await open(classDataConfig(cfg)), 0.7);
    const batches = [];
    for (let i = 0; i < 5; i++) {
      const b = await source.next();
      batches.push({ cursor: source.cursor(), captions: b.captions, lossWeights: b.lossWeights, shape: b.pixels!.shape, sum: b.pixels!.sum().dataSync()[0]! });
      b.pixels!.dispose();
    }
    expect(batches[0]).toMatchObject({ captions: ['a photo of sks ball', 'a photo of sks ball', 'a photo of a ball', 'a photo of a ball'], lossWeights: [2, 2, 1.4, 1.4], shape: [4, 64, 64, 3] });
    // resumable: seeking to a saved cursor replays the same batches (both halves)
    source.seek(batches[1]!.cursor);
    for (let i = 2; i < 5; i++) {
      const b = await source.next();
      expect([b.captions, b.pixels!.sum().dataSync()[0]]).toEqual([batches[i]!.captions, batches[i]!.sum]);
      b.pixels!.dispose();
    }
    await source.close();

    // the loss with those weights is diffusers' sum (with and without min-SNR off), for halves of 2
    const pred = tf.randomNormal([4, 8, 8, 4], 0, 1, 'float32', 5) as tf.Tensor4D;
    const x0 = tf.randomNormal([4, 8, 8, 4], 0, 0.8, 'float32', 6) as tf.Tensor4D;
    const noise = tf.randomNormal([4, 8, 8, 4], 0, 1, 'float32', 7) as tf.Tensor4D;
    const mb = buildStepContext({ x0, noise, timesteps: [10, 400, 800, 999], captions: batches[0]!.captions, lossWeights: batches[0]!.lossWeights! }, tiny.setup, { step: 0, micro: 0 });
    const loss = mb.ctx.lossOf(pred).dataSync()[0]!;
    const mse = (a: tf.Tensor, b: tf.Tensor) => a.sub(b).square().mean().dataSync()[0]!;
    const target = mb.ctx.target;
    const expected = mse(pred.slice([0], [2]), target.slice([0], [2])) + 0.7 * mse(pred.slice([2], [2]), target.slice([2], [2]));
    expect(Math.abs(loss - expected)).toBeLessThan(1e-6 * expected);
    mb.dispose();
    tf.dispose([pred, x0, noise]);
  });

  it('EMA: diffusers EMAModel decay schedule and update', () => {
    expect([1, 2, 3, 10, 800].map((n) => emaDecay(n, 0.9999))).toEqual([0, 2 / 11, 3 / 12, 10 / 19, 800 / 809]);
    expect(emaDecay(100000, 0.999)).toBe(0.999);
    const p = tf.variable(tf.tensor1d([1, 2, 3]), true, 'ema-test-p');
    const ema = new Ema([p], 0.9999);
    const history: number[][] = [];
    for (const v of [[2, 2, 2], [4, 0, 1], [0, 0, 0]]) {
      p.assign(tf.tensor1d(v));
      ema.update([p]);
      history.push(Array.from(ema.shadow[0]!.dataSync()));
    }
    const d2 = 2 / 11;
    const d3 = 3 / 12;
    const s2 = [2, 2, 2].map((s, i) => s - (1 - d2) * (s - [4, 0, 1][i]!));
    const s3 = s2.map((s) => s - (1 - d3) * s);
    expect(history[0]).toEqual([2, 2, 2]); // the first update copies the weights
    history[1]!.forEach((x, i) => expect(x).toBeCloseTo(s2[i]!, 6));
    history[2]!.forEach((x, i) => expect(x).toBeCloseTo(s3[i]!, 6));
    ema.dispose();
    p.dispose();
  });

  it('trains the U-Net only (text encoder and VAE bit-identical), no tensor leaks, exports reload with identical weights, EMA exported and resumed exactly', async () => {
    const items = tinyItems('latents', 3).map((it, i) => ({ ...it, caption: ['a photo of sks ball', 'a sks ball on grass', 'a photo of a ball'][i]! }));
    const cfg = dbConfig(
      { max_train_steps: 4, batch_size: 2, learning_rate: 1e-3, optimizer: { type: 'adamw' }, cond_dropout: 0.3, save_every_n_steps: 2 },
      { gradient_checkpointing: true, ema: { enabled: true, decay: 0.9 } },
      7,
    );
    const frozen = () => snapshotWeights({ text_encoder: tiny.model.textEncoder, vae: tiny.model.vae });
    const unetBefore = snapshotWeights({ unet: tiny.model.unet });
    const before = frozen();
    const start = tf.memory().numTensors;
    const m = await method(cfg);
    const tensors: number[] = [];
    const runDir = join(tmp(), 'db-run');
    const summary = await train(m, memorySource(items, 2, 1), cfg, {
      runDir,
      diffusion: tiny.setup,
      onEvent: (e) => e.kind === 'step' && tensors.push(tf.memory().numTensors),
    });
    expect(summary).toMatchObject({ reason: 'finished', steps: 4 });
    expect(new Set(tensors).size).toBe(1); // the same number of tensors after every step
    expect(changedWeights(before, frozen())).toEqual([]);
    const unetAfter = snapshotWeights({ unet: tiny.model.unet });
    const moved = changedWeights(unetBefore, unetAfter);
    expect(moved.length).toBe(unetBefore.size); // every U-Net tensor trained

    // exports: the single file and the diffusers folder hold the EMA U-Net and the (frozen) text encoder and VAE
    expect(summary.files.map((f) => f.slice(runDir.length + 1))).toEqual(['tiny-db.safetensors', 'tiny-db']);
    const shadow = new Map([...namedParams(tiny.model.unet).keys()].map((k, i) => [k, (m as unknown as { ema: Ema }).ema.shadow[i]!]));
    const same = (what: string, loaded: Module, expected: (k: string) => tf.Tensor) => {
      const bad = [...namedParams(loaded)].filter(([k, p]) => !bits(p.t).equals(bits(expected(k))));
      expect(bad.map(([k]) => `${what}.${k}`)).toEqual([]);
    };
    const te = namedParams(tiny.model.textEncoder);
    const vae = namedParams(tiny.model.vae);
    // the tiny text encoder is 32 wide: its head count cannot be derived from the shapes (SD's 768 can)
    const single = await loadSingleFile(join(runDir, 'tiny-db.safetensors'), { overrides: { text_encoder: { num_attention_heads: 4 } } });
    same('unet', single.unet, (k) => shadow.get(k)!);
    same('text_encoder', single.textEncoder, (k) => te.get(k)!.t);
    same('vae', single.vae, (k) => vae.get(k)!.t);
    expect(single.metadata).toMatchObject({ 'sdtrain.step': '4', 'sdtrain.weights': 'ema' });
    disposePipeline(single);
    const folder = await loadDiffusersFolder(join(runDir, 'tiny-db'));
    same('unet', folder.unet, (k) => shadow.get(k)!);
    same('text_encoder', folder.textEncoder, (k) => te.get(k)!.t);
    disposePipeline(folder);
    expect(readdirSync(join(runDir, 'checkpoints', 'step-2')).sort()).toEqual(['tiny-db.safetensors', 'trainer_state.safetensors']);

    // resume from step 2: the same weights and EMA at step 4
    const final = Array.from((m as unknown as { ema: Ema }).ema.shadow, (t) => bits(t));
    const trained = snapshotWeights({ unet: tiny.model.unet });
    m.release();
    // back to the base weights, then resume
    for (const [k, p] of namedParams(tiny.model.unet)) p.set(tf.tensor(unetBefore.get(`unet.${k}`)!, [...p.shape]), k);
    const again = await method(cfg);
    await train(again, memorySource(items, 2, 1), cfg, { runDir, diffusion: tiny.setup, resume: join(runDir, 'checkpoints', 'step-2') });
    expect(changedWeights(trained, snapshotWeights({ unet: tiny.model.unet }))).toEqual([]);
    (again as unknown as { ema: Ema }).ema.shadow.forEach((t, i) => expect(bits(t).equals(final[i]!)).toBe(true));
    again.release();
    for (const [k, p] of namedParams(tiny.model.unet)) p.set(tf.tensor(unetBefore.get(`unet.${k}`)!, [...p.shape]), k);
    expect(tf.memory().numTensors).toBe(start);
    disposeItems(items);
  });

  it('train_text_encoder: the text encoder trains at text_encoder_lr (its lrScale), the VAE stays bit-identical', async () => {
    const items = tinyItems('latents', 2).map((it) => ({ ...it, caption: 'a photo of sks ball' }));
    const cfg = dbConfig({ max_train_steps: 2, batch_size: 1, learning_rate: 1e-4, cond_dropout: 0 }, { train_text_encoder: true, text_encoder_lr: 5e-5 });
    const base = snapshotWeights({ text_encoder: tiny.model.textEncoder, unet: tiny.model.unet });
    const vaeBefore = snapshotWeights({ vae: tiny.model.vae });
    const m = await method(cfg);
    const vars = m.trainableVariables();
    const nUnet = namedParams(tiny.model.unet).size;
    expect(vars.length).toBe(nUnet + namedParams(tiny.model.textEncoder).size);
    expect(vars.map((_, i) => m.lrScale(i))).toEqual(vars.map((_, i) => (i < nUnet ? 1 : 0.5)));
    await train(m, memorySource(items, 1), cfg, { runDir: join(tmp(), 'db-te'), diffusion: tiny.setup });
    const after = snapshotWeights({ text_encoder: tiny.model.textEncoder, unet: tiny.model.unet });
    const changed = changedWeights(base, after);
    expect(changed.some((k) => k.startsWith('text_encoder.'))).toBe(true);
    expect(changed.some((k) => k.startsWith('unet.'))).toBe(true);
    expect(changedWeights(vaeBefore, snapshotWeights({ vae: tiny.model.vae }))).toEqual([]);
    m.release();
    for (const [prefix, mod] of [['text_encoder', tiny.model.textEncoder], ['unet', tiny.model.unet]] as const) {
      for (const [k, p] of namedParams(mod)) p.set(tf.tensor(base.get(`${prefix}.${k}`)!, [...p.shape]), k);
    }
    disposeItems(items);
    // a schedule string has no single rate to scale from
    expect(() => new DreamBooth({ ...tiny.model, tokenizer: undefined as never }, { dreambooth: cfg.dreambooth, learningRate: '1e-4:10, 1e-5' })).toThrow(/text_encoder_lr/);
  });

  it('class images: generated with the base model, then cached; an interrupted set is completed with the same images', async () => {
    const sched = parseSchedulerConfig(JSON.parse(readFileSync(join(tiny.model.tokenizerDir!, '..', 'scheduler', 'scheduler_config.json'), 'utf8')));
    const model = makeModel(tiny.model, { tokenizer: await tiny.tokenizer(), schedulerConfig: sched, path: 'tiny-sd1' });
    const dir = join(tmp(), 'class-images');
    const o = { dir, prompt: 'a photo of a ball', count: 3, seed: 5, width: 64, height: 64, sampler: 'ddim' as const, steps: 2, cfgScale: 5 };
    const first = await ensureClassImages(model, o);
    expect(first.existing).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['class_0000.png', 'class_0000.txt', 'class_0001.png', 'class_0001.txt', 'class_0002.png', 'class_0002.txt']);
    expect(readFileSync(join(dir, 'class_0001.txt'), 'utf8')).toBe('a photo of a ball\n');
    const bytes = (k: number) => readFileSync(join(dir, `${classImageName(k)}.png`));
    const png1 = bytes(1);
    expect(png1.toString('latin1')).toMatch(/a photo of a ball[\s\S]*Seed: 6/);
    expect(await ensureClassImages(model, o)).toEqual({ existing: 3, generated: [] }); // cached
    const { rmSync } = await import('node:fs');
    rmSync(join(dir, 'class_0001.png'));
    const warnings: string[] = [];
    const resumed = await ensureClassImages(model, { ...o, onWarning: (w) => warnings.push(w) });
    expect(resumed).toEqual({ existing: 2, generated: [join(dir, 'class_0001.png')] });
    expect(bytes(1).equals(png1)).toBe(true); // seed 5 + 1: the same image
    expect(warnings).toEqual([]);
    await ensureClassImages(model, { ...o, prompt: 'a photo of a cube', onWarning: (w) => warnings.push(w) });
    expect(warnings[0]).toMatch(/generated for "a photo of a ball", not for the class prompt "a photo of a cube"/);
    expect(existsSync(join(dir, 'class_0003.png'))).toBe(false);
  });
});
