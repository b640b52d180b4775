// Remake checkpoints/tiny-shapes/, the embedded default model, end to end (docs/shapes.md):
//   data → VAE → U-Net + text encoder → diffusers folder (fp16) → prompt fidelity judged by the pixel classifier.
// Usage (after `npm run build`):
//   node dist/scripts/train_tiny_shapes.js [--config configs/tiny-shapes.yaml] [--work runs/tiny-shapes]
//     [--out checkpoints/tiny-shapes] [--stages data,vae,base,export,eval] [--resume] [--backend wasm]
// Stages reuse what earlier runs finished in --work (the dataset, work/vae/vae/, work/base/model/); --resume continues
// an interrupted VAE or U-Net stage from its last checkpoint. Ctrl-C saves a checkpoint and stops.
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { useBackend, type BackendRequest } from '../src/backend/backend.js';
import { writeDiffusersFolder } from '../src/checkpoints/diffusers_folder.js';
import { loadStateDict } from '../src/checkpoints/load.js';
import { openSource, withSource } from '../src/checkpoints/sources.js';
import { SdtrainError } from '../src/errors.js';
import { CLIPTextModel } from '../src/models/clip_text.js';
import { SD_SCHEDULER } from '../src/models/presets.js';
import { UNet2DConditionModel } from '../src/models/unet.js';
import { AutoencoderKL } from '../src/models/vae.js';
import { paramCount } from '../src/nn/module.js';
import { loadModel, makeModel } from '../src/pipelines/model.js';
import { generate } from '../src/pipelines/generate.js';
import { noiseSchedule } from '../src/schedules/betas.js';
import { parseSchedulerConfig } from '../src/schedules/config.js';
import { loadTinyShapesConfig, type TinyShapesConfig } from '../src/shapes/config.js';
import { readImagesAsFloats, readLabels, WORLD_FILE, writeShapesDataset, type WorldInfo } from '../src/shapes/dataset.js';
import { accuracyOf, evalPrompts, measureFidelity, pixelGrid, type PromptResult } from '../src/shapes/fidelity.js';
import { modelCard, type BuildRecord } from '../src/shapes/model_card.js';
import { comboKey } from '../src/shapes/render.js';
import { writeClipTokenizerFolder } from '../src/shapes/tokenizer_folder.js';
import { BaseModelTraining, initTinyModels, posteriorItems } from '../src/shapes/train_base.js';
import { encodePosteriors, latentScalingFactor, trainVae, type ImageSet } from '../src/shapes/train_vae.js';
import { CLIPTokenizer } from '../src/tokenizer/clip_tokenizer.js';
import { train } from '../src/training/loop.js';
import { findLatestCheckpoint } from '../src/training/checkpoint.js';
import { MemoryBatchSource } from '../src/training/memory_source.js';

const STAGES = ['data', 'vae', 'base', 'export', 'eval'] as const;
type Stage = (typeof STAGES)[number];

