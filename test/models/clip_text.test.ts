import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from '../../src/backend/backend.js';
import { loadComponentFolder } from '../../src/checkpoints/diffusers_folder.js';
import { ConfigError } from '../../src/errors.js';
import { CLIPTextModel, CLIP_TEXT_CONFIG_DEFAULTS, parseClipTextConfig, type CLIPTextConfig } from '../../src/models/clip_text.js';
import { disposeModule, namedParams, paramCount } from '../../src/nn/module.js';
import { maxAbsDiff } from '../../src/parity/compare.js';
import { FixtureCase, type CaseSpec } from '../../src/parity/fixture.js';
import { fixture, FIXTURES, hasShared } from '../helpers/shared.js';

const readJson = (path: string): unknown => JSON.parse(readFileSync(path, 'utf8'));

describe('parseClipTextConfig', () => {
  it('fills transformers defaults and ignores unknown keys', () => {
    const cfg = parseClipTextConfig({ hidden_size: 64, num_attention_heads: 4, architectures: ['CLIPTextModel'], dropout: 0 });
    expect(cfg).toEqual({ ...CLIP_TEXT_CONFIG_DEFAULTS, hidden_size: 64, num_attention_heads: 4 });
  });

  it('reads a full CLIPConfig through text_config', () => {
    expect(parseClipTextConfig({ model_type: 'clip', text_config: { hidden_size: 768, num_attention_heads: 12 } }).hidden_size).toBe(768);
  });

  it.each([
    [{ hidden_act: 'relu' }, /'hidden_act' must be one of 'quick_gelu', 'gelu'/],
    [{ num_hidden_layers: 0 }, /'num_hidden_layers' must be a positive integer, got 0/],
    [{ vocab_size: 1.5 }, /'vocab_size' must be a positive integer/],
    [{ hidden_size: 30, num_attention_heads: 4 }, /must be divisible by 'num_attention_heads'/],
    [{ layer_norm_eps: '1e-5' }, /'layer_norm_eps' must be a positive number/],
    [[1, 2], /expected a JSON object, got an array/],
  ])('rejects %j', (json, message) => {
    expect(() => parseClipTextConfig(json, 'te/config.json')).toThrow(ConfigError);
    expect(() => parseClipTextConfig(json, 'te/config.json')).toThrow(message);
  });
});

interface Manifest {
  diffusers: { text_encoder: { param_count: number; num_tensors: number; tensors: Record<string, number[]> } };
  diffusers_configs: { text_encoder: unknown };
}

describe.runIf(hasShared)('CLIPTextModel skeleton vs the real checkpoints (manifests)', () => {
  it.each([
    ['sd15', 123_060_480, 'quick_gelu', 12],
    ['sd21_v', 340_387_840, 'gelu', 23],
  ])('%s: exactly the transformers keys and shapes, %i parameters', (name, count, act, layers) => {
    const m = readJson(fixture('manifests', `${name}.json`)) as Manifest;
    const cfg = parseClipTextConfig(m.diffusers_configs.text_encoder);
    expect(cfg.hidden_act).toBe(act);
    expect(cfg.num_hidden_layers).toBe(layers);
    const before = tf.memory().numTensors;
    const model = new CLIPTextModel(cfg);
    expect(tf.memory().numTensors).toBe(before); // constructors only declare shapes
    const params = namedParams(model);
    // transformers' position_ids buffer is not a parameter; the manifests (param-only) do not list it either
    const expected = Object.entries(m.diffusers.text_encoder.tensors).filter(([k]) => !k.endsWith('embeddings.position_ids'));
    expect([...params.keys()].sort()).toEqual(expected.map(([k]) => k).sort());
    for (const [k, shape] of expected) expect(params.get(k)!.shape, k).toEqual(shape);
    expect(params.size).toBe(m.diffusers.text_encoder.num_tensors);
    expect(paramCount(model)).toBe(count);
    expect(paramCount(model)).toBe(m.diffusers.text_encoder.param_count);
  });
});

