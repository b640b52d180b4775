// The pieces that make the tiny-shapes model: seeded initialisers, the tokenizer folder, the config, the VAE loop
// (loss goes down, exact resume) and the U-Net + text-encoder method on the shared loop (its saved folder loads and
// samples). Micro-sized models, so the file runs in seconds.
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseUNetConfig, UNet2DConditionModel } from '../../src/models/unet.js';
import { AutoencoderKL, parseVaeConfig } from '../../src/models/vae.js';
import { CLIPTextModel, parseClipTextConfig } from '../../src/models/clip_text.js';
import { SD_SCHEDULER } from '../../src/models/presets.js';
import { initModule } from '../../src/nn/init.js';
import { Linear } from '../../src/nn/layers.js';
import { Module, namedParams, Param } from '../../src/nn/module.js';
import { generate } from '../../src/pipelines/generate.js';
import { loadModel } from '../../src/pipelines/model.js';
import { noiseSchedule } from '../../src/schedules/betas.js';
import { parseSchedulerConfig } from '../../src/schedules/config.js';
import { loadTinyShapesConfig, parseTinyShapesConfig } from '../../src/shapes/config.js';
import { writeClipTokenizerFolder } from '../../src/shapes/tokenizer_folder.js';
import { BaseModelTraining, initTinyModels, posteriorItems, zeroInitialised } from '../../src/shapes/train_base.js';
import { encodePosteriors, latentScalingFactor, trainVae, type ImageSet } from '../../src/shapes/train_vae.js';
import { renderShape, sampleSpec } from '../../src/shapes/render.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { train } from '../../src/training/loop.js';
import { MemoryBatchSource } from '../../src/training/memory_source.js';
import { trainingSchema } from '../../src/config/schema_common.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';

const tmp = useTmpDir('sdtrain-tiny-');

