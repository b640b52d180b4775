// Builds zip files with arbitrary entries (malicious pickles, bad names, missing storages) using our own writer.
import { promises as fsp } from 'node:fs';
import { ZipWriter } from '../../src/formats/zip.js';

export async function writeZip(path: string, entries: Array<[string, Uint8Array | string]>, opts: { forceZip64?: boolean } = {}): Promise<void> {
  const fh = await fsp.open(path, 'w');
  try {
    const zip = new ZipWriter(fh, opts);
    for (const [name, data] of entries) await zip.add(name, typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
    await zip.finish();
  } finally {
    await fh.close();
  }
}
