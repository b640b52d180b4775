// `sdtrain inspect`: what is this file or folder? Reads headers and pickles only (never tensor data, except the tiny
// embedding JSON inside a PNG), so it is instant on multi-GB checkpoints.
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { FormatError } from '../errors.js';
import type { TensorInfo } from '../formats/dtype.js';
import { readPngEmbedding } from '../formats/png_embedding.js';
import { isPng, readPngText } from '../formats/png_text.js';
import { openTensorFile, sniffTensorFile } from '../formats/tensor_file.js';
import { detect, familyLabel, type Detection } from './detect.js';

export type ContainerFormat = 'safetensors' | 'torch-zip' | 'png' | 'diffusers-folder';

export interface FileReport {
  path: string;
  format: ContainerFormat;
  bytes: number;
  tensorCount: number;
  /** Tensor count per stored dtype. */
  dtypes: Record<string, number>;
  paramCount: number;
  metadata: Record<string, string>;
  detection: Detection;
  /** diffusers folders: one report per component with weights. */
  components?: Record<string, FileReport & { config?: Record<string, unknown> }>;
}

/** Peek at the first bytes and decide the container. */
export async function sniffFormat(path: string): Promise<Exclude<ContainerFormat, 'diffusers-folder'>> {
  const fh = await open(path, 'r');
  const head = Buffer.alloc(8);
  const { bytesRead } = await fh.read(head, 0, 8, 0).finally(() => fh.close());
  if (isPng(head.subarray(0, bytesRead))) return 'png';
  try {
    return (await sniffTensorFile(path)) === 'safetensors' ? 'safetensors' : 'torch-zip';
  } catch {
    throw new FormatError(path, 'not a recognised file: expected .safetensors, a PyTorch .pt/.ckpt/.bin, a PNG, or a diffusers folder');
  }
}

function summarise(tensors: TensorInfo[]): Pick<FileReport, 'tensorCount' | 'dtypes' | 'paramCount'> {
  const dtypes: Record<string, number> = {};
  let paramCount = 0;
  for (const t of tensors) {
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    paramCount += t.shape.reduce((a, b) => a * b, 1);
  }
  return { tensorCount: tensors.length, dtypes, paramCount };
}

/** Plain values stored beside the tensors at the top of a torch pickle (name, step, layer_structure, ...). */
export function topLevelScalars(root: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!(root instanceof Map)) return out;
  for (const [k, v] of root) {
    if (typeof k !== 'string') continue;
    const plain = toPlain(v);
    if (plain !== undefined) out[k] = plain;
  }
  return out;
}

function toPlain(v: unknown): unknown {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) {
    const items = v.map(toPlain);
    return items.every((x) => x !== undefined) ? items : undefined;
  }
  // PyFloat and similar wrappers expose `.value`.
  if (typeof v === 'object' && v !== null && 'value' in v && typeof (v as { value: unknown }).value === 'number') {
    return (v as { value: number }).value;
  }
  return undefined;
}

async function inspectFile(path: string): Promise<FileReport> {
  const bytes = (await stat(path)).size;
  const format = await sniffFormat(path);
  if (format !== 'png') {
    const f = await openTensorFile(path);
    try {
      const detection = detect({ tensors: f.tensors, metadata: f.metadata, scalars: topLevelScalars(f.root) });
      return { path, format, bytes, ...summarise(f.tensors), metadata: f.metadata, detection };
    } finally {
      await f.close();
    }
  }
  // PNG: an A1111 embedding (text chunk or pixels) or a generated image with infotext.
  const png = await readFile(path);
  const text = readPngText(png, path);
  const emb = basename(path).endsWith('.preview.png') ? undefined : await readPngEmbedding(png, path);
  if (emb) {
    const tensors: TensorInfo[] = [{ name: 'string_to_param.*', dtype: 'F32', shape: emb.shape }];
    const detection = detect({ tensors, metadata: {}, scalars: { name: emb.name, step: emb.step } });
    detection.layout = 'a1111-png';
    detection.summary = detection.summary.replace('(A1111)', `(A1111 PNG, from ${emb.source === 'text' ? 'the text chunk' : 'the pixels'})`);
    return { path, format, bytes, ...summarise(tensors), metadata: text, detection };
  }
  const params = text.parameters;
  const detection: Detection =
    params !== undefined
      ? { kind: 'infotext_image', summary: `image with A1111 generation parameters: ${params.split('\n').at(-1)}`, details: { parameters: params } }
      : { kind: 'unknown', summary: 'PNG image without generation parameters or an embedding', details: {} };
  return { path, format, bytes, tensorCount: 0, dtypes: {}, paramCount: 0, metadata: text, detection };
}

