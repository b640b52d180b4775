// UnsortedSegmentSum for the wasm backend: the gradient of `gather` (e.g. of the token-embedding table) needs it.
//
// out[s, ...] = sum of x[r, ...] over the rows r with segmentIds[r] == s; ids outside [0, numSegments) are dropped
// (as TensorFlow and the tfjs cpu kernel do). A JS loop over the wasm heap: one pass over x, plus zeroing the output.
import { util, type KernelConfig, type KernelFunc, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs';
import { alloc, type BackendWasm } from './wasm_helpers.js';

function unsortedSegmentSum(args: {
  inputs: { x: TensorInfo; segmentIds: TensorInfo };
  backend: BackendWasm;
  attrs: NamedAttrMap;
}): TensorInfo {
  const { backend } = args;
  const { x, segmentIds } = args.inputs;
  const numSegments = args.attrs['numSegments'] as number;
  if (x.dtype !== 'float32' && x.dtype !== 'int32') throw new Error(`wasm UnsortedSegmentSum: unsupported dtype ${x.dtype}`);
  const idsRank = segmentIds.shape.length;
  if (x.shape.slice(0, idsRank).join() !== segmentIds.shape.join()) {
    throw new Error(`UnsortedSegmentSum: segmentIds shape [${segmentIds.shape}] must be a prefix of x shape [${x.shape}]`);
  }
  const innerShape = x.shape.slice(idsRank);
  const inner = util.sizeFromShape(innerShape);
  const out = alloc(backend, [numSegments, ...innerShape], x.dtype);
  // Views are taken after the allocation: growing the heap detaches older views.
  const o = backend.typedArrayFromHeap(out) as Float32Array | Int32Array;
  const xs = backend.typedArrayFromHeap(x) as Float32Array | Int32Array;
  const ids = backend.typedArrayFromHeap(segmentIds) as Int32Array | Float32Array;
  o.fill(0);
  const rows = util.sizeFromShape(segmentIds.shape);
  for (let r = 0; r < rows; r++) {
    const s = Math.trunc(ids[r]!); // ids are int32; a float32 tensor of whole numbers is accepted too
    if (s < 0 || s >= numSegments) continue;
    const dst = s * inner;
    const src = r * inner;
    for (let k = 0; k < inner; k++) o[dst + k] = o[dst + k]! + xs[src + k]!;
  }
  return out;
}

export const unsortedSegmentSumConfig: KernelConfig = {
  kernelName: 'UnsortedSegmentSum',
  backendName: 'wasm',
  kernelFunc: unsortedSegmentSum as unknown as KernelFunc,
};
