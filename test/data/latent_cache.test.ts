import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDiffusersFolder, type LoadedDiffusersFolder } from '../../src/checkpoints/diffusers_folder.js';
import { disposePipeline } from '../../src/checkpoints/pipeline.js';
import { openDataset } from '../../src/data/dataset.js';
import { loadImage } from '../../src/data/images.js';
import { hashVaeWeights, latentKey, type LatentVariant } from '../../src/data/latent_cache.js';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';
import { dataConfig, fromFn, sub, writeImage } from './helpers.js';

const tmp = useTmpDir('sdtrain-latents-');

function listCache(dir: string): string[] {
  const root = join(dir, 'latents');
  if (!existsSync(root)) return [];
  return readdirSync(root).flatMap((d) => readdirSync(join(root, d)).map((f) => join(root, d, f)));
}

describe('latent keys', () => {
  it('differ when any part differs', () => {
    const v: LatentVariant = { sha256: 'a'.repeat(64), width: 64, height: 64, crop: 'center', flip: false };
    const k = latentKey(v, 'vae1');
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(latentKey({ ...v }, 'vae1')).toBe(k);
    const others = [
      latentKey({ ...v, sha256: 'b'.repeat(64) }, 'vae1'),
      latentKey({ ...v, width: 128 }, 'vae1'),
      latentKey({ ...v, height: 128 }, 'vae1'),
      latentKey({ ...v, flip: true }, 'vae1'),
      latentKey({ ...v, crop: 'random' as 'center' }, 'vae1'),
      latentKey(v, 'vae2'),
    ];
    expect(new Set([k, ...others]).size).toBe(7);
  });
});

