// Paths into ../shared (present on dev machines and in CI, never on a user's machine: tests only).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SHARED = resolve(fileURLToPath(new URL('../../../shared', import.meta.url)));
export const FIXTURES = join(SHARED, 'fixtures');
export const fixture = (...parts: string[]): string => join(FIXTURES, ...parts);
export const hasShared = existsSync(FIXTURES);
