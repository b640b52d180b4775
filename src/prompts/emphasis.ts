// A1111's emphasis syntax: `(a)` ×1.1, `[a]` ÷1.1, `(a:1.3)`, `\(` escapes and `BREAK`. A port of
// `parse_prompt_attention` (modules/prompt_parser.py @ 28bd8e14), checked against prompts/emphasis.json.
import { SdtrainError } from '../errors.js';
import { PY_D, PY_S, pyFloat, pyWord } from './py_regex.js';

/** A text piece and its weight; `['BREAK', -1]` (weight exactly -1) marks a chunk break. */
export type WeightedText = [text: string, weight: number];

/** `BREAK` at exactly this weight is a chunk break; multiplied by brackets it is just the word "break". */
export const BREAK_WEIGHT = -1;

// The alternatives of A1111's re_attention, in its order: escapes, a lone backslash, openers, `:weight)`, closers,
// a text run, a lone colon.
const ATTENTION_RE = new RegExp(
  [
    '\\\\\\(', '\\\\\\)', '\\\\\\[', '\\\\\\]', '\\\\\\\\', '\\\\', '\\(', '\\[',
    `:${PY_S}*([+-]?[.${PY_D}]+)${PY_S}*\\)`, '\\)', '\\]', '[^\\\\()\\[\\]:]+', ':',
  ].join('|'),
  'gu',
);
const BREAK_RE = new RegExp(`${PY_S}*${pyWord('BREAK')}${PY_S}*`, 'u');

const ROUND = 1.1;
const SQUARE = 1 / 1.1;

/**
 * Parses A1111 emphasis into [text, weight] pieces, exactly as `parse_prompt_attention`: weights are float64
 * products applied in closing order (brackets still open at the end multiply last, outermost first), adjacent
 * pieces with exactly equal weights are merged, and an empty prompt gives `[['', 1]]`.
 *
 * A weight that matches A1111's number pattern but is not a number, such as `(x:1.2.3)`, makes A1111 raise
 * ValueError; this throws an SdtrainError naming the prompt. (Without an open `(` it is plain text in both.)
 */
export function parseEmphasis(prompt: string): WeightedText[] {
  const res: WeightedText[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const multiplyRange = (start: number, multiplier: number) => {
    for (let p = start; p < res.length; p++) res[p]![1] *= multiplier;
  };

  for (const m of prompt.matchAll(ATTENTION_RE)) {
    const text = m[0];
    const weight = m[1];
    if (text.startsWith('\\')) {
      res.push([text.slice(1), 1.0]);
    } else if (text === '(') {
      round.push(res.length);
    } else if (text === '[') {
      square.push(res.length);
    } else if (weight !== undefined && round.length > 0) {
      const value = pyFloat(weight);
      if (Number.isNaN(value)) {
        throw new SdtrainError(
          `the emphasis weight '${weight}' in the prompt ${JSON.stringify(prompt)} is not a number ` +
            `(A1111 rejects it too); write e.g. (word:1.2), or escape the brackets as \\( \\)`,
        );
      }
      multiplyRange(round.pop()!, value);
    } else if (text === ')' && round.length > 0) {
      multiplyRange(round.pop()!, ROUND);
    } else if (text === ']' && square.length > 0) {
      multiplyRange(square.pop()!, SQUARE);
    } else {
      text.split(BREAK_RE).forEach((part, i) => {
        if (i > 0) res.push(['BREAK', BREAK_WEIGHT]);
        res.push([part, 1.0]);
      });
    }
  }

  for (const pos of round) multiplyRange(pos, ROUND);
  for (const pos of square) multiplyRange(pos, SQUARE);

  if (res.length === 0) res.push(['', 1.0]);

  // merge runs of identical weights
  let i = 0;
  while (i + 1 < res.length) {
    if (res[i]![1] === res[i + 1]![1]) {
      res[i]![0] += res[i + 1]![0];
      res.splice(i + 1, 1);
    } else {
      i++;
    }
  }
  return res;
}

/** True for the piece that closes a chunk: text `BREAK` at weight exactly -1. */
export const isBreak = ([text, weight]: WeightedText): boolean => text === 'BREAK' && weight === BREAK_WEIGHT;
