// A diffusers/transformers `tokenizer/` folder for the CLIP vocabulary bundled in assets/clip, as transformers'
// CLIPTokenizer.save_pretrained writes it for SD 1.x (openai/clip-vit-large-patch14): vocab.json (sorted keys,
// indent 2), merges.txt ("#version: 0.2" + the 48894 merges), tokenizer_config.json and special_tokens_map.json.
// `CLIPTokenizer.fromDiffusersFolder` reads it back to the same ids as `CLIPTokenizer.fromBundled()`.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../formats/atomic.js';
import { bundledVocab, END_OF_TEXT, START_OF_TEXT } from '../tokenizer/vocab.js';

const special = (content: string) => ({ content, lstrip: false, normalized: true, rstrip: false, single_word: false });

/** Writes the four files into `dir` (created if needed); returns their paths. */
export async function writeClipTokenizerFolder(dir: string): Promise<string[]> {
  const vocab = await bundledVocab();
  await mkdir(dir, { recursive: true });
  // Python's json.dumps(sort_keys=True) orders by code point; every symbol here is in the BMP, where UTF-16 order agrees.
  const keys = [...vocab.encoder.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const vocabJson = `{\n${keys.map((k) => `  ${JSON.stringify(k)}: ${vocab.encoder.get(k)}`).join(',\n')}\n}\n`;
  const merges = [...vocab.bpeRanks].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
  const mergesTxt = `#version: 0.2\n${merges.map((m) => `${m}\n`).join('')}`;
  const bos = vocab.encoder.get(START_OF_TEXT)!;
  const eos = vocab.encoder.get(END_OF_TEXT)!;
  const config = {
    added_tokens_decoder: {
      [bos]: { ...special(START_OF_TEXT), special: true },
      [eos]: { ...special(END_OF_TEXT), special: true },
    },
    bos_token: START_OF_TEXT,
    clean_up_tokenization_spaces: true,
    eos_token: END_OF_TEXT,
    errors: 'replace',
    model_max_length: 77,
    pad_token: END_OF_TEXT,
    tokenizer_class: 'CLIPTokenizer',
    unk_token: END_OF_TEXT,
  };
  const specialMap = { bos_token: special(START_OF_TEXT), eos_token: special(END_OF_TEXT), pad_token: END_OF_TEXT, unk_token: special(END_OF_TEXT) };
  const files: Array<[string, string]> = [
    ['vocab.json', vocabJson],
    ['merges.txt', mergesTxt],
    ['tokenizer_config.json', `${JSON.stringify(config, null, 2)}\n`],
    ['special_tokens_map.json', `${JSON.stringify(specialMap, null, 2)}\n`],
  ];
  for (const [name, text] of files) await writeFileAtomic(join(dir, name), (fh) => fh.writeFile(text));
  return files.map(([name]) => join(dir, name));
}
