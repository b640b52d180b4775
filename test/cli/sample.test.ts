// `sdtrain sample` as a user runs it: the built binary on the tiny fixture model and real files.
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { readPngText } from '../../src/formats/png_text.js';
import { classifyImage } from '../../src/shapes/classify.js';
import { parseInfotext } from '../../src/prompts/infotext.js';
import { sdtrain } from '../helpers/cli.js';
import { fixture } from '../helpers/shared.js';

const MODEL = fixture('tiny-sd1');
const base = ['sample', '--model', MODEL, '--steps', '4', '-W', '64', '-H', '48', '--backend', 'wasm'];
const tmp = (): string => mkdtempSync(join(tmpdir(), 'sdtrain-sample-'));

async function run(args: string[]): Promise<{ out: string; files: string[]; stderr: string }> {
  const out = tmp();
  const r = await sdtrain([...base, '--out', out, ...args]);
  if (r.code !== 0) throw new Error(`sdtrain failed (${r.code}): ${r.stderr}`);
  return { out, files: readdirSync(out).sort().map((f) => join(out, f)), stderr: r.stderr };
}
const pixels = async (file: string): Promise<Buffer> => sharp(file).raw().toBuffer();

let initImage: string;
let mask: string;
beforeAll(async () => {
  const dir = tmp();
  initImage = join(dir, 'init.png');
  mask = join(dir, 'mask.png');
  await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 40, b: 40 } } }).png().toFile(initImage);
  // right half white = repaint
  const m = Buffer.alloc(64 * 48, 0);
  for (let y = 0; y < 48; y++) for (let x = 32; x < 64; x++) m[y * 64 + x] = 255;
  await sharp(m, { raw: { width: 64, height: 48, channels: 1 } }).png().toFile(mask);
});