const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const fmt = (x: number) => (Math.abs(x) >= 0.01 ? x.toFixed(4) : x.toExponential(2));
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const hms = (s: number) => `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      config: { type: 'string', default: 'configs/tiny-shapes.yaml' },
      work: { type: 'string', default: 'runs/tiny-shapes' },
      out: { type: 'string', default: 'checkpoints/tiny-shapes' },
      stages: { type: 'string', default: STAGES.join(',') },
      resume: { type: 'boolean', default: false },
      backend: { type: 'string', default: process.env.SDTRAIN_BACKEND ?? 'wasm' },
    },
  });
  const stages = new Set(values.stages!.split(',').map((s) => s.trim()) as Stage[]);
  for (const s of stages) if (!STAGES.includes(s)) throw new SdtrainError(`--stages: unknown stage '${s}' (${STAGES.join(', ')})`);
  const { config, text: configText } = await loadTinyShapesConfig(values.config!);
  const work = values.work!;
  const out = values.out!;
  await mkdir(work, { recursive: true });
  const backend = await useBackend(values.backend as BackendRequest);
  log(`backend ${backend.backend}; config ${values.config}; work folder ${work}; output ${out}`);

  const abort = new AbortController();
  process.on('SIGINT', () => {
    if (abort.signal.aborted) process.exit(130);
    log('interrupt: finishing the current step and saving a checkpoint (Ctrl-C again to quit now)');
    abort.abort();
  });

  const recordPath = join(work, 'build.json');
  const record: BuildRecord = existsSync(recordPath) ? (JSON.parse(await readFile(recordPath, 'utf8')) as BuildRecord) : { seconds: {} };
  const saveRecord = () => writeFile(recordPath, `${JSON.stringify(record, null, 2)}\n`);
  const timed = async <T>(stage: Stage, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const r = await f();
    record.seconds[stage] = (performance.now() - t0) / 1000;
    await saveRecord();
    return r;
  };

  // ---- data
  const dataDir = join(work, 'data');
  const d = config.data;
  const world = { n: d.n, seed: d.seed, imageSize: d.image_size, holdOut: d.hold_out, shapes: d.shapes, minScale: d.min_scale, maxScale: d.max_scale };
  if (stages.has('data') || !existsSync(join(dataDir, WORLD_FILE))) {
    await timed('data', async () => {
      if (await sameWorld(dataDir, config)) return log(`data: ${dataDir} already holds this world, reused`);
      log(`data: writing ${d.n} images to ${dataDir}`);
      await rm(dataDir, { recursive: true, force: true });
      await writeShapesDataset(dataDir, world);
    });
  }
  const labels = await readLabels(dataDir);
  const { data, size } = await readImagesAsFloats(dataDir, labels);
  const images: ImageSet = { data, count: labels.length, size };
  log(`data: ${labels.length} images ${size}×${size}, shapes ${d.shapes.join(', ')}; held out: ${d.hold_out.map(comboKey).join(', ') || 'none'}`);

  // ---- VAE
  const vae = new AutoencoderKL(config.model.vae);
  const vaeRun = join(work, 'vae');
  const vaeWeights = join(vaeRun, 'vae', 'diffusion_pytorch_model.safetensors');
  if (stages.has('vae') && (!existsSync(vaeWeights) || values.resume)) {
    const resume = values.resume && (await findLatestCheckpoint(vaeRun)) !== undefined ? 'latest' : undefined;
    if (!resume && existsSync(vaeWeights)) log('vae: already trained, reused');
    else {
      initTinyModels({ vae }, config.seed);
      log(`vae: ${paramCount(vae).toLocaleString('en')} parameters, ${config.vae.steps} steps of ${config.vae.batch_size}${resume ? ' (resuming)' : ''}`);
      const summary = await timed('vae', () =>
        trainVae(vae, images, config.vae, {
          runDir: vaeRun,
          seed: config.seed,
          signal: abort.signal,
          ...(resume ? { resume } : {}),
          onEvent: (e) => {
            if (e.kind === 'log') log(`vae: step ${e.step}/${config.vae.steps} loss ${fmt(e.loss)} (reconstruction ${fmt(e.rec)}, KL ${fmt(e.kl)}) lr ${e.lr.toExponential(2)} ${e.stepsPerSecond.toFixed(2)} steps/s`);
            if (e.kind === 'checkpoint') log(`vae: checkpoint ${e.dir}`);
          },
        }),
      );
      if (summary.reason === 'aborted') return log('vae: interrupted; rerun with --resume to continue');
      record.vae = { steps: summary.steps, firstLoss: summary.firstLoss, finalLoss: summary.recentLoss, finalRec: summary.recentRec };
      record.seconds.vae = summary.seconds; // the loop's own clock counts the time before a resume too
      await saveRecord();
    }
  }
  if (!existsSync(vaeWeights)) throw new SdtrainError(`${vaeWeights} is missing: run the vae stage first`);
  await withSource(openSource(vaeWeights), (s) => loadStateDict(vae, s));
  const post = encodePosteriors(vae, images);
  const scalingFactor = latentScalingFactor(post, config.seed);
  config.model.vae.scaling_factor = scalingFactor;
  log(`vae: latents ${post.shape.join('×')}, scaling factor ${scalingFactor.toFixed(5)}`);

  // ---- U-Net + text encoder
  const tokenizerDir = join(work, 'tokenizer');
  await writeClipTokenizerFolder(tokenizerDir);
  const tokenizer = await CLIPTokenizer.fromBundled();
  const unet = new UNet2DConditionModel(config.model.unet);
  const textEncoder = new CLIPTextModel(config.model.text_encoder);
  const baseRun = join(work, 'base');
  const baseModel = join(baseRun, 'model');
  const trained = existsSync(join(baseModel, 'model_index.json'));
  const schedulerConfig = parseSchedulerConfig(SD_SCHEDULER);
  if (stages.has('base') && (!trained || values.resume)) {
    const resume = values.resume && (await findLatestCheckpoint(baseRun)) !== undefined ? 'latest' : undefined;
    initTinyModels({ unet, textEncoder }, config.seed);
    const method = new BaseModelTraining({ unet, textEncoder, vae, tokenizer }, { schedulerConfig: SD_SCHEDULER, tokenizerDir });
    const items = posteriorItems(post, labels.map((l) => l.caption));
    const source = new MemoryBatchSource(items, { batchSize: config.training.batch_size, seed: config.seed });
    const t = config.training;
    log(`base: U-Net ${paramCount(unet).toLocaleString('en')} + text encoder ${paramCount(textEncoder).toLocaleString('en')} parameters, ${t.max_train_steps} steps of ${t.batch_size}${resume ? ' (resuming)' : ''}`);
    const live = makeModel({ unet, vae, textEncoder }, { tokenizer, schedulerConfig, path: 'tiny-shapes' });
    let lastStep = 0;
    const summary = await timed('base', () =>
      train(method, source, { seed: config.seed, training: t }, {
        runDir: baseRun,
        diffusion: { alphasCumprod: noiseSchedule(schedulerConfig).alphasCumprod, predictionType: schedulerConfig.prediction_type, scalingFactor },
        signal: abort.signal,
        ...(resume ? { resume } : {}),
        onEvent: (e) => {
          if (e.kind === 'start') lastStep = e.step;
          if (e.kind === 'log') {
            const left = (t.max_train_steps - e.step) / Math.max(1e-9, e.stepsPerSecond);
            log(`base: step ${e.step}/${t.max_train_steps} loss ${fmt(e.loss)} lr ${e.lr.toExponential(2)} ${e.stepsPerSecond.toFixed(2)} steps/s, ~${hms(left)} left`);
          }
          if (e.kind === 'checkpoint') log(`base: checkpoint ${e.dir}`);
          if (e.kind === 'preview') log(`base: preview ${e.files.join(', ')}`);
          if (e.kind === 'warning') log(`base: warning: ${e.message}`);
          if (e.kind === 'step') lastStep = e.step;
        },
        preview: async (step, prompts) => {
          const p = t.preview;
          const pngs: Buffer[] = [];
          for (const prompt of prompts) {
            const [img] = await generate(live, { prompt, negativePrompt: p.negative_prompt, sampler: p.sampler, steps: p.steps, cfgScale: p.cfg_scale, width: size, height: size, seed: Math.max(0, p.seed) }, { hashes: false });
            pngs.push(img!.png);
          }
          const file = join(baseRun, 'previews', `step-${String(step).padStart(6, '0')}.png`);
          await mkdir(join(baseRun, 'previews'), { recursive: true });
          await writeFile(file, await pixelGrid(pngs, pngs.length));
          return [file];
        },
      }),
    );
    tf.dispose(items.flatMap((it) => [it.latentDist!.mean, it.latentDist!.logvar]));
    if (summary.reason === 'aborted') return log(`base: interrupted at step ${lastStep}; rerun with --resume to continue`);
    record.base = { steps: summary.steps, firstLoss: summary.firstLoss, finalLoss: summary.recentLoss };
    record.seconds.base = summary.seconds;
    await saveRecord();
  }

  // ---- export: the diffusers folder, fp16
  if (stages.has('export')) {
    await timed('export', async () => {
      if (!existsSync(join(baseModel, 'model_index.json'))) throw new SdtrainError(`${baseModel} is missing: run the base stage first`);
      const m = await loadModel(baseModel);
      try {
        // the VAE and scaling factor of this run (the saved folder has them too; this makes the export follow the config)
        await rm(out, { recursive: true, force: true });
        await writeDiffusersFolder(out, { unet: m.unet, vae, textEncoder: m.textEncoder, configs: { unet: m.unet.config, vae: vae.config, text_encoder: m.textEncoder.config } }, { fp16: true, schedulerConfig: SD_SCHEDULER, tokenizerDir });
      } finally {
        m.dispose();
      }
      await writeFile(join(out, 'training_config.yaml'), `# The config checkpoints/tiny-shapes/ was made with; remake it with:\n#   npm run build && node dist/scripts/train_tiny_shapes.js --config configs/tiny-shapes.yaml\n${configText}`);
      for (const f of ['loss.png']) {
        if (existsSync(join(vaeRun, f))) await copyFile(join(vaeRun, f), join(out, `vae_${f}`));
        if (existsSync(join(baseRun, f))) await copyFile(join(baseRun, f), join(out, `unet_${f}`));
      }
      log(`export: wrote ${out}`);
    });
  }

  // ---- eval: prompt fidelity of the exported (fp16) model
  if (stages.has('eval')) {
    await timed('eval', async () => {
      const model = await loadModel(out);
      const e = config.eval;
      const prompts = evalPrompts(d.shapes, d.hold_out);
      log(`eval: ${prompts.length} prompts × ${e.samples_per_prompt} samples (${e.sampler}, ${e.steps} steps, CFG ${e.cfg_scale})`);
      let results: PromptResult[];
      try {
        results = await measureFidelity(model, prompts, {
          samplesPerPrompt: e.samples_per_prompt, steps: e.steps, cfgScale: e.cfg_scale, sampler: e.sampler, seed: e.seed, imageSize: size, signal: abort.signal,
          onPrompt: (r, i, n) => {
            const got = r.samples.map((s) => `${s.classification.colour} ${s.classification.shape} on ${s.classification.background}`).join(' | ');
            log(`eval ${i + 1}/${n}${r.heldOut ? ' (held out)' : ''}: "${r.prompt}" → ${got}`);
          },
        });
        // the headline prompt, more samples
        const star = await generate(model, { prompt: 'a blue star on a black background', sampler: e.sampler, steps: e.steps, cfgScale: e.cfg_scale, width: size, height: size, seed: 0, batchSize: 8 }, { hashes: false });
        await writeFile(join(out, 'sample_blue_star.png'), await pixelGrid(star.map((s) => s.png), 8));
      } finally {
        model.dispose();
      }
      const heldIn = accuracyOf(results.filter((r) => !r.heldOut));
      const heldOut = accuracyOf(results.filter((r) => r.heldOut));
      record.fidelity = { heldIn, heldOut, samplesPerPrompt: e.samples_per_prompt, steps: e.steps, cfgScale: e.cfg_scale, sampler: e.sampler };
      await saveRecord();
      const evalDir = join(work, 'eval');
      await mkdir(evalDir, { recursive: true });
      await writeFile(join(evalDir, 'results.json'), `${JSON.stringify(results.map((r) => ({ ...r, samples: r.samples.map(({ png: _png, ...s }) => s) })), null, 2)}\n`);
      const rows = results.filter((r) => !r.heldOut).slice(0, 12).concat(results.filter((r) => r.heldOut).slice(0, 4));
      await writeFile(join(out, 'samples.png'), await pixelGrid(rows.flatMap((r) => r.samples.map((s) => s.png)), e.samples_per_prompt * 4));
      const line = (a: typeof heldIn) => `${pct(a.all)} all correct (shape ${pct(a.shape)}, colour ${pct(a.colour)}, background ${pct(a.background)}) over ${a.images} images`;
      log(`eval: held-in prompt fidelity: ${line(heldIn)}`);
      log(`eval: held-out prompt fidelity: ${line(heldOut)}`);
    });
  }

  if (stages.has('export') || stages.has('eval')) {
    if (existsSync(join(out, 'model_index.json'))) {
      const m = await loadModel(out);
      const params = { unet: paramCount(m.unet), vae: paramCount(m.vae), text_encoder: paramCount(m.textEncoder) };
      m.dispose();
      await writeFile(join(out, 'README.md'), modelCard(config, record, params));
      log(`wrote ${join(out, 'README.md')}`);
    }
  }
  log(`done; stage times: ${Object.entries(record.seconds).map(([k, v]) => `${k} ${hms(v)}`).join(', ')}`);
}

/** Whether `dir` already holds the dataset this config describes. */
async function sameWorld(dir: string, c: TinyShapesConfig): Promise<boolean> {
  const path = join(dir, WORLD_FILE);
  if (!existsSync(path)) return false;
  const w = JSON.parse(await readFile(path, 'utf8')) as WorldInfo;
  const d = c.data;
  return (
    w.n === d.n && w.seed === d.seed && w.image_size === d.image_size && w.min_scale === d.min_scale && w.max_scale === d.max_scale &&
    JSON.stringify(w.shapes) === JSON.stringify(d.shapes) && JSON.stringify(w.hold_out) === JSON.stringify(d.hold_out.map(comboKey))
  );
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof SdtrainError ? `train_tiny_shapes: ${err.message}` : err);
    process.exit(1);
  },
);
