// One way to open "a file of tensors" whatever its container, decided by content, not by extension (users rename
// .ckpt/.pt/.bin/.safetensors freely).

import { promises as fsp } from 'node:fs';
import { FormatError } from '../errors.js';
import type { LoadedTensor, TensorInfo } from './dtype.js';
import { readAt } from './io.js';
import type { PyValue } from './pickle_values.js';
import { SafetensorsFile } from './safetensors.js';
import { openTorchFile } from './torch.js';

export type TensorFileFormat = 'safetensors' | 'torch';

export interface TensorFile {
  path: string;
  format: TensorFileFormat;
  /** safetensors `__metadata__`; empty for torch files (their metadata lives in `root`). */
  metadata: Record<string, string>;
  /** safetensors: in data order; torch: flattened dotted paths in pickle order. */
  tensors: TensorInfo[];
  /** torch files: the whole unpickled object (name, step, layer_structure...). */
  root?: PyValue;
  has(name: string): boolean;
  read(name: string): Promise<LoadedTensor>;
  close(): Promise<void>;
}

/** Reads the first bytes and names the container; a FormatError when it is neither. */
export async function sniffTensorFile(path: string): Promise<TensorFileFormat> {
  const fh = await fsp.open(path, 'r');
  const head = await readAt(fh, 0, 16).finally(() => fh.close());
  if (head.byteLength >= 4 && head[0] === 0x50 && head[1] === 0x4b) return 'torch';
  // safetensors: u64 header length, then the JSON header's '{'. Checked before the pickle test: the length's low
  // byte may well be 0x80.
  if (head.byteLength >= 9 && head[8] === 0x7b) return 'safetensors';
  // Legacy (pre-1.6) torch pickles start with PROTO; the torch reader explains they are unsupported.
  if (head[0] === 0x80) return 'torch';
  throw new FormatError(path, 'not a tensor file: expected safetensors or a PyTorch zip (.pt/.ckpt/.bin)');
}

export async function openTensorFile(path: string, opts: { maxHeaderBytes?: number } = {}): Promise<TensorFile> {
  const format = await sniffTensorFile(path);
  if (format === 'safetensors') {
    const f = await SafetensorsFile.open(path, opts);
    return {
      path,
      format,
      metadata: f.metadata,
      tensors: f.tensors,
      has: (name) => f.has(name),
      read: (name) => f.read(name),
      close: () => f.close(),
    };
  }
  const t = await openTorchFile(path);
  return {
    path,
    format,
    metadata: {},
    tensors: t.tensors,
    root: t.root,
    has: (name) => t.get(name) !== undefined,
    read: (name) => t.read(name),
    close: () => t.close(),
  };
}
