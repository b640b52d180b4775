import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import { formatBytes } from '../../backend/backend.js';
import { estimateJob, type TrainingJob } from '../../backend/memory.js';
import { loadCommandConfig, type DreamboothConfig } from '../../config/schema.js';
import { SD_SCHEDULER } from '../../models/presets.js';
import { DatasetBatchSource } from '../../training/dataset_source.js';
import {
  checkPriorPreservation,
  classDataConfig,
  DreamBooth,
  dreamboothMetadata,
  instanceDataConfig,
} from '../../training/dreambooth.js';
import { priorPreservationSource, runTraining, renderSummary, type MethodFactory } from '../train_run.js';

interface Args {
  config: string;
  set?: string[];
  resume?: unknown;
  backend?: string;
}

/** The memory-estimate job: the U-Net sees instance + class images, so prior preservation doubles the batch. */
const dreamboothJob = (cfg: DreamboothConfig): Partial<TrainingJob> => {
  const d = cfg.dreambooth;
  return {
    batch: cfg.training.batch_size * (d.with_prior_preservation ? 2 : 1),
    gradientCheckpointing: d.gradient_checkpointing,
    ema: d.ema.enabled,
    trainTextEncoder: d.train_text_encoder,
  };
};

/** What each memory-saving setting (and all of them together) would bring the estimate to. */
export function memoryAdvice(job: TrainingJob): string[] {
  const total = (j: TrainingJob): number => estimateJob({ kind: 'train', ...j }).total;
  const now = total(job);
  const cuts: Array<[string, Partial<TrainingJob>]> = [];
  if (!job.gradientCheckpointing) cuts.push(['dreambooth.gradient_checkpointing: true', { gradientCheckpointing: true }]);
  if (job.optimizer !== 'adafactor') cuts.push(['training.optimizer.type: adafactor', { optimizer: 'adafactor' }]);
  if (job.optimizer !== 'lion' && job.optimizer !== 'adafactor') cuts.push(['training.optimizer.type: lion', { optimizer: 'lion' }]);
  if (job.attentionSliceSize === undefined) cuts.push(['training.attention_slice_size: 1', { attentionSliceSize: 1 }]);
  if (job.ema) cuts.push(['dreambooth.ema.enabled: false', { ema: false }]);
  if (job.trainTextEncoder) cuts.push(['dreambooth.train_text_encoder: false', { trainTextEncoder: false }]);
  const rows = cuts.map(([what, change]) => [what, total({ ...job, ...change })] as const).filter(([, bytes]) => bytes < now);
  if (rows.length === 0) return [];
  // together: every cut, the optimizer with the least state (listed first, so applied last) winning
  const all = total(Object.assign({ ...job }, ...cuts.map(([, c]) => c).reverse()) as TrainingJob);
  const together = 'all together (adafactor)';
  const width = Math.max(...rows.map(([w]) => w.length), together.length);
  const line = (what: string, bytes: number) => `${what.padEnd(width)}  → ${formatBytes(bytes)} (−${formatBytes(now - bytes)})`;
  return ['what would cut it:', ...rows.map(([w, b]) => `  ${line(w, b)}`), ...(rows.length > 1 ? [`  ${line(job.optimizer === 'adafactor' ? 'all together' : together, all)}`] : [])];
}

/** The base model's scheduler config for the diffusers export: its own file, or the LDM schedule for single files. */
function baseSchedulerConfig(modelPath: string, predictionType: string): Record<string, unknown> {
  const file = join(modelPath, 'scheduler', 'scheduler_config.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  return { ...SD_SCHEDULER, prediction_type: predictionType };
}

const dreamboothFactory: MethodFactory<DreamboothConfig> = {
  job: dreamboothJob,
  templateToken: () => undefined,
  memoryAdvice: (_cfg, job) => memoryAdvice(job),
  build: async (model, cfg, runName) => {
    checkPriorPreservation(cfg);
    const tokenizerDir = join(model.path, 'tokenizer');
    return new DreamBooth(model, {
      dreambooth: cfg.dreambooth,
      learningRate: cfg.training.learning_rate,
      name: runName,
      metadata: dreamboothMetadata(cfg, { name: model.name, hash: await model.hash() }),
      schedulerConfig: baseSchedulerConfig(model.path, model.predictionType),
      ...(existsSync(tokenizerDir) ? { tokenizerDir } : {}),
    });
  },
  // Instance images (data.datasets + dreambooth.instance_data_dir); with prior preservation, the class images too,
  // generated first with the base model where the class folder has fewer than num_class_images.
  source: async (ctx) => {
    const { cfg, open } = ctx;
    const d = cfg.dreambooth;
    const instance = await open(instanceDataConfig(cfg));
    if (!d.with_prior_preservation) return new DatasetBatchSource(instance);
    return priorPreservationSource(ctx, instance, { dir: d.class_data_dir!, prompt: d.class_prompt!, count: d.num_class_images, lossWeight: d.prior_loss_weight, data: classDataConfig(cfg) });
  },
};

export const dreambooth: CommandModule<object, Args> = {
  command: 'dreambooth',
  describe: 'Fine-tune the whole model on a subject (DreamBooth, optional prior preservation; YAML run config)',
  builder: (y) =>
    y
      .option('config', { type: 'string', demandOption: true, describe: 'the run config (see configs/dreambooth.yaml)' })
      .option('set', { type: 'string', array: true, describe: 'override a config key: --set training.max_train_steps=400 (repeatable)' })
      .option('resume', { describe: 'continue the newest run (or the run folder given) from its last checkpoint' })
      .example('$0 dreambooth --config configs/dreambooth.yaml', '')
      .example('$0 dreambooth --config configs/dreambooth.yaml --set dreambooth.gradient_checkpointing=true', '')
      .example('$0 dreambooth --config configs/dreambooth.yaml --resume', ''),
  handler: async (argv) => {
    const { config, source } = await loadCommandConfig('dreambooth', argv.config, { set: argv.set ?? [] });
    const r = argv.resume;
    const resume = r === undefined || r === false ? undefined : r === true || r === '' ? true : String(r);
    const summary = await runTraining('dreambooth', config, source, dreamboothFactory, { backend: argv.backend, resume });
    process.stdout.write(`${renderSummary(summary)}\n`);
  },
};
