// The part every training command shares: config → backend → model → dataset → train loop, with a progress bar,
// Ctrl-C handling, resume and previews. Each method command supplies only how to build its TrainingMethod.
import { mkdtemp, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { estimateJob, type TrainingJob } from '../backend/memory.js';
import { formatBytes } from '../backend/backend.js';
import type { ResolvedSource } from '../config/load_config.js';
import type { TrainConfig, TrainMethod } from '../config/schema.js';
import { openDataset, type Dataset } from '../data/dataset.js';
import type { DataConfig } from '../data/types.js';
import { generate } from '../pipelines/generate.js';
import { loadModel, makeModel, readModelConfigs, type SdModel } from '../pipelines/model.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { DatasetBatchSource } from '../training/dataset_source.js';
import { ensureClassImages } from '../training/class_images.js';
import { PriorPreservationSource } from '../training/dreambooth.js';
import { diffusionSetup, train } from '../training/loop.js';
import type { BatchSource, TrainingMethod, TrainSummary } from '../training/types.js';
import { chooseBackend } from './backend_choice.js';
import { createProgress } from './progress.js';

export interface MethodFactory<C extends TrainConfig> {
  /** Memory-estimate details of the method. */
  job(cfg: C): Partial<TrainingJob>;
  /** The token that stands for [name] in caption templates, if any. */
  templateToken(cfg: C): string | undefined;
  build(model: SdModel, cfg: C, runName: string): Promise<TrainingMethod>;
  /**
   * How previews see what is being trained: files to pass to the sampler (e.g. the embedding saved at this step) and
   * the prompt rewrite (the placeholder → the embedding's keyword), hypernetworks to apply (the one being trained).
   */
  preview?(
    method: TrainingMethod,
    dir: string,
    step: number,
  ): Promise<{ embeddings?: string[]; rewrite?: (p: string) => string; hypernetworks?: Array<{ path: string; strength?: number }> }>;
  /** Lines printed under the memory estimate (e.g. DreamBooth: what would cut it). */
  memoryAdvice?(cfg: C, job: TrainingJob): string[];
  /**
   * The batch source, for a method that trains on more than `cfg.data` (DreamBooth: instance images plus class images
   * generated first). Default: `cfg.data` opened as one dataset.
   */
  source?(ctx: SourceContext<C>): Promise<BatchSource>;
}

/** What MethodFactory.source gets. */
export interface SourceContext<C extends TrainConfig> {
  cfg: C;
  /** The model with its own tokenizer (the previews'): base weights until training starts, for generating images. */
  model: SdModel;
  /** Opens a dataset as the run opens its own: seed, batch size, template token, VAE, latent cache, progress. */
  open(data: DataConfig): Promise<Dataset>;
  warn(message: string): void;
  /** Prints a line above the progress bar. */
  log(message: string): void;
  progress: { start(total: number, label: string): void; update(done: number): void; stop(): void };
}

/** Prior preservation as DreamBooth and LoRA configs describe it: class images in `dir`, made with the base model. */
export interface PriorSpec {
  dir: string;
  prompt: string;
  count: number;
  lossWeight: number;
  /** The class images as a dataset config (the class folder, class prompt as caption). */
  data: DataConfig;
}

/**
 * The instance dataset paired with class images: generates the missing ones first (with the run's preview sampler
 * settings, at the training resolution), then serves instance and class batches together (PriorPreservationSource).
 */
export async function priorPreservationSource<C extends TrainConfig>(ctx: SourceContext<C>, instance: Dataset, prior: PriorSpec): Promise<PriorPreservationSource> {
  const { cfg, model, warn, log, progress } = ctx;
  const p = cfg.training.preview;
  let started = false;
  const report = await ensureClassImages(model, {
    dir: prior.dir,
    prompt: prior.prompt,
    count: prior.count,
    seed: cfg.seed,
    width: cfg.data.resolution,
    height: cfg.data.resolution,
    sampler: p.sampler,
    steps: p.steps,
    cfgScale: p.cfg_scale,
    negativePrompt: p.negative_prompt,
    ...(cfg.training.attention_slice_size !== undefined ? { attentionSliceSize: cfg.training.attention_slice_size } : {}),
    onWarning: warn,
    onProgress: ({ done, total }) => {
      if (!started) progress.start(total, `generating class images (${p.sampler}, ${p.steps} steps)`);
      started = true;
      progress.update(done);
    },
  });
  progress.stop();
  log(`class images: ${report.existing} found in ${prior.dir}, ${report.generated.length} generated`);
  return new PriorPreservationSource(instance, await ctx.open(prior.data), prior.lossWeight);
}

const timestamp = (): string => new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);

