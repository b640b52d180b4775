// The rule-based key table against the manifests' per-key diffusers→original mapping (produced by diffusers'
// converters on the real SD 1.5 / 1.5-inpainting / 2.1-v architectures), in both directions.
import { describe, expect, it } from 'vitest';
import {
  componentKeys,
  fillTensor,
  isOriginalOnlyKey,
  openClipExtras,
  textEncoderLayoutOf,
  vaeToOriginal,
  type TextEncoderLayout,
} from '../../src/checkpoints/ldm_keys.js';
import { COMPONENTS, manifest, MANIFESTS, type Manifest } from './manifest.js';

function keysFor(m: Manifest, component: (typeof COMPONENTS)[number]) {
  const cfg = m.diffusers_configs[component];
  if (component !== 'text_encoder') return componentKeys(component, cfg as never);
  return componentKeys('text_encoder', textEncoderLayoutOf(cfg as { hidden_act: string }) satisfies TextEncoderLayout);
}

describe.each(MANIFESTS)('%s', (name) => {
  const m = manifest(name);

  it.each(COMPONENTS)('%s: every diffusers key maps to the manifest original key and op', (component) => {
    const keys = keysFor(m, component);
    const entries = Object.entries(m.mapping_diffusers_to_original[component]);
    expect(entries.length).toBe(m.diffusers[component].num_tensors);
    const wrong: string[] = [];
    for (const [dkey, e] of entries) {
      const got = keys.map(dkey);
      const want: Record<string, unknown> = { key: e.original, op: e.op };
      const have: Record<string, unknown> = { key: got?.key, op: got?.op };
      if (e.op === 'slice_rows') {
        const w = e.to![0]!;
        want.rows = e.rows;
        if (got?.op === 'slice_rows') have.rows = [got.part * w, (got.part + 1) * w];
        expect(e.from![0]).toBe(w * 3);
      }
      if (JSON.stringify(want) !== JSON.stringify(have)) wrong.push(`${dkey}: want ${JSON.stringify(want)} got ${JSON.stringify(have)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('every original key is either produced by the table or an original-only key', () => {
    const textLayers = m.diffusers_configs.text_encoder.num_hidden_layers as number;
    const produced = new Set<string>();
    for (const c of COMPONENTS) {
      const keys = keysFor(m, c);
      for (const dkey of Object.keys(m.diffusers[c].tensors)) produced.add(keys.map(dkey)!.key);
    }
    const leftover = Object.keys(m.original.tensors).filter((k) => !produced.has(k) && !isOriginalOnlyKey(k, textLayers));
    expect(leftover).toEqual([]);
    // and nothing the table produces is classed as original-only
    expect([...produced].filter((k) => isOriginalOnlyKey(k, textLayers))).toEqual([]);
    // and everything produced exists in the original file
    expect([...produced].filter((k) => !(k in m.original.tensors))).toEqual([]);
  });

  it('the synthesised SD2 extras have the shapes of the real ones', () => {
    const te = m.diffusers_configs.text_encoder as { hidden_act: string; hidden_size: number; intermediate_size: number; num_hidden_layers: number };
    if (textEncoderLayoutOf(te) !== 'openclip') return;
    const extras = openClipExtras(te);
    const real = Object.entries(m.original.tensors).filter(([k]) => isOriginalOnlyKey(k, te.num_hidden_layers) && k.startsWith('cond_stage_model.'));
    expect(Object.fromEntries(extras.map((e) => [e.key, e.shape]))).toEqual(Object.fromEntries(real.map(([k, v]) => [k, v.shape])));
  });
});

describe('rules beyond the manifests', () => {
  it('works for a 3-level U-Net with attention only in the first two down levels (tiny fixture)', () => {
    const cfg = { layers_per_block: 2, up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'] };
    const k = componentKeys('unet', cfg);
    expect(k.map('down_blocks.1.downsamplers.0.conv.weight')?.key).toBe('model.diffusion_model.input_blocks.6.0.op.weight');
    expect(k.map('down_blocks.2.resnets.1.conv2.bias')?.key).toBe('model.diffusion_model.input_blocks.8.0.out_layers.3.bias');
    expect(k.map('up_blocks.0.upsamplers.0.conv.weight')?.key).toBe('model.diffusion_model.output_blocks.2.1.conv.weight');
    expect(k.map('up_blocks.1.upsamplers.0.conv.weight')?.key).toBe('model.diffusion_model.output_blocks.5.2.conv.weight');
    expect(k.map('up_blocks.2.attentions.2.proj_out.weight')?.key).toBe('model.diffusion_model.output_blocks.8.1.proj_out.weight');
    expect(k.map('no_such.weight')).toBeUndefined();
    expect(k.map('mid_block.resnets.2.conv1.weight')).toBeUndefined();
  });

  it('layers_per_block 1 changes the block arithmetic', () => {
    const k = componentKeys('unet', { layers_per_block: 1, up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'] });
    expect(k.map('down_blocks.0.downsamplers.0.conv.weight')?.key).toBe('model.diffusion_model.input_blocks.2.0.op.weight');
    expect(k.map('down_blocks.1.resnets.0.conv1.weight')?.key).toBe('model.diffusion_model.input_blocks.3.0.in_layers.2.weight');
    expect(k.map('up_blocks.1.resnets.1.norm1.weight')?.key).toBe('model.diffusion_model.output_blocks.3.0.in_layers.0.weight');
    expect(k.map('up_blocks.0.upsamplers.0.conv.weight')?.key).toBe('model.diffusion_model.output_blocks.1.1.conv.weight');
  });

  it('the VAE decoder reversal follows the number of levels', () => {
    expect(vaeToOriginal('decoder.up_blocks.0.upsamplers.0.conv.weight', { block_out_channels: [32, 32, 32, 64] })?.key).toBe('decoder.up.3.upsample.conv.weight');
    expect(vaeToOriginal('decoder.up_blocks.1.resnets.2.conv_shortcut.weight', { block_out_channels: [1, 2, 3] })?.key).toBe('decoder.up.1.block.2.nin_shortcut.weight');
  });

  it('original-only keys', () => {
    expect(isOriginalOnlyKey('model_ema.diffusion_modelinput_blocks00weight', 12)).toBe(true);
    expect(isOriginalOnlyKey('model_ema.num_updates', 12)).toBe(true);
    expect(isOriginalOnlyKey('cond_stage_model.transformer.text_model.embeddings.position_ids', 12)).toBe(true);
    expect(isOriginalOnlyKey('cond_stage_model.model.transformer.resblocks.22.ln_1.weight', 23)).toBe(false);
    expect(isOriginalOnlyKey('cond_stage_model.model.transformer.resblocks.23.ln_1.weight', 23)).toBe(true);
    expect(isOriginalOnlyKey('model.diffusion_model.out.2.weight', 12)).toBe(false);
  });

  it('fills', () => {
    expect([...fillTensor([2, 2], 'identity')]).toEqual([1, 0, 0, 1]);
    expect([...fillTensor([], { constant: 2.5 })]).toEqual([2.5]);
    expect([...fillTensor([3], 'ones')]).toEqual([1, 1, 1]);
  });
});
