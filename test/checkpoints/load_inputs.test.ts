// Broken and unusual inputs: modified copies of the tiny single file (missing / unexpected / mis-shaped keys), a
// truncated file, a folder without model_index.json; and the inputs that must work: .ckpt with a Lightning
// state_dict, a standalone VAE override in every layout, sharded weights.
import * as tf from '@tensorflow/tfjs';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadComponentFolder, loadDiffusersFolder } from '../../src/checkpoints/diffusers_folder.js';
import { loadStateDict } from '../../src/checkpoints/load.js';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { loadSingleFile, type LoadedSingleFile } from '../../src/checkpoints/single_file.js';
import { openSource } from '../../src/checkpoints/sources.js';
import { CheckpointMismatchError, FormatError } from '../../src/errors.js';
import type { TensorToWrite } from '../../src/formats/dtype.js';
import { PyOrderedDict, TorchTensorToWrite } from '../../src/formats/pickle.js';
import { SafetensorsFile, writeSafetensors } from '../../src/formats/safetensors.js';
import { writeTorchFile } from '../../src/formats/torch.js';
import { Linear } from '../../src/nn/layers.js';
import { disposeModule, Module, namedParams } from '../../src/nn/module.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { expectIdentical } from './helpers.js';

const SINGLE = fixture('tiny-sd1-original', 'tiny-sd1.safetensors');
const FOLDER = fixture('tiny-sd1');
const TINY = { overrides: { text_encoder: { num_attention_heads: 4 } } };
const tmp = useTmpDir('sdtrain-ckpt-err-');

async function readAll(path: string): Promise<Map<string, TensorToWrite>> {
  const f = await SafetensorsFile.open(path);
  const out = new Map<string, TensorToWrite>();
  try {
    for (const t of f.tensors) {
      const r = await f.read(t.name);
      out.set(t.name, { shape: r.shape, data: r.data as Float32Array });
    }
  } finally {
    await f.close();
  }
  return out;
}