describe('sdtrain sample', () => {
  it('txt2img: the PNG parameters chunk parses back to the same settings', async () => {
    const { files } = await run(['-p', 'a red (circle:1.2)', '-n', 'blurry', '--seed', '7', '--cfg-scale', '5.5', '--sampler', 'ddim']);
    expect(files.map((f) => f.split('/').pop())).toEqual(['00000-7.png']);
    const info = parseInfotext(readPngText(readFileSync(files[0]!)).parameters!);
    expect(info.prompt).toBe('a red (circle:1.2)');
    expect(info.negativePrompt).toBe('blurry');
    expect(info.params).toMatchObject({ Steps: '4', Sampler: 'DDIM', 'CFG scale': '5.5', Seed: '7', 'Size-1': '64', 'Size-2': '48', Model: 'tiny-sd1' });
    expect(info.params['Model hash']).toMatch(/^[0-9a-f]{10}$/);
  });

  it('without --model: the bundled tiny-shapes model, at its native 32×32, draws what the prompt asks', async () => {
    const out = tmp();
    const r = await sdtrain(['sample', '-p', 'a blue star on a black background', '--batch-size', '4', '--seed', '0', '--backend', 'wasm', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const files = readdirSync(out).sort();
    expect(files).toEqual(['00000-0.png', '00001-1.png', '00002-2.png', '00003-3.png']);
    const info = parseInfotext(readPngText(readFileSync(join(out, files[0]!))).parameters!);
    expect(info.params).toMatchObject({ Model: 'tiny-shapes', 'Size-1': '32', 'Size-2': '32' });
    const seen = await Promise.all(
      files.map(async (f) => {
        const { data, info: m } = await sharp(join(out, f)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
        const c = classifyImage(new Uint8Array(data), m.width, m.height);
        return `${c.colour} ${c.shape} on ${c.background}`;
      }),
    );
    // (the pixel classifier of src/shapes; the model's fidelity is ~95%, so one miss in four is allowed)
    expect(seen.filter((x) => x === 'blue star on black').length, seen.join(', ')).toBeGreaterThanOrEqual(3);
  });

  it("without --width/--height: the model's native size (unet sample_size 8 × VAE downscale 8 = 64)", async () => {
    const out = tmp();
    const r = await sdtrain(['sample', '--model', MODEL, '--steps', '2', '--backend', 'wasm', '--out', out, '-p', 'x', '--seed', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(await sharp(join(out, '00000-1.png')).metadata()).toMatchObject({ width: 64, height: 64 });
  });

  it('the same seed gives identical pixels twice; another seed differs', async () => {
    const a = (await run(['-p', 'a star', '--seed', '123'])).files[0]!;
    const b = (await run(['-p', 'a star', '--seed', '123'])).files[0]!;
    const c = (await run(['-p', 'a star', '--seed', '124'])).files[0]!;
    expect((await pixels(a)).equals(await pixels(b))).toBe(true);
    expect((await pixels(a)).equals(await pixels(c))).toBe(false);
  });

  it('a batch uses seed, seed+1; --grid writes a contact sheet; --seed -1 prints the seed it picked', async () => {
    const r = await run(['-p', 'x', '--batch-size', '2', '--grid']);
    expect(r.stderr).toMatch(/seed: \d+/);
    const seed = Number(/seed: (\d+)/.exec(r.stderr)![1]);
    expect(r.files.map((f) => f.split('/').pop())).toEqual([`00000-${seed}.png`, `00001-${seed + 1}.png`, `grid-00002-${seed}.png`]);
  });

  it('img2img, inpaint and outpaint run and record what they did', async () => {
    const i2i = (await run(['-p', 'x', '--seed', '1', '--init-image', initImage, '--strength', '0.5'])).files[0]!;
    expect(parseInfotext(readPngText(readFileSync(i2i)).parameters!).params['Denoising strength']).toBe('0.5');
    const inp = (await run(['-p', 'x', '--seed', '1', '--init-image', initImage, '--mask', mask, '--strength', '1'])).files[0]!;
    const px = await pixels(inp);
    // the kept (black-mask) left half stays the init colour (A1111 pastes it back through the mask)
    expect([px[0], px[1], px[2]]).toEqual([200, 40, 40]);
    const outp = (await run(['-p', 'x', '--seed', '1', '--init-image', initImage, '--outpaint', 'left:16,bottom:8'])).files[0]!;
    expect(await sharp(outp).metadata()).toMatchObject({ width: 80, height: 56 });
  });

  it('an embedding and a LoRA from the fixtures apply and are recorded', async () => {
    const { files, stderr } = await run([
      '-p', 'a photo of a1111_embedding_tiny', '--seed', '3',
      '--embeddings', fixture('formats', 'a1111_embedding_tiny.pt'),
      '--lora', `${fixture('formats', 'kohya_lora_tiny_locon.safetensors')}:0.8`,
    ]);
    const params = parseInfotext(readPngText(readFileSync(files[0]!)).parameters!);
    expect(params.params['TI hashes']).toMatch(/a1111_embedding_tiny: [0-9a-f]+/);
    expect(params.prompt).toMatch(/<lora:kohya_lora_tiny_locon:0\.8>/);
    expect(stderr).not.toMatch(/warning: .*skipped/);
  });

  it('LoRA at weight 0 reproduces the base model exactly', async () => {
    const a = (await run(['-p', 'x', '--seed', '9'])).files[0]!;
    const b = (await run(['-p', 'x', '--seed', '9', '--lora', `${fixture('formats', 'kohya_lora_tiny_locon.safetensors')}:0`])).files[0]!;
    expect((await pixels(a)).equals(await pixels(b))).toBe(true);
  });

  it.each([
    [['-p', 'x', '-W', '60'], /width: .*multiple of 8/i, 2],
    [['-p', 'x', '--init-image', '/nonexistent/in.png'], /\/nonexistent\/in\.png/, 1],
  ])('bad input %j → a clear error', async (args, re, code) => {
    const r = await sdtrain([...base, '--out', tmp(), ...args]);
    expect(r.code).toBe(code);
    expect(r.stderr).toMatch(re);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('a mask of the wrong size names both sizes', async () => {
    const dir = tmp();
    const small = join(dir, 'small-mask.png');
    await sharp({ create: { width: 16, height: 16, channels: 3, background: 'white' } }).png().toFile(small);
    const r = await sdtrain([...base, '--out', tmp(), '-p', 'x', '--init-image', initImage, '--mask', small]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/mask is 16×16 but the init image is 64×48/);
  });
});
