// `npm run bench`: conv2d forward / filter-gradient / input-gradient and batched-matmul GFLOP/s at U-Net shapes, and
// on request the full-size measurements.
//
//   npm run bench -- [--backend wasm|cpu|node|gpu|auto] [--old] [--runs N] [--quick]      the kernel table (default)
//                    [--load] [--unet [--unet-full] [--slice N]] [--sampling [--steps N] [--images N] [--tiny-only]]
//                    [--all]
//
// --backend (or SDTRAIN_BACKEND; the flag wins) picks the backend of the kernel table, default wasm. --old adds columns
// timing the stock tfjs-backend-wasm kernels we replace (Conv2D, Conv2DBackpropInput, BatchMatMul; one run each, as
// the stock batched matmul takes ~10 s per attention product). The table takes ~1 min on 2 cores, ~2.5 min with --old.
//
// --load: writes a random fp16 SD 1.5 checkpoint to a temp dir and loads it on cpu in a child process (bench/load.ts).
// --unet: the full SD 1.5 U-Net forward on latents [2, 64, 64, 4] with attention slicing (--slice, default 1), on
//   wasm if it fits, else cpu (bench/unet.ts); --backend wasm|cpu forces one. On cpu only conv_in + down_blocks.0
//   is timed unless --unet-full (the whole forward takes tens of minutes there).
// --sampling: seconds per step and per image for the tiny model (20 steps, --steps) with a leak check over --images
//   images (default 3), and for SD 1.5 at 512×512 (1 step timed, extrapolated; --tiny-only skips it), on the
//   backend `auto` picks from the memory estimate (bench/sampling.ts).
// --all: all of the above. Each full-size measurement runs in its own child process.
import { cpus, loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { formatBytes, parseBackendRequest, useBackend, type BackendRequest } from '../src/backend/backend.js';
import { benchConv, benchMatMul, type BenchRow } from './conv.js';
import { benchLoad } from './load.js';
import { benchSampling, type SamplingAttempt } from './sampling.js';
import { benchUnet, type UnetBenchResult } from './unet.js';

interface Args {
  backend?: string;
  old: boolean;
  runs: number;
  quick: boolean;
  conv: boolean;
  load: boolean;
  unet: boolean;
  unetFull: boolean;
  slice: number;
  sampling: boolean;
  steps: number;
  images: number;
  tinyOnly: boolean;
}

const USAGE =
  'usage: npm run bench -- [--backend wasm|cpu|node|gpu|auto] [--old] [--runs N] [--quick] [--conv]\n' +
  '                        [--load] [--unet [--unet-full] [--slice N]] [--sampling [--steps N] [--images N] [--tiny-only]] [--all]\n';

function parseArgs(argv: string[]): Args {
  const out: Args = {
    backend: undefined,
    old: false,
    runs: 3,
    quick: false,
    conv: false,
    load: false,
    unet: false,
    unetFull: false,
    slice: 1,
    sampling: false,
    steps: 20,
    images: 3,
    tinyOnly: false,
  };
  const int = (v: string, flag: string, min: number): number => {
    const n = Number.parseInt(v, 10);
    if (!Number.isFinite(n) || n < min) throw new Error(`${flag} needs a whole number >= ${min}, got '${v}'`);
    return n;
  };
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
    else if (flag === '--runs') out.runs = int(value(), flag, 1);
    else if (flag === '--conv') out.conv = true;
    else if (flag === '--load') out.load = true;
    else if (flag === '--unet') out.unet = true;
    else if (flag === '--unet-full') out.unet = out.unetFull = true;
    else if (flag === '--slice') out.slice = int(value(), flag, 0);
    else if (flag === '--sampling') out.sampling = true;
    else if (flag === '--steps') out.steps = int(value(), flag, 1);
    else if (flag === '--images') out.images = int(value(), flag, 2);
    else if (flag === '--tiny-only') out.tinyOnly = true;
    else if (flag === '--all') out.conv = out.load = out.unet = out.sampling = true;
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument '${a}'\n${USAGE}`);
  }
  if (!out.load && !out.unet && !out.sampling) out.conv = true;
  return out;
}

/** Aligned columns: the first `left` columns left-aligned, the rest right-aligned. */
function alignedTable(head: string[], body: string[][], left = 1): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((c) => (c[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i < left ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function convTable(rows: BenchRow[], withStock: boolean): string {
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
  return alignedTable(head, body, 2);
}

const progress = (what: string): void => {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K  ${what}`);
};
const clearProgress = (): void => {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
};
const out = (s: string): void => {
  process.stdout.write(s);
};
const secs = (s: number): string => (s >= 600 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(s < 10 ? 2 : 1)} s`);
const ratio = (a: number, b: number): string => (Number.isFinite(a / b) ? (a / b).toFixed(2) : '');
const loadLine = (): string => `load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`;

async function runConv(args: Args): Promise<void> {
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
  out(`kernels: backend ${choice.backend} (tfjs ${tf.version.tfjs}${flags.length ? ', ' + flags.join(', ') : ''}), median of ${args.runs} after a warm-up\n`);
  for (const note of choice.notes) out(`  ${note}\n`);
  const t0 = performance.now();
  const opts = { runs: args.runs, old: args.old, quick: args.quick, onStart: progress };
  const rows = [...benchConv(opts), ...benchMatMul(opts)];
  clearProgress();
  const withStock = rows.some((r) => r.stockMs !== undefined);
  out(`\n${convTable(rows, withStock)}\n\n`);
  out(
    `'vs fwd': gradient GFLOP/s over the forward conv's (same FLOPs). ` +
      `${withStock ? "'stock': the tfjs-backend-wasm kernel we replace. " : ''}` +
      `Total ${((performance.now() - t0) / 1000).toFixed(0)} s.\n\n`,
  );
}

