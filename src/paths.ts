// Locating files shipped with the package (assets/, checkpoints/, configs/). Compiled code runs from dist/src/...,
// sources (under vitest) from src/..., so walk up to the folder that holds our package.json.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'sdtrain') return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error('sdtrain: cannot find the package root (package.json)');
    dir = up;
  }
}

export const packagePath = (...parts: string[]): string => join(packageRoot(), ...parts);

export function packageVersion(): string {
  return (JSON.parse(readFileSync(packagePath('package.json'), 'utf8')) as { version: string }).version;
}
