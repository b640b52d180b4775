// The CLIP BPE tokenizer of Stable Diffusion's text encoders, ported from OpenAI's SimpleTokenizer:
// https://github.com/openai/CLIP/blob/d05afc436d78f1c48dc0dbf8e5980a9d471f35f6/clip/simple_tokenizer.py
// plus diffusers-style textual-inversion *added tokens* (transformers' `add_tokens` + `_maybe_convert_prompt`).
// See docs/tokenizer.md for what is matched exactly and where the SD tool chains differ.

import { SdtrainError } from '../errors.js';
import { bundledHtmlUnescaper, type HtmlUnescaper } from './html_unescape.js';
import { normalizeClipText } from './normalize.js';
import {
  BYTE_DECODER, BYTE_ENCODER, END_OF_TEXT, START_OF_TEXT, bundledVocab, readTokenizerFolder, type ClipVocab,
} from './vocab.js';

/** A tokenizer misuse (e.g. registering a placeholder that is already a token). */
export class TokenizerError extends SdtrainError {}

export interface ClipTokenizerOptions {
  /** SD1 (openai/clip-vit-large-patch14) pads with EOS = 49407; SD2 (open_clip, diffusers pad_token "!") with id 0. */
  padWith: 'eos' | 'zero';
  /** Context length including BOS and EOS (77). */
  maxLength?: number;
}

export interface ClipTokenizerLoadOptions extends Partial<ClipTokenizerOptions> {
  /** Apply the ftfy subset before html-unescaping (default true, as OpenAI's tokenizer does with ftfy installed). */
  ftfy?: boolean;
}

export interface ClipTokenizerInit {
  vocab: ClipVocab;
  html: HtmlUnescaper;
  padTokenId: number;
  bosTokenId?: number;
  eosTokenId?: number;
  maxLength?: number;
  ftfy?: boolean;
  /** Added tokens already known (e.g. from a saved tokenizer folder), with their ids. */
  addedTokens?: ReadonlyArray<readonly [string, number]>;
}

export interface TokenizedPrompt {
  /** `[BOS] + ids[:maxLength-2] + [EOS]`, padded to maxLength. */
  inputIds: number[];
  /** 1 for BOS, the kept ids and EOS; 0 for padding (transformers' attention_mask; SD pipelines ignore it). */
  attentionMask: number[];
  /** How many of the maxLength-2 (75) content slots the prompt needs; more than that means it was truncated. */
  tokenCount: number;
  truncated: boolean;
}

