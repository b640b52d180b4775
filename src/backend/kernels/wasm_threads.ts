// Opt-in: run tfjs-backend-wasm 4.22's multithreaded (pthreads + SIMD) build under Node. Not wired in anywhere; the
// caller (backend selection) decides. Measured on 2 cores: XNNPACK conv 477 -> 228 ms, matmul 55 -> 34 ms. Elementwise
// kernels and our kernels' JS parts (im2col, transposes) stay single-threaded.
//
// Why it needs patching, and what each patch does:
// 1. The flag WASM_HAS_MULTITHREAD_SUPPORT is hard-coded false under Node (tfjs issue #3830): we set it true.
// 2. Emscripten starts each pthread with `new Worker(<blob: URL of the worker script>)`; Node's Worker cannot load
//    blob: URLs. We patch `worker_threads.Worker` to evaluate the package's own worker script instead, prefixed with
//    the globals the re-evaluated bundle expects (rollup's `commonjsGlobal` and `require$$N`), and suffixed with a
//    shim that turns the main script, which tfjs hands the workers as a Blob, into a temp file for `importScripts`.
// 3. The C++ side caps the thread pool at os.cpus().length / 2 (assuming hyper-threading), i.e. 1 on a 2-core
//    machine: while the backend initialises, `os.cpus()` reports enough entries for the requested count.
import { createRequire } from 'node:module';
import type * as OsModule from 'node:os';
import type * as WorkerThreads from 'node:worker_threads';

const require = createRequire(import.meta.url);

const PRELUDE =
  'globalThis.commonjsGlobal = globalThis; globalThis.require$$0 = require("fs"); globalThis.require$$1 = require("path"); ' +
  'globalThis.require$$3 = require("perf_hooks"); globalThis.require$$4 = require("os");\n';

// Queue messages until the Blob main script is written to a file; then hand `importScripts` the file's path.
const SHIM = `;(function () {
  const fs = require('fs'), os = require('os'), path = require('path'), threads = require('worker_threads');
  const original = self.onmessage;
  let state = 0;
  const queue = [];
  self.onmessage = function (e) {
    if (state === 0 && e.data && e.data.cmd === 'load' && typeof e.data.urlOrBlob !== 'string') {
      state = 1;
      e.data.urlOrBlob.text().then(function (text) {
        const file = path.join(os.tmpdir(), 'sdtrain-wasm-main-' + process.pid + '-' + threads.threadId + '.js');
        fs.writeFileSync(file, text);
        e.data.urlOrBlob = file;
        try { original(e); } finally { fs.rmSync(file, { force: true }); } // importScripts evaluated it synchronously
        state = 2;
        for (const q of queue.splice(0)) original(q);
      });
      return;
    }
    if (state === 1) { queue.push(e); return; }
    original(e);
  };
})();`;

let patched = false;

/**
 * Prepare the threaded wasm build with `threads` threads. Call before the wasm backend is first initialised (before
 * `tf.setBackend('wasm')`), then call the returned `done()` once it is (it restores `os.cpus`).
 */
export function prepareWasmThreads(
  tf: { env(): { set(flag: string, value: boolean): void } },
  setThreadsCount: (n: number) => void,
  threads: number,
): () => void {
  const os = require('node:os') as typeof OsModule;
  const originalCpus = os.cpus;
  if (!patched) {
    patched = true;
    const wt = require('node:worker_threads') as typeof WorkerThreads & { Worker: typeof WorkerThreads.Worker };
    const workerModule = require.resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.worker.js');
    // Escaped as tfjs does before making its Blob: the source's string literals contain raw newlines.
    const contents = (require(workerModule) as { wasmWorkerContents: string }).wasmWorkerContents.replace(/\n/g, '\\n');
    const source = PRELUDE + contents + SHIM;
    const NodeWorker = wt.Worker;
    wt.Worker = class extends NodeWorker {
      constructor(filename: string | URL, options?: WorkerThreads.WorkerOptions) {
        if (String(filename).startsWith('blob:')) super(source, { ...options, eval: true });
        else super(filename, options);
      }
    };
  }
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  setThreadsCount(threads);
  const cpu = originalCpus()[0]!;
  os.cpus = () => Array.from({ length: 2 * threads }, () => cpu);
  return () => {
    os.cpus = originalCpus;
  };
}
