// Conv2D for the wasm backend: the stock XNNPACK convolution, except for big filters over few pixels, where it runs at
// ~half speed (measured 15 GFLOP/s at [2,16,16,1280] 3x3 and 8 at [2,8,8,1280], against ~32 at [2,64,64,320]): the
// 1280-channel levels of the U-Net, which carry about a third of its conv FLOPs. There we sum one GEMM per filter tap:
//   y [M, Cout] = sum over taps (i,j) of x_ij [M, Cin] . W[i,j] [Cin, Cout]
// where x_ij is x shifted by the tap (zero outside). Why per tap and not one im2col GEMM: XNNPACK's GEMM is as slow
// as its conv when the right operand is tall and wide (11520x1280 here: 19 GFLOP/s), and fast when it is one tap's
// [Cin, Cout] (32 GFLOP/s); and W[i,j] is a contiguous block of the HWIO filter, so it is used in place.
import { backend_util, type KernelConfig, type KernelFunc, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs';
import { chunkRows, convGeometry, type ConvAttrs, type ConvGeometry } from './conv_geometry.js';
import { aliasOf, alloc, free, freeAlias, heapF32, offsetOf, runWasm, type BackendWasm } from './wasm_helpers.js';

export const conv2DTuning = {
  /** 'xnnpack': always the stock kernel; 'gemm': always the per-tap GEMMs (for tests); 'auto': by shape. */
  method: 'auto' as 'auto' | 'xnnpack' | 'gemm',
  /** Upper bound on a tap's window chunk (float32 elements; 16 MiB). */
  chunkElements: 4 * 1024 * 1024,
  /** Lower bound on the pixels per chunk. */
  minChunkPixels: 64,
};

interface Conv2DAttrs extends ConvAttrs {
  dilations: number | [number, number];
}

/** Whether to take the per-tap GEMMs for M output pixels, K = KH*KW*Cin filter rows and Cout columns. */
function useGemm(M: number, K: number, Cout: number): boolean {
  const method = conv2DTuning.method;
  if (method !== 'auto') return method === 'gemm';
  // Measured with a fresh filter per call (as in training): the per-tap GEMMs are 1.5x faster at [2,16,16,1280] 3x3
  // (K/M = 22) and 2.3x at [2,8,8,1280] (K/M = 90); even at K/M ~ 6-11; slower below (0.8x at [2,64,64,320]).
  // Below ~16M multiply-adds the per-tap calls' overhead eats the gain (even at 4.7M, K/M = 36), so stay stock.
  return K > 8 * M && M * K * Cout >= 16 * 1024 * 1024;
}

function conv2d(args: { inputs: { x: TensorInfo; filter: TensorInfo }; backend: BackendWasm; attrs: NamedAttrMap }): TensorInfo {
  const { backend } = args;
  const { x, filter } = args.inputs;
  const attrs = args.attrs as unknown as Conv2DAttrs;
  const stock = (): TensorInfo => runWasm(backend, 'Conv2D', { x, filter }, args.attrs);
  const dilations = typeof attrs.dilations === 'number' ? [attrs.dilations, attrs.dilations] : (attrs.dilations ?? [1, 1]);
  if (
    x.dtype !== 'float32' ||
    filter.dtype !== 'float32' ||
    dilations[0] !== 1 ||
    dilations[1] !== 1 ||
    backend_util.convertConv2DDataFormat(attrs.dataFormat) !== 'channelsLast'
  ) {
    return stock();
  }
  const g = convGeometry(x.shape, filter.shape, attrs);
  const { N, Cin, Ho, Wo, Cout, KH, KW } = g;
  const K = KH * KW * Cin;
  const rows = N * Ho; // one "row" = Wo output pixels; chunks are whole rows
  if (rows * Wo === 0 || K === 0 || Cout === 0 || !useGemm(rows * Wo, K, Cout)) return stock();

  const rowsPerChunk = chunkRows(rows, Wo, Cin, conv2DTuning);
  const y = alloc(backend, [N, Ho, Wo, Cout]);
  try {
    for (let i = 0; i < KH; i++) {
      for (let j = 0; j < KW; j++) {
        const first = i === 0 && j === 0;
        // W[i,j] [Cin, Cout], in place. An alias (fresh id): XNNPACK packs it once for all chunks of this call and
        // drops the packed copy when the alias is freed.
        const wTap = aliasOf(backend, filter, (i * KW + j) * Cin * Cout, [1, Cin, Cout]);
        try {
          for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
            const r1 = Math.min(rows, r0 + rowsPerChunk);
            const Mc = (r1 - r0) * Wo;
            const xTap = alloc(backend, [1, Mc, Cin]);
            let part: TensorInfo | undefined;
            try {
              tapWindow(heapF32(backend), offsetOf(backend, x), offsetOf(backend, xTap), g, i, j, r0, r1);
              // [1, Mc, Cin] . [1, Cin, Cout] -> [1, Mc, Cout] on the XNNPACK GEMM.
              part = runWasm(backend, 'BatchMatMul', { a: xTap, b: wTap }, { transposeA: false, transposeB: false });
              const heap = heapF32(backend);
              const src = offsetOf(backend, part);
              const dst = offsetOf(backend, y) + r0 * Wo * Cout;
              if (first) heap.copyWithin(dst, src, src + Mc * Cout);
              else for (let k = 0; k < Mc * Cout; k++) heap[dst + k] = heap[dst + k]! + heap[src + k]!;
            } finally {
              free(backend, xTap, part);
            }
          }
        } finally {
          freeAlias(backend, wTap);
        }
      }
    }
  } catch (e) {
    free(backend, y);
    throw e;
  }
  return y;
}

/**
 * Fill dst [(r1-r0)*Wo, Cin] with what tap (i, j) reads for output rows [r0, r1): x[n, ho*sh+i-pt, wo*sw+j-pl, :],
 * 0 outside x. For stride 1 a row's window is one contiguous run of x.
 */
function tapWindow(heap: Float32Array, x0: number, dst0: number, g: ConvGeometry, i: number, j: number, r0: number, r1: number): void {
  const { H, W, Cin, Ho, Wo, sh, sw, pt, pl } = g;
  // Output columns wo whose input column wo*sw+j-pl is inside x; the rest read the zero padding.
  const woLo = Math.min(Wo, Math.max(0, Math.ceil((pl - j) / sw)));
  const woHi = Math.max(woLo, Math.min(Wo, Math.floor((W - 1 - j + pl) / sw) + 1));
  for (let r = r0; r < r1; r++) {
    const n = Math.floor(r / Ho);
    const h = (r % Ho) * sh + i - pt;
    const dst = dst0 + (r - r0) * Wo * Cin;
    if (h < 0 || h >= H) {
      heap.fill(0, dst, dst + Wo * Cin);
      continue;
    }
    if (woLo > 0) heap.fill(0, dst, dst + woLo * Cin);
    if (woHi < Wo) heap.fill(0, dst + woHi * Cin, dst + Wo * Cin);
    const srcRow = x0 + (n * H + h) * W * Cin;
    if (sw === 1) {
      const src = srcRow + (woLo + j - pl) * Cin;
      heap.copyWithin(dst + woLo * Cin, src, src + (woHi - woLo) * Cin);
    } else {
      for (let wo = woLo; wo < woHi; wo++) {
        const src = srcRow + (wo * sw + j - pl) * Cin;
        heap.copyWithin(dst + wo * Cin, src, src + Cin);
      }
    }
  }
}

export const conv2DConfig: KernelConfig = {
  kernelName: 'Conv2D',
  backendName: 'wasm',
  kernelFunc: conv2d as unknown as KernelFunc,
};