async function runLoad(): Promise<void> {
  out('checkpoint load: SD 1.5 single file, random fp16 values, loaded on cpu in its own process (bench/load.ts)\n');
  progress('writing and loading a random SD 1.5 checkpoint');
  const r = await benchLoad();
  clearProgress();
  const body = [[secs(r.seconds), formatBytes(r.peakRssBytes), formatBytes(r.weightBytes), ratio(r.peakRssBytes, r.weightBytes), formatBytes(r.fileBytes), r.params.toLocaleString('en-US'), r.isolated ? 'yes' : 'no']];
  out(`\n${alignedTable(['seconds', 'peak RSS', 'weights (fp32)', 'RSS/weights', 'file', 'parameters', 'own process'], body, 0)}\n\n`);
}

function unetReport(r: UnetBenchResult): string {
  const head = ['backend', 'scope', 'result', 'forward', 'setup', 'peak RSS', 'tensors peak', 'estimate', 'est/peak', 'weights', 'RSS/weights', 'wasm heap'];
  const body = r.attempts.map((a) => {
    const scope = a.scope === 'full' ? 'full U-Net' : 'conv_in + down_blocks.0';
    const x = a.run;
    if (!x) return [a.backend, scope, a.outOfMemory ? 'out of memory' : 'failed', '', '', '', '', '', '', '', '', ''];
    return [
      a.backend,
      scope,
      'ok',
      secs(x.seconds),
      secs(x.setupSeconds),
      formatBytes(x.peakRssBytes),
      formatBytes(x.peakTensorBytes),
      Number.isFinite(x.estimateBytes) ? formatBytes(x.estimateBytes) : '',
      Number.isFinite(x.estimateBytes) ? ratio(x.estimateBytes, x.peakTensorBytes) : '',
      formatBytes(x.weightBytes),
      x.scope === 'full' ? ratio(x.peakRssBytes, x.weightBytes) : '', // (a partial scope's few weights make no ratio)
      x.wasmHeapBytes === undefined ? '' : formatBytes(x.wasmHeapBytes),
    ];
  });
  const lines = [alignedTable(head, body, 3)];
  for (const a of r.attempts) if (a.error) lines.push(`  ${a.backend}: ${a.error}`);
  const x = r.run;
  if (x && r.attentionSliceSize !== undefined && Number.isFinite(x.estimateUnslicedBytes)) {
    lines.push(
      `  estimate without slicing: ${formatBytes(x.estimateUnslicedBytes)} (est/peak ${ratio(x.estimateUnslicedBytes, x.peakTensorBytes)}): ` +
        `today's attention() keeps every slice's maps until the block ends (docs/backends.md, Memory)`,
    );
  }
  if (r.run?.scope === 'down0') lines.push('  cpu times conv_in + down_blocks.0 only (the whole forward takes tens of minutes there; --unet-full runs it)');
  return lines.join('\n');
}

