// Choosing the backend for a command that computes: --backend (or SDTRAIN_BACKEND), with the job's memory estimate so
// that `auto` does not pick wasm for a job that cannot fit its 4 GiB heap. Prints the choice on stderr.
import { formatBytes, parseBackendRequest, useBackend, type BackendChoice } from '../backend/backend.js';

export async function chooseBackend(flag: string | undefined, configValue: string | undefined, estimatedBytes?: number): Promise<BackendChoice> {
  const fromEnv = process.env.SDTRAIN_BACKEND;
  // Precedence: the --backend flag, then SDTRAIN_BACKEND, then the config file's `backend:`, then auto.
  const [value, source] =
    flag !== undefined ? [flag, '--backend'] : fromEnv !== undefined ? [fromEnv, 'SDTRAIN_BACKEND'] : [configValue ?? 'auto', 'backend'];
  const choice = await useBackend(parseBackendRequest(value, source), { estimatedBytes });
  const why = choice.notes.length ? ` (${choice.notes.join('; ')})` : '';
  const est = estimatedBytes !== undefined ? `, job needs about ${formatBytes(estimatedBytes)}` : '';
  process.stderr.write(`backend: ${choice.backend}${choice.requested === 'auto' ? ' [auto]' : ''}${est}${why}\n`);
  return choice;
}
