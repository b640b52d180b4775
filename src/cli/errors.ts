// Maps errors to one readable line and an exit code. `--verbose` adds the stack.
import { SdtrainError, WasmOutOfMemoryError } from '../errors.js';
import { explainBackendError } from '../backend/backend.js';

export function reportError(e: unknown, verbose: boolean): number {
  const err = explainBackendError(e);
  const line = err instanceof Error ? err.message.split('\n').join('\n  ') : String(err);
  process.stderr.write(`sdtrain: error: ${line}\n`);
  if (verbose && err instanceof Error) {
    process.stderr.write(`${err.stack ?? ''}\n`);
    if (err !== e && e instanceof Error) process.stderr.write(`caused by: ${e.stack ?? e.message}\n`);
  } else if (!(err instanceof SdtrainError)) {
    process.stderr.write('(an unexpected error: run again with --verbose for the stack, and please report it)\n');
  }
  if (err instanceof WasmOutOfMemoryError || err instanceof SdtrainError) return err.exitCode;
  return 1;
}
