// Textual-inversion embedding files for sampling (formats.md §4): A1111 .pt and PNG, rinongal .pt, kohya and
// diffusers .safetensors/.bin, and ours. The rules follow A1111's `create_embedding_from_data` (textual_inversion.py
// @ 22ecb78b): `string_to_param` → its single tensor; `clip_g` + `clip_l` → SDXL (rejected here); one tensor → it.
//
// The prompt keyword (`name`) is A1111's: the file stem for .pt/.bin/.safetensors (whatever name or placeholder the
// file stores, kept as `storedName`), and the embedded `name` for PNG embeddings. Prompts are written for A1111, and
// there `<cat-toy>` from diffusers' learned_embeds.safetensors is typed as `learned_embeds`.
import { promises as fsp } from 'node:fs';
import { basename, extname, join, parse } from 'node:path';
import { FormatError } from '../errors.js';
import { readPngEmbedding } from '../formats/png_embedding.js';
import { isPng } from '../formats/png_text.js';
import { PyObject, TorchTensorRef, type PyValue } from '../formats/pickle_values.js';
import { openTensorFile, type TensorFile } from '../formats/tensor_file.js';

export type EmbeddingSource = 'a1111' | 'a1111-png' | 'rinongal' | 'kohya' | 'diffusers' | 'sdtrain';

export interface Embedding {
  /** The prompt keyword (see the file comment). */
  name: string;
  /** [n, dim] row-major. */
  vectors: Float32Array;
  shape: [n: number, dim: number];
  source: EmbeddingSource;
  path?: string;
  /** The name the file itself carries: A1111's `name`, the diffusers placeholder key (`<cat-toy>`), kohya's `emb_params`. */
  storedName?: string;
  /** Training step (A1111 files). */
  step?: number;
  /** Short hash and name of the model it was trained on (A1111 files). */
  sdCheckpoint?: string;
  sdCheckpointName?: string;
}

/** Metadata keys starting with this mark a safetensors embedding written by sdtrain. */
export const SDTRAIN_METADATA_PREFIX = 'sdtrain';

/** Extensions A1111 loads embeddings from (WebP/JXL/AVIF previews are not supported here). */
export const EMBEDDING_EXTENSIONS = ['.pt', '.bin', '.safetensors', '.png'];

/** Reads one embedding file, deciding the layout by content. FormatError when it is not a usable SD1/SD2 embedding. */
export async function loadEmbedding(path: string): Promise<Embedding> {
  const stem = parse(path).name;
  const head = await readHead(path);
  if (isPng(head)) {
    if (isPreview(path)) throw new FormatError(path, '*.preview.png files are preview images, never embeddings');
    const png = await readPngEmbedding(await fsp.readFile(path), path);
    if (png === undefined) throw new FormatError(path, 'this PNG holds no textual-inversion embedding (no sd-ti-embedding text, no data in the pixels)');
    return {
      name: png.name ?? stem,
      vectors: png.data,
      shape: png.shape,
      source: 'a1111-png',
      path,
      ...(png.name !== undefined ? { storedName: png.name } : {}),
      ...(typeof png.step === 'number' ? { step: png.step } : {}),
      ...(png.sdCheckpoint ? { sdCheckpoint: png.sdCheckpoint } : {}),
      ...(png.sdCheckpointName ? { sdCheckpointName: png.sdCheckpointName } : {}),
    };
  }
  const file = await openTensorFile(path);
  try {
    return { name: stem, path, ...(await (file.format === 'torch' ? fromTorch(file) : fromSafetensors(file))) };
  } finally {
    await file.close();
  }
}

type Parsed = Omit<Embedding, 'name' | 'path'>;

const SDXL_MESSAGE =
  'an SDXL embedding (clip_l + clip_g tensors); SDXL embeddings are not supported by SD1/SD2 models, which take one [n, 768] or [n, 1024] tensor';

