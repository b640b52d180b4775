// The prompt side of sampling: a request's prompt and negative prompt as A1111 encodes them (`AND` parts with
// weights, prompt-editing schedules, emphasis, 75-token chunks, textual-inversion rows), held for the whole request
// and looked up per step by the denoiser.
import * as tf from '@tensorflow/tfjs';
import type { EmbeddingRegistry } from '../embeddings/registry.js';
import { chunkPrompts, encodePrompts, encodeScheduledPrompt, type EmphasisMode, type ScheduledConditioning } from '../prompts/conditioning.js';
import { splitAnd } from '../prompts/multicond.js';
import type { SdModel } from './model.js';

/** One `AND` part of the prompt: its weight and its contexts over the steps. */
export interface ConditioningPart {
  weight: number;
  /** In step order; each context [1, 77·k, C]. */
  schedule: ScheduledConditioning[];
}

/** The contexts of one step. */
export interface StepContexts {
  /** The prompt's `AND` parts, each [1, 77·k, C]. */
  conds: Array<{ context: tf.Tensor3D; weight: number }>;
  /** The negative prompt [1, 77·k, C] (the empty prompt when there is none). */
  uncond: tf.Tensor3D;
}

/**
 * Encoded prompts for a whole request (they do not depend on the seed). Owns its tensors: `dispose()` frees them.
 * Steps are counted as A1111's CFGDenoiser does: the first model call is step 0, and a context is used while
 * `step <= endAtStep` (`reconstruct_cond_batch(c, self.step)`).
 */
export class Conditioning {
  constructor(
    readonly parts: readonly ConditioningPart[],
    readonly negative: readonly ScheduledConditioning[],
    /** The encoded empty prompt [1, 77, C]: the chunk appended to pad shorter contexts (undefined: no padding possible). */
    readonly empty: tf.Tensor3D | undefined,
  ) {
    if (parts.length === 0) throw new Error('Conditioning: no prompt parts');
  }

  /** Contexts given directly (token ids already encoded): one part of weight 1, no schedule. Takes ownership. */
  static fixed(cond: tf.Tensor3D, uncond: tf.Tensor3D, empty?: tf.Tensor3D): Conditioning {
    return new Conditioning([{ weight: 1, schedule: [{ endAtStep: Infinity, cond }] }], [{ endAtStep: Infinity, cond: uncond }], empty);
  }

  /** The contexts for model call `step` (0-based). */
  at(step: number): StepContexts {
    return {
      conds: this.parts.map((p) => ({ context: pick(p.schedule, step), weight: p.weight })),
      uncond: pick(this.negative, step),
    };
  }

  /** True when every step uses the same contexts (no prompt editing). */
  get constant(): boolean {
    return this.negative.length === 1 && this.parts.every((p) => p.schedule.length === 1);
  }

  dispose(): void {
    const all = [...this.parts.flatMap((p) => p.schedule.map((s) => s.cond)), ...this.negative.map((s) => s.cond), this.empty];
    tf.dispose([...new Set(all.filter((t): t is tf.Tensor3D => t !== undefined))]);
  }
}

function pick(schedule: readonly ScheduledConditioning[], step: number): tf.Tensor3D {
  return (schedule.find((s) => step <= s.endAtStep) ?? schedule[schedule.length - 1]!).cond;
}

export interface EncodeConditioningOptions {
  prompt: string;
  negativePrompt?: string;
  /** Sampling steps: prompt-editing `when` values are resolved against them. */
  steps: number;
  embeddings?: EmbeddingRegistry;
  clipSkip?: number;
  emphasis?: EmphasisMode;
}

/**
 * A1111's `get_multicond_learned_conditioning` (prompt) and `get_learned_conditioning` (negative prompt): the prompt
 * is split on `AND` (identical parts encoded once), each part and the negative prompt get their prompt-editing
 * schedule, every variant is encoded (emphasis, chunks, embeddings, clip skip; SD2 ignores clip skip as A1111 does).
 */
export function encodeConditioning(model: Pick<SdModel, 'textEncoder' | 'tokenizer' | 'family'>, opts: EncodeConditioningOptions): Conditioning {
  const encOpts = { clipSkip: opts.clipSkip, emphasis: opts.emphasis, sd2: model.family === 'sd2' };
  const encode = (text: string) => encodeScheduledPrompt(model.textEncoder, model.tokenizer, text, opts.steps, opts.embeddings, encOpts);
  const made: ScheduledConditioning[][] = [];
  try {
    const byText = new Map<string, ScheduledConditioning[]>();
    const parts = splitAnd(opts.prompt).map(([text, weight]): ConditioningPart => {
      let schedule = byText.get(text);
      if (!schedule) {
        schedule = encode(text);
        made.push(schedule);
        byText.set(text, schedule);
      }
      return { weight, schedule };
    });
    const negative = encode(opts.negativePrompt ?? '');
    made.push(negative);
    const empty = encodePrompts(model.textEncoder, model.tokenizer, [''], undefined, encOpts);
    return new Conditioning(parts, negative, empty);
  } catch (err) {
    tf.dispose(made.flat().map((s) => s.cond));
    throw err;
  }
}

/** The textual-inversion embeddings a prompt uses (A1111 lists them as "TI hashes"), by keyword, in first-use order. */
export function usedEmbeddings(
  model: Pick<SdModel, 'tokenizer' | 'family'>,
  prompts: readonly string[],
  embeddings: EmbeddingRegistry | undefined,
): string[] {
  if (!embeddings) return [];
  const names = new Set<string>();
  const texts = prompts.flatMap((p) => splitAnd(p).map(([t]) => t));
  for (const { chunks } of chunkPrompts(model.tokenizer, texts, embeddings, { sd2: model.family === 'sd2' })) {
    for (const fix of chunks.flatMap((c) => c.fixes)) names.add(fix.embedding.name);
  }
  return [...names];
}

/**
 * Pads contexts [1, T_i, C] to the longest by appending whole copies of `empty` [1, 77, C] (A1111's "pad prompt /
 * negative prompt" option; A1111's default instead runs differently long prompts in separate U-Net calls: we always
 * pad, so that conditional and unconditional halves share one batched call). Returns new tensors.
 */
export function padContexts(contexts: readonly tf.Tensor3D[], empty: tf.Tensor3D | undefined): tf.Tensor3D[] {
  const longest = Math.max(...contexts.map((c) => c.shape[1]));
  return contexts.map((c) => {
    const missing = longest - c.shape[1];
    if (missing === 0) return c.clone();
    if (!empty || missing % empty.shape[1] !== 0) {
      throw new Error(`cannot pad a context of ${c.shape[1]} tokens to ${longest}: no empty-prompt chunk of a fitting length`);
    }
    return tf.concat([c, tf.tile(empty, [1, missing / empty.shape[1], 1])], 1) as tf.Tensor3D;
  });
}
