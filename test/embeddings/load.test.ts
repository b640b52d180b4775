import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadEmbedding, loadEmbeddings, type Embedding } from '../../src/embeddings/load.js';
import { EmbeddingRegistry } from '../../src/embeddings/registry.js';
import { FormatError } from '../../src/errors.js';
import { TorchTensorToWrite } from '../../src/formats/pickle_values.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { writeTorchFile } from '../../src/formats/torch.js';
import { CLIPTokenizer } from '../../src/tokenizer/clip_tokenizer.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';

const FORMATS = fixture('formats');
const tmp = useTmpDir('sdtrain-emb-');

interface Stats {
  shape: number[];
  first: number[];
  sum: number;
  abs_sum: number;
}

function expectStats(e: Embedding, s: Stats): void {
  expect(e.shape).toEqual(s.shape.length === 1 ? [1, s.shape[0]] : s.shape);
  expect(e.vectors.length).toBe(e.shape[0] * e.shape[1]);
  expect(Array.from(e.vectors.subarray(0, s.first.length))).toEqual(s.first);
  let sum = 0;
  let abs = 0;
  for (const v of e.vectors) {
    sum += v;
    abs += Math.abs(v);
  }
  expect(Math.abs(sum - s.sum)).toBeLessThan(1e-6 * Math.max(1, s.abs_sum));
  expect(Math.abs(abs - s.abs_sum)).toBeLessThan(1e-6 * Math.max(1, s.abs_sum));
}

type Must = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const must = (file: string): Must => (JSON.parse(readFileSync(join(FORMATS, `${file}.json`), 'utf8')) as { reader_must_find: Must }).reader_must_find;

describe.runIf(hasShared)('loadEmbedding on every embedding fixture', () => {
  it.each([
    ['a1111_embedding_sd1.pt', 'a1111'],
    ['a1111_embedding_tiny.pt', 'a1111'],
  ])('%s', async (file, source) => {
    const m = must(file);
    const e = await loadEmbedding(join(FORMATS, file));
    expect(e).toMatchObject({ name: file.replace('.pt', ''), storedName: m.name, step: m.step, source });
    expect(e.sdCheckpoint).toBe(m.sd_checkpoint ?? undefined);
    expect(e.sdCheckpointName).toBe(m.sd_checkpoint_name ?? undefined);
    expect(e.shape).toEqual([m.vectors, m.dim]);
    expectStats(e, m["string_to_param['*']"]);
    if (m.values) expect(Array.from(e.vectors)).toEqual((m.values as number[][]).flat());
  });

  it.each(['a1111_embedding_sd1.png', 'a1111_embedding_sd1_pixels_only.png'])('%s', async (file) => {
    const m = must(file);
    const e = await loadEmbedding(join(FORMATS, file));
    expect(e).toMatchObject({ name: m.name, source: 'a1111-png' });
    if (m.step !== undefined) expect(e.step).toBe(m.step);
    expectStats(e, m["string_to_param['*']"]);
  });

  it('rinongal_embedding.pt (a pickled ParameterDict)', async () => {
    const e = await loadEmbedding(join(FORMATS, 'rinongal_embedding.pt'));
    expect(e).toMatchObject({ name: 'rinongal_embedding', source: 'rinongal' });
    expect(e.step).toBeUndefined();
    expectStats(e, must('rinongal_embedding.pt')["string_to_param['*']"]);
  });

  it.each([
    ['kohya_embedding_sd1.safetensors', 'emb_params', 'kohya'],
    ['kohya_embedding_tiny.safetensors', 'emb_params', 'kohya'],
    ['diffusers_learned_embeds.safetensors', '<cat-toy>', 'diffusers'],
    ['diffusers_learned_embeds_3vec.safetensors', '<my-style>', 'diffusers'],
  ])('%s', async (file, key, source) => {
    const e = await loadEmbedding(join(FORMATS, file));
    expect(e).toMatchObject({ name: file.replace('.safetensors', ''), storedName: key, source });
    expectStats(e, must(file).tensors[key]);
  });

  it('diffusers_learned_embeds_legacy.bin (a 1-D vector is one row)', async () => {
    const e = await loadEmbedding(join(FORMATS, 'diffusers_learned_embeds_legacy.bin'));
    expect(e).toMatchObject({ name: 'diffusers_learned_embeds_legacy', storedName: '<cat-toy>', source: 'diffusers', shape: [1, 768] });
    expectStats(e, must('diffusers_learned_embeds_legacy.bin')['<cat-toy>']);
  });

  it('rejects the SDXL embedding with a clear message', async () => {
    const p = loadEmbedding(join(FORMATS, 'sdxl_embedding.safetensors'));
    await expect(p).rejects.toThrow(FormatError);
    await expect(loadEmbedding(join(FORMATS, 'sdxl_embedding.safetensors'))).rejects.toThrow(/SDXL embeddings are not supported by SD1\/SD2 models/);
  });

  it('rejects files that are not embeddings', async () => {
    await expect(loadEmbedding(join(FORMATS, 'kohya_lora_tiny_locon.safetensors'))).rejects.toThrow(/expected one embedding tensor/);
    await expect(loadEmbedding(join(FORMATS, 'a1111_infotext_ascii.png'))).rejects.toThrow(/holds no textual-inversion embedding/);
    await expect(loadEmbedding(join(FORMATS, 'a1111_hypernetwork_tiny_relu.pt'))).rejects.toThrow(FormatError);
  });
});

