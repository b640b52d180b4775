#!/usr/bin/env node
// The sdtrain command line. The only entry point that touches argv, stdout formatting and process exit codes.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { packageVersion } from '../paths.js';
import { commands } from './commands/index.js';
import { reportError } from './errors.js';
import { wasmThreadsActive } from '../backend/backend.js';
import { UsageError } from './usage.js';

const args = hideBin(process.argv);
const verbose = args.includes('--verbose');

try {
  await yargs(args)
    .scriptName('sdtrain')
    .usage('$0 <command> [options]\n\nFine-tune Stable Diffusion and sample from it, in TypeScript on TensorFlow.js.')
    .command(commands)
    .option('backend', {
      type: 'string',
      choices: ['auto', 'gpu', 'node', 'wasm', 'cpu'],
      describe: 'tensor backend (env SDTRAIN_BACKEND); auto tries tfjs-node-gpu, tfjs-node, wasm (if the job fits its 4 GiB heap), cpu',
      global: true,
    })
    .option('verbose', { type: 'boolean', describe: 'show stack traces on errors', global: true })
    .demandCommand(1, 'Pick a command (see the list above).')
    .recommendCommands()
    .strict()
    .fail((msg, err) => {
      if (err) throw err;
      throw new UsageError(msg);
    })
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .parseAsync();
} catch (e) {
  process.exitCode = reportError(e, verbose);
}
// The threaded wasm build (SDTRAIN_WASM_THREADS > 1) keeps worker threads alive: end the process ourselves.
if (wasmThreadsActive()) process.exit();
