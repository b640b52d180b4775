// Conv2DBackpropInput for the wasm backend, replacing the stock kernel (a direct C++ loop that runs at ~1/8 of the
// forward conv's speed) with XNNPACK work, in one of two forms chosen by shape (see `useGemm`):
//
// 1. Phase convolutions on the backend's forward Conv2D:
// With y[ho] = sum_i x[ho*s - pt + i] W[i] (per spatial axis), the input gradient is
//   dx[h] = sum over taps i with (h + pt - i) divisible by s of dy[(h + pt - i) / s] W[i].
// Split the output rows by phase p = (h + pt) mod s ("sub-pixel" decomposition): only taps i = p + s*k contribute,
// and with u = (h + pt - p) / s,  dx[h] = sum_k dy[u - k] W[p + s*k]  -- a stride-1 correlation of dy with the phase's
// taps in reverse order, and in/out channels swapped. So each of the s*s phases (1 for stride 1) is one stride-1
// forward conv with exactly the taps it needs (no multiplications by inserted zeros), and the phases are then
// interleaved into dx. Rows a phase's window reads outside dy are the conv's zero padding (or cropped, if negative).
//
// 2. One GEMM and a scatter-add (`viaGemm`), for big filters over few pixels, where XNNPACK's conv is slow.
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { checkDyShape, chunkRows, convGeometry, requireNhwcFloat32, tapOffsets, type ConvAttrs, type ConvGeometry } from './conv_geometry.js';
import { alloc, free, heapF32, offsetOf, runWasm, TILE, transposeInHeap, view, zeros, type BackendWasm } from './wasm_helpers.js';

export const conv2DBackpropInputTuning = {
  /**
   * 'conv': the phase convolutions. 'gemm': one GEMM dcols = W . dy^T and a col2im scatter-add. 'auto' picks by
   * shape: XNNPACK's conv runs at ~half speed when the filter is large against the pixel count (measured 15 GFLOP/s
   * at [2,16,16,1280] 3x3 against 30 at [2,64,64,320]), where the GEMM form keeps ~30.
   */
  method: 'auto' as 'auto' | 'conv' | 'gemm',
  /** Upper bound on a dcols chunk (float32 elements; 16 MiB), as for the filter gradient's im2col. */
  chunkElements: 4 * 1024 * 1024,
  /** Lower bound on the pixels per chunk. */
  minChunkPixels: 512,
};

interface Conv2DBackpropInputAttrs extends ConvAttrs {
  inputShape: [number, number, number, number];
}

/** One phase along one spatial axis. */
interface AxisPhase {
  /** First dx index of this phase, and how many (every s-th). */
  first: number;
  count: number;
  /** Taps of this phase: p, p+s, ... (`taps` of them). */
  p: number;
  s: number;
  taps: number;
  /** dy window [lo, hi] read by the phase's conv, and how much of it lies before / after dy (zero padding). */
  lo: number;
  hi: number;
  padBefore: number;
  padAfter: number;
}

function axisPhase(p: number, s: number, pad: number, inSize: number, outSize: number, k: number): AxisPhase {
  const first = (((p - pad) % s) + s) % s;
  const count = first < inSize ? Math.ceil((inSize - first) / s) : 0;
  const taps = p < k ? Math.ceil((k - p) / s) : 0;
  const u0 = (first + pad - p) / s; // an integer by construction of `first`
  const wantLo = u0 - taps + 1;
  const wantHi = u0 + count - 1;
  const lo = Math.max(wantLo, 0);
  const hi = Math.min(wantHi, outSize - 1);
  return { first, count, p, s, taps, lo, hi, padBefore: lo - wantLo, padAfter: wantHi - hi };
}