const MICRO = {
  vae: { block_out_channels: [8, 16], down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'], latent_channels: 4, norm_num_groups: 4, sample_size: 16 },
  unet: { sample_size: 8, block_out_channels: [8, 16], down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'], layers_per_block: 1, norm_num_groups: 4, attention_head_dim: 2, cross_attention_dim: 8 },
  text_encoder: { hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, projection_dim: 8, bos_token_id: 0, eos_token_id: 2, pad_token_id: 1 },
};

async function microImages(n: number, size = 16): Promise<ImageSet> {
  const data = new Float32Array(n * size * size * 3);
  for (let i = 0; i < n; i++) {
    const { rgb } = await renderShape(sampleSpec(0, i, { imageSize: size, margin: 1 }), size);
    for (let k = 0; k < rgb.length; k++) data[i * rgb.length + k] = rgb[k]! / 127.5 - 1;
  }
  return { data, count: n, size };
}

const paramValues = (m: Module) => [...namedParams(m)].map(([k, p]) => [k, Array.from(p.t.dataSync())] as const);

describe('initModule', () => {
  it('is seeded, uses PyTorch default bounds, zeros what it is told and fills every parameter', () => {
    const cfg = parseUNetConfig(MICRO.unet);
    const a = new UNet2DConditionModel(cfg);
    const b = new UNet2DConditionModel(cfg);
    initModule(a, { seed: 5, zero: zeroInitialised });
    initModule(b, { seed: 5, zero: zeroInitialised });
    expect(paramValues(a)).toEqual(paramValues(b));
    const w = namedParams(a).get('conv_in.weight')!.t.dataSync(); // HWIO [3, 3, 4, 8]: fan_in 36
    expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(1 / 6);
    expect(Math.max(...w.map(Math.abs))).toBeGreaterThan(0.1);
    expect(Array.from(namedParams(a).get('conv_norm_out.weight')!.t.dataSync())).toEqual(Array(8).fill(1));
    expect(Array.from(namedParams(a).get('conv_out.weight')!.t.dataSync()).every((x) => x === 0)).toBe(true);
    expect(Array.from(namedParams(a).get('down_blocks.0.resnets.0.conv2.weight')!.t.dataSync()).every((x) => x === 0)).toBe(true);
    const c = new UNet2DConditionModel(cfg);
    initModule(c, { seed: 6 });
    expect(paramValues(c)).not.toEqual(paramValues(a));
    for (const m of [a, b, c]) for (const p of namedParams(m).values()) p.value!.dispose();
  });

  it('draws embeddings with the given std, and refuses parameters outside known layers', () => {
    const te = new CLIPTextModel(parseClipTextConfig(MICRO.text_encoder));
    initModule(te, { seed: 1, embeddingStd: () => 0.02 });
    const table = te.text_model.embeddings.token_embedding.weight.t;
    const std = tf.tidy(() => tf.moments(table).variance.sqrt().dataSync()[0]!);
    expect(std).toBeGreaterThan(0.019);
    expect(std).toBeLessThan(0.021);
    for (const p of namedParams(te).values()) p.value!.dispose();
    class Odd extends Module {
      readonly lin = new Linear(2, 2);
      readonly stray = new Param([3]);
    }
    expect(() => initModule(new Odd(), { seed: 0 })).toThrow(/stray \[3\] is not part of a layer/);
  });
});

describe('tokenizer folder', () => {
  it('reads back to the bundled tokenizer', async () => {
    const dir = join(tmp(), 'tokenizer');
    await writeClipTokenizerFolder(dir);
    const a = await CLIPTokenizer.fromDiffusersFolder(dir);
    const b = await CLIPTokenizer.fromBundled();
    for (const p of ['a blue star on a black background', 'an orange ring, émigré 🙂', '']) expect(a.tokenize(p)).toEqual(b.tokenize(p));
    expect(a.padTokenId).toBe(49407);
    expect(a.maxLength).toBe(77);
  });

  it.skipIf(!hasShared)("is byte-identical to transformers' save_pretrained (vocab.json, merges.txt)", async () => {
    const dir = join(tmp(), 'tokenizer-bytes');
    await writeClipTokenizerFolder(dir);
    for (const f of ['vocab.json', 'merges.txt']) expect(readFileSync(join(dir, f)).equals(readFileSync(fixture('tiny-sd1', 'tokenizer', f))), f).toBe(true);
  });
});

describe('tiny-shapes config', () => {
  it('configs/tiny-shapes.yaml parses into consistent model configs', async () => {
    const { config } = await loadTinyShapesConfig('configs/tiny-shapes.yaml');
    expect(config.model.unet.cross_attention_dim).toBe(config.model.text_encoder.hidden_size);
    expect(config.model.text_encoder.vocab_size).toBe(49408);
    expect(config.data.image_size / 2 ** (config.model.vae.block_out_channels.length - 1)).toBe(config.model.unet.sample_size);
    expect(config.data.hold_out.length).toBeGreaterThan(0);
    expect(config.data.hold_out).not.toContainEqual({ colour: 'blue', shape: 'star' });
    expect(config.training.cond_dropout).toBe(0.1);
  });

  it('reports mismatched widths and unknown pairs', () => {
    const model = { ...MICRO, unet: { ...MICRO.unet, cross_attention_dim: 16 } };
    expect(() => parseTinyShapesConfig({ model }, 'x.yaml')).toThrow(/cross_attention_dim \(16\) must equal model.text_encoder.hidden_size \(8\)/);
    expect(() => parseTinyShapesConfig({ model: MICRO, data: { hold_out: ['teal star'] } }, 'x.yaml')).toThrow(/unknown shape colour 'teal'/);
    // a typo names the file and the key
    expect(() => parseTinyShapesConfig({ model: MICRO, vae: { stepz: 10 } }, 'x.yaml')).toThrow(/x\.yaml:[\s\S]*vae[\s\S]*stepz/);
  });
});

describe('VAE stage', () => {
  const cfg = { steps: 6, batch_size: 4, learning_rate: 2e-3, warmup_steps: 0, weight_decay: 0, max_grad_norm: 1, reconstruction: 'l1' as const, kl_weight: 1e-4, log_every_n_steps: 2, save_every_n_steps: 3 };

  it('lowers the loss, resumes exactly, and gives a scaling factor', async () => {
    const images = await microImages(12);
    const make = () => {
      const vae = new AutoencoderKL(parseVaeConfig(MICRO.vae));
      initTinyModels({ vae }, 3);
      return vae;
    };
    const straight = make();
    const losses: number[] = [];
    const s = await trainVae(straight, images, cfg, { runDir: join(tmp(), 'vae-a'), seed: 3, onEvent: (e) => e.kind === 'step' && losses.push(e.loss) });
    expect(s.steps).toBe(6);
    expect(losses.at(-1)!).toBeLessThan(losses[0]!);
    expect(existsSync(join(tmp(), 'vae-a', 'vae', 'diffusion_pytorch_model.safetensors'))).toBe(true);

    const abort = new AbortController();
    const first = make();
    const runDir = join(tmp(), 'vae-b');
    await trainVae(first, images, cfg, { runDir, seed: 3, signal: abort.signal, onEvent: (e) => e.kind === 'step' && e.step === 3 && abort.abort() });
    const resumed = make();
    const r = await trainVae(resumed, images, cfg, { runDir, seed: 3, resume: 'latest' });
    expect(r.steps).toBe(6);
    expect(paramValues(resumed)).toEqual(paramValues(straight));

    const post = encodePosteriors(straight, images, 5);
    expect(post.shape).toEqual([8, 8, 4]);
    expect(post.mean).toHaveLength(12 * 8 * 8 * 4);
    const sf = latentScalingFactor(post, 0);
    expect(sf).toBeGreaterThan(0);
    expect(Number.isFinite(sf)).toBe(true);
  });
});

describe('U-Net + text encoder stage', () => {
  it('trains both networks on the shared loop and saves a diffusers folder that samples', async () => {
    const images = await microImages(8);
    const vae = new AutoencoderKL(parseVaeConfig(MICRO.vae));
    const unet = new UNet2DConditionModel(parseUNetConfig(MICRO.unet));
    const textEncoder = new CLIPTextModel(parseClipTextConfig(MICRO.text_encoder));
    initTinyModels({ vae, unet, textEncoder }, 0);
    const post = encodePosteriors(vae, images);
    const captions = Array.from({ length: 8 }, (_, i) => (i % 2 ? 'a red circle on a white background' : 'a blue star on a black background'));
    const items = posteriorItems(post, captions);
    const tokenizerDir = join(tmp(), 'tok');
    await writeClipTokenizerFolder(tokenizerDir);
    const method = new BaseModelTraining({ unet, textEncoder, vae, tokenizer: await CLIPTokenizer.fromBundled() }, { schedulerConfig: SD_SCHEDULER, tokenizerDir });
    const teTable = textEncoder.text_model.embeddings.token_embedding.weight.t;
    const before = tf.tidy(() => teTable.gather([1746]).dataSync().slice()); // "blue"
    const training = trainingSchema({ learning_rate: 1e-3, max_train_steps: 4, cond_dropout: 0.1 }).parse({ batch_size: 4, save_every_n_steps: 0, log_every_n_steps: 2 });
    const sched = parseSchedulerConfig(SD_SCHEDULER);
    const runDir = join(tmp(), 'base');
    const summary = await train(method, new MemoryBatchSource(items, { batchSize: 4, seed: 0 }), { seed: 0, training }, {
      runDir,
      diffusion: { alphasCumprod: noiseSchedule(sched).alphasCumprod, predictionType: 'epsilon', scalingFactor: latentScalingFactor(post, 0) },
    });
    expect(summary.steps).toBe(4);
    expect(method.trainableVariables().length).toBe(namedParams(unet).size + namedParams(textEncoder).size);
    const after = textEncoder.text_model.embeddings.token_embedding.weight.t.gather([1746]).dataSync();
    expect(Array.from(after)).not.toEqual(Array.from(before)); // the text encoder learns too
    tf.dispose(items.flatMap((it) => [it.latentDist!.mean, it.latentDist!.logvar]));

    const model = await loadModel(join(runDir, 'model'));
    try {
      expect(existsSync(join(runDir, 'model', 'unet', 'diffusion_pytorch_model.fp16.safetensors'))).toBe(true);
      expect(existsSync(join(runDir, 'model', 'tokenizer', 'vocab.json'))).toBe(true);
      const [img] = await generate(model, { prompt: 'a blue star on a black background', sampler: 'ddim', steps: 2, cfgScale: 3, width: 16, height: 16, seed: 0 }, { rgb: true, hashes: false });
      expect(img!.rgb).toHaveLength(16 * 16 * 3);
    } finally {
      model.dispose();
    }
  });
});
