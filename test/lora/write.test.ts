// Writing LoRA files: kohya round trips (F32 exact, F16 rounded once), metadata kept, the sshs hashes we write are
// the ones recomputed from the file; the tensor bytes of both tiny fixtures are reproduced exactly; PEFT round trips
// with alphas in the metadata or folded into lora_B.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildPipeline } from '../../src/checkpoints/pipeline.js';
import { floatToHalfBits, halfBitsToFloat } from '../../src/formats/dtype.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { loraDelta } from '../../src/lora/apply.js';
import { loraTargets } from '../../src/lora/names.js';
import { readLora, type LoraFile, type LoraModule } from '../../src/lora/read.js';
import { addnetHash, kohyaLoraMetadata, sshsHashes, writeKohyaLora, writePeftLora } from '../../src/lora/write.js';
import { parseClipTextConfig } from '../../src/models/clip_text.js';
import { parseUNetConfig } from '../../src/models/unet.js';
import { PRESETS } from '../../src/models/presets.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';

const KOHYA = fixture('formats', 'kohya_lora_tiny_locon.safetensors');
const PEFT = fixture('formats', 'diffusers_peft_lora_tiny.safetensors');
const tmp = useTmpDir('sdtrain-lora-write-');
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8'));
const f16 = (a: Float32Array) => a.map((x) => halfBitsToFloat(floatToHalfBits(x)));

/** The tiny model as a skeleton (names and shapes only). */
function tinySkeleton() {
  const dir = fixture('tiny-sd1');
  return buildPipeline({
    unet: parseUNetConfig(json(`${dir}/unet/config.json`)),
    text_encoder: parseClipTextConfig(json(`${dir}/text_encoder/config.json`)),
    vae: PRESETS.sd15.vae,
  });
}

function expectSameModules(a: readonly LoraModule[], b: readonly LoraModule[], round = (x: Float32Array) => x): void {
  expect(a.map((m) => m.name).sort()).toEqual(b.map((m) => m.name).sort());
  const byName = new Map(b.map((m) => [m.name, m]));
  for (const m of a) {
    const o = byName.get(m.name)!;
    expect([m.path, m.kind, m.rank, m.alpha, m.down.shape, m.up.shape]).toEqual([o.path, o.kind, o.rank, o.alpha, o.down.shape, o.up.shape]);
    expect(m.down.data).toEqual(round(o.down.data));
    expect(m.up.data).toEqual(round(o.up.data));
  }
}

describe.runIf(hasShared)('writing LoRA files', () => {
  const models = hasShared ? tinySkeleton() : undefined!;
  let kohya: LoraFile;
  beforeAll(async () => {
    kohya = await readLora(KOHYA, models);
  });

  it('kohya F32: reads back identically, with its metadata and self-consistent sshs hashes', async () => {
    const path = `${tmp()}/f32.safetensors`;
    const metadata = { ...kohyaLoraMetadata({ modules: kohya.modules, title: 'tiny', date: new Date(2024, 5, 1) }), 'ss_tag_frequency': '{"1_x": {"x": 1}}' };
    const written = await writeKohyaLora(path, kohya.modules, { dtype: 'F32', metadata });
    const back = await readLora(path, models);
    expect(back.dtype).toBe('F32');
    expectSameModules(back.modules, kohya.modules);
    expect(back.metadata).toEqual(written);
    expect(written).toMatchObject(metadata);
    expect(written['modelspec.date']).toBe('2024-06-01T00:00:00');
    expect(written.sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(await sshsHashes(path)).toEqual({ sshs_model_hash: written.sshs_model_hash, sshs_legacy_hash: written.sshs_legacy_hash });
    expect(await addnetHash(path)).toBe(written.sshs_model_hash);
  });

  it('kohya F16: every tensor rounded once to half precision, alphas as 0-d F16 scalars', async () => {
    const path = `${tmp()}/f16.safetensors`;
    await writeKohyaLora(path, kohya.modules, { dtype: 'F16', metadata: { ss_network_dim: '2' } });
    const back = await readLora(path, models);
    expect(back.dtype).toBe('F16');
    expectSameModules(back.modules, kohya.modules, f16);
    const f = await SafetensorsFile.open(path);
    const alpha = f.tensors.find((t) => t.name.endsWith('.alpha'))!;
    await f.close();
    expect(alpha).toMatchObject({ dtype: 'F16', shape: [] });
    expect(await sshsHashes(path)).toEqual({ sshs_model_hash: back.metadata.sshs_model_hash, sshs_legacy_hash: back.metadata.sshs_legacy_hash });
  });

  it("reproduces the tiny kohya fixture's tensor bytes and its ss_* metadata", async () => {
    const d = json(`${KOHYA}.json`);
    const meta = kohyaLoraMetadata({ modules: kohya.modules, title: 'tiny' });
    for (const [k, v] of Object.entries(d.metadata as Record<string, string>)) expect(meta[k], k).toBe(v);
    const path = `${tmp()}/as_fixture.safetensors`;
    await writeKohyaLora(path, kohya.modules, { dtype: 'F32', metadata: d.metadata, hashes: false });
    expect(await addnetHash(path)).toBe(await addnetHash(KOHYA));
    expect((await readLora(path, models)).metadata).toEqual(d.metadata);
  });

  it('PEFT with alphas in lora_adapter_metadata: same tensor bytes and adapter config as the diffusers fixture', async () => {
    const path = `${tmp()}/peft.safetensors`;
    await writePeftLora(path, kohya.modules, { foldAlpha: false });
    expect(await addnetHash(path)).toBe(await addnetHash(PEFT));
    const back = await readLora(path, models);
    expect(back.layout).toBe('peft');
    expectSameModules(back.modules, kohya.modules);
    const fixtureMeta = json(`${PEFT}.json`).metadata as Record<string, string>;
    expect(back.metadata.format).toBe('pt');
    expect(JSON.parse(back.metadata.lora_adapter_metadata!)).toEqual(JSON.parse(fixtureMeta.lora_adapter_metadata!));
  });

  it('PEFT with alpha folded into lora_B: alpha = rank, same deltas within rounding; mixed ranks go to rank_pattern', async () => {
    const path = `${tmp()}/peft_folded.safetensors`;
    const first = { ...kohya.modules[0]!, rank: 1, down: { shape: [1, 32], data: kohya.modules[0]!.down.data.slice(0, 32) } };
    first.up = { shape: [first.up.shape[0]!, 1], data: kohya.modules[0]!.up.data.filter((_, i) => i % 2 === 0) };
    const modules = [first, ...kohya.modules.slice(1)];
    await writePeftLora(path, modules);
    const back = await readLora(path, models);
    const adapter = JSON.parse(back.metadata.lora_adapter_metadata!);
    expect(adapter['text_encoder.r']).toBe(2);
    expect(adapter['text_encoder.rank_pattern']).toEqual({ [first.path]: 1 });
    expect(adapter['text_encoder.alpha_pattern']).toEqual({ [first.path]: 1 });
    const targets = loraTargets(models);
    const byName = new Map(back.modules.map((m) => [m.name, m]));
    for (const m of modules) {
      const b = byName.get(m.name)!;
      expect(b.alpha).toBe(b.rank);
      const [x, y] = [loraDelta(m, targets.get(m.name)!, 1), loraDelta(b, targets.get(m.name)!, 1)];
      expect(x.sub(y).abs().max().dataSync()[0]).toBeLessThan(1e-8);
      tf.dispose([x, y]);
    }
  });
});
