// `sdtrain lora`: LoRA training from a YAML run config (src/training/lora.ts), saved in kohya format.
import { basename, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { loadCommandConfig, type LoraConfig } from '../../config/schema.js';
import type { Dataset } from '../../data/dataset.js';
import { ConfigError } from '../../errors.js';
import type { LoraDType } from '../../lora/write.js';
import { DatasetBatchSource } from '../../training/dataset_source.js';
import { LoraTraining, loraClassDataConfig, loraInstanceDataConfig } from '../../training/lora.js';
import { priorPreservationSource, runTraining, renderSummary, type MethodFactory } from '../train_run.js';

interface Args {
  config: string;
  set?: string[];
  resume?: unknown;
  backend?: string;
  'save-precision'?: string;
}

const PRECISION: Record<string, LoraDType> = { f16: 'F16', bf16: 'BF16', f32: 'F32' };

/**
 * kohya's dataset metadata: `ss_tag_frequency` {folder: {tag: images}} (comma-separated tags of each image's caption,
 * counted once per image), `ss_dataset_dirs` {folder: {n_repeats, img_count}} and the image counts. A1111's and
 * Civitai's LoRA info panels show these.
 */
function datasetMetadata(ds: Dataset, cfg: LoraConfig): Record<string, string> {
  const tags: Record<string, Record<string, number>> = {};
  const dirs: Record<string, { n_repeats: number; img_count: number }> = {};
  ds.config.datasets.forEach((d, i) => {
    const name = basename(resolve(d.path));
    const mine = ds.items.filter((it) => it.subset === i);
    const freq = (tags[name] ??= {});
    // A subset captioned by one fixed template (lora.instance_prompt) counts that prompt's tags.
    const t = d.caption.templates;
    const fixed = d.caption.source[0] === 'template' && Array.isArray(t) && t.length === 1 && !t[0]!.includes('[') ? t[0]! : '';
    for (const it of mine) {
      const text = it.caption.text || fixed;
      for (const tag of new Set(text.split(',').map((x) => x.trim()).filter((x) => x !== ''))) freq[tag] = (freq[tag] ?? 0) + 1;
    }
    const dir = (dirs[name] ??= { n_repeats: d.repeats, img_count: 0 });
    dir.img_count += mine.length;
  });
  return {
    ss_tag_frequency: JSON.stringify(tags),
    ss_dataset_dirs: JSON.stringify(dirs),
    ss_num_train_images: String(ds.entriesPerEpoch),
    ss_num_reg_images: String(cfg.lora.with_prior_preservation ? cfg.lora.num_class_images : 0),
  };
}

function loraFactory(precision: LoraDType): MethodFactory<LoraConfig> {
  // build() runs before source(): the dataset's metadata reaches the method once the data is open.
  let method: LoraTraining | undefined;
  return {
    job: (cfg) => ({
      // prior preservation: every batch holds as many class images as instance images
      batch: cfg.training.batch_size * (cfg.lora.with_prior_preservation ? 2 : 1),
      rank: cfg.lora.rank,
      convRank: cfg.lora.conv_rank,
      targets: cfg.lora.targets,
      trainTextEncoder: cfg.lora.train_text_encoder,
    }),
    // No placeholder token: captions say what the images show (a DreamBooth-style identifier goes into the captions
    // or lora.instance_prompt).
    templateToken: () => undefined,
    build: async (model, cfg, runName) => {
      const t = cfg.training;
      if (cfg.lora.with_prior_preservation && cfg.data.bucketing.enabled) {
        throw new ConfigError(
          'data.bucketing.enabled: with lora.with_prior_preservation the instance and class images of a batch must have one size; ' +
            'turn bucketing off (images are then cropped to data.resolution)',
        );
      }
      return (method = new LoraTraining(model, {
        lora: cfg.lora,
        seed: cfg.seed,
        learningRate: t.learning_rate,
        training: t,
        // The file name is the A1111 keyword: <lora:run-name:1>.
        name: runName,
        dtype: precision,
        v2: model.family === 'sd2',
        vPrediction: (t.prediction_type ?? model.predictionType) === 'v_prediction',
        resolution: [cfg.data.resolution, cfg.data.resolution],
        metadata: {
          ss_sd_model_name: model.name,
          ss_cache_latents: cfg.data.cache_latents ? 'True' : 'False',
          ss_flip_aug: cfg.data.flip ? 'True' : 'False',
          ss_enable_bucket: cfg.data.bucketing.enabled ? 'True' : 'False',
          'sdtrain.sd_model_hash': await model.hash(),
        },
      }));
    },
    // No preview files needed: the adapters hang on the very networks the previews sample with.
    // Instance images (data.datasets + lora.instance_data_dir); with prior preservation, the class images too, made
    // first where the class folder has fewer than num_class_images. The LoRA is installed by then, but its up
    // weights are 0 until training starts (restored ones only inside the loop), so they are the base model's images.
    source: async (ctx) => {
      const { cfg, open } = ctx;
      const l = cfg.lora;
      const instance = await open(loraInstanceDataConfig(cfg));
      method?.addMetadata(datasetMetadata(instance, cfg));
      if (!l.with_prior_preservation) return new DatasetBatchSource(instance);
      return priorPreservationSource(ctx, instance, { dir: l.class_data_dir!, prompt: l.class_prompt!, count: l.num_class_images, lossWeight: l.prior_loss_weight, data: loraClassDataConfig(cfg) });
    },
  };
}

export const lora: CommandModule<object, Args> = {
  command: 'lora',
  describe: 'Train a LoRA from a folder of images (YAML run config); saves a kohya-format .safetensors',
  builder: (y) =>
    y
      .option('config', { type: 'string', demandOption: true, describe: 'the run config (see configs/lora.yaml)' })
      .option('set', { type: 'string', array: true, describe: 'override a config key: --set lora.rank=8 (repeatable)' })
      .option('resume', { describe: 'continue the newest run (or the run folder given) from its last checkpoint' })
      .option('save-precision', { choices: ['f16', 'bf16', 'f32'], default: 'f16', describe: 'stored precision of the LoRA file (kohya save_precision)' })
      .example('$0 lora --config configs/lora.yaml', '')
      .example('$0 sample -p "a drawing of a cat" --lora runs/cat-lora/cat-lora.safetensors:0.8', ''),
  handler: async (argv) => {
    const { config: cfg, source } = await loadCommandConfig('lora', argv.config, { set: argv.set ?? [] });
    const r = argv.resume;
    const resume = r === undefined || r === false ? undefined : r === true || r === '' ? true : String(r);
    const summary = await runTraining('lora', cfg, source, loraFactory(PRECISION[argv['save-precision'] ?? 'f16']!), { backend: argv.backend, resume });
    process.stdout.write(`${renderSummary(summary)}\n`);
    const file = summary.files.find((f) => f.endsWith('.safetensors'));
    if (file) process.stdout.write(`use it: sdtrain sample --lora ${file}:1 (A1111/ComfyUI: copy it to models/Lora, <lora:${basename(file, '.safetensors')}:1>)\n`);
  },
};
