import type { CommandModule } from 'yargs';
import { TRAIN_METHODS, type TrainConfig, type TrainMethod } from '../../config/schema.js';
import { openDataset } from '../../data/dataset.js';
import { summarizeDataset, type DatasetSummary } from '../../data/summary.js';
import type { DataConfig } from '../../data/types.js';
import { instanceDataConfig } from '../../training/dreambooth.js';
import { loraInstanceDataConfig } from '../../training/lora.js';
import { loadConfigFor } from '../config_file.js';
import { formatCount, keyValueTable } from '../render.js';

interface Args {
  action: string;
  config: string;
  for?: TrainMethod;
  set?: string[];
  json?: boolean;
  examples?: number;
}

/** The images a run trains on: data.datasets, plus DreamBooth's or LoRA's instance_data_dir. */
function trainingData(cfg: TrainConfig): DataConfig {
  if ('dreambooth' in cfg) return instanceDataConfig(cfg);
  if ('lora' in cfg) return loraInstanceDataConfig(cfg);
  return cfg.data;
}

/** The word that stands for [name] in templates: the placeholder (embed) or nothing. */
function templateToken(cfg: TrainConfig): string | undefined {
  return 'embed' in cfg ? cfg.embed.placeholder_token : undefined;
}

function render(s: DatasetSummary): string {
  const out: string[] = [];
  for (const sub of s.subsets) {
    const sources = Object.entries(sub.captionSources).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
    const rows: Array<[string, string]> = [
      ['folder', sub.folder],
      ['images', `${formatCount(sub.images)} x ${sub.repeats} repeats = ${formatCount(sub.entriesPerEpoch)} per epoch`],
      ['captions', sources || '-'],
    ];
    if (sub.withoutToken) rows.push(['warning', `${sub.withoutToken} image(s) can be captioned without the token (they teach it nothing)`]);
    if (sub.skipped.length) rows.push(['skipped', sub.skipped.map((f) => `${f.path}: ${f.reason}`).join('\n')]);
    if (sub.examples.length) rows.push(['examples', sub.examples.map((e) => `${e.relPath}: "${e.caption}"`).join('\n')]);
    out.push(`subset ${sub.index}\n${keyValueTable(rows, '  ')}`);
  }
  if (s.bucketing) {
    out.push(`buckets\n${s.buckets.map((b) => `  ${b.width}x${b.height}: ${b.images} images, ${b.batchesPerEpoch} batches per epoch`).join('\n')}`);
  }
  out.push(
    `total: ${formatCount(s.totalImages)} images (${formatCount(s.totalSkipped)} skipped), ${formatCount(s.entriesPerEpoch)} per epoch, ` +
      `${formatCount(s.batchesPerEpoch)} batches of ${s.batchSize} at ${s.resolution}px${s.bucketing ? ' (bucketed)' : ''}`,
  );
  return out.join('\n\n');
}

export const dataset: CommandModule<object, Args> = {
  command: 'dataset <action>',
  describe: 'dataset check: show what a run config will train on (images, captions, skipped files, buckets)',
  builder: (y) =>
    y
      .positional('action', { choices: ['check'], demandOption: true })
      .option('config', { type: 'string', demandOption: true, describe: 'a training run config (YAML)' })
      .option('for', { choices: TRAIN_METHODS, describe: "the training command (default: the config's 'method:' key)" })
      .option('set', { type: 'string', array: true, describe: 'override a config key (repeatable)' })
      .option('examples', { type: 'number', default: 3, describe: 'example captions per subset' })
      .option('json', { type: 'boolean', describe: 'print the summary as JSON' })
      .example('$0 dataset check --config configs/cat.yaml', ''),
  handler: async (argv) => {
    const { loaded } = await loadConfigFor(argv.config, argv.for, argv.set, true);
    const cfg = loaded.config as TrainConfig;
    const warnings: string[] = [];
    const ds = await openDataset(trainingData(cfg), {
      seed: cfg.seed,
      batchSize: cfg.training.batch_size,
      token: templateToken(cfg),
      onWarning: (m) => warnings.push(m),
    });
    const summary = summarizeDataset(ds, { examples: argv.examples });
    if (argv.json) process.stdout.write(`${JSON.stringify({ ...summary, warnings }, null, 2)}\n`);
    else process.stdout.write(`${render(summary)}\n${warnings.map((w) => `warning: ${w}\n`).join('')}`);
  },
};
