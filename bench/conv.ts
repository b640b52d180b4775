// Conv2D forward / filter-gradient / input-gradient and batched-matmul throughput at Stable-Diffusion U-Net shapes, on
// the active backend. Returns rows; `run.ts` prints them.
import * as tf from '@tensorflow/tfjs';
import { stockKernel } from '../src/backend/kernels/wasm_helpers.js';

export interface BenchRow {
  /** e.g. 'conv fwd', 'conv dW', 'conv dX', 'matmul'. */
  op: string;
  shape: string;
  flops: number;
  /** Median wall time of `runs` runs, after a warm-up run. */
  ms: number;
  gflops: number;
  /** GFLOP/s relative to the forward conv of the same shape (gradient rows only). */
  vsForward?: number;
  /** The stock tfjs-backend-wasm kernel for the same op, where we replaced it (with `old`; one run). */
  stockMs?: number;
  stockGflops?: number;
}

export interface BenchOptions {
  /** Timed runs per measurement (median); default 3. */
  runs?: number;
  /** Also time the stock wasm kernels we replaced (Conv2DBackpropInput, BatchMatMul). Slow: one run each. */
  old?: boolean;
  /** Only the first conv shape and the first matmul (a smoke test). */
  quick?: boolean;
  /** Called before each measurement (progress display). */
  onStart?: (what: string) => void;
}

interface ConvShape {
  x: [number, number, number, number];
  k: number;
  cout: number;
  stride: number;
  pad: 'same' | [[number, number], [number, number], [number, number], [number, number]];
}

/** U-Net convs: ResNet-block 3x3s at the 64/32/16/8 latent levels, the stride-2 downsample, a 1x1 skip projection. */
export const CONV_SHAPES: ConvShape[] = [
  { x: [2, 64, 64, 320], k: 3, cout: 320, stride: 1, pad: 'same' },
  { x: [2, 32, 32, 640], k: 3, cout: 640, stride: 1, pad: 'same' },
  { x: [2, 16, 16, 1280], k: 3, cout: 1280, stride: 1, pad: 'same' },
  { x: [2, 8, 8, 1280], k: 3, cout: 1280, stride: 1, pad: 'same' },
  // SD's Downsample2D: stride 2 with padding (0, 1) on each spatial axis.
  { x: [2, 64, 64, 320], k: 3, cout: 320, stride: 2, pad: [[0, 0], [0, 1], [0, 1], [0, 0]] },
  { x: [2, 32, 32, 640], k: 1, cout: 320, stride: 1, pad: 'same' },
];

interface MatMulShape {
  a: number[];
  b: number[];
  transposeA: boolean;
  transposeB: boolean;
  note: string;
}

/** Attention at the 64x64 and 32x32 levels (batch 2 x 8 heads) and a 320-wide linear layer over 8192 tokens. */
export const MATMUL_SHAPES: MatMulShape[] = [
  { a: [16, 4096, 40], b: [16, 40, 4096], transposeA: false, transposeB: false, note: 'attn scores' },
  { a: [16, 4096, 40], b: [16, 4096, 40], transposeA: false, transposeB: true, note: 'attn q.kT' },
  { a: [16, 4096, 4096], b: [16, 4096, 40], transposeA: false, transposeB: false, note: 'attn p.v' },
  { a: [16, 4096, 4096], b: [16, 4096, 40], transposeA: true, transposeB: false, note: 'attn grad pT.dy' },
  { a: [16, 1024, 80], b: [16, 80, 1024], transposeA: false, transposeB: false, note: 'attn scores 32x32' },
  { a: [8192, 320], b: [320, 320], transposeA: false, transposeB: false, note: 'linear' },
  { a: [8192, 320], b: [320, 320], transposeA: false, transposeB: true, note: 'linear, torch layout' },
  { a: [8192, 320], b: [8192, 320], transposeA: true, transposeB: false, note: 'linear grad xT.dy' },
];

/** Make the backend finish `t` (reading one value is enough: wasm and cpu run kernels synchronously anyway). */
function settle(t: tf.TensorInfo): void {
  const backend = tf.backend() as unknown as { readSync(dataId: object, start?: number, end?: number): unknown };
  if (tf.getBackend() === 'wasm') backend.readSync(t.dataId, 0, 1);
  else backend.readSync(t.dataId);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Median ms of `runs` calls of `f` after one warm-up; `f` returns a tensor we settle and dispose. */
function time(f: () => tf.Tensor, runs: number, warmup = true): number {
  if (warmup) tf.dispose(f());
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = f();
    settle(r);
    ts.push(performance.now() - t0);
    r.dispose();
  }
  return median(ts);
}

/** Time a stock (replaced) wasm kernel called directly at the backend level; its output is freed there. */
function timeStock(name: string, inputs: Record<string, tf.Tensor>, attrs: tf.NamedAttrMap): number {
  const backend = tf.backend() as unknown as { disposeData(dataId: object): void };
  const t0 = performance.now();
  const out = stockKernel(name).kernelFunc({ inputs, backend: tf.backend(), attrs }) as tf.TensorInfo;
  settle(out);
  const ms = performance.now() - t0;
  backend.disposeData(out.dataId);
  return ms;
}

