// The parity runner's data types: what a case-kind handler gets and returns, and what the runner reports.
import type { AtolSource } from './compare.js';
import type { FixtureCase } from './fixture.js';
import type { ComponentCache } from './models.js';

/** One computed output, in the fixture's layout (NCHW for images/latents), ready to compare. */
export interface ComputedOutput {
  data: Float32Array | Int32Array | readonly number[];
  shape: readonly number[];
}

export interface KindContext {
  fixture: FixtureCase;
  /** Loaded models/tokenizers, shared between the cases that use the same component. */
  components: ComponentCache;
}

/** One case kind (`text_encoder`, `unet`, ...): loads what it needs and computes the outputs it knows. */
export interface KindHandler {
  readonly kind: string;
  /**
   * Components of the case's model_dir the handler loads (`text_encoder`, `unet`, ...): the runner frees each after
   * the last case that needs it.
   */
  readonly components: readonly string[];
  /** Computes every output it can; case outputs it leaves out are reported as skipped, not failed. */
  run(ctx: KindContext): Promise<Map<string, ComputedOutput>>;
}

/** The comparison of one output. */
export interface OutputResult {
  case: string;
  output: string;
  /** max |computed - reference|; Infinity for a shape mismatch or NaN. */
  maxAbsErr: number;
  atol: number;
  atolSource: AtolSource;
  pass: boolean;
  /** Why it failed beyond the numbers (a shape mismatch). */
  note?: string;
}

export interface CaseReport {
  case: string;
  kind: string;
  /** `ran`: outputs compared (see `outputs`); `skipped`: kind not supported; `error`: the handler threw. */
  status: 'ran' | 'skipped' | 'error';
  /** For `skipped` and `error`. */
  reason?: string;
  outputs: OutputResult[];
  /** Case outputs the handler does not compute. */
  skippedOutputs: Array<{ output: string; reason: string }>;
  /** Wall time of the case in ms (including model loading). */
  ms: number;
}

/** The summary of `<dir>/tokenizer/cases.json` (formats.md §1.4). */
export interface TokenizerCasesReport {
  path: string;
  total: number;
  /** Cases whose `ids`, `sd1_input_ids` and `sd2_input_ids` all match. */
  exact: number;
  /** Cases not compared (need ftfy's mojibake repair and carry no `ids_without_ftfy`). */
  skipped: Array<{ id: string; reason: string }>;
  mismatches: Array<{ id: string; fields: string[] }>;
  pass: boolean;
}

export interface ParityReport {
  dir: string;
  cases: CaseReport[];
  tokenizerCases?: TokenizerCasesReport;
  /** No failed output, no errored case, no tokenizer mismatch (skips do not fail). */
  pass: boolean;
}
