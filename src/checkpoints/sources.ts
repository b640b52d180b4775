// Where the loader pulls tensors from: one tensor file (safetensors or torch zip, by content), or a sharded set
// (`*.index.json`). Only headers are read up front; tensor data is read one tensor at a time on demand.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FormatError } from '../errors.js';
import type { LoadedTensor } from '../formats/dtype.js';
import { openTensorFile, type TensorFile } from '../formats/tensor_file.js';

export interface TensorSource {
  /** The file (or files) in messages. */
  readonly label: string;
  /** Stored shape of every tensor, by name. */
  readonly shapes: ReadonlyMap<string, readonly number[]>;
  /** safetensors `__metadata__` (empty for torch files and shards). */
  readonly metadata: Readonly<Record<string, string>>;
  read(name: string): Promise<LoadedTensor>;
  close(): Promise<void>;
}

/**
 * Opens a tensor file as a source. Torch `.ckpt` files saved by PyTorch Lightning keep the weights under
 * `state_dict` beside optimizer state and counters; when a `state_dict` is present only its tensors are offered,
 * under their state-dict names.
 */
export async function openSource(path: string): Promise<TensorSource> {
  const file = await openTensorFile(path);
  try {
    const names = file.tensors.map((t) => t.name);
    const strip = names.some((n) => n.startsWith('state_dict.')) ? 'state_dict.' : '';
    return fromFile(file, strip);
  } catch (err) {
    await file.close();
    throw err;
  }
}

function fromFile(file: TensorFile, strip: string): TensorSource {
  const shapes = new Map<string, readonly number[]>();
  for (const t of file.tensors) if (t.name.startsWith(strip)) shapes.set(t.name.slice(strip.length), t.shape);
  return {
    label: file.path,
    shapes,
    metadata: file.metadata,
    read: async (name) => {
      if (!shapes.has(name)) throw new FormatError(file.path, 'no tensor with this name in the file', name);
      const t = await file.read(strip + name);
      return { ...t, name };
    },
    close: () => file.close(),
  };
}

/** A sharded checkpoint: `{"weight_map": {name: "shard file"}}` beside its shards (transformers/diffusers layout). */
export async function openShardedSource(indexPath: string): Promise<TensorSource> {
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (err) {
    throw new FormatError(indexPath, `cannot read the shard index (${(err as Error).message})`, undefined, { cause: err });
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) throw new FormatError(indexPath, 'no "weight_map" object');
  const files = [...new Set(Object.values(map as Record<string, unknown>))];
  if (!files.every((f): f is string => typeof f === 'string' && !f.includes('/') && !f.includes('\\'))) {
    throw new FormatError(indexPath, '"weight_map" values must be file names in the same folder');
  }
  const shards: TensorSource[] = [];
  try {
    for (const f of files) shards.push(await openSource(join(dirname(indexPath), f)));
  } catch (err) {
    await Promise.all(shards.map((s) => s.close()));
    throw err;
  }
  const owner = new Map<string, TensorSource>();
  const shapes = new Map<string, readonly number[]>();
  for (const s of shards) {
    for (const [name, shape] of s.shapes) {
      owner.set(name, s);
      shapes.set(name, shape);
    }
  }
  return {
    label: indexPath,
    shapes,
    metadata: {},
    read: (name) => {
      const s = owner.get(name);
      if (!s) throw new FormatError(indexPath, 'no tensor with this name in any shard', name);
      return s.read(name);
    },
    close: async () => {
      await Promise.all(shards.map((s) => s.close()));
    },
  };
}

/** Runs `f` with an opened source and closes it afterwards, also on error. */
export async function withSource<T>(open: Promise<TensorSource>, f: (s: TensorSource) => Promise<T>): Promise<T> {
  const s = await open;
  try {
    return await f(s);
  } finally {
    await s.close();
  }
}
