// Finds a Python that can `import torch` (Debian's python3-torch lives under /usr/bin/python3; a pyenv shim may come
// first on PATH without it) and runs scripts with it. Tests that need it use `describe.runIf(torchPython)`.
import { runAsync } from './cli.js';

async function probe(python: string): Promise<boolean> {
  try {
    return (await runAsync(python, ['-c', 'import torch'], { timeoutMs: 120_000 })).code === 0;
  } catch {
    return false; // not installed (ENOENT)
  }
}

async function findTorchPython(): Promise<string | undefined> {
  for (const python of ['/usr/bin/python3', 'python3', 'python']) if (await probe(python)) return python;
  return undefined;
}

export const torchPython: string | undefined = await findTorchPython();

/**
 * Runs `script` with the torch python; argv after the script; returns its stdout parsed as JSON. Asynchronous so a
 * slow torch script does not block the vitest worker's event loop (see test/helpers/cli.ts).
 */
export async function runPythonJson<T = unknown>(script: string, args: string[] = []): Promise<T> {
  if (!torchPython) throw new Error('no python with torch');
  const r = await runAsync(torchPython, ['-c', script, ...args], {
    env: { OMP_NUM_THREADS: '1', PYTHONWARNINGS: 'ignore' },
    timeoutMs: 600_000,
  });
  if (r.code !== 0) throw new Error(`${torchPython} -c <script> failed (exit ${r.code}):\n${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
