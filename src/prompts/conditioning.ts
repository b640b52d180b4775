// A1111-style prompt conditioning: emphasis, 77-token chunks, textual-inversion rows and weighting
// (`TextConditionalModel.forward` / `process_tokens`, modules/sd_hijack_clip.py @ 5ad03e65, and sd_emphasis.py
// @ f8391b8a). The result is the UNet's cross-attention context, 77·k tokens long.
import * as tf from '@tensorflow/tfjs';
import { SdtrainError } from '../errors.js';
import type { EmbeddingRegistry } from '../embeddings/registry.js';
import type { CLIPTextModel } from '../models/clip_text.js';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import { emptyChunk, tokenizeLine, type PromptChunk } from './chunking.js';
import { parseEmphasis } from './emphasis.js';
import { promptSchedules, type ScheduleOptions } from './schedule.js';

/**
 * A1111's "Emphasis mode": 'original' weights then restores the mean, 'no_norm' only weights, 'ignore' parses the
 * syntax (brackets vanish, BREAK works) but does not weight, 'none' does not parse at all (brackets are text).
 */
export type EmphasisMode = 'original' | 'no_norm' | 'ignore' | 'none';

export interface EncodePromptsOptions {
  /** A1111 "Clip skip" (1 = last layer). Ignored with `sd2`, as A1111 does: SD2 always uses the penultimate layer. */
  clipSkip?: number;
  emphasis?: EmphasisMode;
  /** SD2 (OpenCLIP) text encoder: ids after each chunk's first EOS become 0, and clip skip does not apply. */
  sd2?: boolean;
  /** A1111 `comma_padding_backtrack` (default 20). */
  commaBacktrack?: number;
}

/** The chunks of each prompt (emphasis parsed unless the mode is 'none'), with A1111's token counts. */
export function chunkPrompts(
  tokenizer: CLIPTokenizer,
  prompts: readonly string[],
  embeddings: EmbeddingRegistry | undefined,
  opts: EncodePromptsOptions = {},
): Array<{ chunks: PromptChunk[]; tokenCount: number }> {
  return prompts.map((p) =>
    tokenizeLine(opts.emphasis === 'none' ? [[p, 1.0]] : parseEmphasis(p), tokenizer, embeddings, {
      commaBacktrack: opts.commaBacktrack,
      sd2: opts.sd2,
    }),
  );
}

/**
 * Encodes prompts to cross-attention context [B, 77·k, C], k = the largest chunk count: chunk i of every prompt (an
 * empty chunk for prompts with fewer) goes through the text encoder as one batch, with embedding rows written over
 * the placeholder token embeddings, then weighted by the emphasis mode; the chunks are concatenated on the token
 * axis. With 'original' emphasis the mean is restored over the whole [B, 77, C] batch of one chunk index, so the
 * prompts encoded together influence each other's scale: pass one prompt's schedule variants together (as A1111
 * does), not unrelated prompts. Synchronous; intermediate tensors are freed, the caller owns the result.
 */
export function encodePrompts(
  textEncoder: CLIPTextModel,
  tokenizer: CLIPTokenizer,
  prompts: readonly string[],
  embeddings: EmbeddingRegistry | undefined,
  opts: EncodePromptsOptions = {},
): tf.Tensor3D {
  if (prompts.length === 0) throw new SdtrainError('encodePrompts: no prompts given');
  const perPrompt = chunkPrompts(tokenizer, prompts, embeddings, opts).map((r) => r.chunks);
  const count = Math.max(...perPrompt.map((c) => c.length));
  const empty = emptyChunk(tokenizer, opts.sd2);
  const clipSkip = opts.sd2 ? 1 : opts.clipSkip ?? 1;
  const width = textEncoder.config.hidden_size;
  for (const chunks of perPrompt) {
    for (const fix of chunks.flatMap((c) => c.fixes)) {
      if (fix.embedding.shape[1] !== width) {
        throw new SdtrainError(`embedding '${fix.embedding.name}' has ${fix.embedding.shape[1]}-wide vectors; this text encoder takes ${width}`);
      }
    }
  }
  return tf.tidy(() => {
    const zs: tf.Tensor3D[] = [];
    for (let i = 0; i < count; i++) {
      const batch = perPrompt.map((chunks) => chunks[i] ?? empty);
      const z = encodeChunks(textEncoder, batch, clipSkip);
      zs.push(applyEmphasis(z, batch.map((c) => c.multipliers), opts.emphasis ?? 'original'));
    }
    return zs.length === 1 ? zs[0]! : (tf.concat(zs, 1) as tf.Tensor3D);
  });
}

export interface ScheduledConditioning {
  /** The context is used while the 1-based step is <= this. */
  endAtStep: number;
  /** [1, 77·k, C]; every variant of one prompt has the same k. */
  cond: tf.Tensor3D;
}