describe.runIf(hasShared)('CLIPTextModel on tiny-sd1 (parity with transformers 4.36)', () => {
  let model: CLIPTextModel;
  let cfg: CLIPTextConfig;
  let fx: FixtureCase;
  let ids: tf.Tensor2D;
  const ref = new Map<string, Float32Array>();

  const loadModel = () => loadComponentFolder(fixture('tiny-sd1', 'text_encoder'), 'text_encoder');

  beforeAll(async () => {
    cfg = parseClipTextConfig(readJson(fixture('tiny-sd1', 'text_encoder', 'config.json')));
    model = await loadModel();
    const jsonPath = fixture('parity', 'tiny-sd1', 'text_encoder.json');
    fx = new FixtureCase(FIXTURES, jsonPath, readJson(jsonPath) as CaseSpec);
    const input = await fx.input('input_ids');
    ids = tf.tensor2d(input.data as Int32Array, input.shape as [number, number], 'int32');
    for (const name of Object.keys(fx.spec.outputs)) ref.set(name, (await fx.output(name)).data as Float32Array);
    for (const name of Object.keys(fx.spec.intermediates ?? {})) {
      const t = await fx.tensor(fx.spec.intermediates![name]!.key);
      ref.set(name, t.data instanceof Float32Array ? t.data : Float32Array.from(t.data));
    }
  });

  afterAll(async () => {
    disposeModule(model);
    ids.dispose();
    await fx.close();
  });

  const atol = (name: string) => fx.spec.outputs[name]!.suggested_atol!;

  it('last_hidden_state and pooler_output match within their suggested atol', () => {
    const out = model.forward(ids, { outputHiddenStates: true });
    const last = out.lastHiddenState.dataSync() as Float32Array;
    expect(out.lastHiddenState.shape).toEqual([2, 77, 32]);
    expect(maxAbsDiff(last, ref.get('last_hidden_state')!)).toBeLessThanOrEqual(atol('last_hidden_state'));
    expect(out.pooledOutput.shape).toEqual([2, 32]);
    expect(maxAbsDiff(out.pooledOutput.dataSync() as Float32Array, ref.get('pooler_output')!)).toBeLessThanOrEqual(atol('pooler_output'));
    // hidden_states[-2], the raw input of the final layer norm for "CLIP skip 2"
    const hs = out.hiddenStates!;
    expect(hs).toHaveLength(cfg.num_hidden_layers + 1);
    expect(maxAbsDiff(hs.at(-2)!.dataSync() as Float32Array, ref.get('penultimate_hidden_state')!)).toBeLessThanOrEqual(
      atol('penultimate_hidden_state'),
    );
    // every intermediate hidden state, at the loosest output tolerance (they have none of their own)
    hs.forEach((h, i) => expect(maxAbsDiff(h.dataSync() as Float32Array, ref.get(`hidden_states_${i}`)!), `hidden_states_${i}`).toBeLessThanOrEqual(3e-5));
    const pooledIndex = model.pooledIndex(ids);
    expect(Array.from(pooledIndex.dataSync())).toEqual(Array.from(ref.get('pooled_index')!));
    tf.dispose([out.lastHiddenState, out.pooledOutput, ...hs, pooledIndex]);
  });

  it('clipSkip 2 == final_layer_norm(hidden_states[-2]) (clip_skip_2_embeds), clipSkip 1 == last_hidden_state', () => {
    const skip2 = tf.tidy(() => model.forward(ids, { clipSkip: 2 }).lastHiddenState as tf.Tensor);
    expect(maxAbsDiff(skip2.dataSync() as Float32Array, ref.get('clip_skip_2_embeds')!)).toBeLessThanOrEqual(atol('clip_skip_2_embeds'));
    const skip1 = tf.tidy(() => model.forward(ids, { clipSkip: 1 }).lastHiddenState as tf.Tensor);
    expect(maxAbsDiff(skip1.dataSync() as Float32Array, ref.get('last_hidden_state')!)).toBeLessThanOrEqual(atol('last_hidden_state'));
    tf.dispose([skip1, skip2]);
    expect(() => model.forward(ids, { clipSkip: 0 })).toThrow(/clip skip must be an integer from 1 to 3/);
    expect(() => model.forward(ids, { clipSkip: 4 })).toThrow(ConfigError);
  });

  it('inputsEmbeds = embed(inputIds) reproduces the plain forward exactly', () => {
    const [a, b] = tf.tidy((): tf.Tensor[] => [model.forward(ids).lastHiddenState, model.forward(ids, { inputsEmbeds: model.embed(ids) }).lastHiddenState]);
    expect(Array.from(a!.dataSync())).toEqual(Array.from(b!.dataSync()));
    tf.dispose([a!, b!]);
    expect(() => tf.tidy(() => model.forward(ids, { inputsEmbeds: tf.zeros([2, 77, 16]) }))).toThrow(/expected \[2, 77, 32\]/);
  });

  it('pools at the first occurrence of the largest id (a TI id above 49407 takes it over)', () => {
    const rows = [
      [49406, 320, 1125, 49407, 49407, 49407],
      [49406, 320, 49408, 1125, 49408, 49407], // textual-inversion id
      [49406, 49407, 49407, 49407, 49407, 49407],
    ];
    const idx = tf.tidy(() => model.pooledIndex(tf.tensor2d(rows, undefined, 'int32')));
    expect(Array.from(idx.dataSync())).toEqual([3, 2, 1]);
    idx.dispose();
    // a non-legacy config (eos_token_id != 2) pools at the first eos_token_id instead
    const modern = new CLIPTextModel({ ...cfg, eos_token_id: 49407 });
    const idx2 = tf.tidy(() => modern.pooledIndex(tf.tensor2d(rows, undefined, 'int32')));
    expect(Array.from(idx2.dataSync())).toEqual([3, 5, 1]);
    idx2.dispose();
  });

  it('a tidy forward leaves no tensors behind', () => {
    tf.tidy(() => model.forward(ids)); // warm-up
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      model.forward(ids, { outputHiddenStates: true, clipSkip: 2 });
      model.forward(ids, { inputsEmbeds: model.embed(ids) });
    });
    expect(tf.memory().numTensors).toBe(before);
  });

  describe('gradient w.r.t. an injected (textual-inversion) embedding row: wasm == cpu', () => {
    // Token id 49408 (one past the vocabulary) marks the placeholder, as diffusers' textual inversion registers it;
    // it appears twice in row 0 and once in row 1, and pools row 1 (argmax), so the pooled path is exercised too.
    const placeholder = 49408;
    const rows = [
      [49406, 320, placeholder, 1125, 539, placeholder, 49407],
      [49406, 320, 1125, placeholder, 49407, 49407, 49407],
    ];
    const t = 77;
    const padded = rows.map((r) => [...r, ...Array<number>(t - r.length).fill(49407)]);

    /**
     * loss = Σ lastHiddenState·w1 + Σ pooled·w2 with fixed w's. Two ways to inject the row: (a) through inputsEmbeds
     * (tf.where over the table lookup); (b) a gather from [table; row] (its gradient is UnsortedSegmentSum).
     * (b) runs on wasm only: tfjs' cpu UnsortedSegmentSum loops over all 49,409 segments per row (~20 s here); the
     * cpu reference for both is (a), the same function of the row.
     */
    const gradients = async (backend: 'wasm' | 'cpu') => {
      await useBackend(backend); // (quiets the cpu backend's Node.js banner)
      const m = await loadModel();
      try {
        return tf.tidy(() => {
          const idsT = tf.tensor2d(padded, undefined, 'int32');
          const isPh = idsT.equal(tf.scalar(placeholder, 'int32')); // [B, T]
          const safeIds = tf.where(isPh, tf.zerosLike(idsT), idsT) as tf.Tensor2D;
          const shape: [number, number, number] = [2, t, cfg.hidden_size];
          const row0 = tf.tensor1d(Array.from({ length: cfg.hidden_size }, (_, i) => Math.sin(i + 1) * 0.05));
          const w1 = tf.tensor3d(Float32Array.from({ length: 2 * t * cfg.hidden_size }, (_, i) => Math.cos(i * 0.37)), shape);
          const w2 = tf.tensor2d(Float32Array.from({ length: 2 * cfg.hidden_size }, (_, i) => Math.sin(i * 0.11)), [2, cfg.hidden_size]);
          const loss = (embeds: tf.Tensor3D) => {
            const out = m.forward(idsT, { inputsEmbeds: embeds });
            return out.lastHiddenState.mul(w1).sum().add(out.pooledOutput.mul(w2).sum()) as tf.Scalar;
          };
          const viaWhere = tf.grad((row: tf.Tensor) => {
            const embeds = tf.where(isPh.expandDims(2).broadcastTo(shape), row.reshape([1, 1, -1]).broadcastTo(shape), m.embed(safeIds));
            return loss(embeds as tf.Tensor3D);
          })(row0);
          const viaGather =
            backend === 'wasm'
              ? tf.grad((row: tf.Tensor) => {
                  const table = tf.concat([m.text_model.embeddings.token_embedding.weight.t, row.reshape([1, -1])], 0); // [V+1, C]
                  return loss(tf.gather(table, idsT) as tf.Tensor3D);
                })(row0)
              : undefined;
          return { viaWhere: viaWhere.dataSync() as Float32Array, viaGather: viaGather?.dataSync() as Float32Array | undefined };
        });
      } finally {
        disposeModule(m);
      }
    };

    it('through inputsEmbeds and through gather (UnsortedSegmentSum)', async () => {
      const original = tf.getBackend() as 'wasm' | 'cpu';
      let wasm: Awaited<ReturnType<typeof gradients>>;
      let cpu: Awaited<ReturnType<typeof gradients>>;
      try {
        wasm = await gradients('wasm');
        cpu = await gradients('cpu');
      } finally {
        await useBackend(original);
      }
      const scale = Math.max(...Array.from(cpu.viaWhere, Math.abs));
      expect(scale).toBeGreaterThan(0);
      expect(maxAbsDiff(wasm.viaWhere, cpu.viaWhere)).toBeLessThanOrEqual(1e-5 * scale);
      expect(maxAbsDiff(wasm.viaGather!, cpu.viaWhere)).toBeLessThanOrEqual(1e-5 * scale);
    });
  });
});
