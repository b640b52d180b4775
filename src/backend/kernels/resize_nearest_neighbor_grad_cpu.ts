// ResizeNearestNeighborGrad for the cpu backend, replacing tfjs-backend-cpu 4.22's, which is wrong for batch > 1: it
// offsets dy by the *images* batch stride (`batchOffset + dyR * dyStrides[1]`), so every image after the first reads
// the wrong rows of dy. It also ignores `halfPixelCenters`. Nearest-neighbour upsampling is in every U-Net/VAE decoder
// block, and cpu is the backend `auto` picks for jobs too big for wasm's heap, so training there would silently get
// wrong gradients. (The wasm kernel is right for our flags, checked against this one in the tests.)
//
// The gradient of a gather is a scatter-add: dx[b, rowOf(r), colOf(c), :] += dy[b, r, c, :], with exactly the forward
// kernel's row/column mapping.
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';

/** The part of tfjs-backend-cpu's MathBackendCPU this kernel uses. */
interface CpuBackend {
  data: { get(dataId: object): { values: ArrayLike<number> } };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
}

/** Source index of each output index, as tfjs' forward ResizeNearestNeighbor computes it (cpu and wasm agree). */
function sourceIndex(inSize: number, outSize: number, alignCorners: boolean, halfPixelCenters: boolean): Int32Array {
  const effIn = alignCorners && outSize > 1 ? inSize - 1 : inSize;
  const effOut = alignCorners && outSize > 1 ? outSize - 1 : outSize;
  const ratio = effIn / effOut;
  const map = new Int32Array(outSize);
  for (let o = 0; o < outSize; o++) {
    const frac = halfPixelCenters ? ratio * (o + 0.5) : ratio * o;
    let src = Math.min(inSize - 1, alignCorners ? Math.round(frac) : Math.floor(frac));
    if (halfPixelCenters) src = Math.max(0, src);
    map[o] = src;
  }
  return map;
}

function resizeNearestNeighborGrad(args: {
  inputs: { images: TensorInfo; dy: TensorInfo };
  backend: CpuBackend;
  attrs: NamedAttrMap;
}): TensorInfo {
  const { backend } = args;
  const { images, dy } = args.inputs;
  const alignCorners = args.attrs['alignCorners'] === true;
  const halfPixelCenters = args.attrs['halfPixelCenters'] === true;
  const [batch, xH, xW, depth] = images.shape as [number, number, number, number];
  const [, yH, yW] = dy.shape as [number, number, number, number];
  const rowOf = sourceIndex(xH, yH, alignCorners, halfPixelCenters);
  const colOf = sourceIndex(xW, yW, alignCorners, halfPixelCenters);
  const dyv = backend.data.get(dy.dataId).values;
  const dx = new Float32Array(batch * xH * xW * depth);
  let src = 0;
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < yH; r++) {
      const rowBase = (b * xH + rowOf[r]!) * xW;
      for (let c = 0; c < yW; c++) {
        const dst = (rowBase + colOf[c]!) * depth;
        for (let d = 0; d < depth; d++) dx[dst + d] = dx[dst + d]! + dyv[src++]!;
      }
    }
  }
  return backend.makeTensorInfo([batch, xH, xW, depth], 'float32', dx);
}

export const resizeNearestNeighborGradCpuConfig: KernelConfig = {
  kernelName: 'ResizeNearestNeighborGrad',
  backendName: 'cpu',
  kernelFunc: resizeNearestNeighborGrad as unknown as KernelFunc,
};
