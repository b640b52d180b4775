// Run the real built `sdtrain` binary (dist/src/cli/main.js; `npm test` builds first).
// Asynchronous on purpose: a spawnSync that blocks a vitest worker's event loop for over a minute (easy under CPU
// load) makes vitest fail the run with "Timeout calling onTaskUpdate" even when every test passes.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { packagePath } from '../../src/paths.js';

export const BIN = packagePath('dist', 'src', 'cli', 'main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** Runs `command args` without blocking the event loop; on timeout SIGKILLs it and resolves with code -1. */
export function runAsync(command: string, args: string[], opts: RunOptions = {}): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => { stdout += d; });
    child.stderr.on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (timedOut) stderr += `\n[killed with SIGKILL after ${timeoutMs} ms timeout]\n`;
      resolve({ code: timedOut ? -1 : (code ?? -1), stdout, stderr });
    });
  });
}

export async function sdtrain(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run 'npm run build' (npm test does it first)`);
  return runAsync(process.execPath, [BIN, ...args], opts);
}
