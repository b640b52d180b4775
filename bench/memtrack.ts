// Tensor memory as the backend holds it: bytes of live backend buffers (a reshape or a cpu clone shares its input's
// buffer and is not counted again, unlike `tf.memory().numBytes`), and the peak since the last reset. Wraps the active
// backend's allocation and free methods (benchmarks only; `stop` restores them).
import * as tf from '@tensorflow/tfjs';

export interface MemoryTracker {
  /** Bytes of live backend buffers now. */
  readonly live: number;
  /** The most `live` has been since tracking began or `resetPeak`. */
  readonly peak: number;
  /**
   * The most `tf.memory().numBytes` has been, sampled at each allocation (it counts a reshaped view's bytes again,
   * so it runs above `peak`).
   */
  readonly enginePeak: number;
  resetPeak(): void;
  stop(): void;
}

type DataId = object;
interface TrackedBackend {
  write?: (values: unknown, shape: number[], dtype: tf.DataType) => DataId;
  move: (dataId: DataId, values: unknown, shape: number[], dtype: tf.DataType, refCount: number) => void;
  disposeData: (dataId: DataId, force?: boolean) => boolean;
}

const bytesOf = (shape: readonly number[], dtype: tf.DataType): number =>
  dtype === 'string' ? 0 : shape.reduce((a, b) => a * b, 1) * (dtype === 'complex64' ? 8 : 4);

/** Start tracking the active backend (cpu or wasm). Buffers that exist before the call are not counted. */
export function trackTensorMemory(): MemoryTracker {
  const backend = tf.backend() as unknown as TrackedBackend;
  const sizes = new Map<DataId, number>();
  let live = 0;
  let peak = 0;
  const engine = tf.engine() as unknown as { state: { numBytes: number } };
  let enginePeak = engine.state.numBytes;
  const add = (dataId: DataId, shape: number[], dtype: tf.DataType) => {
    const n = bytesOf(shape, dtype);
    sizes.set(dataId, n);
    live += n;
    if (live > peak) peak = live;
    if (engine.state.numBytes > enginePeak) enginePeak = engine.state.numBytes;
  };
  const original = { write: backend.write, move: backend.move, disposeData: backend.disposeData };
  backend.move = (dataId, values, shape, dtype, refCount) => {
    original.move.call(backend, dataId, values, shape, dtype, refCount);
    add(dataId, shape, dtype);
  };
  // wasm's `write` allocates through `move`; cpu's stores the values itself
  if (tf.getBackend() !== 'wasm' && original.write) {
    backend.write = (values, shape, dtype) => {
      const dataId = original.write!.call(backend, values, shape, dtype);
      add(dataId, shape, dtype);
      return dataId;
    };
  }
  backend.disposeData = (dataId, force) => {
    const freed = original.disposeData.call(backend, dataId, force);
    const n = sizes.get(dataId);
    if (freed && n !== undefined) {
      live -= n;
      sizes.delete(dataId);
    }
    return freed;
  };
  return {
    get live() {
      return live;
    },
    get peak() {
      return peak;
    },
    get enginePeak() {
      return Math.max(enginePeak, engine.state.numBytes);
    },
    resetPeak() {
      peak = live;
      enginePeak = engine.state.numBytes;
    },
    stop() {
      backend.move = original.move;
      backend.disposeData = original.disposeData;
      if (original.write) backend.write = original.write;
    },
  };
}

/** The wasm heap's size: it only grows, so after a job it is the job's high-water mark (undefined on other backends). */
export function wasmHeapBytes(): number | undefined {
  if (tf.getBackend() !== 'wasm') return undefined;
  return (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.length;
}

/** This process's peak resident set size in bytes. */
export const peakRss = (): number => process.resourceUsage().maxRSS * 1024;