async function fromSafetensors(file: TensorFile): Promise<Parsed> {
  const names = file.tensors.map((t) => t.name);
  if (names.includes('clip_g') && names.includes('clip_l')) throw new FormatError(file.path, SDXL_MESSAGE);
  if (names.length !== 1) {
    throw new FormatError(file.path, `expected one embedding tensor, found ${names.length} (${names.slice(0, 5).join(', ')}): not a textual-inversion embedding`);
  }
  const key = names[0]!;
  const ours = Object.keys(file.metadata).some((k) => k.startsWith(SDTRAIN_METADATA_PREFIX));
  const source: EmbeddingSource = ours ? 'sdtrain' : key === 'emb_params' ? 'kohya' : 'diffusers';
  const t = await file.read(key);
  return { ...toMatrix(file.path, key, t.data, t.shape), source, storedName: key };
}

async function fromTorch(file: TensorFile): Promise<Parsed> {
  const root = file.root ?? null;
  if (root instanceof TorchTensorRef) return { ...(await loadRef(file.path, 'tensor', root)), source: 'diffusers' };
  if (!(root instanceof Map)) throw notAnEmbedding(file.path);
  const s2p = root.get('string_to_param');
  if (s2p !== undefined) {
    // rinongal pickles a ParameterDict module: its tensors are in `_parameters`
    const isModule = s2p instanceof PyObject;
    const params = isModule ? s2p.getAttr('_parameters') : s2p;
    if (!(params instanceof Map)) throw new FormatError(file.path, 'string_to_param is not a dict of tensors', 'string_to_param');
    if (params.size !== 1) throw new FormatError(file.path, `the embedding file has ${params.size} terms in string_to_param; expected 1`, 'string_to_param');
    const [key, ref] = [...params][0]!;
    if (!(ref instanceof TorchTensorRef)) throw new FormatError(file.path, 'the string_to_param entry is not a tensor', 'string_to_param');
    const name = root.get('name');
    return {
      ...(await loadRef(file.path, `string_to_param.${String(key)}`, ref)),
      source: isModule ? 'rinongal' : 'a1111',
      ...(typeof name === 'string' ? { storedName: name } : {}),
      ...optionalNumber('step', root.get('step')),
      ...optionalString('sdCheckpoint', root.get('sd_checkpoint')),
      ...optionalString('sdCheckpointName', root.get('sd_checkpoint_name')),
    };
  }
  if (root.has('clip_g') && root.has('clip_l')) throw new FormatError(file.path, SDXL_MESSAGE);
  const first = [...root.values()][0];
  if (!(first instanceof TorchTensorRef)) throw notAnEmbedding(file.path);
  if (root.size !== 1) throw new FormatError(file.path, `the embedding file has ${root.size} terms; expected 1`);
  const key = [...root.keys()][0]!;
  return { ...(await loadRef(file.path, String(key), first)), source: 'diffusers', storedName: String(key) };
}

const notAnEmbedding = (path: string) =>
  new FormatError(path, 'neither a textual-inversion embedding (string_to_param) nor a diffusers concept (one tensor)');

async function loadRef(path: string, name: string, ref: TorchTensorRef): Promise<Pick<Embedding, 'vectors' | 'shape'>> {
  const t = await ref.load(name);
  return toMatrix(path, name, t.data, t.shape);
}

/** [n, dim] float32; a 1-D [dim] vector (2022 diffusers .bin) is one row. */
function toMatrix(path: string, key: string, data: Float32Array | Int32Array | Uint8Array, shape: number[]): Pick<Embedding, 'vectors' | 'shape'> {
  if (!(data instanceof Float32Array)) throw new FormatError(path, 'the embedding tensor is not floating point', key);
  if (shape.length === 1) return { vectors: data, shape: [1, shape[0]!] };
  if (shape.length !== 2 || shape[0]! < 1 || shape[1]! < 1) {
    throw new FormatError(path, `the embedding tensor has shape [${shape.join(', ')}]; expected [vectors, dim]`, key);
  }
  return { vectors: data, shape: [shape[0]!, shape[1]!] };
}

