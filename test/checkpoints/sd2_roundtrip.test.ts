// An SD 2.x-shaped pipeline (OpenCLIP text encoder, linear proj_in, 64-channel heads) with random weights: written as an
// original single file it gets OpenCLIP's fused q|k|v rows and the tensors diffusers drops; read back it derives the
// same configs and the same weights. There is no SD 2.x fixture, so this is the end-to-end check of those paths.
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SCHEDULE_BUFFERS, scheduleBuffers } from '../../src/checkpoints/ldm_keys.js';
import { hwioToOihw, oihwToHwio } from '../../src/checkpoints/load.js';
import { buildPipeline, disposePipeline, type PipelineConfigs } from '../../src/checkpoints/pipeline.js';
import { loadSingleFile, writeSingleFile } from '../../src/checkpoints/single_file.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { SD15_VAE, SD21_TEXT_ENCODER, SD21_UNET } from '../../src/models/presets.js';
import { namedParams } from '../../src/nn/module.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { expectIdentical } from './helpers.js';

const tmp = useTmpDir('sdtrain-sd2-');

const CONFIGS: PipelineConfigs = {
  unet: {
    ...SD21_UNET,
    block_out_channels: [64, 64],
    down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
    attention_head_dim: [1, 1],
    layers_per_block: 1,
    cross_attention_dim: 64,
  },
  vae: { ...SD15_VAE, block_out_channels: [32, 32], down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'], layers_per_block: 1, sample_size: 768 },
  text_encoder: { ...SD21_TEXT_ENCODER, vocab_size: 100, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 1 },
};

function randomPipeline() {
  const p = buildPipeline(CONFIGS);
  let s = 12345;
  for (const m of [p.unet, p.vae, p.textEncoder]) {
    for (const param of namedParams(m).values()) {
      const data = new Float32Array(param.size);
      for (let i = 0; i < data.length; i++) {
        s = (s * 1103515245 + 12345) >>> 0;
        data[i] = s / 2 ** 32 - 0.5;
      }
      param.set(tf.tensor(data, [...param.shape]));
    }
  }
  return p;
}

describe('SD 2.x layout round trip', () => {
  const pipe = randomPipeline();
  afterAll(() => disposePipeline(pipe));

  it('writes fused in_proj rows, the dropped OpenCLIP tensors and (on request) the schedule buffers; reads back identically', async () => {
    const path = join(tmp(), 'sd2.safetensors');
    await writeSingleFile(path, pipe, { scheduleBuffers: true, metadata: { a: 'b' } });
    const f = await SafetensorsFile.open(path);
    const names = new Set(f.tensors.map((t) => t.name));
    try {
      const P = 'cond_stage_model.model.';
      const shape = (n: string) => f.tensors.find((t) => t.name === n)?.shape;
      expect(shape(`${P}transformer.resblocks.0.attn.in_proj_weight`)).toEqual([192, 64]);
      expect(shape(`${P}transformer.resblocks.2.attn.in_proj_weight`)).toEqual([192, 64]); // synthesised last block
      expect(shape(`${P}text_projection`)).toEqual([64, 64]);
      expect(shape(`${P}logit_scale`)).toEqual([]);
      expect(shape(`${P}positional_embedding`)).toEqual([77, 64]);
      for (const b of SCHEDULE_BUFFERS) expect(names.has(b), b).toBe(true);
      // rows q | k | v of the fused tensor are the three projections
      const fused = (await f.read(`${P}transformer.resblocks.1.attn.in_proj_weight`)).data as Float32Array;
      const layer = pipe.textEncoder.text_model.encoder.layers[1]!;
      expect(fused.subarray(64 * 64, 2 * 64 * 64)).toEqual(layer.self_attn.k_proj.weight.t.dataSync());
      expect(f.metadata).toMatchObject({ a: 'b' });
      expect(Object.keys(f.metadata).sort()).toEqual(['a', 'sdtrain.configs']);
    } finally {
      await f.close();
    }
    const back = await loadSingleFile(path, { predictionType: 'v_prediction' });
    try {
      expect(back.family).toBe('sd2');
      expect(back.configs).toEqual(CONFIGS);
      expect(back.assumed.join()).not.toMatch(/prediction_type/);
      expect(back.schedulerConfig.prediction_type).toBe('v_prediction');
      expectIdentical(back, pipe);
    } finally {
      disposePipeline(back);
    }
  });

  it('fp16 single file: every tensor stored F16', async () => {
    const path = join(tmp(), 'sd2-fp16.safetensors');
    await writeSingleFile(path, pipe, { dtype: 'F16' });
    const f = await SafetensorsFile.open(path);
    expect(new Set(f.tensors.map((t) => t.dtype))).toEqual(new Set(['F16']));
    await f.close();
  });
});

describe('layout helpers', () => {
  it('oihwToHwio equals tf.transpose([2, 3, 1, 0]) and hwioToOihw inverts it', () => {
    const shape = [5, 3, 2, 4];
    const data = Float32Array.from({ length: 120 }, (_, i) => i);
    const want = tf.tidy(() => tf.tensor4d(data, shape as [number, number, number, number]).transpose([2, 3, 1, 0]).dataSync());
    const hwio = oihwToHwio(data, shape);
    expect(hwio).toEqual(want);
    expect(hwioToOihw(hwio, [2, 4, 3, 5])).toEqual(data);
  });
});

describe.runIf(hasShared)('schedule buffers', () => {
  it("alphas_cumprod equals diffusers' scaled_linear table (fixture sched_tables)", async () => {
    const f = await SafetensorsFile.open(fixture('parity', 'tiny-sd1', 'sched_tables.safetensors'));
    try {
      const want = (await f.read('outputs/alphas_cumprod')).data as Float32Array;
      const ours = scheduleBuffers(0.00085, 0.012, 1000).alphas_cumprod;
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - want[i]!));
      expect(worst).toBeLessThan(1e-5);
    } finally {
      await f.close();
    }
  });
});
