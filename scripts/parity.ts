// `npm run parity -- <fixture dir> [case ...]`: runs the parity cases of a fixture directory (default
// ../shared/fixtures) and prints one line per output, then a summary. Exit 1 on any failure; unsupported kinds are
// skipped. The backend comes from SDTRAIN_BACKEND (default wasm).
import { explainBackendError, parseBackendRequest, useBackend } from '../src/backend/backend.js';
import { runParity } from '../src/parity/runner.js';
import type { CaseReport } from '../src/parity/types.js';

const fmt = (x: number): string => (x === 0 ? '0' : Number.isFinite(x) ? x.toExponential(2) : String(x));
const fmtAtol = (x: number): string => (x === 0 ? '0 (exact)' : Number(x.toPrecision(3)).toExponential());

function printCase(r: CaseReport): void {
  if (r.status === 'skipped') {
    console.log(`SKIP ${r.case} (${r.reason})`);
    return;
  }
  if (r.status === 'error') {
    console.log(`FAIL ${r.case} (error: ${r.reason})`);
    return;
  }
  for (const o of r.outputs) {
    const atol = `${fmtAtol(o.atol)}${o.atolSource === 'case' ? ' (case)' : o.atolSource === 'guideline' ? ' (1e-4 x max|ref|)' : ''}`;
    console.log(`${o.pass ? 'PASS' : 'FAIL'} ${o.case}/${o.output} max_abs=${fmt(o.maxAbsErr)} atol=${atol}${o.note ? ` (${o.note})` : ''}`);
  }
  for (const s of r.skippedOutputs) console.log(`SKIP ${r.case}/${s.output} (${s.reason})`);
}

async function main(): Promise<number> {
  const [dir = '../shared/fixtures', ...only] = process.argv.slice(2);
  const choice = await useBackend(parseBackendRequest(process.env.SDTRAIN_BACKEND ?? 'wasm', 'SDTRAIN_BACKEND'));
  console.log(`parity: ${dir} (backend ${choice.backend})`);
  const started = Date.now();
  const report = await runParity(dir, { onCase: printCase, ...(only.length ? { only } : {}) });

  const t = report.tokenizerCases;
  if (t) {
    const skipped = t.skipped.length ? `, ${t.skipped.length} skipped (${t.skipped.map((s) => s.id).join(', ')})` : '';
    const bad = t.mismatches.map((m) => `${m.id}: ${m.fields.join('+')}`).join('; ');
    console.log(`${t.pass ? 'PASS' : 'FAIL'} tokenizer/cases.json ${t.exact}/${t.total - t.skipped.length} cases exact${skipped}${bad ? ` -- mismatches: ${bad}` : ''}`);
  }

  const outputs = report.cases.flatMap((c) => c.outputs);
  const passed = outputs.filter((o) => o.pass).length;
  const casesBy = (s: CaseReport['status']) => report.cases.filter((c) => c.status === s).length;
  const skippedOutputs = report.cases.reduce((n, c) => n + c.skippedOutputs.length, 0);
  console.log(
    `${report.pass ? 'OK' : 'FAILED'}: ${passed}/${outputs.length} outputs passed in ${casesBy('ran')} cases` +
      `${casesBy('error') ? `, ${casesBy('error')} cases errored` : ''}` +
      `; skipped ${casesBy('skipped')} cases (unsupported kinds)${skippedOutputs ? ` and ${skippedOutputs} outputs` : ''}` +
      ` (${((Date.now() - started) / 1000).toFixed(1)} s)`,
  );
  return report.pass ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (caught: unknown) => {
    const e = explainBackendError(caught);
    console.error(`parity: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
