// Backend selection: the one module that imports the optional tfjs-node(-gpu) packages. Only the CLI entry and the
// test setup call `useBackend`; model code is backend-agnostic and only ever sees `@tensorflow/tfjs`.
import * as tf from '@tensorflow/tfjs';
import { SdtrainError, WasmOutOfMemoryError } from '../errors.js';
import { registerCpuKernelFixes, registerWasmKernels } from './kernels/index.js';
import { prepareWasmThreads } from './kernels/wasm_threads.js';

export const BACKEND_REQUESTS = ['auto', 'gpu', 'node', 'wasm', 'cpu'] as const;
export type BackendRequest = (typeof BACKEND_REQUESTS)[number];
export type ConcreteBackend = Exclude<BackendRequest, 'auto'>;

/**
 * The wasm heap is 32-bit: every live tensor together must fit in 4 GiB (measured on this machine). We leave room for
 * the allocator's fragmentation and the kernels' scratch buffers, so a job estimated above this budget goes to `cpu`.
 */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;
export const WASM_BUDGET_BYTES = Math.floor(WASM_HEAP_BYTES * 0.85);

export interface BackendChoice {
  /** What the user asked for. */
  requested: BackendRequest;
  /** What we got. */
  backend: ConcreteBackend;
  /** The tfjs backend name (`tensorflow` for both node packages). */
  tfjsName: string;
  /** Why `auto` skipped candidates, in order (one line each), or why it fell back. */
  notes: string[];
}

const INSTALL: Record<ConcreteBackend, string> = {
  gpu: 'npm install @tensorflow/tfjs-node-gpu@4.22.0   (needs CUDA 11.2 + cuDNN 8.1 and network access at install)',
  node: 'npm install @tensorflow/tfjs-node@4.22.0   (its install script downloads libtensorflow)',
  wasm: 'npm install @tensorflow/tfjs-backend-wasm@4.22.0',
  cpu: 'npm install @tensorflow/tfjs@4.22.0',
};

export class BackendUnavailableError extends SdtrainError {
  constructor(
    readonly backend: ConcreteBackend,
    readonly reason: string,
  ) {
    super(`backend '${backend}' is not available: ${reason}. Install it with: ${INSTALL[backend]}`);
  }
}

// Why dynamic imports through a variable: TypeScript must not require the optional packages to be installed.
const importOptional = (name: string): Promise<unknown> => import(name);

async function load(backend: ConcreteBackend, wasmThreads: number): Promise<string> {
  switch (backend) {
    case 'gpu':
      await importOptional('@tensorflow/tfjs-node-gpu');
      return 'tensorflow';
    case 'node':
      await importOptional('@tensorflow/tfjs-node');
      return 'tensorflow';
    case 'wasm': {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      registerWasmKernels();
      // Threads are opt-in: tfjs disables them under Node, and our patch makes the process wait for its workers.
      if (wasmThreads > 1 && !threadsPrepared) {
        threadsPrepared = true;
        const done = prepareWasmThreads(tf, wasm.setThreadsCount, wasmThreads);
        await tf.setBackend('wasm').finally(done);
      }
      return 'wasm';
    }
    case 'cpu':
      // tfjs-backend-cpu's ResizeNearestNeighborGrad is wrong for batch > 1 (every decoder upsampler in training).
      registerCpuKernelFixes();
      return 'cpu';
  }
}

function shortReason(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  if (/Cannot find (package|module)/.test(msg)) return 'not installed';
  return msg.split('\n')[0]!.slice(0, 200);
}

let threadsPrepared = false;

async function activate(backend: ConcreteBackend, wasmThreads: number): Promise<string> {
  let name: string;
  try {
    name = await load(backend, wasmThreads);
  } catch (e) {
    throw new BackendUnavailableError(backend, shortReason(e));
  }
  const ok = await tf.setBackend(name);
  if (!ok) throw new BackendUnavailableError(backend, `tfjs could not initialise the '${name}' backend`);
  await tf.ready();
  if (name === 'cpu') {
    // Why: the cpu backend prints a "looks like you are running TensorFlow.js in Node.js" banner on its first write.
    // Library code never prints; the CLI already says which backend it got and how to get a faster one.
    (tf.backend() as unknown as { firstUse: boolean }).firstUse = false;
  }
  return name;
}

