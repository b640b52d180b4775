// What the three conv kernels of this folder (conv2d, conv2d_backprop_filter, conv2d_backprop_input) share: their
// attrs, the conv geometry tfjs computes from them, how they chunk the output rows, and which input pixel each output
// pixel reads through one filter tap.
import { backend_util } from '@tensorflow/tfjs';

/** The attrs every Conv2D* kernel gets (plus `filterShape` / `inputShape` / `dilations` for some). */
export interface ConvAttrs {
  strides: number | [number, number];
  pad: backend_util.ExplicitPadding | 'valid' | 'same' | number;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** An NHWC conv x [N, H, W, Cin] * filter [KH, KW, Cin, Cout] -> y [N, Ho, Wo, Cout], stride (sh, sw), top/left pad. */
export interface ConvGeometry {
  N: number;
  H: number;
  W: number;
  Cin: number;
  Ho: number;
  Wo: number;
  Cout: number;
  KH: number;
  KW: number;
  sh: number;
  sw: number;
  pt: number;
  pl: number;
}

/** The geometry of an NHWC, dilation-1 conv (tfjs' own computeConv2DInfo, so padding/rounding match the stock kernels). */
export function convGeometry(xShape: readonly number[], filterShape: readonly number[], attrs: ConvAttrs): ConvGeometry {
  const ci = backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
  return {
    N: ci.batchSize,
    H: ci.inHeight,
    W: ci.inWidth,
    Cin: ci.inChannels,
    Ho: ci.outHeight,
    Wo: ci.outWidth,
    Cout: ci.outChannels,
    KH: ci.filterHeight,
    KW: ci.filterWidth,
    sh: ci.strideHeight,
    sw: ci.strideWidth,
    pt: ci.padInfo.top,
    pl: ci.padInfo.left,
  };
}

/** Throws unless the kernel `name` is given NHWC float32 tensors (what the custom kernels implement). */
export function requireNhwcFloat32(name: string, dataFormat: ConvAttrs['dataFormat'], ...dtypes: string[]): void {
  if (backend_util.convertConv2DDataFormat(dataFormat) !== 'channelsLast') {
    throw new Error(`wasm ${name} supports only dataFormat 'NHWC', got '${dataFormat}'`);
  }
  if (dtypes.some((d) => d !== 'float32')) throw new Error(`wasm ${name} supports only float32`);
}

/** Throws unless dy has the conv's output shape [N, Ho, Wo, Cout]. */
export function checkDyShape(name: string, dyShape: readonly number[], g: ConvGeometry): void {
  const want = [g.N, g.Ho, g.Wo, g.Cout];
  if (dyShape.join() !== want.join()) throw new Error(`${name}: dy has shape [${dyShape}], expected [${want}]`);
}

/**
 * How many output rows (one row = Wo output pixels) to take per chunk when each pixel needs `perPixel` float32
 * elements of scratch: at most `chunkElements` of scratch, at least `minChunkPixels` pixels, at most all `rows`.
 */
export function chunkRows(rows: number, Wo: number, perPixel: number, tuning: { chunkElements: number; minChunkPixels: number }): number {
  return Math.min(rows, Math.max(Math.ceil(tuning.minChunkPixels / Wo), Math.floor(tuning.chunkElements / (perPixel * Wo))));
}

/**
 * For each output pixel m of output rows [r0, r1) (m counts from 0 at row r0), where tap (i, j) lands in the input:
 * `base` + the element offset of x[n, ho*sh+i-pt, wo*sw+j-pl, 0] in an NHWC [N, H, W, Cin] tensor, or -1 where it
 * falls in the padding. Written into `out` (length >= (r1-r0)*Wo).
 */
export function tapOffsets(out: Int32Array, base: number, g: ConvGeometry, i: number, j: number, r0: number, r1: number): void {
  const { H, W, Cin, Ho, Wo, sh, sw, pt, pl } = g;
  for (let r = r0, m = 0; r < r1; r++) {
    const n = Math.floor(r / Ho);
    const h = (r % Ho) * sh + i - pt;
    for (let wo = 0; wo < Wo; wo++, m++) {
      const w = wo * sw + j - pl;
      out[m] = h < 0 || h >= H || w < 0 || w >= W ? -1 : base + ((n * H + h) * W + w) * Cin;
    }
  }
}
