// Every shared tensor fixture read through our readers and checked against its JSON descriptor.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LoadedTensor } from '../../src/formats/dtype.js';
import { PyObject, PyOrderedDict, PyTuple, TorchTensorRef, type PyValue } from '../../src/formats/pickle.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { openTensorFile } from '../../src/formats/tensor_file.js';
import { openTorchFile } from '../../src/formats/torch.js';
import { ZipReader } from '../../src/formats/zip.js';
import { fixture, hasShared } from '../helpers/shared.js';

const FORMATS = fixture('formats');
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const desc = (file: string): Json => JSON.parse(readFileSync(join(FORMATS, `${file}.json`), 'utf8')) as Json;

const DTYPE: Record<string, string> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16', int64: 'I64', float64: 'F64' };

interface Stats {
  dtype: string;
  shape: number[];
  first: number[];
  sum: number;
  abs_sum: number;
}

function expectStats(t: LoadedTensor, s: Stats): void {
  expect(t.dtype).toBe(DTYPE[s.dtype]);
  expect(t.shape).toEqual(s.shape);
  expect(Array.from(t.data.subarray(0, s.first.length))).toEqual(s.first);
  let sum = 0;
  let abs = 0;
  for (const v of t.data) {
    sum += v;
    abs += Math.abs(v);
  }
  expect(Math.abs(sum - s.sum)).toBeLessThan(1e-6 * Math.max(1, Math.abs(s.abs_sum)));
  expect(Math.abs(abs - s.abs_sum)).toBeLessThan(1e-6 * Math.max(1, s.abs_sum));
}

const get = (m: PyValue | undefined, k: PyValue): PyValue | undefined => (m instanceof Map ? m.get(k) : undefined);
const asTensor = (v: PyValue | undefined): TorchTensorRef => {
  expect(v).toBeInstanceOf(TorchTensorRef);
  return v as TorchTensorRef;
};

