import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { detect } from '../../src/checkpoints/detect.js';
import type { TensorInfo } from '../../src/formats/dtype.js';
import { fixture } from '../helpers/shared.js';

interface Manifest {
  diffusers: Record<'unet' | 'vae' | 'text_encoder', { tensors: Record<string, number[]> }>;
  original: { tensors: Record<string, { shape: number[]; dtype?: string }> };
}
const manifest = (name: string): Manifest => JSON.parse(readFileSync(fixture('manifests', `${name}.json`), 'utf8')) as Manifest;
const listing = (t: Record<string, number[]>): TensorInfo[] => Object.entries(t).map(([name, shape]) => ({ name, shape, dtype: 'F32' }));

describe.each([
  ['sd15', 'sd1', 'clip-vit-l-14'],
  ['sd15_inpaint', 'sd1-inpainting', 'clip-vit-l-14'],
  ['sd21_v', 'sd2', 'openclip-vit-h-14'],
])('full-size manifest %s', (name, family, te) => {
  const m = manifest(name);
  it(`original single file → checkpoint ${family}`, () => {
    const tensors = Object.entries(m.original.tensors).map(([n, v]) => ({ name: n, shape: v.shape, dtype: 'F32' as const }));
    const d = detect({ tensors, metadata: {} });
    expect([d.kind, d.layout, d.variant]).toEqual(['checkpoint', 'original', family]);
    expect(d.details.components).toEqual(['unet', 'vae', 'text_encoder']);
  });
  it(`diffusers unet → unet ${family}`, () => {
    const d = detect({ tensors: listing(m.diffusers.unet.tensors), metadata: {} });
    expect([d.kind, d.layout, d.variant]).toEqual(['unet', 'diffusers', family]);
  });
  it('diffusers vae → vae', () => {
    const d = detect({ tensors: listing(m.diffusers.vae.tensors), metadata: {} });
    expect([d.kind, d.layout, d.details.latent_channels]).toEqual(['vae', 'diffusers', 4]);
  });
  it(`diffusers text encoder → ${te}`, () => {
    const d = detect({ tensors: listing(m.diffusers.text_encoder.tensors), metadata: {} });
    expect([d.kind, d.variant]).toEqual(['text_encoder', te]);
  });
  it('original VAE alone (first_stage_model. stripped) → vae, original layout', () => {
    const vae = Object.entries(m.original.tensors)
      .filter(([n]) => n.startsWith('first_stage_model.'))
      .map(([n, v]) => ({ name: n.slice('first_stage_model.'.length), shape: v.shape, dtype: 'F32' as const }));
    const d = detect({ tensors: vae, metadata: {} });
    expect([d.kind, d.layout]).toEqual(['vae', 'original']);
  });
});

describe('small cases', () => {
  const t = (name: string, shape: number[], dtype: TensorInfo['dtype'] = 'F32'): TensorInfo => ({ name, shape, dtype });
  it('old diffusers VAE attention names are noticed', () => {
    const d = detect({
      tensors: [t('encoder.conv_in.weight', [128, 3, 3, 3]), t('decoder.conv_in.weight', [512, 4, 3, 3]), t('quant_conv.weight', [8, 8, 1, 1]), t('encoder.mid_block.attentions.0.query.weight', [512, 512])],
      metadata: {},
    });
    expect(d.kind).toBe('vae');
    expect(d.details.old_attention_names).toBe(true);
  });
  it('a diffusers learned_embeds one-key file is an embedding named by its key', () => {
    const d = detect({ tensors: [t('<cat-toy>', [3, 768])], metadata: { format: 'pt' } });
    expect([d.kind, d.layout, d.details.vectors, d.details.name]).toEqual(['embedding', 'diffusers', 3, '<cat-toy>']);
  });
  it('a 2022 1-D learned_embeds vector counts as one vector', () => {
    const d = detect({ tensors: [t('<x>', [768])], metadata: {} });
    expect([d.details.vectors, d.details.dim]).toEqual([1, 768]);
  });
  it('a single weight tensor is not mistaken for an embedding', () => {
    expect(detect({ tensors: [t('conv.weight', [4, 4])], metadata: {} }).kind).toBe('unknown');
  });
  it('PEFT LoRA', () => {
    const d = detect({
      tensors: [t('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight', [4, 320]), t('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight', [320, 4])],
      metadata: {},
    });
    expect([d.kind, d.layout, d.details.rank]).toEqual(['lora', 'diffusers-peft', 4]);
  });
  it('legacy diffusers attention-processor LoRA', () => {
    const d = detect({ tensors: [t('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight', [4, 320])], metadata: {} });
    expect([d.kind, d.layout]).toEqual(['lora', 'diffusers-legacy']);
  });
  it('our hypernetwork .safetensors (settings in metadata)', () => {
    const d = detect({
      tensors: [t('32.k.linear.0.weight', [64, 32]), t('32.k.linear.0.bias', [64]), t('32.v.linear.0.weight', [64, 32])],
      metadata: { 'sdtrain.format': 'hypernetwork', 'sdtrain.hypernetwork': JSON.stringify({ layer_structure: [1, 2, 1], activation_func: 'relu' }) },
    });
    expect([d.kind, d.layout, d.details.sizes, d.details.activation_func]).toEqual(['hypernetwork', 'sdtrain', [32], 'relu']);
  });
});
