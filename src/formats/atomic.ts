// Atomic file replacement: a crash or error mid-write must never leave a half-written checkpoint where a good one was.

import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';

/**
 * Writes `target` via `writer(fh)` into a temporary file in the same directory (same file system, so the rename is
 * atomic), fsyncs it, renames it over `target` and fsyncs the directory where the platform allows it. On any error the
 * temporary file is removed and an existing `target` is left untouched.
 */
export async function writeFileAtomic(target: string, writer: (fh: FileHandle) => Promise<void>): Promise<void> {
  const tmp = `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fh: FileHandle | undefined = await fsp.open(tmp, 'wx');
  try {
    await writer(fh);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, target);
  } catch (err) {
    if (fh) await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await syncDirectory(path.dirname(path.resolve(target)));
}

/** Makes the rename durable. Windows cannot open directories for fsync; that is not an error. */
async function syncDirectory(dir: string): Promise<void> {
  let dh: FileHandle | undefined;
  try {
    dh = await fsp.open(dir, 'r');
    await dh.sync();
  } catch {
    // best effort only
  } finally {
    await dh?.close().catch(() => undefined);
  }
}
