// Per-test temporary directories under the OS temp dir, removed after the test file finishes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/** A fresh directory for this test file; call at module level (registers its own cleanup). */
export function useTmpDir(prefix = 'sdtrain-test-'): () => string {
  let dir: string | undefined;
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return () => (dir ??= mkdtempSync(join(tmpdir(), prefix)));
}

export const tmpPath = (dir: string, name: string): string => join(dir, name);
