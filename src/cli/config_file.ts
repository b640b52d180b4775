// Shared by the commands that take a run config: which command a file is for, and loading it with --set.
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { COMMANDS, TRAIN_METHODS, loadCommandConfig, type ConfigCommand, type ConfigFor } from '../config/schema.js';
import type { LoadedConfig } from '../config/load_config.js';
import { UsageError } from './usage.js';

/** The command a config file is for: its `method:` key, else `sample` if it has a `prompt`. */
export async function commandOfFile(file: string): Promise<ConfigCommand | undefined> {
  try {
    const doc = parse(await readFile(file, 'utf8')) as Record<string, unknown> | null;
    if (doc && typeof doc.method === 'string' && (COMMANDS as readonly string[]).includes(doc.method)) return doc.method as ConfigCommand;
    if (doc && 'prompt' in doc) return 'sample';
  } catch {
    // the loader reports unreadable files and YAML errors with their line
  }
  return undefined;
}

/** Load a config for `forCommand`, or for the command the file names; `trainingOnly` rejects sample configs. */
export async function loadConfigFor(
  file: string,
  forCommand: ConfigCommand | undefined,
  set: string[] | undefined,
  trainingOnly = false,
): Promise<{ command: ConfigCommand; loaded: LoadedConfig<ConfigFor<ConfigCommand>> }> {
  const command = forCommand ?? (await commandOfFile(file));
  const allowed = trainingOnly ? TRAIN_METHODS : COMMANDS;
  if (!command || !(allowed as readonly string[]).includes(command)) {
    throw new UsageError(`${file}: cannot tell which command this config is for: add 'method: ${allowed.join('|')}' or pass --for`);
  }
  return { command, loaded: await loadCommandConfig(command, file, { set: set ?? [] }) };
}
