// Finds a Python that can `import torch` (Debian's python3-torch lives under /usr/bin/python3; a pyenv shim may come
// first on PATH without it) and runs scripts with it. Tests that need it use `describe.runIf(torchPython)`.
import { execFileSync, spawnSync } from 'node:child_process';

function probe(python: string): boolean {
  const r = spawnSync(python, ['-c', 'import torch'], { stdio: 'ignore', timeout: 120_000 });
  return r.status === 0;
}

export const torchPython: string | undefined = ['/usr/bin/python3', 'python3', 'python'].find(probe);

/** Runs `script` with the torch python; argv after the script; returns its stdout parsed as JSON. */
export function runPythonJson<T = unknown>(script: string, args: string[] = []): T {
  if (!torchPython) throw new Error('no python with torch');
  const out = execFileSync(torchPython, ['-c', script, ...args], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    env: { ...process.env, OMP_NUM_THREADS: '1', PYTHONWARNINGS: 'ignore' },
  });
  return JSON.parse(out) as T;
}
