import type { CommandModule } from 'yargs';
import { dumpResolvedConfig } from '../../config/load_config.js';
import { COMMANDS, loadCommandConfig, type ConfigCommand } from '../../config/schema.js';
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { UsageError } from '../usage.js';

interface Args {
  file: string;
  for?: ConfigCommand;
  set?: string[];
}

/** The method a config is for: `--for`, else its `method:` key, else `sample` if it has a `prompt`. */
async function guessCommand(file: string): Promise<ConfigCommand | undefined> {
  try {
    const doc = parse(await readFile(file, 'utf8')) as Record<string, unknown> | null;
    if (doc && typeof doc.method === 'string' && (COMMANDS as readonly string[]).includes(doc.method)) return doc.method as ConfigCommand;
    if (doc && 'prompt' in doc) return 'sample';
  } catch {
    // the loader reports unreadable files and YAML errors with their line
  }
  return undefined;
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
    const command = forCommand ?? (await guessCommand(file));
    if (!command) throw new UsageError(`${file}: cannot tell which command this config is for: add 'method: ${COMMANDS.slice(0, -1).join('|')}' or pass --for`);
    const { config: resolved } = await loadCommandConfig(command, file, { set: set ?? [] });
    process.stdout.write(`# ${file}: valid ${command} config\n${dumpResolvedConfig(resolved)}`);
  },
};
