// A1111's `AND` (composable diffusion): a port of `get_multicond_prompt_list` (modules/prompt_parser.py @ 28bd8e14),
// checked against prompts/multicond.json.
import { PY_D, PY_S, pyFloat, pyWord } from './py_regex.js';
import type { WeightedText } from './emphasis.js';

const AND_RE = new RegExp(pyWord('AND'), 'u');
// re_weight: the shortest text, then an optional `:number` (spaces allowed around the colon), then trailing spaces
const WEIGHT_RE = new RegExp(
  `^([\\s\\S]*?)(?:${PY_S}*:${PY_S}*([-+]?(?:${PY_D}+\\.?|${PY_D}*\\.${PY_D}+)))?${PY_S}*$`,
  'u',
);

/**
 * Splits a prompt on the whole, case-sensitive word `AND` into [text, weight] sub-prompts. A trailing `:number` of a
 * part is its weight (default 1) and is removed with the whitespace before it; trailing whitespace is removed too,
 * leading whitespace is kept (`' a dog'`). A sampler combines them as
 * `uncond + Σ_i weight_i · cfg · (cond_i − uncond)`; identical texts can share one conditioning.
 */
export function splitAnd(prompt: string): WeightedText[] {
  return prompt.split(AND_RE).map((part): WeightedText => {
    const m = WEIGHT_RE.exec(part);
    if (m === null) return [part, 1.0];
    return [m[1]!, m[2] === undefined ? 1.0 : pyFloat(m[2])];
  });
}

export interface MultiCondPrompts {
  /** Per prompt, its sub-prompts as [index into `texts`, weight]. */
  indexes: Array<Array<[index: number, weight: number]>>;
  /** The distinct sub-prompt texts, in first-seen order. */
  texts: string[];
}

/** `get_multicond_prompt_list` for a batch: every distinct sub-prompt text once, referenced by index with its weight. */
export function multiCondPromptList(prompts: readonly string[]): MultiCondPrompts {
  const texts: string[] = [];
  const seen = new Map<string, number>();
  const indexes = prompts.map((prompt) =>
    splitAnd(prompt).map(([text, weight]): [number, number] => {
      let index = seen.get(text);
      if (index === undefined) {
        index = texts.push(text) - 1;
        seen.set(text, index);
      }
      return [index, weight];
    }),
  );
  return { indexes, texts };
}