function optionalNumber<K extends string>(key: K, v: PyValue | undefined): Partial<Record<K, number>> {
  if (typeof v === 'number') return { [key]: v } as Record<K, number>;
  if (typeof v === 'bigint') return { [key]: Number(v) } as Record<K, number>;
  return {};
}

function optionalString<K extends string>(key: K, v: PyValue | undefined): Partial<Record<K, string>> {
  return typeof v === 'string' ? ({ [key]: v } as Record<K, string>) : {};
}

async function readHead(path: string): Promise<Uint8Array> {
  const fh = await fsp.open(path, 'r');
  try {
    const buf = new Uint8Array(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 0);
    return buf.subarray(0, bytesRead);
  } catch (e) {
    throw new FormatError(path, `cannot read: ${(e as Error).message}`);
  } finally {
    await fh.close();
  }
}

const isPreview = (path: string) => /\.preview\.png$/i.test(basename(path));

export interface LoadEmbeddingsOptions {
  /** The text encoder's width (768 SD1, 1024 SD2): embeddings of another width are skipped, as A1111 does. */
  expectedDim?: number;
}

export interface LoadEmbeddingsResult {
  /** By keyword, sorted case-insensitively (A1111's order). */
  loaded: Map<string, Embedding>;
  skipped: Array<{ path: string; reason: string }>;
}

/**
 * Loads embeddings from files and directories (searched recursively, in name order, for .pt/.bin/.safetensors/.png,
 * never `*.preview.png`). A file named explicitly that cannot be read throws; inside a directory it is skipped with
 * the reason, as are PNGs without an embedding and empty files. Embeddings of the wrong width are skipped. When two
 * files give the same keyword, the later one wins and the earlier is reported as skipped.
 */
export async function loadEmbeddings(paths: readonly string[], opts: LoadEmbeddingsOptions = {}): Promise<LoadEmbeddingsResult> {
  const found = new Map<string, Embedding>();
  const skipped: LoadEmbeddingsResult['skipped'] = [];
  const add = (e: Embedding) => {
    if (opts.expectedDim !== undefined && e.shape[1] !== opts.expectedDim) {
      skipped.push({ path: e.path!, reason: `vectors are ${e.shape[1]} wide; this model's text encoder takes ${opts.expectedDim}` });
      return;
    }
    const earlier = found.get(e.name);
    if (earlier) skipped.push({ path: earlier.path!, reason: `keyword '${e.name}' is also given by ${e.path}, which replaces it` });
    found.set(e.name, e);
  };
  for (const path of paths) {
    const stat = await fsp.stat(path).catch((e: NodeJS.ErrnoException) => {
      throw new FormatError(path, `cannot read: ${e.code ?? e.message}`);
    });
    if (!stat.isDirectory()) {
      add(await loadEmbedding(path));
      continue;
    }
    for (const file of await walk(path, new Set())) {
      try {
        if ((await fsp.stat(file)).size === 0) {
          skipped.push({ path: file, reason: 'empty file' });
          continue;
        }
        add(await loadEmbedding(file));
      } catch (e) {
        skipped.push({ path: file, reason: e instanceof FormatError ? e.message.replace(`${file}: `, '') : (e as Error).message });
      }
    }
  }
  const sorted = [...found.values()].sort((a, b) => cmp(a.name.toLowerCase(), b.name.toLowerCase()));
  return { loaded: new Map(sorted.map((e) => [e.name, e])), skipped };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Embedding files under `dir`, depth first in name order, following symlinks once. */
async function walk(dir: string, seen: Set<string>): Promise<string[]> {
  const real = await fsp.realpath(dir);
  if (seen.has(real)) return [];
  seen.add(real);
  const out: string[] = [];
  const entries = (await fsp.readdir(dir)).sort(cmp);
  for (const name of entries) {
    const full = join(dir, name);
    const stat = await fsp.stat(full).catch(() => undefined);
    if (stat === undefined) continue;
    if (stat.isDirectory()) out.push(...(await walk(full, seen)));
    else if (EMBEDDING_EXTENSIONS.includes(extname(name).toLowerCase()) && !isPreview(name)) out.push(full);
  }
  return out;
}
