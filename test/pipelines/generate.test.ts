// generate() on the tiny SD1 fixture model (64×96 images = 8×12 latents, a few steps): seeds and batches, the
// number and batch of U-Net calls, errors, inpainting/outpainting invariants, the PNG infotext, and leaks.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/formats/safetensors.js';
import { readPngText } from '../../src/formats/png_text.js';
import { channelsLast } from '../../src/parity/compare.js';
import { generate, type GenerateEvent, type GenerateRequest } from '../../src/pipelines/generate.js';
import type { FloatImage } from '../../src/pipelines/images.js';
import { loadModel, type SdModel } from '../../src/pipelines/model.js';
import { parseInfotext } from '../../src/prompts/infotext.js';
import { TorchGenerator } from '../../src/random/torch_rng.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { inpaintingVariant, maxDiff, rectMask, recordUnetCalls, testPicture, TINY, toBytes } from './helpers.js';

const BASE: GenerateRequest = {
  prompt: 'a red cube on a table',
  negativePrompt: 'blurry',
  sampler: 'euler_a',
  steps: 3,
  cfgScale: 7,
  width: 96,
  height: 64,
  seed: 123,
};

/** A case tensor NCHW → NHWC data. */
async function caseNhwc(name: string, key: string): Promise<{ data: Float32Array; shape: number[] }> {
  const f = await SafetensorsFile.open(fixture('parity', 'tiny-sd1', `${name}.safetensors`));
  try {
    const t = await f.read(key);
    return channelsLast(t.data as Float32Array, t.shape);
  } finally {
    await f.close();
  }
}

const caseArgs = (name: string) => JSON.parse(readFileSync(fixture('parity', 'tiny-sd1', `${name}.json`), 'utf8')) as { args: Record<string, unknown>; outputs: Record<string, { suggested_atol?: number }> };

/** NCHW draw of TorchGenerator(seed) number `k` (0-based) of shape [1, 4, 8, 12], as NHWC. */
function draw(seed: number, k: number): Float32Array {
  const g = new TorchGenerator(seed);
  let d = g.randn([1, 4, 8, 12]);
  for (let i = 0; i < k; i++) d = g.randn([1, 4, 8, 12]);
  return channelsLast(d, [1, 4, 8, 12]).data;
}

