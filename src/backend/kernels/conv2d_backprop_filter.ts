// Conv2DBackpropFilter for the wasm backend (tfjs-backend-wasm 4.22 has none, so `tf.grad` of a conv2d throws).
//
// dW[i,j,c,o] = sum over output pixels m=(n,ho,wo) of x[n, ho*sh+i-pt, wo*sw+j-pl, c] * dy[m, o], i.e. one GEMM
//   dW [KH*KW*Cin, Cout] = colsT [KH*KW*Cin, M] . dy [M, Cout]
// where colsT is the (transposed) im2col matrix of x. The GEMM runs on the wasm backend's BatchMatMul, whose only fast
// path (XNNPACK) is "batch 1, no transposes", and which packs its right operand on every new tensor: so the right
// operand is dy (Cout columns: cheap to pack) and we build colsT explicitly. Measured at U-Net shapes, the other
// orientation (packing the im2col matrix) runs at half the speed.
import { backend_util, type KernelConfig, type KernelFunc, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs';
import { aliasOf, alloc, free, freeAlias, heapF32, offsetOf, runWasm, transposeInHeap, view, type BackendWasm } from './wasm_helpers.js';

export const conv2DBackpropFilterTuning = {
  /**
   * Upper bound on an im2col chunk, in float32 elements (64 MiB; its transposed copy doubles that). Why chunk: the
   * full matrix is KH*KW times the size of x, which for large activations (e.g. a VAE at 512 px) would not fit the
   * heap. Why this size: GEMMs with a reduction length of ~2k pixels or more already run at full speed.
   */
  chunkElements: 16 * 1024 * 1024,
  /** Lower bound on the pixels (GEMM reduction length) per chunk, so the GEMM is not starved by tiny chunks. */
  minChunkPixels: 512,
};

interface Conv2DBackpropFilterAttrs {
  strides: number | [number, number];
  pad: backend_util.ExplicitPadding | 'valid' | 'same' | number;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

function conv2DBackpropFilter(args: { inputs: { x: TensorInfo; dy: TensorInfo }; backend: BackendWasm; attrs: NamedAttrMap }): TensorInfo {
  const { backend } = args;
  const { x, dy } = args.inputs;
  const attrs = args.attrs as unknown as Conv2DBackpropFilterAttrs;
  if (backend_util.convertConv2DDataFormat(attrs.dataFormat) !== 'channelsLast') {
    throw new Error(`wasm Conv2DBackpropFilter supports only dataFormat 'NHWC', got '${attrs.dataFormat}'`);
  }
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') throw new Error('wasm Conv2DBackpropFilter supports only float32');
  const ci = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: Cin, outHeight: Ho, outWidth: Wo, outChannels: Cout } = ci;
  const { filterHeight: KH, filterWidth: KW, strideHeight: sh, strideWidth: sw } = ci;
  const pt = ci.padInfo.top;
  const pl = ci.padInfo.left;
  if (dy.shape.join() !== [N, Ho, Wo, Cout].join()) {
    throw new Error(`Conv2DBackpropFilter: dy has shape [${dy.shape}], expected [${[N, Ho, Wo, Cout]}]`);
  }
  const taps = KH * KW;
  const K = taps * Cin; // rows of dW (HWIO flattened over H, W, I)
  const rows = N * Ho; // one "row" = Wo output pixels; chunks are whole rows
  if (rows * Wo === 0) {
    const zero = alloc(backend, attrs.filterShape);
    backend.typedArrayFromHeap(zero).fill(0);
    return zero;
  }
  const rowsPerChunk = Math.min(
    rows,
    Math.max(
      Math.ceil(conv2DBackpropFilterTuning.minChunkPixels / Wo),
      Math.floor(conv2DBackpropFilterTuning.chunkElements / (K * Wo)),
    ),
  );

  const geom: Geometry = { H, W, Cin, Ho, Wo, KH, KW, sh, sw, pt, pl };
  let acc: TensorInfo | undefined; // [1, K, Cout], the sum over chunks so far
  try {
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      const part = chunkProduct(backend, x, dy, geom, r0, r1, Cout);
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

interface Geometry {
  H: number;
  W: number;
  Cin: number;
  Ho: number;
  Wo: number;
  KH: number;
  KW: number;
  sh: number;
  sw: number;
  pt: number;
  pl: number;
}

/** colsT . dy over output rows [r0, r1) (row = one output image row, Wo pixels): returns [1, K, Cout]. */
function chunkProduct(
  backend: BackendWasm,
  x: TensorInfo,
  dy: TensorInfo,
  g: Geometry,
  r0: number,
  r1: number,
  Cout: number,
): TensorInfo {
  const taps = g.KH * g.KW;
  const K = taps * g.Cin;
  const Mc = (r1 - r0) * g.Wo;
  // cols [taps, Mc, Cin], tap-major: for stride 1 a tap's window of one output row is one contiguous run of x.
  const cols = alloc(backend, [taps, Mc, g.Cin]);
  let colsT: TensorInfo | undefined;
  // Rows r0..r1 of dy [M, Cout], in place. Why an alias and not `dy` itself: BatchMatMul caches its packed right
  // operand keyed on the tensor id until that tensor is freed; the alias's cache dies with the alias.
  const dyChunk = aliasOf(backend, dy, r0 * g.Wo * Cout, [1, Mc, Cout]);
  try {
    im2col(heapF32(backend), offsetOf(backend, x), offsetOf(backend, cols), g, r0, r1);
    // [taps, Mc, Cin] -> [taps, Cin, Mc] = colsT [K, Mc], rows in HWIO order.
    colsT = alloc(backend, [K, Mc]);
    transposeInHeap(heapF32(backend), offsetOf(backend, cols), offsetOf(backend, colsT), taps, Mc, g.Cin);
    free(backend, cols); // early, to lower the peak; freeing it again below is a no-op
    // [1, K, Mc] . [1, Mc, Cout] -> [1, K, Cout] (batch 1, no transposes: the XNNPACK path).
    return runWasm(backend, 'BatchMatMul', { a: view(colsT, [1, K, Mc]), b: dyChunk }, { transposeA: false, transposeB: false });
  } finally {
    free(backend, cols, colsT);
    freeAlias(backend, dyChunk);
  }
}

/** Fill cols [taps, (r1-r0)*Wo, Cin] (at element offset `dst0` of `heap`) from x (at `x0`); padding reads as 0. */
function im2col(heap: Float32Array, x0: number, dst0: number, g: Geometry, r0: number, r1: number): void {
  const { H, W, Cin, Ho, Wo, KH, KW, sh, sw, pt, pl } = g;
  const Mc = (r1 - r0) * Wo;
  for (let i = 0; i < KH; i++) {
    for (let j = 0; j < KW; j++) {
      // Output columns wo whose input column wo*sw+j-pl is inside x; the rest read the zero padding.
      const woLo = Math.min(Wo, Math.max(0, Math.ceil((pl - j) / sw)));
      const woHi = Math.max(woLo, Math.min(Wo, Math.floor((W - 1 - j + pl) / sw) + 1));
      const tapBase = dst0 + (i * KW + j) * Mc * Cin;
      for (let r = r0; r < r1; r++) {
        const n = Math.floor(r / Ho);
        const h = (r % Ho) * sh + i - pt;
        const dst = tapBase + (r - r0) * Wo * Cin;
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
  }
}

export const conv2DBackpropFilterConfig: KernelConfig = {
  kernelName: 'Conv2DBackpropFilter',
  backendName: 'wasm',
  kernelFunc: conv2DBackpropFilter as unknown as KernelFunc,
};
