// The tiny SD1 fixture in both layouts: the original single file and the diffusers folder load to bitwise identical
// weights; writing either layout back reloads identically; memory after a load is exactly the parameters.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDiffusersFolder, writeDiffusersFolder, type LoadedDiffusersFolder } from '../../src/checkpoints/diffusers_folder.js';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { loadSingleFile, writeSingleFile, type LoadedSingleFile } from '../../src/checkpoints/single_file.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { parseClipTextConfig } from '../../src/models/clip_text.js';
import { parseUNetConfig } from '../../src/models/unet.js';
import { parseVaeConfig } from '../../src/models/vae.js';
import { namedParams, paramCount } from '../../src/nn/module.js';
import { expectIdentical } from './helpers.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';

const FOLDER = fixture('tiny-sd1');
const SINGLE = fixture('tiny-sd1-original', 'tiny-sd1.safetensors');
/** The tiny text encoder is 32 wide: not 64-channel heads, so the head count must be given (config.json: 4). */
const TINY = { overrides: { text_encoder: { num_attention_heads: 4 } } };
const readJson = (p: string): unknown => JSON.parse(readFileSync(p, 'utf8'));
const tmp = useTmpDir('sdtrain-ckpt-');

async function headerOf(path: string): Promise<Record<string, number[]>> {
  const f = await SafetensorsFile.open(path);
  try {
    return Object.fromEntries(f.tensors.map((t) => [t.name, t.shape]));
  } finally {
    await f.close();
  }
}