// SimpleTokenizer.pat, compiled with regex.IGNORECASE. JS `i` would also case-fold property classes (U+0345 would
// become a letter), so the literals get explicit case classes instead (`regex` folds ſ to s) and U+0345, which
// `regex` matches with neither \p{L} nor the negated class, is excluded from the punctuation run: it is skipped.
const ci = (s: string) => s.replace(/[a-z]/g, (c) => `[${c}${c.toUpperCase()}${c === 's' ? '\u017f' : ''}]`);
const PIECE_RE = new RegExp(
  [
    ci('<\\|startoftext\\|>'), ci('<\\|endoftext\\|>'), ...["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map(ci),
    '\\p{L}+', '\\p{N}', '[^\\p{White_Space}\\p{L}\\p{N}\\u0345]+',
  ].join('|'),
  'gu',
);

const UTF8 = new TextEncoder();
const UTF8_DECODE = new TextDecoder('utf-8', { ignoreBOM: true }); // replacement on bad bytes, like errors="replace"
const CACHE_LIMIT = 100_000;

interface Piece { readonly symbols: readonly string[]; readonly ids: readonly number[] }

export class CLIPTokenizer {
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  /** Size of the BPE vocabulary (49408); added tokens get ids from here on. */
  readonly vocabSize: number;
  readonly maxLength: number;
  private readonly vocab: ClipVocab;
  private readonly html: HtmlUnescaper;
  private readonly ftfy: boolean;
  private readonly cache = new Map<string, Piece>();
  private readonly addedEncoder = new Map<string, number>();
  private readonly addedDecoder = new Map<number, string>();
  private addedLongestFirst: string[] = [];
  private nextAddedId: number;

  constructor(init: ClipTokenizerInit) {
    this.vocab = init.vocab;
    this.html = init.html;
    this.ftfy = init.ftfy ?? true;
    this.vocabSize = init.vocab.decoder.length;
    this.bosTokenId = init.bosTokenId ?? this.requireId(START_OF_TEXT);
    this.eosTokenId = init.eosTokenId ?? this.requireId(END_OF_TEXT);
    this.padTokenId = init.padTokenId;
    this.maxLength = init.maxLength ?? 77;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) {
      throw new TokenizerError(`maxLength must be an integer >= 2, got ${this.maxLength}`);
    }
    this.nextAddedId = this.vocabSize;
    for (const [token, id] of init.addedTokens ?? []) this.registerAdded(token, id);
  }

  /** OpenAI's vocabulary shipped in assets/clip. Pads with EOS (SD1) unless `padWith: 'zero'` (SD2). */
  static async fromBundled(opts: ClipTokenizerLoadOptions = {}): Promise<CLIPTokenizer> {
    const [vocab, html] = await Promise.all([bundledVocab(), bundledHtmlUnescaper()]);
    const eos = vocab.encoder.get(END_OF_TEXT)!;
    const padTokenId = opts.padWith === 'zero' ? 0 : eos;
    return new CLIPTokenizer({ vocab, html, padTokenId, maxLength: opts.maxLength, ftfy: opts.ftfy });
  }

  /**
   * A diffusers/transformers `tokenizer/` folder: vocab.json + merges.txt, with special tokens, model_max_length and
   * added tokens from tokenizer_config.json, special_tokens_map.json (which wins, as in transformers) and
   * added_tokens.json. The pad token decides the padding ("<|endoftext|>" → SD1, "!" = id 0 → SD2) unless
   * `opts.padWith` overrides it.
   */
  static async fromDiffusersFolder(dir: string, opts: ClipTokenizerLoadOptions = {}): Promise<CLIPTokenizer> {
    const [folder, html] = await Promise.all([readTokenizerFolder(dir), bundledHtmlUnescaper()]);
    const { vocab, bosTokenId, eosTokenId, addedTokens } = folder;
    const padTokenId = opts.padWith === 'zero' ? 0 : opts.padWith === 'eos' ? eosTokenId : folder.padTokenId;
    const maxLength = opts.maxLength ?? folder.maxLength ?? 77;
    return new CLIPTokenizer({ vocab, html, bosTokenId, eosTokenId, padTokenId, maxLength, ftfy: opts.ftfy, addedTokens });
  }

  /** CLIP text normalisation (§1.2 of docs): ftfy subset, html.unescape twice, strip, whitespace collapse, lower. */
  normalize(text: string): string {
    return normalizeClipText(text, this.html, { ftfy: this.ftfy });
  }

  /** BPE ids of a prompt, without BOS/EOS and without truncation. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const part of this.splitAdded(text)) {
      if (typeof part === 'number') ids.push(part);
      else for (const piece of this.pieces(part)) ids.push(...piece.ids);
    }
    return ids;
  }

  /** The BPE symbol strings (`"photo</w>"`, `"water"`, `"mark</w>"`; added tokens verbatim). */
  bpeTokens(text: string): string[] {
    const out: string[] = [];
    for (const part of this.splitAdded(text)) {
      if (typeof part === 'number') out.push(this.addedDecoder.get(part)!);
      else for (const piece of this.pieces(part)) out.push(...piece.symbols);
    }
    return out;
  }

  /** OpenAI decode: symbols → bytes → UTF-8 (invalid bytes become U+FFFD), `</w>` → space. Added tokens verbatim. */
  decode(ids: readonly number[]): string {
    let out = '';
    let bytes: number[] = [];
    const flush = () => {
      if (bytes.length === 0) return;
      out += UTF8_DECODE.decode(Uint8Array.from(bytes)).replaceAll('</w>', ' ');
      bytes = [];
    };
    for (const id of ids) {
      const added = this.addedDecoder.get(id);
      if (added !== undefined) {
        flush();
        out += added + ' ';
        continue;
      }
      const symbol = this.vocab.decoder[id];
      if (symbol === undefined) throw new TokenizerError(`cannot decode id ${id}: not in the vocabulary`);
      for (const ch of symbol) {
        const b = BYTE_DECODER.get(ch);
        if (b === undefined) {
          throw new TokenizerError(`cannot decode id ${id}: symbol ${JSON.stringify(symbol)} is not byte-level`);
        }
        bytes.push(b);
      }
    }
    flush();
    return out;
  }

  /** `[BOS] + ids[:maxLength-2] + [EOS]`, padded to maxLength with the pad id (SD1: EOS, SD2: 0). */
  frame(ids: readonly number[]): number[] {
    const out = [this.bosTokenId, ...ids.slice(0, this.maxLength - 2), this.eosTokenId];
    while (out.length < this.maxLength) out.push(this.padTokenId);
    return out;
  }

  /** `frame(encode(text))` with the slot count: tokenCount > maxLength-2 (75) means the prompt was truncated. */
  tokenize(text: string): TokenizedPrompt {
    const ids = this.encode(text);
    const slots = this.maxLength - 2;
    const kept = Math.min(ids.length, slots) + 2;
    return {
      inputIds: this.frame(ids),
      attentionMask: Array.from({ length: this.maxLength }, (_, i) => (i < kept ? 1 : 0)),
      tokenCount: ids.length,
      truncated: ids.length > slots,
    };
  }

  /** The id if `word` encodes to exactly one token (e.g. a textual-inversion initializer word), else undefined. */
  singleTokenId(word: string): number | undefined {
    const ids = this.encode(word);
    return ids.length === 1 ? ids[0] : undefined;
  }

  /**
   * Register diffusers-style added tokens (textual-inversion placeholders). They are matched verbatim and
   * case-sensitively on the raw prompt before normalisation, even inside words (longest match first, leftmost first),
   * and get ids vocabSize, vocabSize+1, … in registration order. Throws if a token is already a vocabulary symbol
   * (`tok` or the whole word `tok</w>`), already added, repeated, or empty; nothing is registered then.
   */
  addTokens(tokens: readonly string[]): number[] {
    const seen = new Set<string>();
    for (const token of tokens) {
      if (token.length === 0) throw new TokenizerError('cannot add an empty token');
      if (seen.has(token)) throw new TokenizerError(`token ${JSON.stringify(token)} is listed twice`);
      const existing = this.addedEncoder.get(token);
      if (existing !== undefined) {
        throw new TokenizerError(
          `token ${JSON.stringify(token)} is already an added token (id ${existing}); choose another placeholder`,
        );
      }
      const inVocab = this.vocab.encoder.get(token) ?? this.vocab.encoder.get(token + '</w>');
      if (inVocab !== undefined) {
        throw new TokenizerError(
          `token ${JSON.stringify(token)} is already in the CLIP vocabulary (id ${inVocab}); ` +
            `choose a placeholder that is not a word, e.g. "<${token}>"`,
        );
      }
      seen.add(token);
    }
    return tokens.map((token) => this.registerAdded(token, this.nextAddedId));
  }

  /** Added tokens in id order. */
  get addedTokens(): Array<[string, number]> {
    return [...this.addedEncoder].sort((a, b) => a[1] - b[1]);
  }

  /**
   * diffusers `_maybe_convert_prompt`: every added token `<t>` present in the prompt that has multi-vector companions
   * `<t>_1`, `<t>_2`, … is rewritten (all occurrences) to `<t> <t>_1 <t>_2 …`. Tokens are processed in order of first
   * appearance (diffusers iterates a Python set).
   */
  maybeConvertPrompt(prompt: string): string {
    const present: string[] = [];
    for (const part of this.splitAdded(prompt)) {
      if (typeof part !== 'number') continue;
      const token = this.addedDecoder.get(part)!;
      if (!present.includes(token)) present.push(token);
    }
    let out = prompt;
    for (const token of present) {
      let replacement = token;
      for (let i = 1; this.addedEncoder.has(`${token}_${i}`); i++) replacement += ` ${token}_${i}`;
      out = out.replaceAll(token, () => replacement); // a function: no `$&` expansion in the replacement
    }
    return out;
  }

  tokenToId(token: string): number | undefined {
    return this.vocab.encoder.get(token) ?? this.addedEncoder.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.vocab.decoder[id] ?? this.addedDecoder.get(id);
  }

  // --- internals ---------------------------------------------------------------------------------------------------

  private requireId(token: string): number {
    const id = this.vocab.encoder.get(token);
    if (id === undefined) throw new TokenizerError(`the vocabulary has no ${token} token`);
    return id;
  }

  private registerAdded(token: string, id: number): number {
    this.addedEncoder.set(token, id);
    this.addedDecoder.set(id, token);
    this.nextAddedId = Math.max(this.nextAddedId, id + 1);
    this.addedLongestFirst = [...this.addedEncoder.keys()].sort((a, b) => b.length - a.length);
    return id;
  }

  /** Raw prompt → text chunks and added-token ids (transformers' trie split: leftmost, then longest match). */
  private splitAdded(text: string): Array<string | number> {
    if (this.addedEncoder.size === 0) return [text];
    const out: Array<string | number> = [];
    let last = 0;
    let i = 0;
    while (i < text.length) {
      const match = this.addedLongestFirst.find((token) => text.startsWith(token, i));
      if (match === undefined) {
        i++;
        continue;
      }
      if (i > last) out.push(text.slice(last, i));
      out.push(this.addedEncoder.get(match)!);
      i += match.length;
      last = i;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  /** Normalise a chunk, pre-tokenise it and BPE every piece (cached per piece). */
  private pieces(text: string): Piece[] {
    const out: Piece[] = [];
    for (const piece of this.normalize(text).match(PIECE_RE) ?? []) {
      let entry = this.cache.get(piece);
      if (entry === undefined) {
        entry = this.encodePiece(piece);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(piece, entry);
      }
      out.push(entry);
    }
    return out;
  }

  private encodePiece(piece: string): Piece {
    // SimpleTokenizer's cache is pre-seeded with the two special strings, so only their exact spelling is special.
    if (piece === START_OF_TEXT || piece === END_OF_TEXT) return { symbols: [piece], ids: [this.requireId(piece)] };
    let byteChars = '';
    for (const b of UTF8.encode(piece)) byteChars += BYTE_ENCODER[b];
    const symbols = this.bpe(byteChars);
    // transformers maps an unknown symbol to unk_token (<|endoftext|>); with a consistent vocab it never happens.
    return { symbols, ids: symbols.map((s) => this.vocab.encoder.get(s) ?? this.eosTokenId) };
  }

  /** SimpleTokenizer.bpe: `</w>` on the last symbol, then merge the lowest-ranked adjacent pair until none is left. */
  private bpe(token: string): string[] {
    let word = token.split(''); // byte chars are single BMP code units
    word[word.length - 1] += '</w>';
    const ranks = this.vocab.bpeRanks;
    while (word.length > 1) {
      let best = Infinity;
      let first = '';
      let second = '';
      for (let i = 0; i < word.length - 1; i++) {
        const rank = ranks.get(`${word[i]} ${word[i + 1]}`);
        if (rank !== undefined && rank < best) {
          best = rank;
          first = word[i]!;
          second = word[i + 1]!;
        }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i++;
        } else {
          merged.push(word[i]!);
        }
      }
      word = merged;
    }
    return word;
  }
}

/** Textual-inversion companions for a k-vector embedding: `<t>`, `<t>_1`, …, `<t>_{k-1}` (diffusers naming). */
export function multiVectorTokenNames(token: string, vectors: number): string[] {
  return Array.from({ length: vectors }, (_, i) => (i === 0 ? token : `${token}_${i}`));
}