describe.runIf(hasShared)('shared fixtures: formats/', () => {
  const files = hasShared ? readdirSync(FORMATS).filter((f) => /\.(pt|bin|safetensors)$/.test(f)) : [];

  it('covers every .pt/.bin/.safetensors fixture (each has a descriptor)', () => {
    expect(files.length).toBeGreaterThanOrEqual(17);
    for (const f of files) expect(statSync(join(FORMATS, `${f}.json`)).isFile()).toBe(true);
  });

  for (const file of files.filter((f) => f.endsWith('.safetensors'))) {
    it(`${file}: header, metadata, data order and every tensor match the descriptor`, async () => {
      const d = desc(file);
      const f = await SafetensorsFile.open(join(FORMATS, file));
      try {
        expect(statSync(f.path).size).toBe(d.file_bytes);
        expect(f.dataStart - 8).toBe(d.header_bytes);
        expect(f.metadata).toEqual(d.metadata ?? {});
        if (d.data_order) expect(f.tensors.map((t) => t.name)).toEqual(d.data_order);
        for (const [name, s] of Object.entries<Stats>(d.reader_must_find?.tensors ?? {})) expectStats(await f.read(name), s);
        for (const m of d.modules ?? []) {
          expect(f.tensors.find((t) => t.name === `${m.kohya}.lora_down.weight`)?.shape.slice(0, 2)).toEqual(m.down.slice(0, 2));
          expect(f.tensors.find((t) => t.name === `${m.kohya}.lora_up.weight`)?.shape.slice(0, 2)).toEqual(m.up.slice(0, 2));
          const alpha = await f.read(`${m.kohya}.alpha`);
          expect(alpha.shape).toEqual([]);
          expect(alpha.data[0]).toBe(m.alpha);
        }
        if (d.modules) expect(f.tensors.length).toBe(d.counts.tensors);
        for (const module of Object.keys(d.ranks ?? {})) {
          const prefix = f.tensors.find((t) => t.name.endsWith(`${module}.lora_A.weight`));
          expect(prefix, module).toBeDefined();
        }
        for (const t of f.tensors) {
          const loaded = await f.read(t.name);
          expect(loaded.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
        }
      } finally {
        await f.close();
      }
    });
  }

  it('kohya_lora_sd15_r4.safetensors: sha256 of the bytes after the header is the recorded sshs_model_hash', async () => {
    const d = desc('kohya_lora_sd15_r4.safetensors');
    const f = await SafetensorsFile.open(join(FORMATS, 'kohya_lora_sd15_r4.safetensors'));
    await f.close();
    const bytes = readFileSync(f.path).subarray(f.dataStart);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(d.reader_must_find.sshs_model_hash);
  });

  for (const file of files.filter((f) => !f.endsWith('.safetensors'))) {
    it(`${file}: zip entries listed in the descriptor are present and every tensor loads`, async () => {
      const d = desc(file);
      const zip = await ZipReader.open(join(FORMATS, file));
      expect(zip.entries.map((e) => e.name).sort()).toEqual([...d.entries].sort());
      await zip.close();
      const f = await openTorchFile(join(FORMATS, file));
      try {
        expect(f.archiveName).toBe(basename(file).replace(/\.[^.]+$/, ''));
        expect(f.tensors.length).toBeGreaterThan(0);
        for (const t of f.tensors) expect((await f.read(t.name)).shape).toEqual(t.shape);
      } finally {
        await f.close();
      }
    });
  }

  for (const file of ['a1111_embedding_sd1.pt', 'a1111_embedding_tiny.pt']) {
    it(`${file}: A1111 embedding dict (name, step, checkpoint, string_to_token, string_to_param and its requires_grad flag)`, async () => {
      const must = desc(file).reader_must_find;
      const f = await openTorchFile(join(FORMATS, file));
      try {
        const root = f.root as Map<PyValue, PyValue>;
        expect(root.get('name')).toBe(must.name);
        expect(root.get('step')).toBe(must.step);
        expect(root.get('sd_checkpoint')).toBe(must.sd_checkpoint);
        expect(root.get('sd_checkpoint_name')).toBe(must.sd_checkpoint_name);
        if (must.string_to_token) expect(Object.fromEntries(get(root, 'string_to_token') as Map<string, PyValue>)).toEqual(must.string_to_token);
        const param = asTensor(get(get(root, 'string_to_param'), '*'));
        expect(param.requiresGrad).toBe(must.requires_grad_flag_in_pickle === true);
        expect(param.shape).toEqual([must.vectors, must.dim]);
        const t = await f.read("string_to_param.*");
        expectStats(t, must["string_to_param['*']"]);
        if (must.values) expect(Array.from(t.data)).toEqual((must.values as number[][]).flat());
      } finally {
        await f.close();
      }
    });
  }

  it('rinongal_embedding.pt: ParameterDict module exposes _parameters; string_to_token holds a 0-d int64 tensor', async () => {
    const must = desc('rinongal_embedding.pt').reader_must_find;
    const f = await openTorchFile(join(FORMATS, 'rinongal_embedding.pt'));
    try {
      const root = f.root as Map<PyValue, PyValue>;
      expect(root.has('name') || root.has('step')).toBe(false);
      const module = root.get('string_to_param');
      expect(module).toBeInstanceOf(PyObject);
      expect((module as PyObject).cls.fullName).toBe('torch.nn.modules.container.ParameterDict');
      const params = (module as PyObject).getAttr('_parameters');
      expect(params).toBeInstanceOf(PyOrderedDict);
      expect(asTensor(get(params, '*')).isParameter).toBe(true);
      expect(f.tensors.map((t) => t.name)).toEqual(['string_to_token.*', 'string_to_param.*']);
      const token = await f.read('string_to_token.*');
      expect(token.dtype).toBe('I64');
      expect(token.shape).toEqual([]);
      expect(Array.from(token.data)).toEqual([must["string_to_token['*']"]]);
      expectStats(await f.read('string_to_param.*'), must["string_to_param['*']"]);
    } finally {
      await f.close();
    }
  });

  it('diffusers_learned_embeds_legacy.bin: a one-key dict holding a 1-D vector', async () => {
    const must = desc('diffusers_learned_embeds_legacy.bin').reader_must_find;
    const f = await openTensorFile(join(FORMATS, 'diffusers_learned_embeds_legacy.bin'));
    try {
      expect(f.format).toBe('torch');
      expect(f.tensors.map((t) => t.name)).toEqual(['<cat-toy>']);
      expectStats(await f.read('<cat-toy>'), must['<cat-toy>']);
    } finally {
      await f.close();
    }
  });

  const hypernets = files.filter((f) => f.startsWith('a1111_hypernetwork_'));
  for (const file of hypernets) {
    it(`${file}: int size keys → (k, v) tuples of OrderedDicts; metadata keys; tensor stats`, async () => {
      const d = desc(file);
      const f = await openTorchFile(join(FORMATS, file));
      try {
        const root = f.root as Map<PyValue, PyValue>;
        for (const [k, v] of Object.entries(d.metadata)) expect(root.get(k), k).toEqual(v);
        const sizes = [...root.keys()].filter((k) => typeof k === 'number');
        expect(sizes.sort((a, b) => (a as number) - (b as number))).toEqual(d.sizes ?? [32]);
        for (const size of sizes) {
          const pair = root.get(size);
          expect(pair).toBeInstanceOf(PyTuple);
          const [k, v] = (pair as PyTuple).items;
          expect(k).toBeInstanceOf(PyOrderedDict);
          expect(v).toBeInstanceOf(PyOrderedDict);
          const layer = d.layers?.[String(size)];
          if (layer) {
            for (const [side, sd] of [['k', k], ['v', v]] as const) {
              const shapes = Object.fromEntries([...(sd as Map<string, TorchTensorRef>)].map(([n, t]) => [n, t.shape]));
              expect(shapes).toEqual(layer[side]);
            }
            for (const [name, s] of Object.entries<Stats>(layer.k_values)) expectStats(await f.read(`${size}.0.${name}`), s);
          }
        }
        for (const [name, s] of Object.entries<Stats>(d.reader_must_find?.k ?? {})) {
          expectStats(await f.read(`${sizes[0]}.0.${name}`), s);
        }
      } finally {
        await f.close();
      }
    });
  }
});

describe.runIf(hasShared)('shared fixtures: tiny-sd1 models', () => {
  const models = hasShared
    ? [
        ...['text_encoder/model.safetensors', 'unet/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors'].map((p) => fixture('tiny-sd1', p)),
        fixture('tiny-sd1-original', 'tiny-sd1.safetensors'),
      ]
    : [];
  for (const path of models) {
    it(`${path.split('/fixtures/')[1]}: opens and every tensor reads with the right element count`, async () => {
      const f = await SafetensorsFile.open(path);
      try {
        expect(f.tensors.length).toBeGreaterThan(10);
        for (const t of f.tensors) {
          const loaded = await f.read(t.name);
          expect(loaded.data).toBeInstanceOf(Float32Array);
          expect(loaded.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
        }
      } finally {
        await f.close();
      }
    });
  }

  it('tiny-sd1-original: 790 float32 tensors, original key prefixes, no metadata', async () => {
    const f = await SafetensorsFile.open(fixture('tiny-sd1-original', 'tiny-sd1.safetensors'));
    await f.close();
    expect(f.tensors.length).toBe(790);
    expect(new Set(f.tensors.map((t) => t.dtype))).toEqual(new Set(['F32']));
    expect(f.metadata).toEqual({});
    for (const t of f.tensors) expect(t.name).toMatch(/^(model\.diffusion_model|first_stage_model|cond_stage_model\.transformer)\./);
  });

  it('parity/tiny-sd1/*.safetensors: int64 and bool tensors read as Int32Array / Uint8Array matching the case JSON', async () => {
    const dir = fixture('parity', 'tiny-sd1');
    const seen = new Set<string>();
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
      const f = await SafetensorsFile.open(join(dir, file));
      try {
        for (const t of f.tensors) {
          const loaded = await f.read(t.name);
          seen.add(t.dtype);
          if (t.dtype === 'I64') expect(loaded.data).toBeInstanceOf(Int32Array);
          if (t.dtype === 'BOOL') {
            expect(loaded.data).toBeInstanceOf(Uint8Array);
            expect(Array.from(loaded.data).every((b) => b === 0 || b === 1)).toBe(true);
          }
          expect(loaded.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
        }
      } finally {
        await f.close();
      }
    }
    expect(seen).toEqual(new Set(['F32', 'I64', 'BOOL']));
  });

  it('parity tokenizer case: int64 input_ids are valid CLIP ids ending rows with 49407', async () => {
    const f = await SafetensorsFile.open(fixture('parity', 'tiny-sd1', 'tokenizer.safetensors'));
    try {
      const name = f.tensors.find((t) => t.name.endsWith('input_ids'))!.name;
      const ids = await f.read(name);
      expect(ids.shape).toEqual([7, 77]);
      expect(ids.data[0]).toBe(49406);
      for (let r = 0; r < 7; r++) expect(ids.data[r * 77 + 76]).toBe(49407);
    } finally {
      await f.close();
    }
  });
});