function conv2DBackpropInput(args: { inputs: { dy: TensorInfo; filter: TensorInfo }; backend: BackendWasm; attrs: NamedAttrMap }): TensorInfo {
  const { backend } = args;
  const { dy, filter } = args.inputs;
  const attrs = args.attrs as unknown as Conv2DBackpropInputAttrs;
  requireNhwcFloat32('Conv2DBackpropInput', attrs.dataFormat, dy.dtype, filter.dtype);
  const g = convGeometry(attrs.inputShape, filter.shape, attrs);
  checkDyShape('Conv2DBackpropInput', dy.shape, g);
  const { N, H, W, Cin, Ho, Wo, Cout, KH, KW, sh, sw, pt, pl } = g;
  const dxShape = [N, H, W, Cin];
  if (useGemm(N * Ho * Wo, KH * KW * Cin)) return viaGemm(backend, dy, filter, g);

  // The filter with in/out channels swapped: [KH, KW, Cin, Cout] -> [KH, KW, Cout, Cin]; phases copy taps out of it.
  const tapSize = Cout * Cin;
  const filterT = alloc(backend, [KH, KW, Cout, Cin]);
  transposeInHeap(heapF32(backend), offsetOf(backend, filter), offsetOf(backend, filterT), KH * KW, Cin, Cout);

  let dx: TensorInfo | undefined;
  try {
    for (let ph = 0; ph < sh; ph++) {
      const ay = axisPhase(ph, sh, pt, H, Ho, KH);
      for (let pw = 0; pw < sw; pw++) {
        const ax = axisPhase(pw, sw, pl, W, Wo, KW);
        if (ay.count === 0 || ax.count === 0) continue; // no dx pixels in this phase (input smaller than stride)
        const empty = ay.taps === 0 || ax.taps === 0 || ay.lo > ay.hi || ax.lo > ax.hi || N * Cin === 0 || Cout === 0;
        if (sh === 1 && sw === 1 && !empty) {
          // Stride 1: the single phase's conv output is dx itself.
          dx = phaseConv(backend, dy, filterT, ay, ax, [N, Ho, Wo, Cout], KW, tapSize);
          continue;
        }
        dx ??= alloc(backend, dxShape);
        if (empty) {
          // No tap reaches these dx pixels: their gradient is zero.
          scatter(backend, undefined, dx, ay, ax, [N, H, W, Cin]);
          continue;
        }
        const part = phaseConv(backend, dy, filterT, ay, ax, [N, Ho, Wo, Cout], KW, tapSize);
        scatter(backend, part, dx, ay, ax, [N, H, W, Cin]);
        free(backend, part);
      }
    }
    // Degenerate: nothing to compute (e.g. an empty input); still a well-formed zero tensor.
    dx ??= zeros(backend, dxShape);
  } catch (e) {
    free(backend, dx);
    throw e;
  } finally {
    free(backend, filterT);
  }
  return dx;
}

/** The stride-1 conv of one phase: returns [N, ay.count, ax.count, Cin]. */
function phaseConv(
  backend: BackendWasm,
  dy: TensorInfo,
  filterT: TensorInfo,
  ay: AxisPhase,
  ax: AxisPhase,
  dyShape: [number, number, number, number],
  KW: number,
  tapSize: number,
): TensorInfo {
  const [N, Ho, Wo, Cout] = dyShape;
  const Cin = tapSize / Cout;
  // Sub-filter [ay.taps, ax.taps, Cout, Cin]: tap (a, b) is filter tap (p + s*(taps-1-a), ...): the phase's taps
  // in reverse order, because the conv correlates forwards over dy while dx looks back (dy[u - k]).
  const sub = alloc(backend, [ay.taps, ax.taps, Cout, Cin]);
  {
    const heap = heapF32(backend);
    const fOff = offsetOf(backend, filterT);
    const sOff = offsetOf(backend, sub);
    for (let a = 0; a < ay.taps; a++) {
      const i = ay.p + ay.s * (ay.taps - 1 - a);
      for (let b = 0; b < ax.taps; b++) {
        const j = ax.p + ax.s * (ax.taps - 1 - b);
        const src = fOff + (i * KW + j) * tapSize;
        heap.copyWithin(sOff + (a * ax.taps + b) * tapSize, src, src + tapSize);
      }
    }
  }
  // Crop dy to the window the phase reads when that window starts/ends inside dy.
  let input = dy;
  const cropped = ay.lo > 0 || ay.hi < Ho - 1 || ax.lo > 0 || ax.hi < Wo - 1;
  if (cropped) {
    input = runWasm(
      backend,
      'Slice',
      { x: dy },
      { begin: [0, ay.lo, ax.lo, 0], size: [N, ay.hi - ay.lo + 1, ax.hi - ax.lo + 1, Cout] },
    );
  }
  try {
    const out = runWasm(
      backend,
      'Conv2D',
      { x: input, filter: sub },
      {
        strides: [1, 1],
        pad: [
          [0, 0],
          [ay.padBefore, ay.padAfter],
          [ax.padBefore, ax.padAfter],
          [0, 0],
        ],
        dataFormat: 'NHWC',
        dilations: [1, 1],
      },
    );
    if (out.shape[1] !== ay.count || out.shape[2] !== ax.count) {
      free(backend, out);
      throw new Error(`Conv2DBackpropInput: phase conv gave [${out.shape}], expected ${ay.count}x${ax.count}`);
    }
    return out;
  } finally {
    free(backend, sub);
    if (cropped) free(backend, input);
  }
}

/**
 * Write one phase's result [N, ay.count, ax.count, Cin] (or zeros, if `part` is undefined) into its pixels of dx:
 * dx[n, ay.first + ay.s*a, ax.first + ax.s*b, :].
 */