/** Weight file of a diffusers component folder, preferring safetensors and full precision. */
async function componentWeights(dir: string): Promise<string | undefined> {
  const names = await readdir(dir);
  const prefs = [
    'diffusion_pytorch_model.safetensors',
    'model.safetensors',
    'diffusion_pytorch_model.fp16.safetensors',
    'model.fp16.safetensors',
    'diffusion_pytorch_model.bin',
    'pytorch_model.bin',
    'diffusion_pytorch_model.fp16.bin',
    'pytorch_model.fp16.bin',
  ];
  const hit = prefs.find((p) => names.includes(p));
  return hit ? join(dir, hit) : undefined;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new FormatError(path, `cannot read JSON: ${(e as Error).message}`);
  }
}

async function inspectDiffusersFolder(dir: string): Promise<FileReport> {
  const index = await readJson(join(dir, 'model_index.json'));
  const components: NonNullable<FileReport['components']> = {};
  for (const [name, spec] of Object.entries(index)) {
    if (name.startsWith('_') || !Array.isArray(spec) || spec[0] === null) continue;
    const cdir = join(dir, name);
    const weights = await componentWeights(cdir).catch(() => undefined);
    if (!weights) continue;
    const r = await inspectFile(weights);
    const config = await readJson(join(cdir, 'config.json')).catch(() => undefined);
    components[name] = { ...r, config };
  }
  const unet = components.unet?.detection;
  const scheduler = await readJson(join(dir, 'scheduler', 'scheduler_config.json')).catch(() => undefined);
  const prediction = (scheduler?.prediction_type as string | undefined) ?? 'epsilon';
  const variant = unet?.variant;
  const detection: Detection = {
    kind: 'diffusers_pipeline',
    layout: 'diffusers',
    variant,
    summary:
      `diffusers Stable Diffusion folder (${String(index._class_name ?? 'pipeline')})` +
      (variant ? `, ${familyLabel(variant)}` : '') +
      `, ${prediction} prediction, components: ${Object.keys(components).join(', ')}`,
    details: { class_name: index._class_name, prediction_type: prediction, components: Object.keys(components) },
  };
  const sum = (f: (c: FileReport) => number) => Object.values(components).reduce((n, c) => n + f(c), 0);
  const dtypes: Record<string, number> = {};
  for (const c of Object.values(components)) for (const [k, v] of Object.entries(c.dtypes)) dtypes[k] = (dtypes[k] ?? 0) + v;
  return {
    path: dir,
    format: 'diffusers-folder',
    bytes: sum((c) => c.bytes),
    tensorCount: sum((c) => c.tensorCount),
    dtypes,
    paramCount: sum((c) => c.paramCount),
    metadata: {},
    detection,
    components,
  };
}

/** Inspect a file or a diffusers folder. */
export async function inspectPath(path: string): Promise<FileReport> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw new FormatError(path, 'no such file or directory');
  }
  if (s.isDirectory()) {
    const hasIndex = await stat(join(path, 'model_index.json')).then(() => true, () => false);
    if (!hasIndex) throw new FormatError(path, 'a folder, but not a diffusers model (no model_index.json)');
    return inspectDiffusersFolder(path);
  }
  return inspectFile(path);
}
