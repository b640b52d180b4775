// The parity runner: runs every case of a fixture directory whose kind has a handler (kinds/index.ts) and compares
// each output with the fixture's within its tolerance. Library code: returns a report and calls `onCase` as cases
// finish; it never prints (scripts/parity.ts does).
import { existsSync } from 'node:fs';
import { explainBackendError } from '../backend/backend.js';
import { join, resolve } from 'node:path';
import { isIntegerSpec, maxAbsDiff, toleranceFor } from './compare.js';
import { discoverCases, type FixtureCase } from './fixture.js';
import { KINDS } from './kinds/index.js';
import { ComponentCache } from './models.js';
import { checkTokenizerCases } from './tokenizer_cases.js';
import type { CaseReport, ComputedOutput, KindHandler, OutputResult, ParityReport, TokenizerCasesReport } from './types.js';

export interface RunParityOptions {
  /** Run only these cases (by name). */
  only?: readonly string[];
  /** Called when a case finishes (for progress output). */
  onCase?: (report: CaseReport) => void;
  /** Check `<dir>/tokenizer/cases.json` too when present (default true). */
  tokenizerCases?: boolean;
  /** The handlers to use (default: all supported kinds). */
  kinds?: ReadonlyMap<string, KindHandler>;
}

/** Compares computed outputs with the case's reference outputs. */
async function compareOutputs(fx: FixtureCase, computed: Map<string, ComputedOutput>, kind: string): Promise<Pick<CaseReport, 'outputs' | 'skippedOutputs'>> {
  const outputs: OutputResult[] = [];
  const skippedOutputs: CaseReport['skippedOutputs'] = [];
  for (const [name, spec] of Object.entries(fx.spec.outputs)) {
    const got = computed.get(name);
    if (!got) {
      skippedOutputs.push({ output: name, reason: `not computed by the '${kind}' handler` });
      continue;
    }
    const ref = await fx.tensor(spec.key);
    const { atol, source } = toleranceFor(spec, fx.spec.outputs, ref.data);
    const base = { case: fx.name, output: name, atol, atolSource: source };
    if (ref.shape.join() !== got.shape.join()) {
      outputs.push({ ...base, maxAbsErr: Infinity, pass: false, note: `shape [${got.shape.join(', ')}], expected [${ref.shape.join(', ')}]` });
      continue;
    }
    const err = maxAbsDiff(got.data, ref.data);
    outputs.push({ ...base, maxAbsErr: err, pass: isIntegerSpec(spec) ? err === 0 : err <= atol });
  }
  return { outputs, skippedOutputs };
}

/** Runs the parity cases of the fixture directory `dir` (which holds `parity/` and the model folders). */
export async function runParity(dir: string, opts: RunParityOptions = {}): Promise<ParityReport> {
  const root = resolve(dir);
  const kinds = opts.kinds ?? KINDS;
  let cases = await discoverCases(root);
  if (opts.only) {
    const unknown = opts.only.filter((n) => !cases.some((c) => c.name === n));
    if (unknown.length) throw new Error(`no such case(s) in ${root}: ${unknown.join(', ')}`);
    cases = cases.filter((c) => opts.only!.includes(c.name));
  }

  // The last case that needs each component, so it can be freed right after.
  const lastUse = new Map<string, number>();
  cases.forEach((c, i) => {
    const h = kinds.get(c.kind);
    if (h && c.spec.model_dir) for (const comp of h.components) lastUse.set(`${c.modelDir}\0${comp}`, i);
  });

  const components = new ComponentCache();
  const reports: CaseReport[] = [];
  try {
    for (const [i, fx] of cases.entries()) {
      const started = Date.now();
      const handler = kinds.get(fx.kind);
      let report: CaseReport;
      if (!handler) {
        report = { case: fx.name, kind: fx.kind, status: 'skipped', reason: `kind '${fx.kind}' not implemented yet`, outputs: [], skippedOutputs: [], ms: 0 };
      } else {
        try {
          const computed = await handler.run({ fixture: fx, components });
          report = { case: fx.name, kind: fx.kind, status: 'ran', ...(await compareOutputs(fx, computed, fx.kind)), ms: Date.now() - started };
        } catch (caught) {
          const e = explainBackendError(caught); // wasm's bare "memory access out of bounds" → what to do about it
          report = { case: fx.name, kind: fx.kind, status: 'error', reason: e instanceof Error ? e.message : String(e), outputs: [], skippedOutputs: [], ms: Date.now() - started };
        } finally {
          await fx.close();
          if (fx.spec.model_dir) {
            for (const comp of handler.components) {
              if (lastUse.get(`${fx.modelDir}\0${comp}`) === i) await components.release(fx.modelDir, comp);
            }
          }
        }
      }
      reports.push(report);
      opts.onCase?.(report);
    }
  } finally {
    await components.releaseAll();
  }

  let tokenizerCases: TokenizerCasesReport | undefined;
  const tokPath = join(root, 'tokenizer', 'cases.json');
  if ((opts.tokenizerCases ?? true) && !opts.only && existsSync(tokPath)) tokenizerCases = await checkTokenizerCases(tokPath);

  const pass =
    reports.every((r) => r.status !== 'error' && r.outputs.every((o) => o.pass)) && (tokenizerCases?.pass ?? true);
  return { dir: root, cases: reports, ...(tokenizerCases ? { tokenizerCases } : {}), pass };
}