/** Uniform(-1, 1) data; large tensors tile a smaller random block (JS random numbers are slow at 10^8 elements). */
function data(shape: number[]): tf.Tensor {
  return tf.tidy(() => {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size <= 1 << 24 || shape.length < 2) return tf.randomUniform(shape, -1, 1);
    const block = tf.randomUniform([1, ...shape.slice(1)], -1, 1);
    return tf.tile(block, [shape[0]!, ...shape.slice(1).map(() => 1)]);
  });
}

const gflops = (flops: number, ms: number): number => flops / ms / 1e6;
const padLabel = (p: ConvShape['pad']): string => (typeof p === 'string' ? p : `[${p[1]}],[${p[2]}]`);

export function benchConv(opts: BenchOptions = {}): BenchRow[] {
  const runs = opts.runs ?? 3;
  const stockAvailable = opts.old === true && tf.getBackend() === 'wasm';
  const rows: BenchRow[] = [];
  for (const s of opts.quick === true ? CONV_SHAPES.slice(0, 1) : CONV_SHAPES) {
    const cin = s.x[3];
    const filterShape: [number, number, number, number] = [s.k, s.k, cin, s.cout];
    const shape = `x[${s.x}] ${s.k}x${s.k} ${cin}->${s.cout} s${s.stride} ${padLabel(s.pad)}`;
    const x = data(s.x) as tf.Tensor4D;
    const w = data(filterShape) as tf.Tensor4D;
    const dy = tf.tidy(() => tf.conv2d(x, w, s.stride, s.pad)) as tf.Tensor4D;
    const flops = 2 * dy.size * s.k * s.k * cin;
    const attrs = { strides: s.stride, pad: s.pad, dataFormat: 'NHWC' } as unknown as tf.NamedAttrMap;
    try {
      opts.onStart?.(`conv fwd ${shape}`);
      const fwdMs = time(() => tf.conv2d(x, w, s.stride, s.pad), runs);
      const fwdRow: BenchRow = { op: 'conv fwd', shape, flops, ms: fwdMs, gflops: gflops(flops, fwdMs) };
      if (stockAvailable) {
        opts.onStart?.(`conv fwd (stock) ${shape}`);
        // A fresh filter, so the stock kernel's one run includes packing it, as ours (and training) always does.
        const wFresh = tf.add(w, 0); // new data: the stock kernel caches its packed filter per tensor
        const fwdAttrs = { ...attrs, dilations: 1 } as tf.NamedAttrMap;
        fwdRow.stockMs = timeStock('Conv2D', { x, filter: wFresh }, fwdAttrs);
        fwdRow.stockGflops = gflops(flops, fwdRow.stockMs);
        wFresh.dispose();
      }
      rows.push(fwdRow);

      opts.onStart?.(`conv dW ${shape}`);
      const dwMs = time(
        () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape } as tf.NamedAttrMap) as tf.Tensor,
        runs,
      );
      rows.push({ op: 'conv dW', shape, flops, ms: dwMs, gflops: gflops(flops, dwMs), vsForward: fwdMs / dwMs });

      opts.onStart?.(`conv dX ${shape}`);
      const dxAttrs = { ...attrs, inputShape: s.x } as tf.NamedAttrMap;
      const dxMs = time(() => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, dxAttrs) as tf.Tensor, runs);
      const dxRow: BenchRow = { op: 'conv dX', shape, flops, ms: dxMs, gflops: gflops(flops, dxMs), vsForward: fwdMs / dxMs };
      if (stockAvailable) {
        opts.onStart?.(`conv dX (stock) ${shape}`);
        dxRow.stockMs = timeStock('Conv2DBackpropInput', { dy, filter: w }, dxAttrs);
        dxRow.stockGflops = gflops(flops, dxRow.stockMs);
      }
      rows.push(dxRow);
    } finally {
      tf.dispose([x, w, dy]);
    }
  }
  return rows;
}

export function benchMatMul(opts: BenchOptions = {}): BenchRow[] {
  const runs = opts.runs ?? 3;
  const stockAvailable = opts.old === true && tf.getBackend() === 'wasm';
  const rows: BenchRow[] = [];
  for (const s of opts.quick === true ? MATMUL_SHAPES.slice(0, 1) : MATMUL_SHAPES) {
    const a = data(s.a);
    const b = data(s.b);
    const t = (tr: boolean): string => (tr ? 'T' : '');
    const shape = `[${s.a}]${t(s.transposeA)} x [${s.b}]${t(s.transposeB)} (${s.note})`;
    const m = s.transposeA ? s.a.at(-1)! : s.a.at(-2)!;
    const k = s.transposeA ? s.a.at(-2)! : s.a.at(-1)!;
    const n = s.transposeB ? s.b.at(-2)! : s.b.at(-1)!;
    const batch = Math.max(s.a.slice(0, -2).reduce((p, q) => p * q, 1), s.b.slice(0, -2).reduce((p, q) => p * q, 1));
    const flops = 2 * batch * m * k * n;
    try {
      opts.onStart?.(`matmul ${shape}`);
      const ms = time(() => tf.matMul(a, b, s.transposeA, s.transposeB), runs);
      const row: BenchRow = { op: 'matmul', shape, flops, ms, gflops: gflops(flops, ms) };
      if (stockAvailable) {
        opts.onStart?.(`matmul (stock) ${shape}`);
        row.stockMs = timeStock('BatchMatMul', { a, b }, { transposeA: s.transposeA, transposeB: s.transposeB });
        row.stockGflops = gflops(flops, row.stockMs);
      }
      rows.push(row);
    } finally {
      tf.dispose([a, b]);
    }
  }
  return rows;
}
