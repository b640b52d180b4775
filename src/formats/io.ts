// Positioned file I/O that never assumes a single read or write moves every byte.

import type { FileHandle } from 'node:fs/promises';

/** Writes all of `bytes` at `position` (fs writes may be partial). */
export async function writeFully(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.byteLength - done, position + done);
    if (bytesWritten <= 0) throw new Error(`short write at offset ${position + done}`);
    done += bytesWritten;
  }
}

/**
 * Reads exactly `length` bytes at `position` into a fresh (hence 8-aligned) buffer. Returns fewer bytes only if the
 * file ends first; callers turn that into a FormatError naming what was being read.
 */
export async function readAt(fh: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    // Node caps a single read at 2 GB; larger tensors are read in pieces.
    const chunk = Math.min(length - done, 0x40000000);
    const { bytesRead } = await fh.read(buf, done, chunk, position + done);
    if (bytesRead === 0) return buf.subarray(0, done);
    done += bytesRead;
  }
  return buf;
}
