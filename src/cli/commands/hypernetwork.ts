import type { CommandModule } from 'yargs';
import { loadCommandConfig, type HypernetworkConfig } from '../../config/schema.js';
import { templateLines } from '../../data/templates.js';
import { HypernetworkTraining } from '../../training/hypernetwork.js';
import { runTraining, renderSummary, type MethodFactory } from '../train_run.js';

interface Args {
  config: string;
  set?: string[];
  resume?: unknown;
  backend?: string;
}

/** Whether some dataset builds captions from templates that name [name] (A1111 fills in the hypernetwork's name). */
const templatesUseName = (cfg: HypernetworkConfig): boolean =>
  cfg.data.datasets.some((d) => d.caption.source.includes('template') && templateLines(d.caption.templates).some((t) => /\[name\]|\{\}/.test(t)));

const hypernetworkFactory: MethodFactory<HypernetworkConfig> = {
  job: (cfg) => ({ layerStructure: cfg.hypernetwork.layer_structure, layerNorm: cfg.hypernetwork.is_layer_norm }),
  // [name] in templates is the hypernetwork's name, as in A1111; only passed when templates use it (a token makes the
  // dataset check that captions contain it, which means nothing for a hypernetwork).
  templateToken: (cfg) => (templatesUseName(cfg) ? (cfg.hypernetwork.name ?? cfg.run_name) : undefined),
  build: async (model, cfg, runName) =>
    new HypernetworkTraining(model, {
      hypernetwork: cfg.hypernetwork,
      name: cfg.hypernetwork.name ?? runName,
      seed: cfg.seed,
      sdCheckpoint: await model.hash(),
      sdCheckpointName: model.name,
    }),
  // Previews load the hypernetwork saved at this step, as `sdtrain sample --hypernetwork FILE` would, at strength 1.
  preview: async (method, dir, step) => {
    const files = await (method as HypernetworkTraining).save(dir, step, 'checkpoint');
    return { hypernetworks: files.filter((f) => f.endsWith('.safetensors')).map((path) => ({ path, strength: 1 })) };
  },
};

export const hypernetwork: CommandModule<object, Args> = {
  command: 'hypernetwork',
  describe: 'Train an A1111-compatible hypernetwork from a folder of images (YAML run config)',
  builder: (y) =>
    y
      .option('config', { type: 'string', demandOption: true, describe: 'the run config (see configs/hypernetwork.yaml)' })
      .option('set', { type: 'string', array: true, describe: 'override a config key: --set training.max_train_steps=500 (repeatable)' })
      .option('resume', { describe: 'continue the newest run (or the run folder given) from its last checkpoint' })
      .example('$0 hypernetwork --config configs/hypernetwork.yaml', '')
      .example('$0 hypernetwork --config configs/hypernetwork.yaml --resume', ''),
  handler: async (argv) => {
    const { config, source } = await loadCommandConfig('hypernetwork', argv.config, { set: argv.set ?? [] });
    const r = argv.resume;
    const resume = r === undefined || r === false ? undefined : r === true || r === '' ? true : String(r);
    const summary = await runTraining('hypernetwork', config, source, hypernetworkFactory, { backend: argv.backend, resume });
    process.stdout.write(`${renderSummary(summary)}\n`);
  },
};
