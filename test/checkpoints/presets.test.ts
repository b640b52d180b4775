// Presets build skeletons whose parameters are exactly the released checkpoints' tensors, in both layouts:
// diffusers keys directly (shapes after the OIHW→HWIO rule) and original single-file keys through our table.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { deriveConfigs } from '../../src/checkpoints/derive_config.js';
import { componentKeys, isOriginalOnlyKey, textEncoderLayoutOf } from '../../src/checkpoints/ldm_keys.js';
import { buildPipeline } from '../../src/checkpoints/pipeline.js';
import { PRESETS, type PresetName } from '../../src/models/presets.js';
import { namedParams, paramCount, type Module } from '../../src/nn/module.js';
import { hasShared } from '../helpers/shared.js';
import { COMPONENTS, manifest, type Component } from './manifest.js';

const CASES: Array<[PresetName, 'sd15' | 'sd15_inpaint' | 'sd21_v']> = [
  ['sd15', 'sd15'],
  ['sd15-inpainting', 'sd15_inpaint'],
  ['sd21-base', 'sd21_v'], // same architecture as 768-v; only the prediction type and native size differ
  ['sd21-v', 'sd21_v'],
];

/** PyTorch layout → ours: conv weights OIHW → HWIO. */
const tfjsShape = (s: number[]): number[] => (s.length === 4 ? [s[2]!, s[3]!, s[1]!, s[0]!] : s);

describe.runIf(hasShared).each(CASES)('preset %s vs manifest %s', (presetName, manifestName) => {
  const preset = PRESETS[presetName];
  const m = manifest(manifestName);
  const before = tf.memory().numTensors;
  const pipe = buildPipeline({ unet: preset.unet, vae: preset.vae, text_encoder: preset.text_encoder });
  const models: Record<Component, Module> = { unet: pipe.unet, vae: pipe.vae, text_encoder: pipe.textEncoder };

  it('building the skeletons allocates no tensors', () => {
    expect(tf.memory().numTensors).toBe(before);
  });

  it.each(COMPONENTS)('%s: diffusers keys, shapes and parameter count', (c) => {
    const params = namedParams(models[c]);
    const want = m.diffusers[c].tensors;
    expect([...params.keys()].sort()).toEqual(Object.keys(want).sort());
    const wrong = [...params].filter(([k, p]) => JSON.stringify(p.shape) !== JSON.stringify(tfjsShape(want[k]!)));
    expect(wrong.map(([k]) => k)).toEqual([]);
    expect(paramCount(models[c])).toBe(m.diffusers[c].param_count);
    expect(params.size).toBe(m.diffusers[c].num_tensors);
  });

  it('original keys through the table: every original tensor accounted for, shapes agree', () => {
    const orig = m.original.tensors;
    const covered = new Map<string, number>(); // original key → rows taken (q/k/v share one)
    const problems: string[] = [];
    for (const c of COMPONENTS) {
      const keys = componentKeys(c, c === 'text_encoder' ? textEncoderLayoutOf(preset.text_encoder) : (preset[c] as never));
      for (const [k, p] of namedParams(models[c])) {
        const op = keys.map(k);
        const o = op && orig[op.key];
        if (!op || !o) {
          problems.push(`${k}: no original key (${op?.key})`);
          continue;
        }
        const expected =
          op.op === 'slice_rows' ? [p.shape[0]! * op.parts, ...p.shape.slice(1)] : op.op === 'reshape' ? [...p.shape, 1, 1] : tfjsShape(o.shape);
        if (JSON.stringify(op.op === 'rename' ? p.shape : o.shape) !== JSON.stringify(expected)) problems.push(`${k} → ${op.key}: ${o.shape} vs ${p.shape}`);
        covered.set(op.key, (covered.get(op.key) ?? 0) + (op.op === 'slice_rows' ? p.shape[0]! : o.shape[0] ?? 1));
      }
    }
    expect(problems).toEqual([]);
    const textLayers = preset.text_encoder.num_hidden_layers;
    const notCovered = Object.keys(orig).filter((k) => !covered.has(k) && !isOriginalOnlyKey(k, textLayers));
    expect(notCovered).toEqual([]);
    // fused q|k|v tensors are covered completely
    for (const [k, rows] of covered) if (orig[k]!.shape.length) expect(rows, k).toBe(orig[k]!.shape[0]);
    // parameter counts: ours + original-only = the manifest's original count per component
    const originalOnly = Object.entries(orig)
      .filter(([k, v]) => isOriginalOnlyKey(k, textLayers) && v.kind === 'param')
      .reduce((n, [, v]) => n + v.shape.reduce((a, b) => a * b, 1), 0);
    const ours = COMPONENTS.reduce((n, c) => n + paramCount(models[c]), 0);
    expect(ours + originalOnly).toBe(m.original.param_count.total);
  });

  it('configs derived from the original shapes equal the preset (what the weights can tell)', () => {
    const shapes = new Map(Object.entries(m.original.tensors).map(([k, v]) => [k, v.shape]));
    const d = deriveConfigs(shapes, manifestName, { predictionType: preset.prediction_type });
    expect(d.configs.unet).toEqual(preset.unet);
    expect(d.configs.vae).toEqual(preset.vae);
    expect(d.configs.text_encoder).toEqual(preset.text_encoder);
    expect(d.family).toBe(presetName.startsWith('sd21') ? 'sd2' : presetName.includes('inpainting') ? 'sd1-inpainting' : 'sd1');
  });

  it("the preset agrees with the manifest's diffusers configs on every key both have", () => {
    for (const c of COMPONENTS) {
      const ours = preset[c] as unknown as Record<string, unknown>;
      for (const [k, v] of Object.entries(m.diffusers_configs[c])) {
        if (k === 'sample_size' && presetName === 'sd21-base') continue; // 512-base vs the manifest's 768-v
        if (k === 'upcast_attention' && presetName === 'sd21-base') continue;
        if (k in ours) expect(ours[k], `${c}.${k}`).toEqual(v);
      }
    }
  });
});