/** The run folder to resume: an explicit path, or the newest `<method>-*` folder with a checkpoint under output_dir. */
async function resumeDir(outputDir: string, method: TrainMethod, runName: string | undefined, resume: string | true): Promise<string> {
  if (resume !== true) return resolve(resume);
  if (runName) return join(outputDir, runName);
  const names = (await readdir(outputDir).catch(() => [] as string[])).filter((n) => n.startsWith(`${method}-`)).sort();
  for (const n of names.reverse()) {
    if (await stat(join(outputDir, n, 'checkpoints')).then(() => true, () => false)) return join(outputDir, n);
  }
  throw new Error(`--resume: no ${method}-* run with checkpoints in ${outputDir}; pass the run folder: --resume runs/<name>`);
}

export async function runTraining<C extends TrainConfig>(
  method: TrainMethod,
  cfg: C,
  source: ResolvedSource,
  factory: MethodFactory<C>,
  flags: { backend?: string; resume?: string | true },
): Promise<TrainSummary> {
  const t = cfg.training;
  const configs = await readModelConfigs(cfg.model);
  const job: TrainingJob = {
    configs,
    method,
    batch: t.batch_size,
    resolution: cfg.data.resolution,
    optimizer: t.optimizer.type,
    momentum: t.optimizer.momentum,
    gradientAccumulationSteps: t.gradient_accumulation_steps,
    attentionSliceSize: t.attention_slice_size,
    latentsCached: cfg.data.cache_latents,
    ...factory.job(cfg),
  };
  const estimate = estimateJob({ kind: 'train', ...job });
  const parts = Object.entries(estimate.parts).map(([k, v]) => `${k} ${formatBytes(v)}`).join(', ');
  process.stderr.write(`memory estimate: ${formatBytes(estimate.total)} (${parts})\n`);
  for (const line of factory.memoryAdvice?.(cfg, job) ?? []) process.stderr.write(`  ${line}\n`);
  await chooseBackend(flags.backend, cfg.backend, estimate.total);

  const runDir = flags.resume !== undefined
    ? await resumeDir(cfg.output_dir, method, cfg.run_name, flags.resume)
    : join(cfg.output_dir, cfg.run_name ?? `${method}-${timestamp()}`);
  const runName = runDir.split(/[\\/]/).pop()!;
  await mkdir(runDir, { recursive: true });

  const model = await loadModel(cfg.model, { vae: cfg.vae });
  // Previews get their own tokenizer: methods may add tokens to the training one (textual inversion's placeholder).
  const previewModel = makeModel(model, {
    tokenizer: await CLIPTokenizer.fromBundled({ padWith: model.family === 'sd2' ? 'zero' : 'eos' }),
    schedulerConfig: model.schedulerConfig,
    family: model.family,
    path: model.path,
    assumed: [],
  });
  const progress = createProgress({ plainEvery: t.log_every_n_steps });
  const warn = (m: string) => progress.log(`warning: ${m}`);
  try {
    const trainingMethod = await factory.build(model, cfg, runName);
    let encoding = false;
    const open = (data: DataConfig): Promise<Dataset> => {
      encoding = false;
      return openDataset(data, {
        seed: cfg.seed,
        batchSize: t.batch_size,
        token: factory.templateToken(cfg),
        vae: model.vae,
        cacheDir: cfg.data.cache_dir ?? join(cfg.output_dir, 'cache'),
        onWarning: warn,
        onProgress: (p) => {
          if (p.phase !== 'cache' || p.total === 0) return;
          if (!encoding) progress.start(p.total, 'encoding latents (cached for the next runs)');
          encoding = true;
          progress.update(p.done);
        },
      });
    };
    const batchSource = factory.source
      ? await factory.source({ cfg, model: previewModel, open, warn, log: (m) => progress.log(m), progress })
      : new DatasetBatchSource(await open(cfg.data));
    progress.stop();
    const abort = new AbortController();
    const onSigint = () => {
      progress.log('interrupted: saving a checkpoint, then stopping (Ctrl-C again to quit at once)');
      abort.abort();
      process.once('SIGINT', () => process.exit(130));
    };
    process.once('SIGINT', onSigint);
    let smoothed: number | undefined;
    let t0 = Date.now();
    let firstStep = 0;
    try {
      return await train(trainingMethod, batchSource, cfg, {
        runDir,
        diffusion: diffusionSetup(model.vae, model.schedulerConfig),
        signal: abort.signal,
        resume: flags.resume !== undefined ? 'latest' : undefined,
        configSource: source,
        preview: async (step, prompts) => previews(previewModel, trainingMethod, factory, cfg, runDir, step, prompts),
        onEvent: (e) => {
          if (e.kind === 'start') {
            process.stderr.write(
              `${e.method}: ${e.trainableParams.toLocaleString('en-US')} trainable parameters, run folder ${e.runDir}` +
                `${e.resumedFrom ? ` (resumed from ${e.resumedFrom})` : ''}\n`,
            );
            progress.start(e.maxSteps, 'training');
            firstStep = e.step;
            t0 = Date.now();
            progress.update(e.step);
          } else if (e.kind === 'step') {
            smoothed = smoothed === undefined ? e.loss : 0.9 * smoothed + 0.1 * e.loss;
            const rate = (e.step - firstStep) / ((Date.now() - t0) / 1000);
            progress.update(e.step, { loss: smoothed.toFixed(4), lr: e.lr.toExponential(2), 'it/s': rate.toFixed(2) });
          } else if (e.kind === 'checkpoint') progress.log(`checkpoint: ${e.dir}`);
          else if (e.kind === 'preview') progress.log(`preview: ${e.files.join(', ')}`);
          else if (e.kind === 'warning') warn(e.message);
        },
      });
    } finally {
      process.off('SIGINT', onSigint);
    }
  } finally {
    progress.stop();
    model.dispose();
  }
}

