// A1111's long prompts: emphasis pieces → 77-token chunks with per-token multipliers and textual-inversion slots.
// A port of `TextConditionalModel.tokenize_line` (modules/sd_hijack_clip.py @ 5ad03e65), checked against
// prompts/a1111_chunks.json.
import { SdtrainError } from '../errors.js';
import type { Embedding } from '../embeddings/load.js';
import type { EmbeddingRegistry } from '../embeddings/registry.js';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { isBreak, type WeightedText } from './emphasis.js';

/** Body tokens per chunk; with BOS and EOS a chunk is 77 ids. */
export const CHUNK_LENGTH = 75;

export interface ChunkFix {
  /** Index of the first placeholder in the 75-token body: the embedding fills rows offset+1 … offset+n of the chunk. */
  offset: number;
  embedding: Embedding;
}

export interface PromptChunk {
  /** 77 ids: BOS, 75 body ids (padded with EOS), EOS; SD2: everything after the first EOS is 0. */
  tokens: number[];
  /** 77 weights (1 at BOS, EOS and padding). */
  multipliers: number[];
  fixes: ChunkFix[];
}

export interface TokenizeLineOptions {
  /**
   * A1111 `comma_padding_backtrack` (default 20): when a chunk fills up and its last comma is at most this many
   * tokens back, the tokens after the comma move to the next chunk. 0 turns it off.
   */
  commaBacktrack?: number;
  /** SD2 (OpenCLIP) padding: zero every id after the first EOS of each chunk. */
  sd2?: boolean;
}

type Tokenizer = Pick<CLIPTokenizer, 'encode' | 'tokenToId' | 'bosTokenId' | 'eosTokenId'>;

/**
 * Splits emphasis-parsed text into chunks exactly as A1111: each piece is tokenised on its own (no BOS/EOS); a chunk
 * closes at 75 tokens (or earlier at a nearby comma, see `commaBacktrack`) and at every `['BREAK', -1]` piece, even
 * an empty one; an embedding keyword found by `embeddings` reserves `n` placeholder ids 0 that never straddle two
 * chunks. `tokenCount` is what A1111 shows: 75 per non-final chunk plus the length of the final one.
 *
 * One deliberate difference: when the comma backtrack moves tokens that include an embedding's placeholders to the
 * next chunk, the fix moves with them (A1111 leaves it behind, pointing into the padding of the closed chunk).
 */
export function tokenizeLine(
  parsed: readonly WeightedText[],
  tokenizer: Tokenizer,
  embeddings: EmbeddingRegistry | undefined,
  opts: TokenizeLineOptions = {},
): { chunks: PromptChunk[]; tokenCount: number } {
  const backtrack = opts.commaBacktrack ?? 20;
  const comma = tokenizer.tokenToId(',</w>');
  const { bosTokenId: bos, eosTokenId: eos } = tokenizer;
  const chunks: PromptChunk[] = [];
  let tokens: number[] = [];
  let multipliers: number[] = [];
  let fixes: ChunkFix[] = [];
  let tokenCount = 0;
  let lastComma = -1;

  const nextChunk = (isLast = false) => {
    tokenCount += isLast ? tokens.length : CHUNK_LENGTH;
    while (tokens.length < CHUNK_LENGTH) {
      tokens.push(eos);
      multipliers.push(1.0);
    }
    tokens = [bos, ...tokens, eos];
    if (opts.sd2) tokens = sd2Tokens(tokens, eos);
    chunks.push({ tokens, multipliers: [1.0, ...multipliers, 1.0], fixes });
    tokens = [];
    multipliers = [];
    fixes = [];
    lastComma = -1;
  };

  for (const piece of parsed) {
    if (isBreak(piece)) {
      nextChunk();
      continue;
    }
    const [text, weight] = piece;
    const ids = tokenizer.encode(text);
    let position = 0;
    while (position < ids.length) {
      const token = ids[position]!;
      if (token === comma) {
        lastComma = tokens.length;
      } else if (backtrack !== 0 && tokens.length === CHUNK_LENGTH && lastComma !== -1 && tokens.length - lastComma <= backtrack) {
        const at = lastComma + 1;
        const relocTokens = tokens.splice(at);
        const relocMults = multipliers.splice(at);
        const relocFixes = fixes.filter((f) => f.offset >= at).map((f) => ({ ...f, offset: f.offset - at }));
        fixes = fixes.filter((f) => f.offset < at);
        nextChunk();
        tokens = relocTokens;
        multipliers = relocMults;
        fixes = relocFixes;
      }
      if (tokens.length === CHUNK_LENGTH) nextChunk();

      const found = embeddings?.findAt(ids, position);
      if (found === undefined) {
        tokens.push(token);
        multipliers.push(weight);
        position++;
        continue;
      }
      const n = found.embedding.shape[0];
      if (n > CHUNK_LENGTH) {
        throw new SdtrainError(`embedding '${found.embedding.name}' has ${n} vectors; a prompt chunk holds at most ${CHUNK_LENGTH}`);
      }
      if (tokens.length + n > CHUNK_LENGTH) nextChunk();
      fixes.push({ offset: tokens.length, embedding: found.embedding });
      for (let i = 0; i < n; i++) {
        tokens.push(0);
        multipliers.push(weight);
      }
      position += found.length;
    }
  }
  if (tokens.length > 0 || chunks.length === 0) nextChunk(true);
  return { chunks, tokenCount };
}

/** The token budget A1111's UI shows next to a count ("12/75", "80/150"): whole chunks of 75, at least one. */
export function targetPromptTokenCount(tokenCount: number): number {
  return Math.ceil(Math.max(tokenCount, 1) / CHUNK_LENGTH) * CHUNK_LENGTH;
}

/** A1111's SD2 rule (`process_tokens`): every id after the first EOS becomes 0. */
export function sd2Tokens(tokens: readonly number[], eos: number): number[] {
  const first = tokens.indexOf(eos);
  return first < 0 ? [...tokens] : tokens.map((t, i) => (i > first ? 0 : t));
}

/** A1111's `empty_chunk`: BOS then EOS padding, multipliers 1 (SD2: zeros after the first EOS). */
export function emptyChunk(tokenizer: Pick<CLIPTokenizer, 'bosTokenId' | 'eosTokenId'>, sd2 = false): PromptChunk {
  const tokens = [tokenizer.bosTokenId, ...new Array<number>(CHUNK_LENGTH + 1).fill(tokenizer.eosTokenId)];
  return { tokens: sd2 ? sd2Tokens(tokens, tokenizer.eosTokenId) : tokens, multipliers: new Array<number>(CHUNK_LENGTH + 2).fill(1), fixes: [] };
}