async function runUnet(args: Args): Promise<void> {
  const backend = args.backend === 'wasm' || args.backend === 'cpu' ? args.backend : 'auto';
  out(
    `U-Net forward: SD 1.5 (860M parameters, random N(0, 0.02) weights), latents [2, 64, 64, 4], ` +
      `attention slice ${args.slice || 'off'}; ${backend === 'auto' ? 'wasm if it fits, else cpu' : backend}; each attempt in its own process (bench/unet.ts)\n`,
  );
  const r = await benchUnet({ backend, attentionSliceSize: args.slice, full: args.unetFull, onStart: progress });
  clearProgress();
  out(`\n${unetReport(r)}\n\n`);
}

function samplingReport(rs: SamplingAttempt[]): string {
  const head = ['model', 'backend', 'size', 'steps', 's/step', 'text', 'decode', 's/image', 'tensors peak', 'estimate', 'est/peak', 'peak RSS', 'leak check'];
  const body: string[][] = [];
  const notes: string[] = [];
  for (const a of rs) {
    const r = a.run;
    if (!r) {
      body.push([a.model, '', '', '', '', '', '', '', '', '', '', '', a.skipped ? 'skipped' : 'failed']);
      notes.push(`  ${a.model}: ${a.skipped ?? a.error}`);
      continue;
    }
    body.push([
      r.model,
      r.backend,
      `${r.width}×${r.height}`,
      r.extrapolated ? `${r.stepsTimed} (→${r.stepsPerImage})` : String(r.stepsTimed),
      secs(r.secondsPerStep),
      secs(r.textSeconds),
      secs(r.decodeSeconds),
      `${secs(r.secondsPerImage)}${r.extrapolated ? '*' : ''}`,
      formatBytes(r.peakTensorBytes),
      formatBytes(r.estimateBytes),
      ratio(r.estimateBytes, r.peakTensorBytes),
      formatBytes(r.peakRssBytes),
      r.images > 1 ? `${r.tensorsAfterFirst} → ${r.tensorsAfterLast} tensors over ${r.images} images: ${r.tensorsAfterFirst === r.tensorsAfterLast ? 'ok' : 'LEAK'}` : '',
    ]);
    for (const n of r.notes.filter((x) => x.startsWith('wasm'))) notes.push(`  ${r.model}: auto: ${n}`);
    if (r.extrapolated) notes.push(`  ${r.model}: * ${r.stepsTimed} step(s) timed; per image = text + ${r.stepsPerImage} × s/step + decode (extrapolated)`);
  }
  return [alignedTable(head, body, 4), ...notes].join('\n');
}

async function runSampling(args: Args): Promise<void> {
  const backend: BackendRequest = args.backend !== undefined ? parseBackendRequest(args.backend, '--backend') : 'auto';
  out(
    `sampling: euler, CFG 7.5 (one image, U-Net batch 2), per image = text encoding + steps + VAE decode; backend ${backend}` +
      `${backend === 'auto' ? ' (decided by the memory estimate)' : ''}; each model in its own process (bench/sampling.ts)\n`,
  );
  const r = await benchSampling({ backend, steps: args.steps, images: args.images, full: args.tinyOnly ? false : {}, onStart: progress });
  clearProgress();
  out(`\n${samplingReport(r)}\n\n`);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  out(`sdtrain bench: ${new Date().toISOString()}, ${cpus().length} cores, ${loadLine()}\n\n`);
  if (args.conv) await runConv(args);
  if (args.load) await runLoad();
  if (args.unet) await runUnet(args);
  if (args.sampling) await runSampling(args);
  out(`done in ${secs((performance.now() - t0) / 1000)}; ${loadLine()} at the end\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
