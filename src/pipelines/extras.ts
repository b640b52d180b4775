// Extra networks for one generate call: textual-inversion embeddings (a registry for the prompt encoder), LoRAs
// (merged into the weights, removed afterwards) and hypernetworks (hooked into the U-Net's attention, detached
// afterwards), with the short hashes A1111 writes into the infotext.
import { extname, parse as parsePath } from 'node:path';
import { loadEmbeddings } from '../embeddings/load.js';
import { EmbeddingRegistry } from '../embeddings/registry.js';
import { attachHypernetworks, type AttachedHypernetworks } from '../hypernetwork/apply.js';
import { readHypernetwork } from '../hypernetwork/file.js';
import type { Hypernetwork } from '../hypernetwork/hypernetwork.js';
import { applyLoras, type AppliedLoras } from '../lora/apply.js';
import { readLora, type LoraFile } from '../lora/read.js';
import { addnetHash } from '../lora/write.js';
import { sha256File, type SdModel } from './model.js';

export interface LoraRequest {
  /** A LoRA file (kohya, PEFT or legacy diffusers layout). */
  path: string;
  /** Multiplier (A1111 `<lora:name:weight>`; the U-Net one when `teWeight` is given); default 1. */
  weight?: number;
  /** Multiplier for the text-encoder part (A1111 `<lora:name:teWeight:weight>`); default `weight`. */
  teWeight?: number;
}

export interface HypernetworkRequest {
  /** An A1111 `.pt` or sdtrain `.safetensors` hypernetwork. */
  path: string;
  /** Multiplier (A1111 `<hypernet:name:strength>`); default 1. */
  strength?: number;
}

export interface ExtraNetworksRequest {
  /** Embedding files, or folders searched for them; keywords are the file stems (A1111). */
  embeddings?: readonly string[];
  loras?: readonly LoraRequest[];
  hypernetworks?: readonly HypernetworkRequest[];
}

export interface AppliedExtras {
  registry: EmbeddingRegistry | undefined;
  loras: Array<{ name: string; weight: number; teWeight?: number; path: string }>;
  hypernetworks: Array<{ name: string; strength: number }>;
  /** Embeddings skipped, LoRA modules the model lacks, hypernetwork widths it has no layer for. */
  warnings: string[];
  /** A1111 "Lora hashes": first 12 hex of the addnet hash (safetensors) or of sha256 of the file. Cached. */
  loraHashes(): Promise<string[]>;
  /** A1111 "TI hashes" of the named embeddings: first 12 hex of sha256 of the file. */
  embeddingHashes(names: readonly string[]): Promise<Array<{ name: string; hash: string }>>;
  /** Removes the LoRAs and hypernetworks from the model and frees them. Idempotent. */
  release(): void;
}

const short = (h: string): string => h.slice(0, 12);

/** Loads and applies the extra networks; on any error nothing stays applied. */
export async function applyExtras(model: SdModel, req: ExtraNetworksRequest): Promise<AppliedExtras> {
  const warnings: string[] = [];
  let registry: EmbeddingRegistry | undefined;
  if (req.embeddings?.length) {
    const { loaded, skipped } = await loadEmbeddings(req.embeddings, { expectedDim: model.textEncoder.config.hidden_size });
    for (const s of skipped) warnings.push(`embedding ${s.path} skipped: ${s.reason}`);
    registry = EmbeddingRegistry.from(model.tokenizer, loaded.values());
  }

  const files: LoraFile[] = [];
  for (const l of req.loras ?? []) files.push(await readLora(l.path, model));
  const hns: Hypernetwork[] = [];
  let loraHandle: AppliedLoras | undefined;
  let hnHandle: AttachedHypernetworks | undefined;
  const release = () => {
    hnHandle?.detach();
    for (const hn of hns) hn.dispose();
    hns.length = 0;
    loraHandle?.remove();
  };
  try {
    const loras = (req.loras ?? []).map((l, i) => ({ file: files[i]!, weight: l.weight ?? 1, teWeight: l.teWeight }));
    if (loras.length) {
      loraHandle = applyLoras(model, loras);
      for (const s of loraHandle.skipped) warnings.push(`LoRA module not in this model, skipped: ${s}`);
    }
    for (const h of req.hypernetworks ?? []) hns.push(await readHypernetwork(h.path));
    if (hns.length) {
      hnHandle = attachHypernetworks(
        model.unet,
        hns.map((hn, i) => ({ hn, strength: req.hypernetworks![i]!.strength ?? 1 })),
      );
      for (const w of hnHandle.unusedWidths) warnings.push(`hypernetwork layer of width ${w} matches no attention layer of this model`);
    }
  } catch (err) {
    release();
    throw err;
  }

  let loraHashes: Promise<string[]> | undefined;
  const tiHashes = new Map<string, Promise<string>>();
  return {
    registry,
    loras: (req.loras ?? []).map((l) => ({
      name: parsePath(l.path).name,
      weight: l.weight ?? 1,
      ...(l.teWeight !== undefined ? { teWeight: l.teWeight } : {}),
      path: l.path,
    })),
    hypernetworks: (req.hypernetworks ?? []).map((h) => ({ name: parsePath(h.path).name, strength: h.strength ?? 1 })),
    warnings,
    loraHashes: () =>
      (loraHashes ??= Promise.all(
        (req.loras ?? []).map(async (l) => short(extname(l.path).toLowerCase() === '.safetensors' ? await addnetHash(l.path) : await sha256File(l.path))),
      )),
    embeddingHashes: (names) =>
      Promise.all(
        names.map(async (name) => {
          const path = registry?.get(name)?.path;
          let h = tiHashes.get(name);
          if (!h) tiHashes.set(name, (h = path ? sha256File(path).then(short) : Promise.resolve('')));
          return { name, hash: await h };
        }),
      ),
    release,
  };
}
