// A1111 "infotext", the generation parameters stored under the PNG text key `parameters`: built as
// `processing.create_infotext` does and parsed as the core of `infotext_utils.parse_generation_parameters`
// (@ c19d0443), checked against prompts/infotext.json.
import { pyStrip } from '../tokenizer/normalize.js';
import { PY_S, PY_W } from './py_regex.js';

/** A parameter value; null/undefined are left out, numbers print as Python would, booleans as True/False. */
export type InfotextValue = string | number | boolean | null | undefined;

export interface InfotextInput {
  prompt: string;
  negativePrompt?: string;
  /** Written in insertion order, e.g. `{ Steps: 20, Sampler: 'Euler a', 'CFG scale': 7, Seed: 1, Size: '512x512' }`. */
  params: Record<string, InfotextValue> | ReadonlyArray<readonly [string, InfotextValue]>;
}

/** The infotext: prompt, `Negative prompt: …` when there is one, then `Key: value, …` on one line. */
export function buildInfotext(input: InfotextInput): string {
  const entries = Array.isArray(input.params) ? input.params : Object.entries(input.params);
  const line = entries
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => (k === v ? k : `${k}: ${quote(v as string | number | boolean)}`))
    .join(', ');
  const negative = input.negativePrompt ? `\nNegative prompt: ${input.negativePrompt}` : '';
  return pyStrip(`${input.prompt}${negative}\n${line}`);
}

/** A value with `,`, `:` or a newline is JSON-quoted (json.dumps, non-ASCII kept). */
export function quote(value: string | number | boolean): string {
  const text = pyStr(value);
  if (!text.includes(',') && !text.includes('\n') && !text.includes(':')) return text;
  return JSON.stringify(value);
}

/** Python's str() of the value. */
function pyStr(value: string | number | boolean): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (Number.isInteger(value)) return BigInt(value).toString();
  if (!Number.isFinite(value)) return Number.isNaN(value) ? 'nan' : value > 0 ? 'inf' : '-inf';
  const abs = Math.abs(value);
  if (abs >= 1e-4 && abs < 1e16) return String(value);
  const [mantissa, exp] = value.toExponential().split('e') as [string, string];
  const sign = exp.startsWith('-') ? '-' : '+';
  return `${mantissa}e${sign}${exp.replace(/^[+-]/, '').padStart(2, '0')}`;
}

export interface ParsedInfotext {
  prompt: string;
  negativePrompt: string;
  /** `Key: value` pairs of the parameter line, values unquoted; `WxH` values become `Key-1` and `Key-2`. */
  params: Record<string, string>;
  /** `Clip skip` as a number; a missing one means 1 (A1111's rule for files written before it was recorded). */
  clipSkip: number | undefined;
}

const PARAM_RE = new RegExp(`${PY_S}*(${PY_W}[${PY_W.slice(1, -1)} \\-/]+):${PY_S}*("(?:\\\\[^\\n]|[^\\\\"])+"|[^,]*)(?:,|$)`, 'gu');
const IMAGE_SIZE_RE = /^(\p{Nd}+)x(\p{Nd}+)\n?$/u;

/**
 * Splits an infotext into prompt, negative prompt and parameters. The last line is the parameter line only if it
 * holds at least 3 `Key: value` pairs; otherwise it belongs to the prompt. Lines are stripped. Quoted values are
 * JSON-decoded, and empty values are dropped (A1111 fails on them and skips the key).
 */
export function parseInfotext(text: string): ParsedInfotext {
  const lines = pyStrip(text).split('\n');
  let last = lines.pop()!;
  if ([...last.matchAll(PARAM_RE)].length < 3) {
    lines.push(last);
    last = '';
  }
  let prompt = '';
  let negativePrompt = '';
  let doneWithPrompt = false;
  for (let line of lines) {
    line = pyStrip(line);
    if (line.startsWith('Negative prompt:')) {
      doneWithPrompt = true;
      line = pyStrip(line.slice(16));
    }
    if (doneWithPrompt) negativePrompt += (negativePrompt === '' ? '' : '\n') + line;
    else prompt += (prompt === '' ? '' : '\n') + line;
  }
  const params: Record<string, string> = {};
  for (const m of last.matchAll(PARAM_RE)) {
    const key = m[1]!;
    let value = m[2]!;
    if (value === '') continue;
    if (value.startsWith('"') && value.endsWith('"')) value = unquote(value);
    const size = IMAGE_SIZE_RE.exec(value);
    if (size) {
      params[`${key}-1`] = size[1]!;
      params[`${key}-2`] = size[2]!;
    } else {
      params[key] = value;
    }
  }
  const skip = params['Clip skip'];
  const clipSkip = skip === undefined ? 1 : /^\s*[+-]?\d+\s*$/.test(skip) ? Number(skip) : undefined;
  return { prompt, negativePrompt, params, clipSkip };
}

function unquote(text: string): string {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'string' ? v : text;
  } catch {
    return text;
  }
}
