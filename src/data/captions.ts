// Captions: where each image's caption comes from (resolved once, at scan time) and how it is turned into the prompt
// text of one training step (template choice, tag shuffling; drawn from the batch's seeded generator every use).
//
// Sources, tried in the subset's `caption.source` order until one gives a non-empty caption:
//   sidecar  — `<stem><extension>` next to the image (UTF-8; invalid UTF-8 is an error naming the file; a BOM is
//              dropped; whitespace and line breaks collapse to single spaces; an empty file gives nothing).
//   metadata — the image's line in a `metadata.jsonl` of the subset (any folder; `file_name` relative to that file's
//              folder, caption in `text`, or `caption` — the diffusers/HF ImageFolder convention), else the
//              prompt of an A1111 `parameters` PNG text chunk, else a PNG `Description` chunk.
//   filename — the file stem: an A1111 preprocess prefix like `00012-0-` dropped, `_` → space, a trailing `(n)` and
//              a trailing separated number (`cat_01`, `cat 2`) dropped; a stem without letters gives nothing.
//   template — a random line of the subset's templates (a new draw every use): `[name]`/`{}` → the token,
//              `[filewords]` → the caption from the first non-template source that has one (in the configured order).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { FormatError, SdtrainError } from '../errors.js';
import { isPng, readPngText } from '../formats/png_text.js';
import { parseInfotext } from '../prompts/infotext.js';
import type { TorchGenerator } from '../random/torch_rng.js';
import { randomIndex, shuffleInPlace } from './rng.js';
import { templateLines } from './templates.js';
import type { CaptionConfig, CaptionInfo, CaptionSource } from './types.js';

const collapse = (s: string): string => s.replace(/\s+/g, ' ').trim();

/** Decodes caption text strictly: invalid UTF-8 is a FormatError naming the file (BOM dropped). */
export function decodeUtf8(bytes: Uint8Array, file: string, what = 'caption file'): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError(file, `${what} is not valid UTF-8 text; re-save it as UTF-8`);
  }
}

/** A sidecar caption, or undefined when the file is missing or blank. */
export async function readCaptionFile(file: string): Promise<string | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new FormatError(file, `cannot read caption file (${code ?? (err as Error).message})`, undefined, { cause: err });
  }
  const text = collapse(decodeUtf8(bytes, file));
  return text === '' ? undefined : text;
}

/** The 'filename' source: see the rules at the top of this file. */
export function filenameCaption(fileName: string): string | undefined {
  let s = path.parse(fileName).name;
  s = s.replace(/^\d+(?:-\d+)*-/, '');
  s = s.replace(/_/g, ' ');
  s = s.replace(/\s*\(\d+\)$/, '');
  s = s.replace(/[\s-]+\d+$/, '');
  s = collapse(s);
  return /\p{L}/u.test(s) ? s : undefined;
}

/**
 * Reads one `metadata.jsonl`: `{"file_name": "a.png", "text": "a caption"}` per line, blank lines allowed.
 * Returns captions keyed by the absolute image path. Malformed lines are errors naming the file and line.
 */