async function previews<C extends TrainConfig>(
  model: SdModel,
  method: TrainingMethod,
  factory: MethodFactory<C>,
  cfg: C,
  runDir: string,
  step: number,
  prompts: string[],
): Promise<string[]> {
  const p = cfg.training.preview;
  const scratch = await mkdtemp(join(tmpdir(), 'sdtrain-preview-'));
  try {
    const extra = (await factory.preview?.(method, scratch, step)) ?? {};
    const dir = join(runDir, 'previews');
    await mkdir(dir, { recursive: true });
    const files: string[] = [];
    for (const [i, prompt] of prompts.entries()) {
      const [image] = await generate(model, {
        prompt: extra.rewrite ? extra.rewrite(prompt) : prompt,
        sampler: p.sampler,
        steps: p.steps,
        cfgScale: p.cfg_scale,
        width: cfg.data.resolution,
        height: cfg.data.resolution,
        seed: p.seed,
        embeddings: extra.embeddings,
        hypernetworks: extra.hypernetworks,
      }, { hashes: false });
      const file = join(dir, `step-${String(step).padStart(6, '0')}-${i}.png`);
      await writeFile(file, image!.png);
      files.push(file);
    }
    return files;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

export function renderSummary(s: TrainSummary): string {
  const loss = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(4));
  return [
    `${s.reason === 'finished' ? 'done' : 'stopped'}: ${s.steps} steps in ${s.seconds.toFixed(1)} s, loss ${loss(s.firstLoss)} → ${loss(s.recentLoss)}`,
    ...(s.checkpointDir ? [`last checkpoint: ${s.checkpointDir}`] : []),
    ...s.files.map((f) => `wrote ${f}`),
  ].join('\n');
}