export interface UseBackendOptions {
  /** Estimated peak bytes of all live tensors of the job; `auto` avoids wasm when it cannot fit. */
  estimatedBytes?: number;
  /**
   * wasm threads (default: `SDTRAIN_WASM_THREADS`, else 1). More than 1 uses the threaded build (about 2x on two idle
   * cores, slower when the cores are busy); the process then has to call `process.exit` to end.
   */
  wasmThreads?: number;
}

/** Whether the threaded wasm build is active (the CLI must then exit the process explicitly). */
export const wasmThreadsActive = (): boolean => threadsPrepared;

/** Select and initialise a backend. `auto` tries gpu, node, wasm (if the job fits its heap), then cpu. */
export async function useBackend(requested: BackendRequest, opts: UseBackendOptions = {}): Promise<BackendChoice> {
  const threads = opts.wasmThreads ?? Math.max(1, Number.parseInt(process.env.SDTRAIN_WASM_THREADS ?? '1', 10) || 1);
  if (requested !== 'auto') {
    const tfjsName = await activate(requested, threads);
    return { requested, backend: requested, tfjsName, notes: [] };
  }
  const notes: string[] = [];
  for (const candidate of ['gpu', 'node', 'wasm', 'cpu'] as const) {
    if (candidate === 'wasm' && opts.estimatedBytes !== undefined && opts.estimatedBytes > WASM_BUDGET_BYTES) {
      notes.push(
        `wasm skipped: the job needs about ${formatBytes(opts.estimatedBytes)}, more than wasm's 4 GiB heap allows; ` +
          `using the cpu backend (no cap, much slower; install @tensorflow/tfjs-node-gpu for speed)`,
      );
      continue;
    }
    try {
      const tfjsName = await activate(candidate, threads);
      return { requested, backend: candidate, tfjsName, notes };
    } catch (e) {
      if (candidate === 'cpu') throw e;
      notes.push(`${candidate}: ${e instanceof BackendUnavailableError ? e.reason : shortReason(e)}`);
    }
  }
  throw new Error('unreachable');
}

/** Parse `--backend` / `SDTRAIN_BACKEND`; flags win over the environment. */
export function parseBackendRequest(value: string | undefined, source: string): BackendRequest {
  const v = (value ?? 'auto').trim().toLowerCase();
  if ((BACKEND_REQUESTS as readonly string[]).includes(v)) return v as BackendRequest;
  throw new SdtrainError(`${source}: unknown backend '${value}' (expected one of ${BACKEND_REQUESTS.join(', ')})`);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/**
 * Turn wasm's bare "memory access out of bounds" (what an allocation beyond the 32-bit heap looks like) into an
 * error that says what happened and what to do. Other errors pass through unchanged.
 */
export function explainBackendError(e: unknown): unknown {
  const msg = e instanceof Error ? e.message : String(e);
  const wasmOom = /memory access out of bounds|Cannot enlarge memory|Aborted\(OOM\)|out of memory/i.test(msg);
  // A trap inside the wasm module is a WebAssembly.RuntimeError.
  const wasmTrap = e instanceof Error && e.constructor.name === 'RuntimeError';
  if (!wasmOom || (tf.getBackend() !== 'wasm' && !wasmTrap)) return e;
  let live = '';
  try {
    live = ` (${formatBytes(tf.memory().numBytes)} of tensors were live)`;
  } catch {
    // the engine may be unusable after the trap; the message is still right
  }
  return new WasmOutOfMemoryError(
    `the wasm backend ran out of memory: its heap is 32-bit, capped at 4 GiB for all tensors together${live}. ` +
      `Use --backend cpu (no cap, slower), a smaller batch or resolution, attention slicing, ` +
      `or install @tensorflow/tfjs-node-gpu`,
    { cause: e },
  );
}