describe.skipIf(!hasShared)('latent cache with the tiny VAE', () => {
  let model: LoadedDiffusersFolder;
  beforeAll(async () => {
    model = await loadDiffusersFolder(fixture('tiny-sd1'));
  });
  afterAll(() => disposePipeline(model));

  async function images(dir: string, n: number): Promise<string> {
    for (let i = 0; i < n; i++) await writeImage(sub(dir, `img_${'abcdef'[i]}.png`), fromFn(40, 32, (x, y) => [x * 6, y * 7, i * 50]));
    return dir;
  }

  it('encodes each variant once, reuses it across runs, and invalidates by image, size and VAE', async () => {
    const dir = await images(sub(tmp(), 'set1'), 3);
    const cacheDir = sub(tmp(), 'cache1');
    const vae = model.vae;
    const vaeHash = await hashVaeWeights(vae);
    const data = (resolution: number) => dataConfig({ datasets: [{ path: dir }], resolution, flip: true, cache_latents: true });
    const open = (resolution = 16, hash = vaeHash) => openDataset(data(resolution), { seed: 3, vae, vaeHash: hash, cacheDir });

    const ds1 = await open();
    expect(ds1.cache!.stats).toEqual({ hits: 0, encoded: 6, reencoded: 0 }); // 3 images × (plain, flipped)
    const files = listCache(cacheDir);
    expect(files).toHaveLength(6);
    const st = await SafetensorsFile.open(files[0]!);
    expect(st.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
      ['logvar', 'F32', [2, 2, 4]],
      ['mean', 'F32', [2, 2, 4]],
    ]);
    expect(st.metadata).toMatchObject({ format: 'sdtrain-latents/1', width: '16', height: '16', crop: 'center', vae_hash: vaeHash });
    await st.close();

    // a second run: all hits, same latents
    const ds2 = await open();
    expect(ds2.cache!.stats).toEqual({ hits: 6, encoded: 0, reencoded: 0 });
    const b1 = await ds1.batchAt({ epoch: 0, index: 0 });
    const b2 = await ds2.batchAt({ epoch: 0, index: 0 });
    expect(await b2.latents!.data()).toEqual(await b1.latents!.data());
    b1.latents!.dispose();
    b2.latents!.dispose();

    // another resolution → new files; another VAE hash → new files; the old ones stay valid
    expect((await open(24)).cache!.stats).toEqual({ hits: 0, encoded: 6, reencoded: 0 });
    expect((await open(16, 'another-vae')).cache!.stats).toEqual({ hits: 0, encoded: 6, reencoded: 0 });
    expect((await open()).cache!.stats).toEqual({ hits: 6, encoded: 0, reencoded: 0 });
    expect(listCache(cacheDir)).toHaveLength(18);

    // changed image bytes → that image is re-encoded (new key), the others hit
    await writeImage(sub(dir, 'img_b.png'), fromFn(40, 32, () => [1, 2, 3]));
    expect((await open()).cache!.stats).toEqual({ hits: 4, encoded: 2, reencoded: 0 });
  });

  it('a corrupt cache file is re-encoded with a warning', async () => {
    const dir = await images(sub(tmp(), 'set2'), 2);
    const cacheDir = sub(tmp(), 'cache2');
    const data = dataConfig({ datasets: [{ path: dir }], resolution: 16, cache_latents: true });
    const opts = { seed: 0, vae: model.vae, vaeHash: 'v', cacheDir };
    await openDataset(data, opts);
    const [victim] = listCache(cacheDir);
    writeFileSync(victim!, Buffer.from('garbage'));
    const warnings: string[] = [];
    const ds = await openDataset(data, { ...opts, onWarning: (w) => warnings.push(w) });
    expect(ds.cache!.stats).toEqual({ hits: 1, encoded: 0, reencoded: 1 });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`latent cache file ${victim} is unusable`);
    const st = await SafetensorsFile.open(victim!);
    expect(st.tensors).toHaveLength(2);
    await st.close();
  });

  it('cached latents equal encoding on the fly (same seed → same ε); sampling is mean + σ·ε scaled', async () => {
    const dir = await images(sub(tmp(), 'set3'), 2);
    const base = { datasets: [{ path: dir }], resolution: 16 };
    const cached = await openDataset(dataConfig({ ...base, cache_latents: true }), { seed: 9, batchSize: 2, vae: model.vae, vaeHash: 'v', cacheDir: sub(tmp(), 'cache3') });
    const live = await openDataset(dataConfig({ ...base, cache_latents: false }), { seed: 9, batchSize: 2, vae: model.vae });
    expect(live.cache).toBeUndefined();
    const a = await cached.batchAt({ epoch: 1, index: 0 });
    const b = await live.batchAt({ epoch: 1, index: 0 });
    expect(a.latents!.shape).toEqual([2, 2, 2, 4]);
    const [x, y] = [await a.latents!.data(), await b.latents!.data()];
    for (let i = 0; i < x.length; i++) expect(x[i]).toBeCloseTo(y[i]!, 4);
    // the posterior is sampled: near the mean (within a few σ), but not the mean
    const item = a.items[0]!;
    const pixels = await loadImage(item.path, { width: 16, height: 16, flip: a.flipped[0] });
    const { mean, logvar } = model.vae.encode(tf.tensor4d(pixels, [1, 16, 16, 3]));
    const [m, lv] = [await mean.data(), await logvar.data()];
    tf.dispose([mean, logvar]);
    const scale = model.vae.scalingFactor;
    let exact = 0;
    for (let i = 0; i < m.length; i++) {
      const z = x[i]! / scale;
      expect(Math.abs(z - m[i]!)).toBeLessThan(6 * Math.exp(0.5 * lv[i]!) + 1e-4);
      if (Math.abs(z - m[i]!) < 1e-7) exact++;
    }
    expect(exact).toBeLessThan(m.length);
    a.latents!.dispose();
    b.latents!.dispose();
  });

  it('does not leak tensors while encoding and iterating', async () => {
    const dir = await images(sub(tmp(), 'set4'), 3);
    const before = tf.memory().numTensors;
    for (const cache_latents of [true, false]) {
      const data = dataConfig({ datasets: [{ path: dir }], resolution: 16, flip: true, cache_latents });
      const ds = await openDataset(data, { seed: 1, batchSize: 2, vae: model.vae, vaeHash: 'leak', cacheDir: sub(tmp(), 'cache4') });
      let n = 0;
      for await (const b of ds.batches()) {
        b.latents!.dispose();
        if (++n === 5) break;
      }
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('hashVaeWeights is stable and sees weight changes', async () => {
    const h = await hashVaeWeights(model.vae);
    expect(await hashVaeWeights(model.vae)).toBe(h);
    const p = model.vae.quant_conv.bias!;
    const old = p.t;
    p.value = tf.add(old, 1e-3);
    const changed = await hashVaeWeights(model.vae);
    p.value.dispose();
    p.value = old;
    expect(changed).not.toBe(h);
    expect(await hashVaeWeights(model.vae)).toBe(h);
  });
});
