import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import { CLIPTokenizer } from '../../tokenizer/clip_tokenizer.js';

interface Args {
  prompt: string;
  model?: string;
  pad?: 'eos' | 'zero';
  json?: boolean;
}

export const tokenize: CommandModule<object, Args> = {
  command: 'tokenize <prompt>',
  describe: 'Show how CLIP tokenizes a prompt: tokens, ids, and how many of the 75 slots it uses',
  builder: (y) =>
    y
      .positional('prompt', { type: 'string', demandOption: true })
      .option('model', { type: 'string', describe: "a diffusers folder: use its tokenizer/ (default: the bundled CLIP vocabulary)" })
      .option('pad', { choices: ['eos', 'zero'] as const, describe: 'padding of input_ids: eos (SD 1.x) or zero (SD 2.x); default from the model, else eos' })
      .option('json', { type: 'boolean', describe: 'print JSON' })
      .example('$0 tokenize "a photo of a cat, 4k"', ''),
  handler: async ({ prompt, model, pad, json }) => {
    const opts = pad ? { padWith: pad } : {};
    const tok = model ? await CLIPTokenizer.fromDiffusersFolder(join(model, 'tokenizer'), opts) : await CLIPTokenizer.fromBundled(opts);
    const ids = tok.encode(prompt);
    const tokens = ids.map((id) => tok.idToToken(id) ?? '?');
    const framed = tok.tokenize(prompt);
    const max = framed.inputIds.length - 2;
    if (json) {
      process.stdout.write(`${JSON.stringify({ prompt, tokens, ids, token_count: framed.tokenCount, max_tokens: max, truncated: framed.truncated, input_ids: framed.inputIds }, null, 2)}\n`);
      return;
    }
    const w = String(ids.length).length;
    const lines = tokens.map((t, i) => `${String(i + 1).padStart(w)}  ${String(ids[i]).padStart(5)}  ${t}${i === max ? '   <- truncated from here' : ''}`);
    process.stdout.write(`${lines.join('\n')}${lines.length ? '\n' : ''}${framed.tokenCount} of ${max} tokens used${framed.truncated ? ` (truncated: the text encoder sees only the first ${max})` : ''}\n`);
  },
};
