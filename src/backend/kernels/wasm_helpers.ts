// Shared plumbing for the kernels in this folder: running the wasm backend's own kernels from inside a kernel, and
// reading/writing tensors in place on the wasm heap.
//
// Why backend-level kernelFuncs instead of `tf.*` ops: a kernel runs inside the engine's kernel scope, so `tf.*` calls
// would record on the gradient tape and create engine tensors. The wasm kernelFuncs only create backend data (a
// `TensorInfo`), which we free with `backend.disposeData` as soon as it is consumed.
import { getKernel, type DataType, type KernelConfig, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

export type { BackendWasm };

/**
 * The stock wasm kernels we replace (e.g. `Conv2DBackpropInput`), saved before we unregister them, so our kernels (and
 * the benchmark's comparison column) can still call the original.
 */
const stockKernels = new Map<string, KernelConfig>();

export function rememberStockKernel(config: KernelConfig): void {
  const key = `${config.backendName}/${config.kernelName}`;
  if (!stockKernels.has(key)) stockKernels.set(key, config);
}

/** The backend's own kernel `name`: the stock one if we replaced it, else whatever is registered. */
export function stockKernel(name: string, backendName = 'wasm'): KernelConfig {
  const k = stockKernels.get(`${backendName}/${name}`) ?? getKernel(name, backendName);
  if (k === undefined) throw new Error(`${backendName} kernel '${name}' is not registered`);
  return k;
}

/** Run the wasm backend's own kernel `name` on backend data; the caller owns (and must free) the result. */
export function runWasm(
  backend: BackendWasm,
  name: string,
  inputs: Record<string, TensorInfo>,
  attrs: NamedAttrMap = {},
): TensorInfo {
  const out = stockKernel(name).kernelFunc({ inputs, backend, attrs });
  if (Array.isArray(out)) throw new Error(`wasm kernel '${name}' returned several outputs`);
  return out as TensorInfo;
}

/** Free backend data made inside a kernel (a kernelFunc result or `makeOutput`). */
export function free(backend: BackendWasm, ...infos: (TensorInfo | undefined)[]): void {
  for (const t of infos) if (t !== undefined) backend.disposeData(t.dataId);
}

/** A view of the same data with another shape (no copy, no refcount: only for passing to a kernelFunc). */
export function view(t: TensorInfo, shape: number[]): TensorInfo {
  return { dataId: t.dataId, shape, dtype: t.dtype };
}

/** Allocate uninitialised backend data. */
export function alloc(backend: BackendWasm, shape: number[], dtype: DataType = 'float32'): TensorInfo {
  return backend.makeOutput(shape, dtype);
}

/** Allocate float32 backend data filled with zeros. */
export function zeros(backend: BackendWasm, shape: number[]): TensorInfo {
  const t = alloc(backend, shape);
  backend.typedArrayFromHeap(t).fill(0);
  return t;
}

/**
 * A tensor aliasing `shape`-many elements of `base` from element `offset` on: no copy, no allocation. Why: the C++
 * kernels address tensors by id, so to make one read (or write) part of a buffer -- one matrix of a batch -- it needs
 * its own id. Free it with `freeAlias` (never `free`/`disposeData`, which would hand an interior pointer to `free()`),
 * before `base` is freed.
 */
export function aliasOf(backend: BackendWasm, base: TensorInfo, offset: number, shape: number[]): TensorInfo {
  const data = backend.dataIdMap.get(base.dataId);
  if (data === undefined) throw new Error('tensor is not on the wasm backend');
  return backend.makeOutput(shape, base.dtype, data.memoryOffset + offset * 4);
}

/** Unregister an `aliasOf` tensor (which also drops XNNPACK operators cached on it); its memory stays with the base. */
export function freeAlias(backend: BackendWasm, ...infos: (TensorInfo | undefined)[]): void {
  for (const t of infos) {
    if (t === undefined) continue;
    const data = backend.dataIdMap.get(t.dataId);
    if (data === undefined) continue;
    backend.wasm.tfjs.disposeData(data.id);
    backend.dataIdMap.delete(t.dataId);
  }
}

/**
 * The whole wasm heap as float32, and where tensor `t` starts in it (in elements).
 *
 * Why one view of the whole heap: it lets us move data between two tensors with `copyWithin` (a memmove, no JS
 * loop). Why callers must re-fetch it after every allocation: growing the wasm memory detaches the old ArrayBuffer.
 */
export function heapF32(backend: BackendWasm): Float32Array {
  // Why the cast: the typings extend Emscripten's module type, which is not installed here.
  return new Float32Array((backend.wasm as unknown as { HEAPU8: Uint8Array }).HEAPU8.buffer);
}

/** Offset of `t`'s first element in `heapF32` / `heapI32` (the wasm allocator aligns to at least 8 bytes). */
export function offsetOf(backend: BackendWasm, t: TensorInfo): number {
  const data = backend.dataIdMap.get(t.dataId);
  if (data === undefined) throw new Error('tensor is not on the wasm backend');
  return data.memoryOffset >>> 2;
}

/**
 * Edge of the square tiles `transposeInHeap` (and the kernels' im2col/col2im passes) move: 32x32 floats (4 KiB) keep
 * both sides of a tile in L1.
 */
export const TILE = 32;

/**
 * dst[b][c][r] = src[b][r][c] for a batch of row-major [rows, cols] matrices, all at element offsets in `heap`.
 *
 * Why in JS: the wasm backend's Transpose kernel walks the output in order and gathers with a stride, which measured
 * ~9 ns/element at our sizes; this tiled loop runs at ~4 ns/element. `src` and `dst` must not overlap.
 */
export function transposeInHeap(
  heap: Float32Array,
  src: number,
  dst: number,
  batch: number,
  rows: number,
  cols: number,
): void {
  const size = rows * cols;
  for (let b = 0; b < batch; b++) {
    const s0 = src + b * size;
    const d0 = dst + b * size;
    for (let r0 = 0; r0 < rows; r0 += TILE) {
      const r1 = Math.min(rows, r0 + TILE);
      for (let c0 = 0; c0 < cols; c0 += TILE) {
        const c1 = Math.min(cols, c0 + TILE);
        for (let r = r0; r < r1; r++) {
          let s = s0 + r * cols + c0;
          let d = d0 + c0 * rows + r;
          for (let c = c0; c < c1; c++) {
            heap[d] = heap[s++]!;
            d += rows;
          }
        }
      }
    }
  }
}
