import type { CommandModule } from 'yargs';
import { loadCommandConfig, type EmbedConfig } from '../../config/schema.js';
import { TextualInversion } from '../../training/textual_inversion.js';
import { runTraining, renderSummary, type MethodFactory } from '../train_run.js';

interface Args {
  config: string;
  set?: string[];
  resume?: unknown;
  backend?: string;
}

const textualInversion: MethodFactory<EmbedConfig> = {
  job: (cfg) => ({ numVectors: cfg.embed.num_vectors }),
  templateToken: (cfg) => cfg.embed.placeholder_token,
  // The export is named after the placeholder (<my-cat> → my-cat.safetensors): that file name is the keyword
  // A1111 and `sdtrain sample --embeddings` use in prompts.
  build: async (model, cfg) =>
    new TextualInversion(model, {
      embed: cfg.embed,
      sdCheckpoint: await model.hash(),
      sdCheckpointName: model.name,
    }),
  // Previews load the embedding saved at this step the way `sdtrain sample --embeddings` would: its keyword is the
  // file stem (A1111's rule), so the placeholder in the preview prompts is written as that keyword.
  preview: async (method, dir, step) => {
    const ti = method as TextualInversion;
    const files = await ti.save(dir, step, 'checkpoint');
    const token = ti.opts.embed.placeholder_token;
    return { embeddings: files.filter((f) => /\.(safetensors|pt)$/.test(f)).slice(0, 1), rewrite: (p) => p.split(token).join(ti.fileStem) };
  },
};

export const embed: CommandModule<object, Args> = {
  command: 'embed',
  describe: 'Train a textual-inversion embedding from a folder of images (YAML run config)',
  builder: (y) =>
    y
      .option('config', { type: 'string', demandOption: true, describe: 'the run config (see configs/cat.yaml)' })
      .option('set', { type: 'string', array: true, describe: 'override a config key: --set training.max_train_steps=500 (repeatable)' })
      .option('resume', { describe: 'continue the newest run (or the run folder given) from its last checkpoint' })
      .example('$0 embed --config configs/cat.yaml', '')
      .example('$0 embed --config configs/cat.yaml --resume', ''),
  handler: async (argv) => {
    const { config, source } = await loadCommandConfig('embed', argv.config, { set: argv.set ?? [] });
    const r = argv.resume;
    const resume = r === undefined || r === false ? undefined : r === true || r === '' ? true : String(r);
    const summary = await runTraining('embed', config, source, textualInversion, { backend: argv.backend, resume });
    process.stdout.write(`${renderSummary(summary)}\n`);
  },
};