describe.runIf(hasShared)('checkpoint errors and variants', () => {
  let tensors: Map<string, TensorToWrite>;
  let reference: LoadedSingleFile;
  beforeAll(async () => {
    tensors = await readAll(SINGLE);
    reference = await loadSingleFile(SINGLE, TINY);
  });
  afterAll(() => reference && disposePipeline(reference));

  it('missing, unexpected and mis-shaped keys → one CheckpointMismatchError naming them, nothing allocated', async () => {
    const t = new Map(tensors);
    t.delete('model.diffusion_model.output_blocks.4.1.proj_out.bias');
    t.set('model.diffusion_model.extra_block.weight', { shape: [2], data: new Float32Array(2) });
    t.set('first_stage_model.decoder.mid.attn_1.q.bias', { shape: [65], data: new Float32Array(65) });
    const path = join(tmp(), 'broken.safetensors');
    await writeSafetensors(path, t);
    const before = tf.memory().numTensors;
    const err = await loadSingleFile(path, TINY).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointMismatchError);
    const e = err as CheckpointMismatchError;
    expect(e.missing).toEqual(['model.diffusion_model.output_blocks.4.1.proj_out.bias']);
    expect(e.unexpected).toEqual(['model.diffusion_model.extra_block.weight']);
    expect(e.misshaped).toEqual(['first_stage_model.decoder.mid.attn_1.q.bias (file [65], model expects [64])']);
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/missing 1 key: model\.diffusion_model\.output_blocks\.4\.1\.proj_out\.bias; unexpected 1 key: model\.diffusion_model\.extra_block\.weight; 1 key with the wrong shape: first_stage_model/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('long lists are cut: "a, b, c, … and N more"', async () => {
    const t = new Map([...tensors].filter(([k]) => !k.startsWith('model.diffusion_model.output_blocks.')));
    const path = join(tmp(), 'no-output-blocks.safetensors');
    await writeSafetensors(path, t);
    const e = (await loadSingleFile(path, TINY).catch((x: unknown) => x)) as CheckpointMismatchError;
    expect(e).toBeInstanceOf(CheckpointMismatchError);
    expect(e.message).toMatch(/missing \d+ keys: [^,]+, [^,]+, [^,]+, … and \d+ more/);
  });

  it('original-only keys are ignored on read (schedule buffers, EMA, position_ids)', async () => {
    const t = new Map(tensors);
    t.set('betas', { shape: [1000], data: new Float32Array(1000) });
    t.set('model_ema.num_updates', { shape: [], data: new Int32Array(1), dtype: 'I64' });
    t.set('model_ema.diffusion_modelinput_blocks00weight', { shape: [2], data: new Float32Array(2) });
    t.set('cond_stage_model.transformer.text_model.embeddings.position_ids', { shape: [1, 77], data: Int32Array.from({ length: 77 }, (_, i) => i), dtype: 'I64' });
    const path = join(tmp(), 'extras.safetensors');
    await writeSafetensors(path, t);
    const p = await loadSingleFile(path, TINY);
    try {
      expectIdentical(p, reference);
    } finally {
      disposePipeline(p);
    }
  });

  it('a truncated file → the reader error naming the file', async () => {
    const path = join(tmp(), 'truncated.safetensors');
    writeFileSync(path, readFileSync(SINGLE).subarray(0, 4_000_000));
    const err = await loadSingleFile(path, TINY).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FormatError);
    expect((err as Error).message).toContain(path);
    expect((err as Error).message).toMatch(/truncated/);
  });

  it('a folder without model_index.json → a clear error', async () => {
    const dir = join(tmp(), 'not-a-pipeline');
    mkdirSync(dir, { recursive: true });
    await expect(loadDiffusersFolder(dir)).rejects.toThrow(/not a diffusers folder: model_index\.json is missing/);
  });

  it('a component folder without weights → names the folder and the expected files', async () => {
    const dir = join(tmp(), 'no-vae-weights');
    cpSync(FOLDER, dir, { recursive: true });
    rmSync(join(dir, 'vae', 'diffusion_pytorch_model.safetensors'));
    await expect(loadDiffusersFolder(dir)).rejects.toThrow(/vae: no weights: expected one of diffusion_pytorch_model\.safetensors/);
  });

  it('a .ckpt (torch zip, Lightning {state_dict, global_step}) loads identically', async () => {
    const sd = new PyOrderedDict([...tensors].map(([k, v]) => [k, new TorchTensorToWrite(v)]));
    const path = join(tmp(), 'tiny.ckpt');
    await writeTorchFile(path, new PyOrderedDict([['global_step', 470000], ['state_dict', sd]]));
    const p = await loadSingleFile(path, TINY);
    try {
      expectIdentical(p, reference);
    } finally {
      disposePipeline(p);
    }
  });

  describe('VAE override', () => {
    const vaeKeys = () => [...tensors].filter(([k]) => k.startsWith('first_stage_model.'));
    /** Same VAE, every value negated, so the test sees which VAE was used. */
    const negated = (v: TensorToWrite): TensorToWrite => ({ shape: v.shape, data: (v.data as Float32Array).map((x) => -x) });

    async function loadWith(vaePath: string): Promise<void> {
      const p = await loadSingleFile(SINGLE, { ...TINY, vae: vaePath });
      try {
        const a = namedParams(p.vae).get('decoder.conv_out.weight')!.t.dataSync();
        const b = namedParams(reference.vae).get('decoder.conv_out.weight')!.t.dataSync();
        expect(a[0]).toBe(-b[0]!);
        expect(namedParams(p.unet).get('conv_in.bias')!.t.dataSync()).toEqual(namedParams(reference.unet).get('conv_in.bias')!.t.dataSync());
      } finally {
        disposePipeline(p);
      }
    }

    it('original layout without prefix, with training-loss tensors (A1111 VAE .ckpt style)', async () => {
      const t = new Map(vaeKeys().map(([k, v]) => [k.slice('first_stage_model.'.length), negated(v)]));
      t.set('loss.discriminator.main.0.weight', { shape: [2], data: new Float32Array(2) });
      const path = join(tmp(), 'vae-original.safetensors');
      await writeSafetensors(path, t);
      await loadWith(path);
    });

    it('original layout with the first_stage_model. prefix', async () => {
      const path = join(tmp(), 'vae-prefixed.safetensors');
      await writeSafetensors(path, new Map(vaeKeys().map(([k, v]) => [k, negated(v)])));
      await loadWith(path);
    });

    it('diffusers layout with the old query/key/value/proj_attn names', async () => {
      const t = await readAll(join(FOLDER, 'vae', 'diffusion_pytorch_model.safetensors'));
      const old = new Map<string, TensorToWrite>();
      for (const [k, v] of t) {
        const renamed = k.replace(/attentions\.0\.to_q\./, 'attentions.0.query.').replace(/attentions\.0\.to_k\./, 'attentions.0.key.')
          .replace(/attentions\.0\.to_v\./, 'attentions.0.value.').replace(/attentions\.0\.to_out\.0\./, 'attentions.0.proj_attn.');
        old.set(renamed, negated(v));
      }
      expect([...old.keys()].some((k) => k.includes('.query.'))).toBe(true);
      const path = join(tmp(), 'vae-old-diffusers.safetensors');
      await writeSafetensors(path, old);
      await loadWith(path);
    });

    it('a file that is not a VAE is refused', async () => {
      await expect(loadSingleFile(SINGLE, { ...TINY, vae: join(FOLDER, 'text_encoder', 'model.safetensors') })).rejects.toThrow(/not a VAE/);
    });
  });

  it('a text encoder as pytorch_model.bin (torch zip) in a diffusers folder', async () => {
    const dir = join(tmp(), 'bin-folder');
    cpSync(FOLDER, dir, { recursive: true });
    const te = await readAll(join(FOLDER, 'text_encoder', 'model.safetensors'));
    rmSync(join(dir, 'text_encoder', 'model.safetensors'));
    await writeTorchFile(join(dir, 'text_encoder', 'pytorch_model.bin'), new PyOrderedDict([...te].map(([k, v]) => [k, new TorchTensorToWrite(v)])));
    const p = await loadDiffusersFolder(dir);
    try {
      expectIdentical(p, reference);
    } finally {
      disposePipeline(p);
    }
  });

  it('sharded diffusers weights (*.safetensors.index.json)', async () => {
    const dir = join(tmp(), 'sharded');
    cpSync(FOLDER, dir, { recursive: true });
    const unet = await readAll(join(FOLDER, 'unet', 'diffusion_pytorch_model.safetensors'));
    const keys = [...unet.keys()];
    const half = Math.ceil(keys.length / 2);
    const shards = [keys.slice(0, half), keys.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [i, ks] of shards.entries()) {
      const name = `diffusion_pytorch_model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensors(join(dir, 'unet', name), new Map(ks.map((k) => [k, unet.get(k)!])));
      for (const k of ks) weightMap[k] = name;
    }
    rmSync(join(dir, 'unet', 'diffusion_pytorch_model.safetensors'));
    writeFileSync(join(dir, 'unet', 'diffusion_pytorch_model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const p = await loadDiffusersFolder(dir);
    try {
      expectIdentical(p, reference);
    } finally {
      disposePipeline(p);
    }
  });

  it('loadComponentFolder: one component folder (sharded, fp16-only, bare VAE folder), checked like a whole folder', async () => {
    const dir = join(tmp(), 'components');
    cpSync(FOLDER, dir, { recursive: true });
    const bytes = (p: { t: tf.Tensor }) => {
      const d = p.t.dataSync() as Float32Array;
      return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    };
    const same = (a: Module, b: Module) => {
      const pb = namedParams(b);
      expect([...namedParams(a)].filter(([k, p]) => !bytes(p).equals(bytes(pb.get(k)!))).map(([k]) => k)).toEqual([]);
      expect(namedParams(a).size).toBe(pb.size);
    };
    // sharded U-Net, reusing the layout of the test above
    const unet = await readAll(join(FOLDER, 'unet', 'diffusion_pytorch_model.safetensors'));
    const keys = [...unet.keys()];
    const weightMap = Object.fromEntries(keys.map((k, i) => [k, `part-${i % 2}.safetensors`]));
    for (const part of [0, 1]) {
      await writeSafetensors(join(dir, 'unet', `part-${part}.safetensors`), new Map(keys.filter((_, i) => i % 2 === part).map((k) => [k, unet.get(k)!])));
    }
    rmSync(join(dir, 'unet', 'diffusion_pytorch_model.safetensors'));
    writeFileSync(join(dir, 'unet', 'diffusion_pytorch_model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    const u = await loadComponentFolder(join(dir, 'unet'), 'unet');
    same(u, reference.unet);
    disposeModule(u);
    // text encoder stored only as the fp16 variant (values rounded to half precision)
    const te = await readAll(join(FOLDER, 'text_encoder', 'model.safetensors'));
    rmSync(join(dir, 'text_encoder', 'model.safetensors'));
    await writeSafetensors(join(dir, 'text_encoder', 'model.fp16.safetensors'), new Map([...te].map(([k, v]) => [k, { ...v, dtype: 'F16' as const }])));
    const t = await loadComponentFolder(join(dir, 'text_encoder'), 'text_encoder');
    const w = namedParams(t).get('text_model.final_layer_norm.weight')!.t.dataSync();
    const ref = namedParams(reference.textEncoder).get('text_model.final_layer_norm.weight')!.t.dataSync();
    expect(Math.max(...w.map((x, i) => Math.abs(x - ref[i]!)))).toBeLessThan(1e-3);
    disposeModule(t);
    // a VAE folder without config.json: the fallback config, else an error naming config.json
    rmSync(join(dir, 'vae', 'config.json'));
    await expect(loadComponentFolder(join(dir, 'vae'), 'vae')).rejects.toThrow(/config\.json/);
    const v = await loadComponentFolder(join(dir, 'vae'), 'vae', { fallbackConfig: reference.configs.vae });
    same(v, reference.vae);
    disposeModule(v);
    // an extra tensor: one CheckpointMismatchError naming it
    const vae = await readAll(join(FOLDER, 'vae', 'diffusion_pytorch_model.safetensors'));
    vae.set('decoder.extra.weight', { shape: [2], data: new Float32Array(2) });
    await writeSafetensors(join(dir, 'vae', 'diffusion_pytorch_model.safetensors'), vae);
    const err = await loadComponentFolder(join(dir, 'vae'), 'vae', { fallbackConfig: reference.configs.vae }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointMismatchError);
    expect((err as Error).message).toMatch(/vae weights do not match the model: unexpected 1 key: decoder\.extra\.weight/);
  });

  it('loadStateDict on a plain module: a rank-2 parameter takes a [out, in, 1, 1] tensor (1x1 conv as linear)', async () => {
    class Tiny extends Module {
      readonly proj = new Linear(3, 2);
    }
    const path = join(tmp(), 'linear.safetensors');
    await writeSafetensors(path, { 'proj.weight': { shape: [2, 3, 1, 1], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }, 'proj.bias': { shape: [2], data: Float32Array.from([7, 8]) } });
    const m = new Tiny();
    const src = await openSource(path);
    try {
      await loadStateDict(m, src);
      expect(m.proj.weight.t.shape).toEqual([2, 3]);
      expect([...m.proj.weight.t.dataSync()]).toEqual([1, 2, 3, 4, 5, 6]);
      m.proj.weight.t.dispose();
      m.proj.bias!.t.dispose();
    } finally {
      await src.close();
    }
  });
});
