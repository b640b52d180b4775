// The kohya name map against the SD1.5 skeleton (no weights): all 264 modules of the kohya fixture resolve, A1111's
// compvis names and our LDM module paths agree with the descriptor, the recorded deltas are reproduced from shapes
// alone, and the file's sshs hashes are recomputed.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildPipeline } from '../../src/checkpoints/pipeline.js';
import { PRESETS } from '../../src/models/presets.js';
import { loraDelta } from '../../src/lora/apply.js';
import { a1111Name, kohyaName, ldmModuleName, loraTargets } from '../../src/lora/names.js';
import { readLora } from '../../src/lora/read.js';
import { addnetHash, sshsHashes } from '../../src/lora/write.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { expectStats, type DeltaStats } from './helpers.js';

interface ModuleEntry {
  kohya: string;
  kind: string;
  rank: number;
  alpha: number;
  down: number[];
  up: number[];
  diffusers_module: string;
  ldm_module?: string;
}
const SD15_FILE = fixture('formats', 'kohya_lora_sd15_r4.safetensors');
const desc = (f: string) => JSON.parse(readFileSync(`${f}.json`, 'utf8'));
const sd15 = buildPipeline(PRESETS.sd15);

describe('kohya names from our modules', () => {
  it('builds names by replacing every dot, and groups targets as kohya does', () => {
    const targets = loraTargets(sd15);
    expect(kohyaName('unet', 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0')).toBe(
      'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0',
    );
    const groups = (g: string) => [...targets.values()].filter((t) => t.group === g);
    expect(groups('lora').length).toBe(264);
    expect(groups('lora').filter((t) => t.component === 'text_encoder').length).toBe(72);
    expect(groups('extra').map((t) => t.path).sort()).toEqual(['conv_in', 'conv_out', 'time_embedding.linear_1', 'time_embedding.linear_2']);
    const ff = targets.get('lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj')!;
    expect(ff).toMatchObject({ kind: 'linear', inFeatures: 1280, outFeatures: 10240, path: 'mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj' });
    expect(targets.get('lora_unet_up_blocks_1_upsamplers_0_conv')).toMatchObject({ kind: 'conv', kernelSize: 3, group: 'locon' });
  });

  it('SD 2.x: linear proj_in/proj_out, 23 text-encoder layers, OpenCLIP LDM paths', () => {
    const sd21 = buildPipeline(PRESETS['sd21-v']);
    const targets = loraTargets(sd21);
    const lora = [...targets.values()].filter((t) => t.group === 'lora');
    expect(lora.length).toBe(23 * 6 + 192);
    const projIn = targets.get('lora_unet_down_blocks_0_attentions_0_proj_in')!;
    expect([projIn.kind, projIn.inFeatures, projIn.outFeatures]).toEqual(['linear', 320, 320]);
    const q = targets.get('lora_te_text_model_encoder_layers_22_self_attn_q_proj')!;
    expect(ldmModuleName(q, sd21)).toBe('cond_stage_model.model.transformer.resblocks.22.attn.in_proj');
    const fc2 = targets.get('lora_te_text_model_encoder_layers_22_mlp_fc2')!;
    expect(ldmModuleName(fc2, sd21)).toBe('cond_stage_model.model.transformer.resblocks.22.mlp.c_proj');
    expect(a1111Name(fc2.name, true)).toBe('model_transformer_resblocks_22_mlp_c_proj');
  });

  it('A1111 compvis names for the extra and LoCon modules follow convert_diffusers_name_to_compvis', () => {
    expect(a1111Name('lora_unet_conv_in')).toBe('diffusion_model_input_blocks_0_0');
    expect(a1111Name('lora_unet_time_embedding_linear_2')).toBe('diffusion_model_time_embed_2');
    expect(a1111Name('lora_unet_down_blocks_1_resnets_0_conv_shortcut')).toBe('diffusion_model_input_blocks_4_0_skip_connection');
    expect(a1111Name('lora_unet_mid_block_resnets_1_time_emb_proj')).toBe('diffusion_model_middle_block_2_emb_layers_1');
    expect(a1111Name('lora_unet_down_blocks_2_downsamplers_0_conv')).toBe('diffusion_model_input_blocks_9_0_op');
    expect(a1111Name('lora_unet_up_blocks_0_upsamplers_0_conv')).toBe('diffusion_model_output_blocks_2_1_conv');
    expect(a1111Name('lora_unet_up_blocks_2_upsamplers_0_conv')).toBe('diffusion_model_output_blocks_8_2_conv');
    expect(a1111Name('lora_te_text_model_encoder_layers_3_mlp_fc1', true)).toBe('model_transformer_resblocks_3_mlp_c_fc');
    expect(a1111Name('lora_te_text_model_encoder_layers_3_self_attn_q_proj', true)).toBe('model_transformer_resblocks_3_attn_q_proj');
  });
});

describe.runIf(hasShared)('kohya_lora_sd15_r4 against the SD1.5 skeleton', () => {
  const d = hasShared ? desc(SD15_FILE) : undefined;
  const entries: ModuleEntry[] = d?.modules ?? [];

  it('resolves all 264 modules, with the descriptor shapes, ranks and alphas', async () => {
    const lora = await readLora(SD15_FILE, sd15);
    expect(lora.layout).toBe('kohya');
    expect(lora.unknown).toEqual([]);
    expect(lora.ignored).toEqual([]);
    expect(lora.dtype).toBe('F16');
    expect(lora.modules.length).toBe(264);
    const byName = new Map(lora.modules.map((m) => [m.name, m]));
    for (const e of entries) {
      const m = byName.get(e.kohya)!;
      expect(m, e.kohya).toBeDefined();
      expect([m.path, m.down.shape, m.up.shape, m.rank, m.alpha]).toEqual([e.diffusers_module, e.down, e.up, e.rank, e.alpha]);
      expect(m.kind).toBe(e.kind === 'linear' ? 'linear' : 'conv');
    }
    const lora_ = [...loraTargets(sd15).values()].filter((t) => t.group === 'lora').map((t) => t.name);
    expect(new Set(lora_)).toEqual(new Set(entries.map((e) => e.kohya)));
  });

  it("A1111's names and our LDM module paths match the descriptor's ldm_module for all 264", () => {
    const targets = loraTargets(sd15);
    expect(entries.length).toBe(264);
    for (const e of entries) {
      const compvis = e.ldm_module!.replace(/^model\./, '').replace(/^cond_stage_model\./, '').replaceAll('.', '_');
      expect(a1111Name(e.kohya), e.kohya).toBe(compvis);
      expect(ldmModuleName(targets.get(e.kohya)!, sd15), e.kohya).toBe(e.ldm_module);
    }
  });

  it('reproduces the merged deltas the descriptor records (shapes only, no model weights)', async () => {
    const lora = await readLora(SD15_FILE, sd15);
    const targets = loraTargets(sd15);
    for (const [name, ex] of Object.entries(d.merged_delta_examples as Record<string, { multiplier: number; delta: DeltaStats }>)) {
      const m = lora.modules.find((x) => x.name === name)!;
      const delta = loraDelta(m, targets.get(name)!, ex.multiplier);
      expectStats(delta, ex.delta);
      delta.dispose();
    }
  });

  it("recomputes the file's sshs_model_hash and sshs_legacy_hash as kohya computes them", async () => {
    expect(d.reader_must_find.sshs_model_hash).toBe(d.metadata.sshs_model_hash);
    expect(await addnetHash(SD15_FILE)).toBe(d.metadata.sshs_model_hash);
    expect(await sshsHashes(SD15_FILE)).toEqual({ sshs_model_hash: d.metadata.sshs_model_hash, sshs_legacy_hash: d.metadata.sshs_legacy_hash });
  });
});
