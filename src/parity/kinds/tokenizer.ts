// `tokenizer` cases: prompts → input_ids / attention_mask with the model's own tokenizer folder, as the SD pipelines
// call it (padding to max length, truncation).
import { FormatError } from '../../errors.js';
import type { ComputedOutput, KindHandler } from '../types.js';

export const tokenizerKind: KindHandler = {
  kind: 'tokenizer',
  components: ['tokenizer'],
  async run({ fixture, components }) {
    const prompts = fixture.spec.args?.prompts;
    if (!Array.isArray(prompts) || !prompts.every((p) => typeof p === 'string')) {
      throw new FormatError(fixture.jsonPath, "'args.prompts' must be a list of strings");
    }
    const tok = await components.tokenizer(fixture.modelDir);
    const rows = prompts.map((p) => tok.tokenize(p));
    const n = rows.length;
    const flat = (pick: (r: (typeof rows)[number]) => number[]): ComputedOutput => ({
      data: Int32Array.from(rows.flatMap(pick)),
      shape: [n, tok.maxLength],
    });
    return new Map([
      ['input_ids', flat((r) => r.inputIds)],
      ['attention_mask', flat((r) => r.attentionMask)],
    ]);
  },
};