/**
 * A1111's `get_learned_conditioning` for one prompt (one `AND` part): its prompt-editing schedule over `steps`, all
 * variants encoded together as one batch (so 'original' emphasis restores the mean over all of them, as A1111 does).
 * The caller owns the returned tensors.
 */
export function encodeScheduledPrompt(
  textEncoder: CLIPTextModel,
  tokenizer: CLIPTokenizer,
  prompt: string,
  steps: number,
  embeddings: EmbeddingRegistry | undefined,
  opts: EncodePromptsOptions & ScheduleOptions = {},
): ScheduledConditioning[] {
  const schedule = promptSchedules(prompt, steps, opts);
  const conds = tf.tidy(() => {
    const z = encodePrompts(textEncoder, tokenizer, schedule.map(([, text]) => text), embeddings, opts);
    return tf.split(z, schedule.length, 0) as tf.Tensor3D[];
  });
  return schedule.map(([endAtStep], i) => ({ endAtStep, cond: conds[i]! }));
}

/** One chunk index for the whole batch: token embeddings with the fixes applied → text encoder [B, 77, C]. */
function encodeChunks(textEncoder: CLIPTextModel, batch: readonly PromptChunk[], clipSkip: number): tf.Tensor3D {
  const b = batch.length;
  const t = batch[0]!.tokens.length;
  const ids = tf.tensor2d(batch.flatMap((c) => c.tokens), [b, t], 'int32');
  if (batch.every((c) => c.fixes.length === 0)) return textEncoder.forward(ids, { clipSkip }).lastHiddenState;
  const c = textEncoder.config.hidden_size;
  // rows offset+1 … offset+n (after BOS) take the embedding's vectors: tokens·keep + rows, exact for 0/1 masks
  const keep = new Float32Array(b * t).fill(1);
  const rows = new Float32Array(b * t * c);
  batch.forEach((chunk, bi) => {
    for (const { offset, embedding } of chunk.fixes) {
      const n = Math.min(t - offset - 1, embedding.shape[0]); // EmbeddingsWithFixes clips at the chunk end
      for (let r = 0; r < n; r++) {
        const row = bi * t + offset + 1 + r;
        keep[row] = 0;
        rows.set(embedding.vectors.subarray(r * c, (r + 1) * c), row * c);
      }
    }
  });
  const tokens = textEncoder.embed(ids).mul(tf.tensor3d(keep, [b, t, 1])).add(tf.tensor3d(rows, [b, t, c])) as tf.Tensor3D;
  return textEncoder.forward(ids, { clipSkip, inputsEmbeds: tokens }).lastHiddenState;
}

/**
 * A1111's emphasis on one chunk index, z [B, T, C] with multipliers [B][T]. 'original': `m = mean(z)`,
 * `z ← z·mult[t]`, `z ← z·(m / mean(z))` (means over the whole tensor); 'no_norm': only the product; 'ignore' and
 * 'none': z unchanged (returned as is).
 */
export function applyEmphasis(z: tf.Tensor3D, multipliers: ReadonlyArray<readonly number[]>, mode: EmphasisMode): tf.Tensor3D {
  if (mode === 'ignore' || mode === 'none') return z;
  return tf.tidy(() => {
    const [b, t] = z.shape;
    const mult = tf.tensor3d(multipliers.flatMap((m) => [...m]), [b, t, 1], 'float32');
    const weighted = z.mul(mult) as tf.Tensor3D;
    if (mode === 'no_norm') return weighted;
    return weighted.mul(z.mean().div(weighted.mean())) as tf.Tensor3D;
  });
}

/**
 * A1111's "Pad prompt/negative prompt" (`pad_cond_uncond`, infotext "Pad conds: True"): the shorter of the two
 * contexts gets whole copies of `empty` (the encoded empty prompt, [1, 77, C]) appended until both have the same
 * length, so they fit one UNet batch. (A1111's default instead runs the two in separate UNet calls when their
 * lengths differ.) Returns new tensors; the inputs are not disposed.
 */
export function padToSameLength(cond: tf.Tensor3D, uncond: tf.Tensor3D, empty: tf.Tensor3D): [tf.Tensor3D, tf.Tensor3D] {
  return tf.tidy(() => {
    const pad = (x: tf.Tensor3D, repeats: number): tf.Tensor3D =>
      repeats <= 0 ? x.clone() : (tf.concat([x, tf.tile(empty, [x.shape[0], repeats, 1])], 1) as tf.Tensor3D);
    const repeats = Math.trunc((cond.shape[1] - uncond.shape[1]) / empty.shape[1]);
    return [pad(cond, -repeats), pad(uncond, repeats)];
  });
}
