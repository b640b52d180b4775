// Textual inversion (Gal et al. 2022): learn the embedding rows of a new token; every model weight stays frozen.
//
// Tokens: diffusers-style added tokens. num_vectors = k registers `<t>`, `<t>_1` … `<t>_{k-1}` (ids vocab, vocab+1, …)
// and each caption is rewritten `<t>` → `<t> <t>_1 … <t>_{k-1}` (tokenizer.maybeConvertPrompt) before tokenising.
// The trainable state is ONE tf.Variable [k, dim], logically appended to the frozen token table (style.md E9): diffusers
// trains the whole table and restores the other rows after each step; we never touch them. The lookup computes
// exactly concat([table, rows])[ids] as `where(id ≥ vocab, onehot(id − vocab) · rows, table[id])`, so the backward
// pass is a [k, dim] product instead of a scatter into the 49408-row table (fixtures README, grad_ti_dreambooth note).
//
// A dropped caption (conditioning dropout) is "" and contains no placeholder: that sample gives the rows no gradient
// (the embed config defaults cond_dropout to 0 for this reason).
//
// Exports (all carry the same [k, dim] matrix): `<name>.safetensors` {<token>: [k, dim]} with `sdtrain.*` metadata
// (diffusers learned_embeds layout), `<name>.pt` in A1111's format, and on request `kohya/<name>.safetensors`
// {emb_params}. `<name>` is the A1111 prompt keyword (A1111 and `sdtrain sample --embeddings` use the file stem), so
// the kohya file lives in a sub-folder to keep the same stem. Default name: the placeholder token without the
// characters file systems reject (`<my-cat>` → `my-cat`): in `sdtrain sample` prompts write the keyword `my-cat`.
import * as tf from '@tensorflow/tfjs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { EmbedConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { TorchTensorToWrite, type PyValue } from '../formats/pickle_values.js';
import { writeTorchFile } from '../formats/torch.js';
import type { CLIPTextModel } from '../models/clip_text.js';
import type { UNet2DConditionModel } from '../models/unet.js';
import { packageVersion } from '../paths.js';
import { multiVectorTokenNames, TokenizerError, type CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import type { StepContext, TrainBatch, TrainingMethod } from './types.js';

export type EmbedSection = EmbedConfig['embed'];

export interface TextualInversionModel {
  textEncoder: CLIPTextModel;
  unet: UNet2DConditionModel;
  /** Gets the placeholder token(s) added: use a tokenizer of its own for this run. */
  tokenizer: CLIPTokenizer;
}

export interface TextualInversionOptions {
  embed: EmbedSection;
  /** File stem of the exports = the A1111 keyword. Default: the placeholder token, file-name safe. */
  name?: string;
  /** A1111 "CLIP skip" used to condition the U-Net (default 1). */
  clipSkip?: number;
  /** A1111's `sd_checkpoint` (10-hex short hash of the base model) and `sd_checkpoint_name`. */
  sdCheckpoint?: string;
  sdCheckpointName?: string;
}

let instances = 0;

/** `<my-cat>` → `my-cat`: without the characters Windows and POSIX file names cannot hold. */
export function embeddingFileStem(token: string): string {
  const stem = token.replace(/[<>:"/\\|?*\u0000-\u001f]/g, '').replace(/^[. ]+|[. ]+$/g, '');
  return stem === '' ? 'embedding' : stem;
}

export class TextualInversion implements TrainingMethod {
  readonly name = 'textual_inversion';
  /** `<t>`, `<t>_1`, … */
  readonly tokens: string[];
  /** Their ids (consecutive, from the first free id). */
  readonly tokenIds: number[];
  /** The trainable rows [num_vectors, dim]. */
  readonly rows: tf.Variable;
  readonly fileStem: string;
  private readonly vocab: number;

  constructor(
    readonly model: TextualInversionModel,
    readonly opts: TextualInversionOptions,
  ) {
    const { placeholder_token: token, num_vectors: n } = opts.embed;
    const te = model.textEncoder;
    this.vocab = te.config.vocab_size;
    const init = initialRows(model, opts.embed); // before the placeholder exists, so init_word cannot name it
    this.tokens = multiVectorTokenNames(token, n);
    try {
      this.tokenIds = model.tokenizer.addTokens(this.tokens);
    } catch (err) {
      if (err instanceof TokenizerError) throw new ConfigError(`embed.placeholder_token: ${err.message}`, { cause: err });
      throw err;
    }
    if (this.tokenIds.some((id, i) => id !== this.tokenIds[0]! + i) || this.tokenIds[0]! < this.vocab) {
      throw new Error(`placeholder ids ${this.tokenIds.join(', ')} are not consecutive ids after the ${this.vocab}-row token table`);
    }
    this.rows = tf.variable(init, true, `sdtrain/ti/${token}#${++instances}`);
    init.dispose();
    this.fileStem = opts.name ?? embeddingFileStem(token);
  }

  trainableVariables(): tf.Variable[] {
    return [this.rows];
  }

  /** Token embeddings [B, T, dim] = concat([frozen table, rows])[ids], without building the concatenation. */
  embedTokens(ids: tf.Tensor2D): tf.Tensor3D {
    const [b, t] = ids.shape;
    const first = this.tokenIds[0]!;
    const n = this.tokenIds.length;
    const isNew = ids.greaterEqual(first); // [B, T]
    const base = this.model.textEncoder.embed(tf.where(isNew, tf.zerosLike(ids), ids) as tf.Tensor2D); // [B, T, C]
    // one-hot of (id − first) without tf.oneHot, which refuses depth 1: [B·T, 1] == [k]
    const pick = ids.sub(first).reshape([b * t, 1]).equal(tf.range(0, n, 1, 'int32')).cast('float32'); // [B·T, k]
    const added = pick.matMul(this.rows).reshape([b, t, -1]); // [B, T, C]; rows of non-placeholder positions are 0
    return tf.where(isNew.expandDims(2), added, base) as tf.Tensor3D;
  }

  /** Token ids [B, 77] of captions, with multi-vector placeholders expanded. */
  tokenize(captions: readonly string[]): number[][] {
    const tok = this.model.tokenizer;
    const last = this.tokenIds.at(-1)!;
    return captions.map((c) => {
      const ids = tok.tokenize(tok.maybeConvertPrompt(c)).inputIds;
      const bad = ids.find((id) => id >= this.vocab && (id < this.tokenIds[0]! || id > last));
      if (bad !== undefined) throw new Error(`caption ${JSON.stringify(c)} uses added token id ${bad}, which has no embedding in this run`);
      return ids;
    });
  }

  /** The U-Net conditioning [B, 77, dim] of captions, with the current rows (also what previews should use). */
  encode(captions: readonly string[]): tf.Tensor3D {
    const ids = tf.tensor2d(this.tokenize(captions), undefined, 'int32');
    const inputsEmbeds = this.embedTokens(ids);
    return this.model.textEncoder.forward(ids, { inputsEmbeds, clipSkip: this.opts.clipSkip ?? 1 }).lastHiddenState;
  }

  loss(_batch: TrainBatch, ctx: StepContext): tf.Scalar {
    const hidden = this.encode(ctx.captions);
    const slice = ctx.attentionSliceSize !== undefined ? { attentionSliceSize: ctx.attentionSliceSize } : {};
    return ctx.lossOf(this.model.unet.forward(ctx.noisyLatents, ctx.timesteps, hidden, slice));
  }

  previewPrompts(configured: readonly string[]): string[] {
    const prompts = configured.length > 0 ? configured : ['a photo of [name]'];
    return prompts.map((p) => p.replaceAll('[name]', this.opts.embed.placeholder_token));
  }

  async save(dir: string, step: number, _kind: 'checkpoint' | 'final'): Promise<string[]> {
    const data = Float32Array.from((await this.rows.data()) as Float32Array);
    const shape = [...this.rows.shape];
    const { export: ex, placeholder_token: token, init_word, num_vectors } = this.opts.embed;
    const files: string[] = [];
    if (ex.safetensors) {
      const path = join(dir, `${this.fileStem}.safetensors`);
      await writeSafetensors(path, { [token]: { shape, data } }, {
        'sdtrain.version': packageVersion(),
        'sdtrain.method': this.name,
        'sdtrain.token': token,
        'sdtrain.name': this.fileStem,
        'sdtrain.num_vectors': String(num_vectors),
        'sdtrain.init_word': init_word,
        'sdtrain.step': String(step),
        ...(this.opts.sdCheckpoint !== undefined ? { 'sdtrain.sd_checkpoint': this.opts.sdCheckpoint } : {}),
        ...(this.opts.sdCheckpointName !== undefined ? { 'sdtrain.sd_checkpoint_name': this.opts.sdCheckpointName } : {}),
      });
      files.push(path);
    }
    if (ex.a1111_pt) {
      // A1111 Embedding.save: one '*' entry; 265 is the id of '*' in the CLIP vocabulary (a fixed legacy value)
      const root = new Map<PyValue, PyValue>([
        ['string_to_token', new Map<PyValue, PyValue>([['*', 265]])],
        ['string_to_param', new Map<PyValue, PyValue>([['*', new TorchTensorToWrite({ shape, data }, { requiresGrad: true })]])],
        ['name', this.fileStem],
        ['step', step],
        ['sd_checkpoint', this.opts.sdCheckpoint ?? null],
        ['sd_checkpoint_name', this.opts.sdCheckpointName ?? null],
      ]);
      const path = join(dir, `${this.fileStem}.pt`);
      await writeTorchFile(path, root);
      files.push(path);
    }
    if (ex.kohya) {
      await mkdir(join(dir, 'kohya'), { recursive: true });
      const path = join(dir, 'kohya', `${this.fileStem}.safetensors`);
      await writeSafetensors(path, { emb_params: { shape, data } });
      files.push(path);
    }
    return files;
  }

  /** Frees the rows (the tokenizer keeps its added tokens). */
  dispose(): void {
    this.rows.dispose();
  }
}

/**
 * The starting rows [k, dim] from `init_word`: '' → zeros; one token → its row in every vector; exactly k tokens →
 * vector i from token i; otherwise by `init_multi_token`: 'mean' of the rows, the 'first' row, or 'error'.
 */
function initialRows(model: TextualInversionModel, e: EmbedSection): tf.Tensor2D {
  const n = e.num_vectors;
  const dim = model.textEncoder.config.hidden_size;
  if (e.init_word === '') return tf.zeros([n, dim]);
  const ids = model.tokenizer.encode(e.init_word);
  const vocab = model.textEncoder.config.vocab_size;
  if (ids.length === 0) throw new ConfigError(`embed.init_word: ${JSON.stringify(e.init_word)} gives no tokens; use a word, or '' to start from zeros`);
  if (ids.some((id) => id >= vocab)) throw new ConfigError(`embed.init_word: ${JSON.stringify(e.init_word)} contains an added token, which has no embedding to start from`);
  if (ids.length > 1 && ids.length !== n && e.init_multi_token === 'error') {
    const pieces = model.tokenizer.bpeTokens(e.init_word).join(' ');
    throw new ConfigError(
      `embed.init_word: ${JSON.stringify(e.init_word)} is ${ids.length} tokens (${pieces}); with init_multi_token: error it must be one token or exactly num_vectors (${n}) tokens — pick a one-token word, or set init_multi_token to mean or first`,
    );
  }
  return tf.tidy(() => {
    const table = model.textEncoder.text_model.embeddings.token_embedding.weight.t;
    const rows = tf.gather(table, tf.tensor1d(ids, 'int32')) as tf.Tensor2D; // [m, dim]
    if (ids.length === n) return rows.clone();
    const one = ids.length === 1 || e.init_multi_token === 'first' ? rows.slice([0, 0], [1, dim]) : rows.mean(0, true);
    return tf.tile(one, [n, 1]) as tf.Tensor2D;
  });
}
