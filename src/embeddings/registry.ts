// A1111-style lookup of textual-inversion keywords in tokenised prompts (`EmbeddingDatabase.register_embedding_by_name`
// and `find_embedding_at_position`, modules/textual_inversion/textual_inversion.py @ 22ecb78b). A keyword is matched
// by its BPE ids, not as text: case does not matter and `my-embed` also matches `my - embed`, but not `my-embedding`.
import { SdtrainError } from '../errors.js';
import type { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';
import type { Embedding } from './load.js';

interface Candidate {
  ids: number[];
  embedding: Embedding;
}

export class EmbeddingRegistry {
  private readonly byName = new Map<string, Embedding>();
  /** First id of a keyword → keywords starting with it, longest first (ties in registration order). */
  private readonly byFirstId = new Map<number, Candidate[]>();

  constructor(private readonly tokenizer: Pick<CLIPTokenizer, 'encode'>) {}

  /** A registry holding `embeddings` under their `name`s. */
  static from(tokenizer: Pick<CLIPTokenizer, 'encode'>, embeddings: Iterable<Embedding>): EmbeddingRegistry {
    const registry = new EmbeddingRegistry(tokenizer);
    for (const e of embeddings) registry.register(e);
    return registry;
  }

  /** Registers `embedding` under its `name` (tokenised without BOS/EOS); replaces one of the same name. */
  register(embedding: Embedding): void {
    const ids = this.tokenizer.encode(embedding.name);
    if (ids.length === 0) {
      throw new SdtrainError(`embedding keyword ${JSON.stringify(embedding.name)} has no tokens, so no prompt can use it; rename the file`);
    }
    this.unregister(embedding.name);
    this.byName.set(embedding.name, embedding);
    const list = this.byFirstId.get(ids[0]!) ?? [];
    list.push({ ids, embedding });
    list.sort((a, b) => b.ids.length - a.ids.length); // stable: equal lengths keep registration order
    this.byFirstId.set(ids[0]!, list);
  }

  unregister(name: string): boolean {
    if (!this.byName.delete(name)) return false;
    for (const [id, list] of this.byFirstId) {
      const kept = list.filter((c) => c.embedding.name !== name);
      if (kept.length === 0) this.byFirstId.delete(id);
      else this.byFirstId.set(id, kept);
    }
    return true;
  }

  get(name: string): Embedding | undefined {
    return this.byName.get(name);
  }

  get size(): number {
    return this.byName.size;
  }

  /** Registered embeddings in registration order. */
  values(): IterableIterator<Embedding> {
    return this.byName.values();
  }

  /** The embedding whose keyword ids start at `tokens[offset]` (longest keyword first) and how many ids it spans. */
  findAt(tokens: readonly number[], offset: number): { embedding: Embedding; length: number } | undefined {
    const candidates = this.byFirstId.get(tokens[offset]!);
    if (candidates === undefined) return undefined;
    for (const { ids, embedding } of candidates) {
      if (offset + ids.length <= tokens.length && ids.every((id, i) => tokens[offset + i] === id)) {
        return { embedding, length: ids.length };
      }
    }
    return undefined;
  }
}
