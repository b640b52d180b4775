// Conv2DBackpropFilter for the wasm backend (tfjs-backend-wasm 4.22 has none, so `tf.grad` of a conv2d throws).
//
// dW[i,j,c,o] = sum over output pixels m=(n,ho,wo) of x[n, ho*sh+i-pt, wo*sw+j-pl, c] * dy[m, o], i.e. one GEMM
//   dW [KH*KW*Cin, Cout] = colsT [KH*KW*Cin, M] . dy [M, Cout]
// where colsT is the (transposed) im2col matrix of x. The GEMM runs on the wasm backend's BatchMatMul, whose only fast
// path (XNNPACK) is "batch 1, no transposes", and which packs its right operand on every new tensor: so the right
// operand is dy (Cout columns: cheap to pack) and we build colsT explicitly. Measured at U-Net shapes, the other
// orientation (packing the im2col matrix) runs at half the speed. The GEMM is ~85% of the time; building colsT (im2col
// and transpose fused into one tiled JS pass) the rest. Over the output pixels it is chunked, and the chunks summed.
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { checkDyShape, chunkRows, convGeometry, requireNhwcFloat32, tapOffsets, type ConvAttrs, type ConvGeometry } from './conv_geometry.js';
import { aliasOf, alloc, free, freeAlias, heapF32, offsetOf, runWasm, TILE, view, zeros, type BackendWasm } from './wasm_helpers.js';

export const conv2DBackpropFilterTuning = {
  /**
   * Upper bound on an im2col chunk, in float32 elements (16 MiB). Why chunk: the full matrix is KH*KW times the size
   * of x, which for large activations (e.g. a VAE at 512 px) would not fit the heap. Why this size: measured at the
   * U-Net shapes, chunks from 8 to 256 MiB all run at the same speed (a GEMM reduction of ~1.5k pixels is enough).
   */
  chunkElements: 4 * 1024 * 1024,
  /** Lower bound on the pixels (GEMM reduction length) per chunk, so the GEMM is not starved by tiny chunks. */
  minChunkPixels: 512,
};

interface Conv2DBackpropFilterAttrs extends ConvAttrs {
  filterShape: [number, number, number, number];
}

function conv2DBackpropFilter(args: { inputs: { x: TensorInfo; dy: TensorInfo }; backend: BackendWasm; attrs: NamedAttrMap }): TensorInfo {
  const { backend } = args;
  const { x, dy } = args.inputs;
  const attrs = args.attrs as unknown as Conv2DBackpropFilterAttrs;
  requireNhwcFloat32('Conv2DBackpropFilter', attrs.dataFormat, x.dtype, dy.dtype);
  const geom = convGeometry(x.shape, attrs.filterShape, attrs);
  checkDyShape('Conv2DBackpropFilter', dy.shape, geom);
  const { N, Cin, Ho, Wo, KH, KW } = geom;
  const K = KH * KW * Cin; // rows of dW (HWIO flattened over H, W, I)
  const rows = N * Ho; // one "row" = Wo output pixels; chunks are whole rows
  if (rows * Wo === 0) return zeros(backend, attrs.filterShape);
  const rowsPerChunk = chunkRows(rows, Wo, K, conv2DBackpropFilterTuning);

  let acc: TensorInfo | undefined; // [1, K, Cout], the sum over chunks so far
  try {
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      const part = chunkProduct(backend, x, dy, geom, r0, r1);
      if (acc === undefined) {
        acc = part;
        continue;
      }
      const sum = backend.typedArrayFromHeap(acc) as Float32Array;
      const add = backend.typedArrayFromHeap(part) as Float32Array;
      for (let k = 0; k < sum.length; k++) sum[k] = sum[k]! + add[k]!;
      free(backend, part);
    }
  } catch (e) {
    free(backend, acc);
    throw e;
  }
  // [1, K, Cout] is [KH, KW, Cin, Cout] in memory.
  return { dataId: acc!.dataId, shape: [...attrs.filterShape], dtype: 'float32' };
}

/** colsT . dy over output rows [r0, r1) (row = one output image row, Wo pixels): returns [1, K, Cout]. */
function chunkProduct(
  backend: BackendWasm,
  x: TensorInfo,
  dy: TensorInfo,
  g: ConvGeometry,
  r0: number,
  r1: number,
): TensorInfo {
  const { Cin, Wo, Cout, KH, KW } = g;
  const K = KH * KW * Cin;
  const Mc = (r1 - r0) * Wo;
  const colsT = alloc(backend, [K, Mc]);
  // Rows r0..r1 of dy [M, Cout], in place. Why an alias and not `dy` itself: BatchMatMul caches its packed right
  // operand keyed on the tensor id until that tensor is freed; the alias's cache dies with the alias.
  const dyChunk = aliasOf(backend, dy, r0 * Wo * Cout, [1, Mc, Cout]);
  try {
    im2colT(heapF32(backend), offsetOf(backend, x), offsetOf(backend, colsT), g, r0, r1);
    // [1, K, Mc] . [1, Mc, Cout] -> [1, K, Cout] (batch 1, no transposes: the XNNPACK path).
    return runWasm(backend, 'BatchMatMul', { a: view(colsT, [1, K, Mc]), b: dyChunk }, { transposeA: false, transposeB: false });
  } finally {
    free(backend, colsT);
    freeAlias(backend, dyChunk);
  }
}

/**
 * Fill colsT [taps*Cin, Mc] (at element offset `dst0` of `heap`; row (i,j,c), column = output pixel of rows
 * [r0, r1)) from x (at `x0`); padding reads as 0. Im2col and its transpose in one tiled pass: each pixel's Cin
 * channels are contiguous in x and go down one column of colsT.
 */
function im2colT(heap: Float32Array, x0: number, dst0: number, g: ConvGeometry, r0: number, r1: number): void {
  const { Cin, Wo, KH, KW } = g;
  const Mc = (r1 - r0) * Wo;
  const src = new Int32Array(Mc); // per pixel: offset of its tap's channel vector in x, or -1 (padding)
  for (let i = 0; i < KH; i++) {
    for (let j = 0; j < KW; j++) {
      tapOffsets(src, x0, g, i, j, r0, r1);
      const tapBase = dst0 + (i * KW + j) * Cin * Mc;
      for (let m0 = 0; m0 < Mc; m0 += TILE) {
        const m1 = Math.min(Mc, m0 + TILE);
        for (let c0 = 0; c0 < Cin; c0 += TILE) {
          const c1 = Math.min(Cin, c0 + TILE);
          for (let m = m0; m < m1; m++) {
            const s = src[m]!;
            let d = tapBase + c0 * Mc + m;
            if (s < 0) {
              for (let c = c0; c < c1; c++, d += Mc) heap[d] = 0;
            } else {
              for (let c = c0; c < c1; c++, d += Mc) heap[d] = heap[s + c]!;
            }
          }
        }
      }
    }
  }
}

export const conv2DBackpropFilterConfig: KernelConfig = {
  kernelName: 'Conv2DBackpropFilter',
  backendName: 'wasm',
  kernelFunc: conv2DBackpropFilter as unknown as KernelFunc,
};