describe('our export formats', () => {
  const vectors = Float32Array.from({ length: 2 * 8 }, (_, i) => i / 10);

  it('reads a one-key safetensors under the file stem, marked sdtrain by its metadata', async () => {
    const path = join(tmp(), 'my-cat.safetensors');
    await writeSafetensors(path, { '<my-cat>': { shape: [2, 8], data: vectors } }, { 'sdtrain.version': '0.1.0' });
    expect(await loadEmbedding(path)).toMatchObject({ name: 'my-cat', storedName: '<my-cat>', source: 'sdtrain', shape: [2, 8], vectors });
    const plain = join(tmp(), 'plain.safetensors');
    await writeSafetensors(plain, { 'plain': { shape: [2, 8], data: vectors } });
    expect(await loadEmbedding(plain)).toMatchObject({ name: 'plain', source: 'diffusers' });
  });

  it('reads the A1111 .pt layout', async () => {
    const path = join(tmp(), 'my-cat.pt');
    const root = new Map<any, any>([ // eslint-disable-line @typescript-eslint/no-explicit-any
      ['string_to_token', new Map([['*', 265]])],
      ['string_to_param', new Map([['*', new TorchTensorToWrite({ shape: [2, 8], data: vectors }, { requiresGrad: true })]])],
      ['name', 'my-cat'],
      ['step', 100],
      ['sd_checkpoint', null],
      ['sd_checkpoint_name', null],
    ]);
    await writeTorchFile(path, root);
    expect(await loadEmbedding(path)).toMatchObject({ name: 'my-cat', source: 'a1111', step: 100, shape: [2, 8], vectors });
    expect((await loadEmbedding(path)).sdCheckpoint).toBeUndefined();
  });
});

describe.runIf(hasShared)('loadEmbeddings', () => {
  let dir: string;
  beforeAll(() => {
    dir = join(tmp(), 'embeddings');
    mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
    copyFileSync(join(FORMATS, 'a1111_embedding_sd1.pt'), join(dir, 'cattoy.pt'));
    copyFileSync(join(FORMATS, 'a1111_embedding_sd1.png'), join(dir, 'sub', 'x.png')); // keyword = its name field
    copyFileSync(join(FORMATS, 'a1111_embedding_sd1.png'), join(dir, 'sub', 'cattoy.preview.png')); // never loaded
    copyFileSync(join(FORMATS, 'kohya_embedding_tiny.safetensors'), join(dir, 'sub', 'deeper', 'tiny.safetensors'));
    copyFileSync(join(FORMATS, 'sdxl_embedding.safetensors'), join(dir, 'xl.safetensors'));
    copyFileSync(join(FORMATS, 'a1111_infotext_ascii.png'), join(dir, 'photo.png'));
    copyFileSync(join(FORMATS, 'diffusers_learned_embeds_legacy.bin'), join(dir, 'sub', 'cattoy.bin')); // same keyword
    writeFileSync(join(dir, 'empty.pt'), '');
    writeFileSync(join(dir, 'notes.txt'), 'not an embedding');
  });

  it('walks directories, skips by width and reason, later duplicates win', async () => {
    const { loaded, skipped } = await loadEmbeddings([dir], { expectedDim: 768 });
    expect([...loaded.keys()]).toEqual(['cattoy', 'cattoy-sd1']);
    expect(loaded.get('cattoy')!.path).toBe(join(dir, 'sub', 'cattoy.bin'));
    const reasons = Object.fromEntries(skipped.map((s) => [s.path.slice(dir.length + 1), s.reason]));
    expect(Object.keys(reasons).sort()).toEqual(['cattoy.pt', 'empty.pt', 'photo.png', 'sub/deeper/tiny.safetensors', 'xl.safetensors']);
    expect(reasons['cattoy.pt']).toMatch(/keyword 'cattoy' is also given by .*cattoy\.bin/);
    expect(reasons['sub/deeper/tiny.safetensors']).toMatch(/32 wide; this model's text encoder takes 768/);
    expect(reasons['xl.safetensors']).toMatch(/SDXL/);
    expect(reasons['photo.png']).toMatch(/no textual-inversion embedding/);
    expect(reasons['empty.pt']).toBe('empty file');
  });

  it('takes files, throws on a bad file named explicitly, accepts any width without expectedDim', async () => {
    const { loaded } = await loadEmbeddings([join(FORMATS, 'kohya_embedding_tiny.safetensors')]);
    expect([...loaded.keys()]).toEqual(['kohya_embedding_tiny']);
    await expect(loadEmbeddings([join(FORMATS, 'sdxl_embedding.safetensors')])).rejects.toThrow(/SDXL/);
    await expect(loadEmbeddings([join(dir, 'missing.pt')])).rejects.toThrow(/ENOENT/);
  });

  it('registers what it loaded for prompt lookup', async () => {
    const tokenizer = await CLIPTokenizer.fromBundled();
    const { loaded } = await loadEmbeddings([dir], { expectedDim: 768 });
    const registry = EmbeddingRegistry.from(tokenizer, loaded.values());
    const ids = tokenizer.encode('a CatToy-SD1 photo');
    expect(registry.findAt(ids, 1)).toMatchObject({ embedding: { name: 'cattoy-sd1' }, length: 5 });
    expect(registry.findAt(ids, 0)).toBeUndefined();
    expect(registry.unregister('cattoy-sd1')).toBe(true);
    expect(registry.findAt(ids, 1)).toMatchObject({ embedding: { name: 'cattoy' }, length: 2 });
    expect(registry.size).toBe(1);
  });
});
