// `npm run bench`: conv2d forward / filter-gradient / input-gradient and batched-matmul GFLOP/s at U-Net shapes.
//
//   npm run bench -- [--backend wasm|cpu|node|gpu|auto] [--old] [--runs N] [--quick]
//
// --backend (or SDTRAIN_BACKEND; the flag wins) picks the backend, default wasm. --old adds columns timing the stock
// tfjs-backend-wasm kernels we replace (Conv2D, Conv2DBackpropInput, BatchMatMul; one run each, as the stock batched
// matmul takes ~10 s per attention product). The whole run takes ~1 min on 2 cores, ~2.5 min with --old.
import * as tf from '@tensorflow/tfjs';
import { parseBackendRequest, useBackend } from '../src/backend/backend.js';
import { benchConv, benchMatMul, type BenchRow } from './conv.js';

function parseArgs(argv: string[]): { backend?: string; old: boolean; runs: number; quick: boolean } {
  const out = { backend: undefined as string | undefined, old: false, runs: 3, quick: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--backend') out.backend = value();
    else if (flag === '--old') out.old = true;
    else if (flag === '--quick') out.quick = true;
    else if (flag === '--runs') out.runs = Math.max(1, Number.parseInt(value(), 10) || 1);
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write('usage: npm run bench -- [--backend wasm|cpu|node|gpu|auto] [--old] [--runs N] [--quick]\n');
      process.exit(0);
    } else throw new Error(`unknown argument '${a}'`);
  }
  return out;
}

function table(rows: BenchRow[], withStock: boolean): string {
  const head = ['op', 'shape', 'ms', 'GFLOP/s', 'vs fwd'];
  if (withStock) head.push('stock ms', 'stock GFLOP/s', 'speedup');
  const body = rows.map((r) => {
    const cells = [r.op, r.shape, r.ms.toFixed(1), r.gflops.toFixed(1), r.vsForward === undefined ? '' : r.vsForward.toFixed(2)];
    if (withStock) {
      cells.push(
        r.stockMs === undefined ? '' : r.stockMs.toFixed(1),
        r.stockGflops === undefined ? '' : r.stockGflops.toFixed(1),
        r.stockMs === undefined ? '' : `${(r.stockMs / r.ms).toFixed(1)}x`,
      );
    }
    return cells;
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((c) => c[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const request =
    args.backend !== undefined
      ? parseBackendRequest(args.backend, '--backend')
      : parseBackendRequest(process.env['SDTRAIN_BACKEND'] ?? 'wasm', 'SDTRAIN_BACKEND');
  const choice = await useBackend(request);
  const flags: string[] = [];
  if (choice.tfjsName === 'wasm') {
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    const threads = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    flags.push(`simd=${String(simd)}`, `threads=${String(threads)}`);
  }
  process.stdout.write(`sdtrain bench: backend ${choice.backend} (tfjs ${tf.version.tfjs}${flags.length ? ', ' + flags.join(', ') : ''}), median of ${args.runs} after a warm-up\n`);
  for (const note of choice.notes) process.stdout.write(`  ${note}\n`);
  const t0 = performance.now();
  const onStart = (what: string): void => {
    if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K  ${what}`);
  };
  const opts = { runs: args.runs, old: args.old, quick: args.quick, onStart };
  const rows = [...benchConv(opts), ...benchMatMul(opts)];
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const withStock = rows.some((r) => r.stockMs !== undefined);
  process.stdout.write(`\n${table(rows, withStock)}\n\n`);
  process.stdout.write(
    `'vs fwd': gradient GFLOP/s over the forward conv's (same FLOPs). ` +
      `${withStock ? "'stock': the tfjs-backend-wasm kernel we replace. " : ''}` +
      `Total ${((performance.now() - t0) / 1000).toFixed(0)} s.\n`,
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
