// CLIP BPE vocabulary: built from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (shipped in assets/clip) or read from a
// diffusers/transformers tokenizer folder (vocab.json + merges.txt). Both give the same 49408 ids.
// https://github.com/openai/CLIP/blob/d05afc436d78f1c48dc0dbf8e5980a9d471f35f6/clip/simple_tokenizer.py#L62

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { FormatError } from '../errors.js';
import { packagePath } from '../paths.js';

/** Merges used by CLIP: 49152 - 256 - 2 (lines 1..48894 of the merges file; line 0 is a version header). */
export const CLIP_NUM_MERGES = 49152 - 256 - 2;
export const START_OF_TEXT = '<|startoftext|>';
export const END_OF_TEXT = '<|endoftext|>';

export interface ClipVocab {
  /** Symbol → id (`"cat</w>"` → 2368). */
  readonly encoder: ReadonlyMap<string, number>;
  /** id → symbol. */
  readonly decoder: readonly string[];
  /** `"${a} ${b}"` → merge rank (lower merges first). Symbols never contain U+0020: bytes map to printable chars. */
  readonly bpeRanks: ReadonlyMap<string, number>;
}

/**
 * GPT-2's reversible byte → printable-character table. Printable bytes 33–126, 161–172, 174–255 map to themselves;
 * the other 68 bytes map to U+0100, U+0101, … in byte order. Returned in construction order (printables first),
 * which is also the order of the first 256 vocabulary ids.
 */
export function bytesToUnicode(): { bytes: number[]; chars: string[] } {
  const bytes: number[] = [];
  for (let b = 33; b <= 126; b++) bytes.push(b);
  for (let b = 161; b <= 172; b++) bytes.push(b);
  for (let b = 174; b <= 255; b++) bytes.push(b);
  const chars = bytes.map((b) => String.fromCharCode(b));
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (b >= 33 && b <= 126) continue;
    if (b >= 161 && b <= 172) continue;
    if (b >= 174) continue;
    bytes.push(b);
    chars.push(String.fromCharCode(256 + n++));
  }
  return { bytes, chars };
}

/** `BYTE_ENCODER[b]`: the printable char standing for byte b. `BYTE_DECODER`: the inverse. */
export const BYTE_ENCODER: readonly string[] = (() => {
  const { bytes, chars } = bytesToUnicode();
  const out = new Array<string>(256);
  bytes.forEach((b, i) => (out[b] = chars[i]!));
  return out;
})();
export const BYTE_DECODER: ReadonlyMap<string, number> = new Map(BYTE_ENCODER.map((c, b) => [c, b]));

function ranksFrom(merges: readonly string[], file: string): Map<string, number> {
  const ranks = new Map<string, number>();
  merges.forEach((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2) throw new FormatError(file, `merge line ${i + 1} is not two symbols: ${JSON.stringify(line)}`);
    ranks.set(`${parts[0]} ${parts[1]}`, i); // dict(zip(merges, range(n))): a repeated merge keeps its last rank
  });
  return ranks;
}

/** Build the vocabulary exactly like `SimpleTokenizer.__init__` from the text of the merges file. */
export function vocabFromMergesText(text: string, file = 'bpe_simple_vocab_16e6.txt'): ClipVocab {
  const lines = text.split('\n').slice(1, CLIP_NUM_MERGES + 1);
  if (lines.length !== CLIP_NUM_MERGES) {
    throw new FormatError(file, `expected ${CLIP_NUM_MERGES} merges after the header, found ${lines.length}`);
  }
  const bpeRanks = ranksFrom(lines, file);
  const { chars } = bytesToUnicode();
  const decoder = [...chars, ...chars.map((c) => c + '</w>')];
  for (const line of lines) decoder.push(line.replace(' ', ''));
  decoder.push(START_OF_TEXT, END_OF_TEXT);
  const encoder = new Map<string, number>();
  decoder.forEach((sym, id) => encoder.set(sym, id));
  if (encoder.size !== decoder.length) throw new FormatError(file, 'merges produce duplicate vocabulary entries');
  return { encoder, decoder, bpeRanks };
}

/** Read the gzipped OpenAI merges file (`bpe_simple_vocab_16e6.txt.gz`). */
export async function vocabFromBpeGz(path: string): Promise<ClipVocab> {
  let text: string;
  try {
    text = new TextDecoder('utf-8').decode(gunzipSync(await readFile(path)));
  } catch (err) {
    throw new FormatError(path, `cannot read the gzipped BPE merges file: ${(err as Error).message}`, undefined, { cause: err });
  }
  return vocabFromMergesText(text, path);
}

