// `sdtrain lora` and `sdtrain merge` end to end with the built binary: the tiny fixture model and a small generated
// image set. Training lowers the loss against a run that cannot learn, the export is a kohya LoRA, sampling at weight 0
// is the base model pixel for pixel, and a merged checkpoint samples like base + LoRA.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namedParams } from '../../src/nn/module.js';
import { loadModel, type SdModel } from '../../src/pipelines/model.js';
import { sdtrain } from '../helpers/cli.js';
import { fixture, hasShared } from '../helpers/shared.js';

let dir: string;
let config: string;
const MODEL = fixture('tiny-sd1');

const losses = (runDir: string): number[] =>
  readFileSync(join(runDir, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);

const train = (name: string, ...set: string[]) =>
  sdtrain(['lora', '--config', config, '--backend', 'wasm', '--set', `run_name=${name}`, ...set.flatMap((s) => ['--set', s])]);

/** Samples one 64×64 image and returns its RGB bytes. */
async function samplePixels(name: string, model: string, ...extra: string[]): Promise<Buffer> {
  const out = join(dir, 'samples', name);
  const r = await sdtrain(['sample', '--model', model, '-p', 'a red ball', '--steps', '3', '-W', '64', '-H', '64', '--seed', '5', '--sampler', 'euler', '--backend', 'wasm', '--out', out, ...extra]);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  return sharp(join(out, readdirSync(out).find((f) => f.endsWith('.png'))!)).raw().toBuffer();
}

const maxDiff = (a: Buffer, b: Buffer): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sdtrain-lora-cli-'));
  const images = join(dir, 'images');
  mkdirSync(images);
  for (const [i, [color, name]] of [['#d33', 'red'], ['#3a3', 'green'], ['#33d', 'blue'], ['#dd3', 'yellow']].entries()) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="#fff"/><circle cx="${28 + i * 3}" cy="32" r="18" fill="${color}"/></svg>`;
    await sharp(Buffer.from(svg)).png().toFile(join(images, `ball_${i}.png`));
    writeFileSync(join(images, `ball_${i}.txt`), `a ${name} ball, circle, white background`);
  }
  config = join(dir, 'ball.yaml');
  writeFileSync(
    config,
    [
      'method: lora',
      `model: ${MODEL}`,
      'output_dir: runs',
      'data:',
      '  resolution: 64',
      '  datasets:',
      '    - path: images',
      'lora:',
      '  rank: 4',
      '  alpha: 2',
      '  targets: attention+ff',
      '  train_text_encoder: true',
      '  text_encoder_lr: 0.005',
      'training:',
      '  max_train_steps: 8',
      '  learning_rate: 0.01',
      '  cond_dropout: 0',
      '  save_every_n_steps: 4',
      '  log_every_n_steps: 1',
      '  preview: { every_n_steps: 0 }',
      '',
    ].join('\n'),
  );
});

describe.runIf(hasShared)('sdtrain lora / merge', () => {
  const lora = () => join(dir, 'runs', 'learn', 'learn.safetensors');

  it('trains, writes the run folder, and the loss is lower than the same run without learning', async () => {
    const r = await train('learn');
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/done: 8 steps/);
    expect(r.stdout).toMatch(/sdtrain sample --lora .*learn\.safetensors:1/);
    for (const f of ['config.resolved.yaml', 'loss.jsonl', 'loss.png', 'learn.safetensors', 'checkpoints/step-4/learn.safetensors', 'checkpoints/step-8/trainer_state.safetensors']) {
      expect(readdirSync(join(dir, 'runs', 'learn', ...f.split('/').slice(0, -1))), f).toContain(f.split('/').at(-1));
    }
    const frozen = await train('frozen', 'training.learning_rate=1e-12');
    expect(frozen.code).toBe(0);
    // Same seed: same batches, timesteps and noise; only the LoRA differs. Learning lowers the later losses.
    const a = losses(join(dir, 'runs', 'learn'));
    const b = losses(join(dir, 'runs', 'frozen'));
    expect(a[0]).toBe(b[0]); // step 1 runs the untouched base model in both (up = 0)
    const mean = (x: number[]) => x.reduce((s, v) => s + v, 0) / x.length;
    console.log(`mean loss of steps 5-8: learning ${mean(a.slice(4)).toFixed(5)}, lr 1e-12 ${mean(b.slice(4)).toFixed(5)}`);
    expect(mean(a.slice(4))).toBeLessThan(mean(b.slice(4)));
  });

  it('the export is a kohya LoRA (inspect), with ss_* metadata and text-encoder modules', async () => {
    const r = await sdtrain(['inspect', lora(), '--json']);
    expect(r.code).toBe(0);
    const [report] = JSON.parse(r.stdout) as Array<{ tensorCount: number; dtypes: Record<string, number>; metadata: Record<string, string>; detection: { kind: string; layout: string; details: { modules: number; text_encoder_modules: number; rank: number; alpha: number } } }>;
    expect(report!.detection).toMatchObject({ kind: 'lora', layout: 'kohya', details: { rank: 4, alpha: 2 } });
    const d = report!.detection.details;
    expect(d.text_encoder_modules).toBe(3 * 6); // 3 layers × q/k/v/out_proj + fc1/fc2
    expect(d.modules - d.text_encoder_modules).toBe(11 * 10); // 11 transformer blocks × (8 attention + 2 feed-forward)
    expect(report!.tensorCount).toBe(3 * d.modules);
    expect(report!.dtypes).toEqual({ F16: report!.tensorCount });
    expect(report!.metadata).toMatchObject({
      ss_network_module: 'networks.lora',
      ss_network_dim: '4',
      ss_network_alpha: '2.0',
      ss_base_model_version: 'sd_v1',
      ss_steps: '8',
      ss_text_encoder_lr: '0.005',
      ss_sd_model_name: 'tiny-sd1',
      ss_num_train_images: '4',
      ss_dataset_dirs: '{"images":{"n_repeats":1,"img_count":4}}',
    });
    expect(JSON.parse(report!.metadata.ss_tag_frequency!)).toMatchObject({ images: { 'a red ball': 1, circle: 4, 'white background': 4 } });
    expect(report!.metadata.sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('sample --lora FILE:0 gives the base pixels exactly, FILE:1 different ones', async () => {
    const base = await samplePixels('base', MODEL);
    const zero = await samplePixels('zero', MODEL, '--lora', `${lora()}:0`);
    const one = await samplePixels('one', MODEL, '--lora', `${lora()}:1`);
    expect(zero.equals(base)).toBe(true);
    console.log(`LoRA at weight 1 changes pixels by up to ${maxDiff(one, base)}/255`);
    expect(maxDiff(one, base)).toBeGreaterThan(2);
  });

  it('prior preservation: instance_data_dir + class images generated with the base model, counted in the metadata', async () => {
    const classDir = join(dir, 'class-images');
    const r = await train(
      'prior',
      'data.datasets=[]',
      `lora.instance_data_dir=${join(dir, 'images')}`,
      'lora.instance_prompt=a photo of sks ball',
      'lora.with_prior_preservation=true',
      `lora.class_data_dir=${classDir}`,
      'lora.class_prompt=a photo of a ball',
      'lora.num_class_images=2',
      'training.max_train_steps=2',
      'training.preview.steps=2',
    );
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/class images: 0 found in .*, 2 generated/);
    expect(readdirSync(classDir).filter((f) => f.endsWith('.png'))).toHaveLength(2);
    expect(losses(join(dir, 'runs', 'prior'))).toHaveLength(2);
    const info = await sdtrain(['inspect', join(dir, 'runs', 'prior', 'prior.safetensors'), '--json']);
    const [rep] = JSON.parse(info.stdout) as Array<{ metadata: Record<string, string> }>;
    expect(rep!.metadata).toMatchObject({ ss_num_reg_images: '2', ss_num_train_images: '4', ss_prior_loss_weight: '1.0' });
    expect(JSON.parse(rep!.metadata.ss_tag_frequency!)).toEqual({ images: { 'a photo of sks ball': 4 } });
  });

  describe('merge', () => {
    let fromFolder: SdModel | undefined;
    let fromFile: SdModel | undefined;
    afterAll(() => {
      fromFolder?.dispose();
      fromFile?.dispose();
    });

    it('a merged diffusers folder samples like base + --lora FILE:1; the merged single file reloads with the same weights', async () => {
      const folder = join(dir, 'merged-folder');
      const file = join(dir, 'merged.safetensors');
      for (const out of [folder, file]) {
        const r = await sdtrain(['merge', '--model', MODEL, '--lora', `${lora()}:1`, '--out', out, '--backend', 'wasm']);
        expect(r.stderr).not.toMatch(/error|warning/);
        expect(r.code).toBe(0);
        expect(r.stderr).toMatch(/merged 1 LoRA file\(s\) into 128 weights/);
      }
      const merged = await samplePixels('merged', folder);
      const withLora = await samplePixels('with-lora', MODEL, '--lora', `${lora()}:1`);
      console.log(`merged folder vs base + LoRA: max pixel difference ${maxDiff(merged, withLora)}/255`);
      expect(maxDiff(merged, withLora)).toBeLessThanOrEqual(1);
      const record = JSON.parse(readFileSync(join(folder, 'sdtrain_merge.json'), 'utf8')) as { loras: Array<{ file: string; weight: number }> };
      expect(record.loras).toMatchObject([{ file: 'learn.safetensors', weight: 1 }]);

      // The tiny text encoder is 32 wide: a single file cannot tell its head count, so it is given here.
      fromFile = await loadModel(file, { overrides: { text_encoder: { num_attention_heads: 4 } } });
      fromFolder = await loadModel(folder);
      for (const part of ['unet', 'textEncoder', 'vae'] as const) {
        const a = namedParams(fromFolder[part]);
        for (const [k, p] of namedParams(fromFile[part])) {
          expect(Buffer.from((p.t.dataSync() as Float32Array).buffer).equals(Buffer.from((a.get(k)!.t.dataSync() as Float32Array).buffer)), `${part}.${k}`).toBe(true);
        }
      }
      const info = await sdtrain(['inspect', file, '--json']);
      const [rep] = JSON.parse(info.stdout) as Array<{ metadata: Record<string, string>; detection: { kind: string; layout: string } }>;
      expect(rep!.detection.layout).toBe('original');
      expect(JSON.parse(rep!.metadata['sdtrain.merged_loras']!)).toMatchObject([{ file: 'learn.safetensors', weight: 1 }]);
    });

    it('bad input: an SD 1.5 LoRA on the tiny model, an existing --out, an unknown target', async () => {
      const wrong = await sdtrain(['merge', '--model', MODEL, '--lora', fixture('formats', 'kohya_lora_sd15_r4.safetensors'), '--out', join(dir, 'x.safetensors'), '--backend', 'wasm']);
      expect(wrong.code).not.toBe(0);
      expect(wrong.stderr).toMatch(/does not fit the model/);
      const exists = await sdtrain(['merge', '--model', MODEL, '--lora', lora(), '--out', join(dir, 'merged.safetensors'), '--backend', 'wasm']);
      expect(exists.code).toBe(2);
      expect(exists.stderr).toMatch(/exists; pass --overwrite/);
      const bad = await train('bad', 'lora.targets=[to_qq]');
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/lora\.targets: 'to_qq' selects no layer/);
    });
  });
});
