// Applying LoRAs to the tiny SD1 fixture: the kohya LoCon file and the PEFT file (same deltas) merge to the same
// weights, the descriptor's worked examples are reproduced, weight 0 and remove() give the base model bit for bit,
// nothing leaks, and bad inputs fail with errors that name what is wrong.
import * as tf from '@tensorflow/tfjs';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDiffusersFolder, type LoadedDiffusersFolder } from '../../src/checkpoints/diffusers_folder.js';
import { buildPipeline, disposePipeline } from '../../src/checkpoints/pipeline.js';
import { FormatError } from '../../src/errors.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { PRESETS } from '../../src/models/presets.js';
import { namedParams } from '../../src/nn/module.js';
import { applyLoras, loraDelta } from '../../src/lora/apply.js';
import { loraTargets, type LoraModels } from '../../src/lora/names.js';
import { LoraMismatchError, loraFitProblem, readLora, type LoraFile } from '../../src/lora/read.js';
import { writeKohyaLora } from '../../src/lora/write.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { expectStats, randomModule, toTorch, type DeltaStats } from './helpers.js';

const KOHYA = fixture('formats', 'kohya_lora_tiny_locon.safetensors');
const PEFT = fixture('formats', 'diffusers_peft_lora_tiny.safetensors');
const tmp = useTmpDir('sdtrain-lora-');

/** Every U-Net and text-encoder weight, copied to the host. */
function snapshot(m: LoraModels): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [c, model] of [['unet', m.unet], ['te', m.textEncoder]] as const) {
    for (const [k, p] of namedParams(model)) out.set(`${c}.${k}`, p.t.dataSync() as Float32Array);
  }
  return out;
}

function expectBitIdentical(a: Map<string, Float32Array>, b: Map<string, Float32Array>, only?: (k: string) => boolean): void {
  for (const [k, v] of a) {
    if (only && !only(k)) continue;
    const w = b.get(k)!;
    expect(Buffer.from(w.buffer, w.byteOffset, w.byteLength).equals(Buffer.from(v.buffer, v.byteOffset, v.byteLength)), k).toBe(true);
  }
}

function maxAbsDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let max = 0;
  for (const [k, v] of a) v.forEach((x, i) => (max = Math.max(max, Math.abs(x - b.get(k)![i]!))));
  return max;
}

const changed = (a: Map<string, Float32Array>, b: Map<string, Float32Array>) => [...a.keys()].filter((k) => !a.get(k)!.every((x, i) => x === b.get(k)![i]));