describe.runIf(hasShared)('generate (tiny SD1)', () => {
  let model: SdModel;
  beforeAll(async () => {
    model = await loadModel(TINY);
  });
  afterAll(() => model?.dispose());

  it('a seed reproduces diffusers: txt2img (DDIM) with seed 1030 gives e2e_txt2img_ddim', async () => {
    const { args, outputs } = caseArgs('e2e_txt2img_ddim');
    const [img] = await generate(
      model,
      { ...BASE, prompt: args.prompt as string, negativePrompt: args.negative_prompt as string, sampler: 'ddim', steps: 10, cfgScale: 7.5, seed: 1030 },
      { latents: true },
    );
    const ref = await caseNhwc('e2e_txt2img_ddim', 'outputs/final_latents');
    const err = maxDiff(img!.latents!, ref.data);
    console.log(`generate(seed 1030) vs diffusers final_latents: max abs err ${err.toExponential(2)}`);
    expect(err).toBeLessThanOrEqual(outputs.final_latents!.suggested_atol!);
  });

  it('a seed reproduces diffusers: img2img (strength 0.6) with seed 1048 gives e2e_img2img_ddim', async () => {
    const { args, outputs } = caseArgs('e2e_img2img_ddim');
    const image = await caseNhwc('e2e_img2img_ddim', 'inputs/image');
    const init: FloatImage = { width: 96, height: 64, channels: 3, data: image.data };
    const [img] = await generate(
      model,
      { ...BASE, prompt: args.prompt as string, negativePrompt: args.negative_prompt as string, sampler: 'ddim', steps: 10, cfgScale: 7.5, seed: 1048, initImage: init, strength: 0.6 },
      { latents: true },
    );
    const ref = await caseNhwc('e2e_img2img_ddim', 'outputs/final_latents');
    const err = maxDiff(img!.latents!, ref.data);
    console.log(`generate(img2img, seed 1048) vs diffusers final_latents: max abs err ${err.toExponential(2)}`);
    expect(err).toBeLessThanOrEqual(outputs.final_latents!.suggested_atol!);
  });

  it('same seed twice gives identical pixels; another seed gives others', async () => {
    const [a] = await generate(model, BASE, { rgb: true });
    const [b] = await generate(model, BASE, { rgb: true });
    const [c] = await generate(model, { ...BASE, seed: 124 }, { rgb: true });
    expect(a!.rgb).toEqual(b!.rgb);
    expect(a!.png.equals(b!.png)).toBe(true);
    expect(maxDiff(a!.rgb!, c!.rgb!)).toBeGreaterThan(10);
  });

  it('image i of iteration n uses seed + n·batch + i; a batch of 2 equals two single runs', async () => {
    const req = { ...BASE, sampler: 'euler_a' as const, batchSize: 2, nIter: 2 };
    const batched = await generate(model, req, { latents: true, rgb: true });
    expect(batched.map((i) => i.seed)).toEqual([123, 124, 125, 126]);
    expect(batched.map((i) => [i.iteration, i.batchPos, i.index])).toEqual([[0, 0, 0], [0, 1, 1], [1, 0, 2], [1, 1, 3]]);
    for (const i of [0, 1]) {
      const [single] = await generate(model, { ...BASE, seed: 123 + i }, { latents: true, rgb: true });
      const err = maxDiff(batched[i]!.latents!, single!.latents!);
      const scale = Math.max(...Array.from(single!.latents!, Math.abs));
      console.log(`batch of 2 vs single run (seed ${123 + i}): latents max abs err ${err.toExponential(2)} (max |latent| ${scale.toFixed(1)}), pixels ${maxDiff(batched[i]!.rgb!, single!.rgb!)}`);
      // The wasm backend's kernels are not batch-invariant (U-Net outputs differ by ~1e-6 between batch 2 and 4; the
      // cpu backend is exact): allow float32 noise relative to the latents' scale, no more.
      expect(err).toBeLessThanOrEqual(1e-5 * scale);
      expect(maxDiff(batched[i]!.rgb!, single!.rgb!)).toBeLessThanOrEqual(1);
    }
  });

  it('guidance 1 makes one U-Net call per step with batch B; guidance > 1 one call with batch 2B', async () => {
    const rec = recordUnetCalls(model.unet);
    try {
      await generate(model, { ...BASE, sampler: 'ddim', steps: 3, cfgScale: 1, batchSize: 2 });
      expect(rec.calls.map((c) => c.sample[0])).toEqual([2, 2, 2]);
      expect(rec.calls.map((c) => c.context[0])).toEqual([2, 2, 2]);
      rec.calls.length = 0;
      await generate(model, { ...BASE, sampler: 'ddim', steps: 3, cfgScale: 7, batchSize: 2 });
      expect(rec.calls.map((c) => c.sample[0])).toEqual([4, 4, 4]);
      expect(rec.calls.map((c) => c.context[0])).toEqual([4, 4, 4]);
    } finally {
      rec.restore();
    }
  });

  it('a prompt longer than 75 tokens and a short negative prompt share one call (negative padded with empty chunks)', async () => {
    const rec = recordUnetCalls(model.unet);
    try {
      const long = Array(90).fill('cat').join(' '); // 90 tokens: 2 chunks
      await generate(model, { ...BASE, prompt: long, sampler: 'ddim', steps: 2 });
      expect(rec.calls.map((c) => c.context)).toEqual([[2, 154, 32], [2, 154, 32]]);
    } finally {
      rec.restore();
    }
  });

  it('AND and prompt editing run: AND adds one batch half per part', async () => {
    const rec = recordUnetCalls(model.unet);
    try {
      const [img] = await generate(model, { ...BASE, prompt: 'a [cat:dog:0.5] AND a tree:0.5', sampler: 'ddim', steps: 4 });
      expect(rec.calls.map((c) => c.sample[0])).toEqual([3, 3, 3, 3]);
      expect(img!.png.length).toBeGreaterThan(100);
    } finally {
      rec.restore();
    }
  });

  it('initial noise is the first draw of TorchGenerator(seed); legacy inpainting draws the image eps first', async () => {
    const rec = recordUnetCalls(model.unet);
    try {
      await generate(model, { ...BASE, sampler: 'ddim', steps: 1, seed: 77 });
      expect(maxDiff(rec.calls[0]!.first!.subarray(0, 384), draw(77, 0))).toBe(0); // DDIM: init_noise_sigma = 1
      rec.calls.length = 0;
      const picture = testPicture(96, 64);
      await generate(model, { ...BASE, sampler: 'ddim', steps: 1, seed: 77, initImage: picture, mask: rectMask(96, 64, 48, 0, 96, 64), strength: 1 });
      expect(maxDiff(rec.calls[0]!.first!.subarray(0, 384), draw(77, 1))).toBe(0);
    } finally {
      rec.restore();
    }
  });

  it('rejects a width that is not a multiple of 8, a mask of another size, a mask without init image', async () => {
    await expect(generate(model, { ...BASE, width: 100 })).rejects.toThrow(/width must be a multiple of 8, got 100/);
    await expect(generate(model, { ...BASE, height: 0 })).rejects.toThrow(/height must be a whole number >= 8, got 0/);
    const picture = testPicture(96, 64);
    await expect(generate(model, { ...BASE, initImage: picture, mask: rectMask(48, 32, 0, 0, 8, 8) })).rejects.toThrow(
      /the mask is 48×32 but the init image is 96×64/,
    );
    await expect(generate(model, { ...BASE, mask: rectMask(96, 64, 0, 0, 8, 8) })).rejects.toThrow(/a mask needs an init image/);
    await expect(generate(model, { ...BASE, outpaint: { left: 8 } })).rejects.toThrow(/outpainting needs an init image/);
    await expect(generate(model, { ...BASE, initImage: '/nonexistent/init.png' })).rejects.toThrow(/\/nonexistent\/init\.png: cannot read the image/);
    await expect(generate(model, { ...BASE, seed: -1 })).rejects.toThrow(/seed must be a whole number >= 0/);
  });

  it('legacy (4-channel) inpainting keeps the unmasked region: exactly the init pixels with the overlay, the image latents without', async () => {
    const picture = testPicture(96, 64);
    const mask = rectMask(96, 64, 48, 0, 96, 64); // repaint the right half (latent columns 6..11)
    const req = { ...BASE, sampler: 'ddim' as const, steps: 4, initImage: picture, mask, maskBlur: 0, strength: 1 };
    const [over] = await generate(model, req, { rgb: true });
    const [raw] = await generate(model, { ...req, inpaintOverlay: false }, { rgb: true, latents: true });
    const [x0] = await generate(model, { ...req, mask: undefined, strength: 0 }, { rgb: true, latents: true }); // image latents, same eps
    const bytes = toBytes(picture);
    const region = (px: Uint8Array | Float32Array, cols: number, width: number, ch: number, keepLeft: boolean) =>
      Array.from(px).filter((_, i) => (Math.floor(i / ch) % width < cols) === keepLeft);
    expect(region(over!.rgb!, 48, 96, 3, true)).toEqual(region(bytes, 48, 96, 3, true));
    expect(maxDiff(region(over!.rgb!, 48, 96, 3, false), region(bytes, 48, 96, 3, false))).toBeGreaterThan(10);
    expect(region(raw!.latents!, 6, 12, 4, true)).toEqual(region(x0!.latents!, 6, 12, 4, true));
    expect(maxDiff(region(raw!.latents!, 6, 12, 4, false), region(x0!.latents!, 6, 12, 4, false))).toBeGreaterThan(0.1);
  });

  it('an all-black mask keeps everything: the image latents (= strength 0), and the init pixels with the overlay', async () => {
    const picture = testPicture(96, 64);
    const req = { ...BASE, sampler: 'euler' as const, steps: 3, initImage: picture, mask: rectMask(96, 64, 0, 0, 0, 0), strength: 1 };
    const events: GenerateEvent[] = [];
    const [keep] = await generate(model, req, { rgb: true, latents: true });
    const [x0] = await generate(model, { ...req, mask: undefined, strength: 0 }, { latents: true, onEvent: (e) => events.push(e) });
    expect(events.filter((e) => e.type === 'step')).toEqual([]); // strength 0: no denoising steps, the input re-decoded
    expect(keep!.latents).toEqual(x0!.latents);
    expect(keep!.rgb).toEqual(toBytes(picture));
  });

  it('9-channel inpainting feeds [latents, mask, masked-image latents]; strength 1 draws the noise first', async () => {
    const nine = inpaintingVariant(model);
    const rec = recordUnetCalls(nine.unet);
    try {
      expect(nine.inpainting).toBe(true);
      const picture = testPicture(96, 64);
      const [img] = await generate(nine, { ...BASE, sampler: 'ddim', steps: 2, seed: 5, initImage: picture, mask: rectMask(96, 64, 0, 0, 48, 64), maskBlur: 0, strength: 1 });
      expect(rec.calls.map((c) => c.sample)).toEqual([[2, 8, 12, 9], [2, 8, 12, 9]]);
      const channels = (first: Float32Array, ch: number[]) =>
        Float32Array.from({ length: 96 * ch.length }, (_, i) => first[Math.floor(i / ch.length) * 9 + ch[i % ch.length]!]!);
      expect(maxDiff(channels(rec.calls[0]!.first!, [0, 1, 2, 3]), draw(5, 0))).toBe(0);
      expect(Array.from(channels(rec.calls[0]!.first!, [4]))).toEqual(Array.from({ length: 96 }, (_, i) => (i % 12 < 6 ? 1 : 0)));
      expect([img!.width, img!.height]).toEqual([96, 64]);
      // txt2img on an inpainting model: everything is masked (mask channel all 1), as A1111 conditions it
      rec.calls.length = 0;
      await generate(nine, { ...BASE, sampler: 'ddim', steps: 1 });
      expect(rec.calls[0]!.sample).toEqual([2, 8, 12, 9]);
      expect(Array.from(channels(rec.calls[0]!.first!, [4]))).toEqual(Array(96).fill(1));
    } finally {
      rec.restore();
      nine.dispose();
    }
  });

  it('outpainting pads to the requested size and keeps the original area', async () => {
    const picture = testPicture(96, 64);
    const [img] = await generate(model, { ...BASE, sampler: 'ddim', steps: 3, initImage: picture, outpaint: { left: 16, bottom: 8 }, maskBlur: 0, strength: 1 }, { rgb: true });
    expect([img!.width, img!.height]).toEqual([112, 72]);
    const p = parseInfotext(img!.infotext).params;
    expect([p['Size-1'], p['Size-2'], p['Mask blur']]).toEqual(['112', '72', '0']);
    const bytes = toBytes(picture);
    const inner: number[] = [];
    for (let y = 0; y < 64; y++) for (let x = 16; x < 112; x++) for (let c = 0; c < 3; c++) inner.push(img!.rgb![(y * 112 + x) * 3 + c]!);
    expect(inner).toEqual(Array.from(bytes));
  });

  it("writes a PNG whose 'parameters' infotext parses back to the request", async () => {
    const req = { ...BASE, prompt: 'a cat, (sitting:1.2)\nsecond line', negativePrompt: 'dog: none, blurry', sampler: 'dpmpp_2m_karras' as const, cfgScale: 6.5, seed: 4242, clipSkip: 2 };
    const [img] = await generate(model, req);
    const text = readPngText(img!.png).parameters!;
    expect(text).toBe(img!.infotext);
    const parsed = parseInfotext(text);
    expect(parsed.prompt).toBe(req.prompt);
    expect(parsed.negativePrompt).toBe(req.negativePrompt);
    expect(parsed.clipSkip).toBe(2);
    expect(parsed.params).toMatchObject({
      Steps: '3',
      Sampler: 'DPM++ 2M',
      'Schedule type': 'Karras',
      'CFG scale': '6.5',
      Seed: '4242',
      'Size-1': '96',
      'Size-2': '64',
      Model: 'tiny-sd1',
      'Model hash': expect.stringMatching(/^[0-9a-f]{10}$/),
      RNG: 'CPU',
    });
  });

  it('leaves no tensors behind: the count after N images equals the count after 1', async () => {
    const req = { ...BASE, sampler: 'dpmpp_2m' as const, initImage: testPicture(96, 64), mask: rectMask(96, 64, 0, 0, 48, 32), strength: 0.8 };
    const before = tf.memory().numTensors;
    await generate(model, req);
    const afterOne = tf.memory().numTensors;
    await generate(model, { ...req, batchSize: 2, nIter: 2, prompt: 'a [cat:dog:2] AND a tree' });
    expect(tf.memory().numTensors).toBe(afterOne);
    expect(afterOne).toBe(before);
  });
});
