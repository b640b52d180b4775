// Writing LoRA files: kohya `networks.lora` safetensors (what A1111, ComfyUI and kohya read), with `ss_*`/`modelspec.*`
// metadata and the `sshs_*` hashes kohya precomputes for sd-webui-additional-networks; and diffusers PEFT
// (`pytorch_lora_weights.safetensors` with `lora_adapter_metadata`).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import type { TensorToWrite } from '../formats/dtype.js';
import { SafetensorsFile, writeSafetensors } from '../formats/safetensors.js';
import type { LoraComponent } from './names.js';
import type { LoraModule } from './read.js';

export type LoraDType = 'F16' | 'BF16' | 'F32';
export type LoraModuleToWrite = Pick<LoraModule, 'name' | 'down' | 'up' | 'alpha'>;

export interface SshsHashes {
  sshs_model_hash: string;
  sshs_legacy_hash: string;
}

export interface KohyaWriteOptions {
  /** Stored dtype of every tensor, alphas included (default F16, kohya's usual save precision). */
  dtype?: LoraDType;
  /** String metadata (`ss_*`, `modelspec.*`, ...); see `kohyaLoraMetadata`. */
  metadata?: Record<string, string>;
  /** Add `sshs_model_hash`/`sshs_legacy_hash` as kohya does (default true). */
  hashes?: boolean;
}

function kohyaTensors(modules: readonly LoraModuleToWrite[], dtype: LoraDType): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  for (const m of modules) {
    out.set(`${m.name}.alpha`, { shape: [], data: Float32Array.of(m.alpha), dtype });
    out.set(`${m.name}.lora_down.weight`, { shape: m.down.shape, data: m.down.data, dtype });
    out.set(`${m.name}.lora_up.weight`, { shape: m.up.shape, data: m.up.data, dtype });
  }
  return out;
}

const ssOnly = (metadata: Record<string, string>) => Object.fromEntries(Object.entries(metadata).filter(([k]) => k.startsWith('ss_')));

/**
 * Writes a kohya LoRA atomically; returns the metadata written. The hashes follow kohya's
 * `precalculate_safetensors_hashes`: both are taken over a serialisation carrying only the `ss_*` metadata;
 * `sshs_model_hash` = sha256 of its bytes after the header (= this file's, since tensor bytes do not depend on
 * metadata), `sshs_legacy_hash` = first 8 hex digits of sha256 of its 64 KiB at offset 1 MiB.
 */
export async function writeKohyaLora(path: string, modules: readonly LoraModuleToWrite[], opts: KohyaWriteOptions = {}): Promise<Record<string, string>> {
  const tensors = kohyaTensors(modules, opts.dtype ?? 'F16');
  const metadata = { ...(opts.metadata ?? {}) };
  if (opts.hashes ?? true) Object.assign(metadata, await hashesOfSerialisation(tensors, ssOnly(metadata)));
  await writeSafetensors(path, tensors, metadata);
  return metadata;
}