/** transformers' slow CLIPTokenizer files: `vocab.json` (symbol → id) and `merges.txt` (lines 1..48894 used). */
export function vocabFromJsonAndMerges(
  vocabJson: unknown,
  mergesText: string,
  files: { vocab: string; merges: string } = { vocab: 'vocab.json', merges: 'merges.txt' },
): ClipVocab {
  if (typeof vocabJson !== 'object' || vocabJson === null || Array.isArray(vocabJson)) {
    throw new FormatError(files.vocab, 'expected a JSON object mapping tokens to ids');
  }
  const encoder = new Map<string, number>();
  const decoder: string[] = [];
  for (const [sym, id] of Object.entries(vocabJson as Record<string, unknown>)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new FormatError(files.vocab, `token ${JSON.stringify(sym)} has a non-integer id`, sym);
    }
    encoder.set(sym, id);
    decoder[id] = sym;
  }
  for (let i = 0; i < decoder.length; i++) {
    if (decoder[i] === undefined) throw new FormatError(files.vocab, `ids are not contiguous: id ${i} is missing`);
  }
  // transformers: merges_handle.read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]
  const merges = mergesText.trim().split('\n').slice(1, CLIP_NUM_MERGES + 1);
  return { encoder, decoder, bpeRanks: ranksFrom(merges, files.merges) };
}

/** Absolute path of a file shipped under `assets/` (resolved from the package root, for src/ and dist/src/ alike). */
export function assetPath(...parts: string[]): string {
  return packagePath('assets', ...parts);
}

let bundled: Promise<ClipVocab> | undefined;

/** OpenAI's vocabulary from `assets/clip/bpe_simple_vocab_16e6.txt.gz`, parsed once per process. */
export function bundledVocab(): Promise<ClipVocab> {
  bundled ??= vocabFromBpeGz(assetPath('clip', 'bpe_simple_vocab_16e6.txt.gz')).catch((err: unknown) => {
    bundled = undefined;
    throw err;
  });
  return bundled;
}

/** What a transformers/diffusers `tokenizer/` folder says, resolved to ids. */
export interface TokenizerFolder {
  vocab: ClipVocab;
  bosTokenId: number;
  eosTokenId: number;
  /** The folder's pad token: "<|endoftext|>" (SD1) → 49407, "!" (SD2) → 0. */
  padTokenId: number;
  /** `model_max_length`, unless missing or transformers' "no limit" sentinel. */
  maxLength: number | undefined;
  /** Added tokens beyond the vocabulary (saved textual-inversion placeholders), in id order. */
  addedTokens: Array<[string, number]>;
}

/**
 * Read vocab.json + merges.txt, and the optional tokenizer_config.json, special_tokens_map.json (which wins over
 * tokenizer_config.json, as in transformers) and added_tokens.json.
 */
export async function readTokenizerFolder(dir: string): Promise<TokenizerFolder> {
  const vocabFile = join(dir, 'vocab.json');
  const mergesFile = join(dir, 'merges.txt');
  const [vocabText, mergesText, config, specialMap, addedJson] = await Promise.all([
    readText(vocabFile, true), readText(mergesFile, true),
    readJsonObject(join(dir, 'tokenizer_config.json')), readJsonObject(join(dir, 'special_tokens_map.json')),
    readJsonObject(join(dir, 'added_tokens.json')),
  ]);
  let vocabJson: unknown;
  try {
    vocabJson = JSON.parse(vocabText!);
  } catch (err) {
    throw new FormatError(vocabFile, `invalid JSON: ${(err as Error).message}`, undefined, { cause: err });
  }
  const vocab = vocabFromJsonAndMerges(vocabJson, mergesText!, { vocab: vocabFile, merges: mergesFile });

  const added = new Map<string, number>();
  const decoderEntries = config?.added_tokens_decoder;
  if (decoderEntries && typeof decoderEntries === 'object') {
    for (const [id, entry] of Object.entries(decoderEntries as Record<string, unknown>)) {
      const content = tokenContent(entry);
      if (content !== undefined && Number(id) >= vocab.decoder.length) added.set(content, Number(id));
    }
  }
  for (const [content, id] of Object.entries(addedJson ?? {})) {
    if (typeof id === 'number' && Number.isInteger(id) && id >= vocab.decoder.length) added.set(content, id);
  }

  const special = (key: string) => tokenContent(specialMap?.[key]) ?? tokenContent(config?.[key]);
  const lookup = (key: string, fallback: string): number => {
    const token = special(key) ?? fallback;
    const id = vocab.encoder.get(token) ?? added.get(token);
    if (id === undefined) throw new FormatError(dir, `${key} ${JSON.stringify(token)} is not in vocab.json`, key);
    return id;
  };
  const configured = config?.model_max_length;
  return {
    vocab,
    bosTokenId: lookup('bos_token', START_OF_TEXT),
    eosTokenId: lookup('eos_token', END_OF_TEXT),
    padTokenId: lookup('pad_token', END_OF_TEXT),
    // transformers writes a huge sentinel (1e30) when there is no limit; CLIP's is 77.
    maxLength: typeof configured === 'number' && Number.isInteger(configured) && configured <= 4096 ? configured : undefined,
    addedTokens: [...added].sort((a, b) => a[1] - b[1]),
  };
}

/** A special-token entry: a plain string or an AddedToken dict `{content: ...}`. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

async function readText(file: string, required: boolean): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FormatError(file, `cannot read the tokenizer file: ${(err as Error).message}`, undefined, { cause: err });
  }
}

async function readJsonObject(file: string): Promise<Record<string, unknown> | undefined> {
  const text = await readText(file, false);
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FormatError(file, `invalid JSON: ${(err as Error).message}`, undefined, { cause: err });
  }
  if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  throw new FormatError(file, 'expected a JSON object');
}