describe.runIf(hasShared)('LoRA on the tiny SD1 model', () => {
  let pipe: LoadedDiffusersFolder;
  let base: Map<string, Float32Array>;
  let kohya: LoraFile;
  let peft: LoraFile;

  beforeAll(async () => {
    pipe = await loadDiffusersFolder(fixture('tiny-sd1'));
    base = snapshot(pipe);
    kohya = await readLora(KOHYA, pipe);
    peft = await readLora(PEFT, pipe);
  });
  afterAll(() => pipe && disposePipeline(pipe));

  it('reads the kohya LoCon file and the PEFT file to the same 215 modules', () => {
    expect([kohya.layout, peft.layout]).toEqual(['kohya', 'peft']);
    expect([kohya.unknown, peft.unknown]).toEqual([[], []]);
    expect(kohya.modules.length).toBe(215);
    const targets = loraTargets(pipe);
    const expected = [...targets.values()].filter((t) => t.group !== 'extra').map((t) => t.name);
    expect(new Set(kohya.modules.map((m) => m.name))).toEqual(new Set(expected));
    const byName = new Map(peft.modules.map((m) => [m.name, m]));
    for (const k of kohya.modules) {
      const p = byName.get(k.name)!;
      expect([p.path, p.kind, p.rank, p.alpha, p.down.shape, p.up.shape]).toEqual([k.path, k.kind, k.rank, k.alpha, k.down.shape, k.up.shape]);
      expect([p.rank, p.alpha]).toEqual([2, 1]); // lora_adapter_metadata: r 2, lora_alpha 1.0
      expect(p.down.data).toEqual(k.down.data);
      expect(p.up.data).toEqual(k.up.data);
    }
  });

  it("reproduces the descriptor's worked examples (linear, 1x1 and 3x3 conv, text encoder)", () => {
    const d = JSON.parse(readFileSync(`${KOHYA}.json`, 'utf8'));
    const targets = loraTargets(pipe);
    for (const [name, ex] of Object.entries(d.worked_examples as Record<string, unknown>)) {
      if (name === 'description') continue;
      const e = ex as { alpha: number; rank: number; delta_w_multiplier_1: unknown[]; 'delta_w_multiplier_0.7': DeltaStats };
      const m = kohya.modules.find((x) => x.name === name)!;
      expect([m.alpha, m.rank]).toEqual([e.alpha, e.rank]);
      const full = loraDelta(m, targets.get(name)!, 1);
      const torch = toTorch(full);
      const want = (e.delta_w_multiplier_1 as number[]).flat(3) as number[];
      const got = torch.dataSync();
      expect(got.length).toBe(want.length);
      want.forEach((x, i) => expect(Math.abs(got[i]! - x)).toBeLessThan(1e-8));
      tf.dispose([full, torch]);
      const part = loraDelta(m, targets.get(name)!, 0.7);
      expectStats(part, e['delta_w_multiplier_0.7']);
      part.dispose();
    }
  });

  it('kohya and PEFT merge to the same weights; remove() restores the base bit for bit without leaking', () => {
    const before = tf.memory().numTensors;
    const h1 = applyLoras(pipe, [{ file: kohya, weight: 1 }]);
    expect(h1.mergedWeights).toBe(215);
    expect(h1.skipped).toEqual([]);
    const viaKohya = snapshot(pipe);
    expect(changed(base, viaKohya).length).toBe(215);
    h1.remove();
    h1.remove(); // idempotent
    expect(h1.active).toBe(false);
    expectBitIdentical(base, snapshot(pipe));
    const h2 = applyLoras(pipe, [{ file: peft, weight: 1 }]);
    const viaPeft = snapshot(pipe);
    h2.remove();
    expect(maxAbsDiff(viaKohya, viaPeft)).toBeLessThan(1e-7);
    expect(tf.memory().numTensors).toBe(before);
    expectBitIdentical(base, snapshot(pipe));
  });

  it('merged weight = base + ΔW in our layout (a 3x3 conv checked element-wise)', () => {
    const name = 'lora_unet_down_blocks_0_resnets_0_conv1';
    const t = loraTargets(pipe).get(name)!;
    const h = applyLoras(pipe, [{ file: kohya, weight: 0.7 }]);
    const merged = t.weight.t.dataSync();
    h.remove();
    const delta = loraDelta(kohya.modules.find((m) => m.name === name)!, t, 0.7);
    const expected = t.weight.t.add(delta);
    expect(maxAbsDiff(new Map([['w', merged as Float32Array]]), new Map([['w', expected.dataSync() as Float32Array]]))).toBe(0);
    tf.dispose([delta, expected]);
  });

  it('weight 0 leaves every weight bit-identical; teWeight 0 leaves the text encoder alone', () => {
    const h0 = applyLoras(pipe, [{ file: kohya, weight: 0 }]);
    expect(h0.mergedWeights).toBe(0);
    expectBitIdentical(base, snapshot(pipe));
    h0.remove();
    const h = applyLoras(pipe, [{ file: kohya, weight: 1, teWeight: 0 }]);
    const now = snapshot(pipe);
    h.remove();
    expectBitIdentical(base, now, (k) => k.startsWith('te.'));
    expect(changed(base, now).every((k) => k.startsWith('unet.'))).toBe(true);
    expect(changed(base, now).length).toBe(215 - 18);
  });

  it('weight 1, removed, then 0.5 equals 0.5 directly; two 0.25 handles agree with 0.5 within rounding', () => {
    const direct = (() => {
      const h = applyLoras(pipe, [{ file: kohya, weight: 0.5 }]);
      const s = snapshot(pipe);
      h.remove();
      return s;
    })();
    applyLoras(pipe, [{ file: kohya, weight: 1 }]).remove();
    const again = applyLoras(pipe, [{ file: kohya, weight: 0.5 }]);
    expectBitIdentical(direct, snapshot(pipe));
    again.remove();
    const a = applyLoras(pipe, [{ file: kohya, weight: 0.25 }]);
    const b = applyLoras(pipe, [{ file: peft, weight: 0.25 }]);
    expect(maxAbsDiff(direct, snapshot(pipe))).toBeLessThan(1e-6);
    expect(() => a.remove()).toThrow(/reverse order/);
    b.remove();
    a.remove();
    expectBitIdentical(base, snapshot(pipe));
  });

  it('reads the 2023 diffusers attention-processor layout (with network_alphas) to the same modules', async () => {
    const legacyName = (key: string) =>
      key
        .replace(/\.(attn[12])\.(to_[qkv])\.lora_([AB])\.weight$/, '.$1.processor.$2_lora.$3')
        .replace(/\.(attn[12])\.to_out\.0\.lora_([AB])\.weight$/, '.$1.processor.to_out_lora.$2')
        .replace(/\.self_attn\.(q|k|v)_proj\.lora_([AB])\.weight$/, '.self_attn.to_$1_lora.$2')
        .replace(/\.self_attn\.out_proj\.lora_([AB])\.weight$/, '.self_attn.to_out_lora.$1')
        .replace(/\.mlp\.(fc[12])\.lora_([AB])\.weight$/, '.mlp.$1.lora_linear_layer.$2')
        .replace(/\.lora_([AB])\.weight$/, '.lora.$1')
        .replace(/\.A$/, '.down.weight')
        .replace(/\.B$/, '.up.weight');
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    const alphas: Record<string, number> = {};
    for (const m of peft.modules) {
      const stem = `${m.component}.${m.path}`;
      const down = legacyName(`${stem}.lora_A.weight`);
      tensors.set(down, m.down);
      tensors.set(legacyName(`${stem}.lora_B.weight`), m.up);
      alphas[down.replace(/\.down\.weight$/, '.alpha')] = 1;
    }
    expect([...tensors.keys()]).toContain('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight');
    expect([...tensors.keys()]).toContain('text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.up.weight');
    const path = `${tmp()}/legacy.safetensors`;
    await writeSafetensors(path, tensors);
    const noAlpha = await readLora(path, pipe);
    expect(noAlpha.modules.every((m) => m.alpha === m.rank)).toBe(true); // no alphas ⇒ alpha = rank
    const legacy = await readLora(path, pipe, { networkAlphas: alphas });
    expect(legacy.layout).toBe('diffusers-legacy');
    expect(legacy.unknown).toEqual([]);
    const byName = new Map(legacy.modules.map((m) => [m.name, m]));
    for (const k of kohya.modules) {
      const l = byName.get(k.name)!;
      expect([l.path, l.alpha, l.rank, l.down.data, l.up.data]).toEqual([k.path, k.alpha, k.rank, k.down.data, k.up.data]);
    }
  });

  it('lists module names the model lacks and skips them', async () => {
    const t = loraTargets(pipe).get('lora_unet_mid_block_attentions_0_proj_in')!;
    const ok = randomModule(t.name, t, [64, 64, 1, 1], 2, 1, 1);
    const extra = [
      { ...ok, name: 'lora_unet_down_blocks_7_attentions_0_proj_in' },
      { ...ok, name: 'lora_te_text_model_encoder_layers_22_mlp_fc1' },
      { ...ok, name: 'lora_te2_text_model_encoder_layers_0_mlp_fc1' },
    ];
    const path = `${tmp()}/unknown.safetensors`;
    await writeKohyaLora(path, [ok, ...extra], { dtype: 'F32' });
    const lora = await readLora(path, pipe);
    expect(lora.modules.map((m) => m.name)).toEqual([ok.name]);
    expect(lora.unknown.sort()).toEqual(extra.map((e) => e.name).sort());
  });

  it('an SD2 LoRA on SD1: one error naming the modules and both shapes, and the model is untouched', async () => {
    const sd2 = loraTargets(buildPipeline(PRESETS['sd21-base']));
    const names = ['lora_te_text_model_encoder_layers_0_self_attn_q_proj', 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k'];
    const modules = names.map((n, i) => {
      const t = sd2.get(n)!;
      return randomModule(n, t, [t.outFeatures, t.inFeatures], 1, 1, i + 3);
    });
    const path = `${tmp()}/sd2.safetensors`;
    await writeKohyaLora(path, modules, { dtype: 'F16' });
    const err = await readLora(path, buildPipeline(PRESETS.sd15)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoraMismatchError);
    expect((err as Error).message).toContain('lora_te_text_model_encoder_layers_0_self_attn_q_proj (text_encoder text_model.encoder.layers.0.self_attn.q_proj): LoRA ΔW [1024, 1024]');
    expect((err as Error).message).toContain('model weight [768, 768]');
    expect((err as Error).message).toContain('attn2_to_k (unet down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k): LoRA ΔW [320, 1024] (down [1, 1024], up [320, 1]), model weight [320, 768]');
    const unchecked = await readLora(path, pipe, { checkShapes: false });
    expect(() => applyLoras(pipe, [{ file: unchecked, weight: 1 }])).toThrow(/\[1024, 1024\].*model weight \[32, 32\]/);
    expectBitIdentical(base, snapshot(pipe));
  });

  it('a file that is not a LoRA, and a LyCORIS LoHa, are clear errors', async () => {
    await expect(readLora(fixture('tiny-sd1', 'unet', 'diffusion_pytorch_model.safetensors'), pipe)).rejects.toThrow(
      /not a LoRA file: none of its \d+ tensors is named like LoRA weights/,
    );
    const text = `${tmp()}/notes.safetensors`;
    writeFileSync(text, 'hello, not tensors at all');
    await expect(readLora(text, pipe)).rejects.toBeInstanceOf(FormatError);
    const loha = `${tmp()}/loha.safetensors`;
    const w = { shape: [2, 32], data: new Float32Array(64) };
    await writeSafetensors(loha, { 'lora_unet_mid_block_attentions_0_proj_in.hada_w1_a': w, 'lora_unet_mid_block_attentions_0_proj_in.hada_w1_b': w });
    await expect(readLora(loha, pipe)).rejects.toThrow(/hada_w1_a.*not LyCORIS LoHa/);
  });
});

describe('inpainting conv_in', () => {
  it('zero-pads a 4-channel conv_in LoRA to the 9-channel inpainting U-Net, as A1111 does', () => {
    const inpaint = loraTargets(buildPipeline(PRESETS['sd15-inpainting'])).get('lora_unet_conv_in')!;
    const plain = loraTargets(buildPipeline(PRESETS.sd15)).get('lora_unet_conv_in')!;
    const m = randomModule('lora_unet_conv_in', plain, [320, 4, 3, 3], 2, 1, 11);
    expect(loraFitProblem(m, inpaint)).toBeUndefined();
    const wide = randomModule('lora_unet_conv_in', plain, [320, 9, 3, 3], 2, 1, 12);
    expect(loraFitProblem(wide, plain)).toMatch(/LoRA ΔW \[320, 9, 3, 3\].*model weight \[320, 4, 3, 3\]/);
    const padded = loraDelta(m, inpaint, 1);
    const four = loraDelta(m, plain, 1);
    expect(padded.shape).toEqual([3, 3, 9, 320]);
    expect(padded.slice([0, 0, 0, 0], [3, 3, 4, 320]).dataSync()).toEqual(four.dataSync());
    expect(padded.slice([0, 0, 4, 0], [3, 3, 5, 320]).abs().max().dataSync()[0]).toBe(0);
    tf.dispose([padded, four]);
  });
});