async function hashesOfSerialisation(tensors: Map<string, TensorToWrite>, metadata: Record<string, string>): Promise<SshsHashes> {
  const dir = await mkdtemp(join(tmpdir(), 'sdtrain-sshs-'));
  try {
    const tmp = join(dir, 'hash.safetensors');
    await writeSafetensors(tmp, tensors, metadata);
    return await sshsHashesOfBytes(tmp);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** kohya's hashes of a file exactly as it is (its metadata included). */
async function sshsHashesOfBytes(path: string): Promise<SshsHashes> {
  const fh = await open(path, 'r');
  try {
    const len = Buffer.alloc(8);
    await fh.read(len, 0, 8, 0);
    const legacy = Buffer.alloc(0x10000);
    const { bytesRead } = await fh.read(legacy, 0, 0x10000, 0x100000);
    return {
      sshs_model_hash: await sha256File(path, 8 + Number(len.readBigUInt64LE(0))),
      sshs_legacy_hash: createHash('sha256').update(legacy.subarray(0, bytesRead)).digest('hex').slice(0, 8),
    };
  } finally {
    await fh.close();
  }
}

/** sha256 (hex) of a file's bytes from `start` to the end. */
async function sha256File(path: string, start: number): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { start })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * The model hash A1111 and sd-webui-additional-networks compute for a safetensors LoRA that carries none ("addnet
 * hash"): sha256 of the bytes after the header. For a kohya file it equals the `sshs_model_hash` kohya stored.
 */
export async function addnetHash(path: string): Promise<string> {
  const f = await SafetensorsFile.open(path);
  const start = f.dataStart;
  await f.close();
  return sha256File(path, start);
}

/**
 * Recomputes kohya's `sshs_*` hashes of an existing safetensors LoRA: its tensors (bit-exact) re-serialised with only
 * its `ss_*` metadata, in the reference layout. The model hash is writer-independent; the legacy hash depends on the
 * header length, so it matches files whose writer laid the header out as safetensors does.
 */
export async function sshsHashes(path: string): Promise<SshsHashes> {
  const f = await SafetensorsFile.open(path);
  const tensors = new Map<string, TensorToWrite>();
  try {
    for (const info of f.tensors) {
      const raw = await f.readRaw(info.name);
      const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
      if (info.dtype === 'F32') tensors.set(info.name, { shape: info.shape, data: new Float32Array(buf) });
      else if (info.dtype === 'F16' || info.dtype === 'BF16') tensors.set(info.name, { shape: info.shape, data: new Uint16Array(buf), dtype: info.dtype });
      else throw new FormatError(path, `cannot re-serialise ${info.dtype} tensors for hashing (F32/F16/BF16 only)`, info.name);
    }
  } finally {
    await f.close();
  }
  return hashesOfSerialisation(tensors, ssOnly(f.metadata));
}

// ---------------------------------------------------------------------------------------------------------------
// Metadata

export interface KohyaMetadataInfo {
  /** The modules written, for `ss_network_dim`/`alpha` (linear and 1×1) and `ss_network_args` conv_dim/conv_alpha (k×k). */
  modules: readonly LoraModuleToWrite[];
  v2?: boolean;
  vPrediction?: boolean;
  /** Training resolution [width, height] (default 512×512). */
  resolution?: [number, number];
  title?: string;
  date?: Date;
  /** Further `ss_*`/`modelspec.*` entries (strings; they win over the computed ones). */
  extra?: Record<string, string>;
}

/** Python's str() of a float: 1 → "1.0", 0.5 → "0.5". */
const pyFloat = (x: number) => (Number.isInteger(x) ? x.toFixed(1) : String(x));

/** Python datetime.isoformat() of a local time, without microseconds. */
function isoLocal(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The `ss_*` network keys and `modelspec.*` keys kohya writes for an SD 1.x/2.x LoRA (sai_model_spec 1.0.1). */
export function kohyaLoraMetadata(info: KohyaMetadataInfo): Record<string, string> {
  const isConv3 = (m: LoraModuleToWrite) => m.down.shape.length === 4 && (m.down.shape[2]! > 1 || m.down.shape[3]! > 1);
  const plain = info.modules.find((m) => !isConv3(m));
  const conv = info.modules.find(isConv3);
  const [w, h] = info.resolution ?? [512, 512];
  const arch = info.v2 ? (info.vPrediction ? 'stable-diffusion-v2-768-v' : 'stable-diffusion-v2-512') : 'stable-diffusion-v1';
  const out: Record<string, string> = {
    ss_network_module: 'networks.lora',
    ss_network_dim: String(plain?.down.shape[0] ?? conv?.down.shape[0] ?? 0),
    ss_network_alpha: pyFloat(plain?.alpha ?? conv?.alpha ?? 1),
  };
  // Python json.dumps of kohya's network_args (CLI strings), with its ", " and ": " separators.
  if (conv) out['ss_network_args'] = `{"conv_dim": "${conv.down.shape[0]}", "conv_alpha": "${pyFloat(conv.alpha)}"}`;
  Object.assign(out, {
    ss_v2: info.v2 ? 'True' : 'False',
    ss_base_model_version: `sd_${info.v2 ? 'v2' : 'v1'}${info.vPrediction ? '_v' : ''}`,
    'modelspec.sai_model_spec': '1.0.1',
    'modelspec.architecture': `${arch}/lora`,
    'modelspec.implementation': 'diffusers',
    'modelspec.title': info.title ?? 'lora',
    'modelspec.resolution': `${w}x${h}`,
    'modelspec.date': isoLocal(info.date ?? new Date()),
    'modelspec.prediction_type': info.vPrediction ? 'v' : 'epsilon',
    ...info.extra,
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// PEFT

export interface PeftWriteOptions {
  dtype?: LoraDType;
  /**
   * Fold alpha/rank into lora_B and record lora_alpha = r (default true): the deltas are then right in every reader,
   * including those that ignore `lora_adapter_metadata` (older diffusers, ComfyUI). With false, alphas go to the metadata.
   */
  foldAlpha?: boolean;
  /** Extra string metadata (beside `format` and `lora_adapter_metadata`). */
  metadata?: Record<string, string>;
}

/** Writes diffusers' `pytorch_lora_weights.safetensors` layout: `<component>.<path>.lora_A.weight` / `.lora_B.weight`. */
export async function writePeftLora(path: string, modules: readonly Pick<LoraModule, 'component' | 'path' | 'down' | 'up' | 'alpha'>[], opts: PeftWriteOptions = {}): Promise<void> {
  const dtype = opts.dtype ?? 'F32';
  const fold = opts.foldAlpha ?? true;
  const tensors = new Map<string, TensorToWrite>();
  const configs: Partial<Record<LoraComponent, { ranks: Map<string, number>; alphas: Map<string, number> }>> = {};
  for (const m of modules) {
    const rank = m.down.shape[0]!;
    const scale = m.alpha / rank;
    const up = fold && scale !== 1 ? m.up.data.map((v) => v * scale) : m.up.data;
    tensors.set(`${m.component}.${m.path}.lora_A.weight`, { shape: m.down.shape, data: m.down.data, dtype });
    tensors.set(`${m.component}.${m.path}.lora_B.weight`, { shape: m.up.shape, data: up, dtype });
    const c = (configs[m.component] ??= { ranks: new Map(), alphas: new Map() });
    c.ranks.set(m.path, rank);
    c.alphas.set(m.path, fold ? rank : m.alpha);
  }
  const meta: Record<string, unknown> = {};
  for (const [component, c] of Object.entries(configs) as Array<[LoraComponent, NonNullable<(typeof configs)[LoraComponent]>]>) {
    const r = mostCommon(c.ranks);
    const alpha = mostCommon(c.alphas);
    meta[`${component}.r`] = r;
    meta[`${component}.lora_alpha`] = alpha;
    meta[`${component}.target_modules`] = [...c.ranks.keys()].sort();
    const rankPattern = Object.fromEntries([...c.ranks].filter(([, v]) => v !== r));
    const alphaPattern = Object.fromEntries([...c.alphas].filter(([, v]) => v !== alpha));
    if (Object.keys(rankPattern).length) meta[`${component}.rank_pattern`] = sortKeys(rankPattern);
    if (Object.keys(alphaPattern).length) meta[`${component}.alpha_pattern`] = sortKeys(alphaPattern);
  }
  // diffusers writes json.dumps(indent=2, sort_keys=True).
  await writeSafetensors(path, tensors, { ...opts.metadata, format: 'pt', lora_adapter_metadata: JSON.stringify(sortKeys(meta), null, 2) });
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function mostCommon(values: Map<string, number>): number {
  const counts = new Map<number, number>();
  for (const v of values.values()) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0];
}
