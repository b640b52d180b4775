import type { CommandModule } from 'yargs';
import { dumpResolvedConfig } from '../../config/load_config.js';
import { COMMANDS, type ConfigCommand } from '../../config/schema.js';
import { loadConfigFor } from '../config_file.js';

interface Args {
  file: string;
  for?: ConfigCommand;
  set?: string[];
}

export const config: CommandModule<object, Args> = {
  command: 'config <file>',
  describe: 'Validate a run config and print it resolved (defaults filled in, --set applied, paths absolute)',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'a YAML run config' })
      .option('for', { choices: COMMANDS, describe: "the command the config is for (default: its 'method:' key)" })
      .option('set', { type: 'string', array: true, describe: 'override a key: --set training.learning_rate=1e-4 (repeatable)' })
      .example('$0 config configs/example.yaml --set training.max_train_steps=100', ''),
  handler: async ({ file, for: forCommand, set }) => {
    const { command, loaded } = await loadConfigFor(file, forCommand, set);
    process.stdout.write(`# ${file}: valid ${command} config\n${dumpResolvedConfig(loaded.config)}`);
  },
};