describe.runIf(hasShared)('tiny SD1: single file vs diffusers folder', () => {
  let folder: LoadedDiffusersFolder;
  let single: LoadedSingleFile;
  let before: { numTensors: number; numBytes: number };

  beforeAll(async () => {
    before = { numTensors: tf.memory().numTensors, numBytes: tf.memory().numBytes };
    folder = await loadDiffusersFolder(FOLDER);
  });
  afterAll(() => {
    if (folder) disposePipeline(folder);
    if (single) disposePipeline(single);
  });

  it('after a load, tf memory holds exactly the parameters (no leftover tensors)', () => {
    const models = [folder.unet, folder.vae, folder.textEncoder];
    const tensors = models.reduce((n, m) => n + namedParams(m).size, 0);
    const scalars = models.reduce((n, m) => n + paramCount(m), 0);
    expect(tf.memory().numTensors - before.numTensors).toBe(tensors);
    expect(tf.memory().numBytes - before.numBytes).toBe(scalars * 4);
  });

  it('the folder gives tokenizer dir, scheduler config and the configs as config.json says', () => {
    expect(folder.tokenizerDir).toBe(join(FOLDER, 'tokenizer'));
    expect(folder.schedulerConfig).toMatchObject({ _class_name: 'PNDMScheduler', beta_schedule: 'scaled_linear' });
    expect(folder.configs.unet).toEqual(parseUNetConfig(readJson(join(FOLDER, 'unet', 'config.json'))));
  });

  it('the single file loads to bitwise identical weights', async () => {
    single = await loadSingleFile(SINGLE, TINY);
    expectIdentical(single, folder);
    expect(single.family).toBe('sd1');
    expect(single.predictionType).toBe('epsilon');
    expect(single.assumed.join('\n')).toMatch(/prediction_type: epsilon/);
    expect(single.schedulerConfig).toMatchObject({ beta_start: 0.00085, beta_end: 0.012, prediction_type: 'epsilon' });
  });

  it('configs derived from the single file equal the folder config.json files (sample_size aside: not in the weights)', () => {
    const strip = <T extends { sample_size: unknown }>(c: T) => ({ ...c, sample_size: 0 });
    expect(strip(single.configs.unet)).toEqual(strip(parseUNetConfig(readJson(join(FOLDER, 'unet', 'config.json')))));
    expect(strip(single.configs.vae)).toEqual(strip(parseVaeConfig(readJson(join(FOLDER, 'vae', 'config.json')))));
    expect(single.configs.text_encoder).toEqual(parseClipTextConfig(readJson(join(FOLDER, 'text_encoder', 'config.json'))));
  });

  it('the text encoder head count is asked for when width/64 does not apply', async () => {
    await expect(loadSingleFile(SINGLE)).rejects.toThrow(/32 wide.*text_encoder\.num_attention_heads/);
  });

  it('single-file round trip: exactly the keys and shapes of the original file, reloads identically', async () => {
    const out = join(tmp(), 'tiny-rt.safetensors');
    await writeSingleFile(out, single, { metadata: { 'sdtrain.note': 'round trip' } });
    expect(await headerOf(out)).toEqual(await headerOf(SINGLE));
    const f = await SafetensorsFile.open(out);
    // our note, plus the configs we write so that files we made reload without overrides
    expect(Object.keys(f.metadata).sort()).toEqual(['sdtrain.configs', 'sdtrain.note']);
    expect(f.metadata['sdtrain.note']).toBe('round trip');
    expect(JSON.parse(f.metadata['sdtrain.configs']!)).toEqual(JSON.parse(JSON.stringify(single.configs)));
    await f.close();
    // no overrides needed: the 32-wide text encoder's head count comes from the stored configs
    const again = await loadSingleFile(out);
    try {
      expectIdentical(again, folder);
    } finally {
      disposePipeline(again);
    }
  });

  it('the written single file is byte-identical in tensor data to the converter-made original', async () => {
    const out = join(tmp(), 'tiny-rt2.safetensors');
    await writeSingleFile(out, folder);
    const [a, b] = [await SafetensorsFile.open(out), await SafetensorsFile.open(SINGLE)];
    try {
      for (const t of b.tensors) expect(Buffer.from(await a.readRaw(t.name)).equals(Buffer.from(await b.readRaw(t.name))), t.name).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('diffusers-folder round trip reloads identically, with the same file set and configs', async () => {
    const out = join(tmp(), 'tiny-folder');
    await writeDiffusersFolder(out, single, { schedulerConfig: folder.schedulerConfig, tokenizerDir: folder.tokenizerDir });
    for (const [c, f] of [['unet', 'diffusion_pytorch_model'], ['vae', 'diffusion_pytorch_model'], ['text_encoder', 'model']]) {
      expect(await headerOf(join(out, c!, `${f}.safetensors`))).toEqual(await headerOf(join(FOLDER, c!, `${f}.safetensors`)));
    }
    const again = await loadDiffusersFolder(out);
    try {
      expectIdentical(again, folder);
      expect(again.configs).toEqual(single.configs); // written from the single-file load
      expect(again.schedulerConfig).toMatchObject(folder.schedulerConfig!);
      expect(readFileSync(join(out, 'tokenizer', 'vocab.json'))).toEqual(readFileSync(join(FOLDER, 'tokenizer', 'vocab.json')));
      expect(readJson(join(out, 'model_index.json'))).toMatchObject({ unet: ['diffusers', 'UNet2DConditionModel'], tokenizer: ['transformers', 'CLIPTokenizer'], scheduler: ['diffusers', 'PNDMScheduler'] });
    } finally {
      disposePipeline(again);
    }
  });

  it('fp16 diffusers variant: written as *.fp16.safetensors, reloads within fp16 rounding', async () => {
    const out = join(tmp(), 'tiny-fp16');
    await writeDiffusersFolder(out, folder, { fp16: true });
    const f = await SafetensorsFile.open(join(out, 'unet', 'diffusion_pytorch_model.fp16.safetensors'));
    expect(new Set(f.tensors.map((t) => t.dtype))).toEqual(new Set(['F16']));
    await f.close();
    const again = await loadDiffusersFolder(out, { variant: 'fp16' });
    try {
      const a = namedParams(again.unet).get('conv_in.weight')!.t.dataSync();
      const b = namedParams(folder.unet).get('conv_in.weight')!.t.dataSync();
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), 6e-5));
      expect(worst).toBeLessThan(1e-3);
    } finally {
      disposePipeline(again);
    }
  });
});
