// BatchMatMul for the wasm backend, replacing the stock kernel's dispatch (its C++ entry point is reused).
//
// The stock kernel runs XNNPACK (~30 GFLOP/s on one core) only for a single, untransposed product; anything batched
// or transposed -- attention (q.k^T, batch = batch*heads), `matMul(x, W, false, true)` for torch-layout weights, and
// both gradients of every matmul (dy.b^T and a^T.dy) -- goes to a naive loop at ~2.5 GFLOP/s. So we feed the fast
// path: transpose operands in JS where needed, and run one single-matrix product per batch entry, each reading and
// writing its slice of the batched buffers in place through aliases.
import { broadcast_util, util, type KernelConfig, type KernelFunc, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs';
import {
  alloc,
  aliasOf,
  free,
  freeAlias,
  heapF32,
  offsetOf,
  runWasm,
  transposeInHeap,
  type BackendWasm,
} from './wasm_helpers.js';

/**
 * Below this many multiply-adds per batch entry the per-entry overhead (operator creation, weight packing) outweighs
 * the faster GEMM, and the stock loop is kept.
 */
const MIN_MACS_PER_BATCH = 32 * 1024;

type WasmBatchMatMul = (
  aId: number,
  aShape: Uint8Array,
  aRank: number,
  bId: number,
  bShape: Uint8Array,
  bRank: number,
  transposeA: boolean,
  transposeB: boolean,
  outId: number,
) => void;

let wasmBatchMatMul: WasmBatchMatMul | undefined;

function setup(backend: BackendWasm): void {
  // The same C++ entry point (and argument list) the stock kernel binds; called directly so the output can be an
  // alias into our batched result instead of a fresh buffer we would have to copy.
  const cwrap = (backend.wasm as unknown as { cwrap: (name: string, ret: null, args: string[]) => WasmBatchMatMul }).cwrap;
  wasmBatchMatMul = cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']);
}

const shapeBytes = (shape: number[]): Uint8Array => new Uint8Array(new Int32Array(shape).buffer);

/** out[1, M, N] = a[1, M, K] . b[1, K, N] on XNNPACK (all three must be distinct, registered tensors). */
function fastProduct(backend: BackendWasm, a: TensorInfo, b: TensorInfo, out: TensorInfo, M: number, K: number, N: number): void {
  const id = (t: TensorInfo): number => backend.dataIdMap.get(t.dataId)!.id;
  wasmBatchMatMul!(id(a), shapeBytes([1, M, K]), 3, id(b), shapeBytes([1, K, N]), 3, false, false, id(out));
}

function batchMatMul(args: { inputs: { a: TensorInfo; b: TensorInfo }; backend: BackendWasm; attrs: NamedAttrMap }): TensorInfo {
  const { backend } = args;
  const { a, b } = args.inputs;
  const transposeA = args.attrs['transposeA'] === true;
  const transposeB = args.attrs['transposeB'] === true;
  const stock = (): TensorInfo => runWasm(backend, 'BatchMatMul', { a, b }, { transposeA, transposeB });
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || wasmBatchMatMul === undefined) return stock();

  const aRank = a.shape.length;
  const bRank = b.shape.length;
  const M = transposeA ? a.shape[aRank - 1]! : a.shape[aRank - 2]!;
  const K = transposeA ? a.shape[aRank - 2]! : a.shape[aRank - 1]!;
  const Kb = transposeB ? b.shape[bRank - 1]! : b.shape[bRank - 2]!;
  const N = transposeB ? b.shape[bRank - 2]! : b.shape[bRank - 1]!;
  const batchA = util.sizeFromShape(a.shape.slice(0, -2));
  const batchB = util.sizeFromShape(b.shape.slice(0, -2));
  const batch = Math.max(batchA, batchB);
  const alreadyFast = !transposeA && !transposeB && batchA === 1 && batchB === 1;
  // Only flat broadcasting (equal batches, or one side a single matrix) is handled here; the rest stays stock.
  const flatBroadcast = batchA === batchB || batchA === 1 || batchB === 1;
  if (K !== Kb || alreadyFast || !flatBroadcast || M * K * N < MIN_MACS_PER_BATCH || batch === 0) return stock();
  const outShape = [...broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2)), M, N];

  // Entry i of `a` as [M, K]: an alias into `a`, or a transposed copy ([K, M] -> [M, K]).
  const left = (i: number): TensorInfo => {
    if (!transposeA) return aliasOf(backend, a, i * M * K, [1, M, K]);
    const t = alloc(backend, [1, M, K]);
    transposeInHeap(heapF32(backend), offsetOf(backend, a) + i * M * K, offsetOf(backend, t), 1, K, M);
    return t;
  };
  // Entry i of `b` as [K, N]. An alias is also right for XNNPACK's cache of packed weights, which is keyed on the
  // tensor id: an alias's id is fresh, so nothing stale is reused, and `freeAlias` drops the cached operator.
  const right = (i: number): TensorInfo => {
    if (!transposeB) return aliasOf(backend, b, i * K * N, [1, K, N]);
    const t = alloc(backend, [1, K, N]);
    transposeInHeap(heapF32(backend), offsetOf(backend, b) + i * K * N, offsetOf(backend, t), 1, N, K);
    return t;
  };
  const release = (t: TensorInfo | undefined, isAlias: boolean): void => (isAlias ? freeAlias(backend, t) : free(backend, t));

  const out = alloc(backend, outShape);
  let sharedA: TensorInfo | undefined;
  let sharedB: TensorInfo | undefined;
  try {
    // A broadcast operand is prepared once; for `b` that also means XNNPACK packs it once for all entries.
    if (batchA === 1) sharedA = left(0);
    if (batchB === 1) sharedB = right(0);
    for (let i = 0; i < batch; i++) {
      const ai = sharedA ?? left(i);
      const bi = sharedB ?? right(i);
      const oi = aliasOf(backend, out, i * M * N, [1, M, N]);
      try {
        fastProduct(backend, ai, bi, oi, M, K, N);
      } finally {
        freeAlias(backend, oi);
        if (sharedA === undefined) release(ai, !transposeA);
        if (sharedB === undefined) release(bi, !transposeB);
      }
    }
  } catch (e) {
    free(backend, out);
    throw e;
  } finally {
    release(sharedA, !transposeA);
    release(sharedB, !transposeB);
  }
  return out;
}

export const batchMatMulConfig: KernelConfig = {
  kernelName: 'BatchMatMul',
  backendName: 'wasm',
  setupFunc: setup as unknown as KernelConfig['setupFunc'],
  kernelFunc: batchMatMul as unknown as KernelFunc,
};