export async function readMetadataJsonl(file: string): Promise<Map<string, string>> {
  const text = decodeUtf8(await readFile(file), file, 'metadata file');
  const dir = path.dirname(file);
  const out = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const at = `line ${i + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new FormatError(file, `${at}: not valid JSON (${(err as Error).message})`);
    }
    if (row === null || typeof row !== 'object' || Array.isArray(row)) throw new FormatError(file, `${at}: expected a JSON object`);
    const r = row as Record<string, unknown>;
    if (typeof r.file_name !== 'string' || r.file_name === '') throw new FormatError(file, `${at}: needs a "file_name" string`);
    const caption = r.text ?? r.caption;
    if (caption === undefined || caption === null) return;
    if (typeof caption !== 'string') throw new FormatError(file, `${at}: "text" must be a string`);
    const c = collapse(caption);
    if (c !== '') out.set(path.resolve(dir, r.file_name), c);
  });
  return out;
}

/** Caption text embedded in the image file (PNG `parameters` prompt, else `Description`); undefined if none. */
export function embeddedCaption(bytes: Uint8Array, file: string): string | undefined {
  if (!isPng(bytes)) return undefined;
  let chunks: Record<string, string>;
  try {
    chunks = readPngText(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), file);
  } catch {
    return undefined; // a damaged PNG: decoding it will fail and skip the image with the reason
  }
  const params = chunks.parameters;
  const fromParams = params !== undefined ? collapse(parseInfotext(params).prompt) : '';
  if (fromParams !== '') return fromParams;
  const desc = collapse(chunks.Description ?? '');
  return desc === '' ? undefined : desc;
}

/** What caption resolution needs besides the image itself. */
export interface CaptionContext {
  /** Captions from the subset's metadata.jsonl files, by absolute image path. */
  metadata: ReadonlyMap<string, string>;
}

/** Resolves an image's caption source and text (see the top of this file). `bytes` is the image file's content. */
export async function resolveCaption(imagePath: string, bytes: Uint8Array, cfg: CaptionConfig, ctx: CaptionContext): Promise<CaptionInfo> {
  const get = async (s: Exclude<CaptionSource, 'template'>): Promise<string | undefined> => {
    if (s === 'sidecar') {
      const p = path.parse(imagePath);
      return readCaptionFile(path.join(p.dir, p.name + cfg.extension));
    }
    if (s === 'metadata') return ctx.metadata.get(path.resolve(imagePath)) ?? embeddedCaption(bytes, imagePath);
    return filenameCaption(path.basename(imagePath));
  };
  let first: { source: CaptionSource; text: string } | undefined;
  for (const s of cfg.source) {
    if (s === 'template') continue;
    const text = await get(s);
    if (text !== undefined) {
      first = { source: s, text };
      break;
    }
  }
  for (const s of cfg.source) {
    if (s === 'template') return { source: 'template', text: first?.text ?? '' };
    if (s === first?.source) return first;
  }
  return { source: null, text: '' };
}

/** How a subset's captions become prompt text. */
export interface CaptionRule {
  templates: readonly string[];
  shuffleTags: boolean;
  keepTokens: number;
  /** Replaces `[name]`/`{}` in templates. */
  token: string | undefined;
}

const NAME_RE = /\[name\]|\{\}/;

/** Builds the rule for subset `index`; templates naming `[name]` without a token are an error. */
export function captionRule(cfg: CaptionConfig, token: string | undefined, index: number): CaptionRule {
  const templates = templateLines(cfg.templates);
  if (token === undefined && cfg.source.includes('template') && templates.some((t) => NAME_RE.test(t))) {
    throw new SdtrainError(
      `data.datasets[${index}].caption: the templates use [name], but this run has no token to put there ` +
        '(textual inversion fills in embed.placeholder_token); write the subject into your own templates list instead',
    );
  }
  return { templates, shuffleTags: cfg.shuffle_tags, keepTokens: cfg.keep_tokens, token };
}

/** kohya shuffle_caption: split on ',', keep the first `keep` tags in place, shuffle the rest, join with ', '. */
export function shuffleTags(text: string, keep: number, rng: TorchGenerator): string {
  const tags = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  const head = tags.slice(0, keep);
  return [...head, ...shuffleInPlace(tags.slice(keep), rng)].join(', ');
}

/** Fills one template line; with empty filewords, the commas left around it are dropped. */
export function fillTemplate(line: string, filewords: string, token: string | undefined): string {
  let s = line.replaceAll('[filewords]', filewords);
  if (token !== undefined) s = s.replaceAll('[name]', token).replaceAll('{}', token);
  if (filewords === '') s = s.replace(/\s+,/g, ',').replace(/,(\s*,)+/g, ',').replace(/^[\s,]+|[\s,]+$/g, '');
  return collapse(s);
}

/** The prompt text for one use of an image: draws from `rng` (tag shuffle first, then the template line). */
export function renderCaption(info: CaptionInfo, rule: CaptionRule, rng: TorchGenerator): string {
  const text = rule.shuffleTags && info.text !== '' ? shuffleTags(info.text, rule.keepTokens, rng) : info.text;
  if (info.source !== 'template') return text;
  const line = rule.templates[randomIndex(rng, rule.templates.length)]!;
  return fillTemplate(line, text, rule.token);
}

/** Whether a rendering of this caption can lack `token` (for the "token never appears" check). */
export function canLackToken(info: CaptionInfo, rule: CaptionRule, token: string): boolean {
  if (info.text.includes(token)) return false;
  if (info.source !== 'template') return true;
  return rule.templates.some((t) => !NAME_RE.test(t));
}