function scatter(
  backend: BackendWasm,
  part: TensorInfo | undefined,
  dx: TensorInfo,
  ay: AxisPhase,
  ax: AxisPhase,
  dxShape: [number, number, number, number],
): void {
  const [N, H, W, Cin] = dxShape;
  const heap = heapF32(backend);
  const dxOff = offsetOf(backend, dx);
  const pOff = part === undefined ? 0 : offsetOf(backend, part);
  let src = pOff;
  for (let n = 0; n < N; n++) {
    for (let a = 0; a < ay.count; a++) {
      const rowBase = dxOff + ((n * H + ay.first + ay.s * a) * W + ax.first) * Cin;
      if (ax.s === 1) {
        // Stride 1 along the width: the phase's row is one contiguous run of dx.
        const len = ax.count * Cin;
        if (part === undefined) heap.fill(0, rowBase, rowBase + len);
        else heap.copyWithin(rowBase, src, src + len);
        src += len;
        continue;
      }
      for (let b = 0; b < ax.count; b++) {
        const dst = rowBase + ax.s * b * Cin;
        if (part === undefined) heap.fill(0, dst, dst + Cin);
        else heap.copyWithin(dst, src, src + Cin);
        src += Cin;
      }
    }
  }
}

/** Whether to take the GEMM path for M output pixels and K = KH*KW*Cin filter rows. */
function useGemm(M: number, K: number): boolean {
  const method = conv2DBackpropInputTuning.method;
  if (method !== 'auto') return method === 'gemm';
  // Measured (U-Net shapes, 3x3 and 1x1): the GEMM form wins from K/M ~ 3-5 up (1.7x at [2,16,16,1280], 3.6x at
  // [2,8,8,1280]), the phase convs below that (1.15x at [2,64,64,320], 1.6x at [1,256,256,128]).
  return K > 4 * M;
}

/**
 * dx by GEMM: dcolsT [K, M] = W [K, Cout] . dy^T [Cout, M] (row (i,j,c) of dcolsT is what pixel m sends to
 * x[n, ho*sh+i-pt, wo*sw+j-pl, c]), then a scatter-add of dcolsT into dx (col2im). Chunked over output rows.
 */
function viaGemm(backend: BackendWasm, dy: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  const { N, H, W, Cin, Ho, Wo, Cout, KH, KW } = g;
  const K = KH * KW * Cin;
  const rows = N * Ho;
  const rowsPerChunk = chunkRows(rows, Wo, K, conv2DBackpropInputTuning);
  const dx = zeros(backend, [N, H, W, Cin]); // col2im accumulates
  try {
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      const Mc = (r1 - r0) * Wo;
      // dy rows [Mc, Cout] -> dyT [Cout, Mc]: the GEMM's right operand (XNNPACK packs it; Cout x Mc is small).
      const dyT = alloc(backend, [1, Cout, Mc]);
      let dcolsT: TensorInfo | undefined;
      try {
        transposeInHeap(heapF32(backend), offsetOf(backend, dy) + r0 * Wo * Cout, offsetOf(backend, dyT), 1, Mc, Cout);
        // [1, K, Cout] (the HWIO filter as is) . [1, Cout, Mc] -> [1, K, Mc]
        dcolsT = runWasm(backend, 'BatchMatMul', { a: view(filter, [1, K, Cout]), b: dyT }, { transposeA: false, transposeB: false });
        free(backend, dyT); // early, to lower the peak; freeing it again below is a no-op
        col2imT(heapF32(backend), offsetOf(backend, dcolsT), offsetOf(backend, dx), g, r0, r1);
      } finally {
        free(backend, dyT, dcolsT);
      }
    }
  } catch (e) {
    free(backend, dx);
    throw e;
  }
  return dx;
}

/**
 * dx[n, h, w, c] += dcolsT[(i*KW + j)*Cin + c, m] for each output pixel m = (n, ho, wo) of rows [r0, r1) and tap (i, j)
 * with (h, w) = (ho*sh+i-pt, wo*sw+j-pl) inside x. Tiled: a tile reads 32 pixels x 32 channels of dcolsT (columns)
 * and adds them into 32 contiguous channel runs of dx.
 */
function col2imT(heap: Float32Array, src0: number, dx0: number, g: ConvGeometry, r0: number, r1: number): void {
  const { Cin, Wo, KH, KW } = g;
  const Mc = (r1 - r0) * Wo;
  const dst = new Int32Array(Mc); // per pixel: offset in dx of the channel vector its tap lands on, or -1 (padding)
  for (let i = 0; i < KH; i++) {
    for (let j = 0; j < KW; j++) {
      tapOffsets(dst, dx0, g, i, j, r0, r1);
      const tapBase = src0 + (i * KW + j) * Cin * Mc;
      for (let m0 = 0; m0 < Mc; m0 += TILE) {
        const m1 = Math.min(Mc, m0 + TILE);
        for (let c0 = 0; c0 < Cin; c0 += TILE) {
          const c1 = Math.min(Cin, c0 + TILE);
          for (let m = m0; m < m1; m++) {
            const d = dst[m]!;
            if (d < 0) continue;
            let s = tapBase + c0 * Mc + m;
            for (let c = c0; c < c1; c++, s += Mc) heap[d + c] = heap[d + c]! + heap[s]!;
          }
        }
      }
    }
  }
}

export const conv2DBackpropInputConfig: KernelConfig = {
  kernelName: 'Conv2DBackpropInput',
  backendName: 'wasm',
  kernelFunc: conv2DBackpropInput as unknown as KernelFunc,
};
