// Full-size U-Net benchmark: the SD 1.5 U-Net (860M parameters, random N(0, 0.02) weights set one Param at a time,
// 3.4 GB in float32), one forward pass on latents [2, 64, 64, 4] (one 512×512 image with classifier-free guidance),
// timed, with the process's peak RSS and the peak of live tensor buffers.
//
//   import { benchUnet } from './unet.js';  const r = await benchUnet({ backend: 'auto' });
//
// Each attempt runs in a fresh child process (`node dist/bench/unet.js --child '<json>'`), so the peaks are its own and
// a wasm out-of-memory abort cannot take the benchmark down. `auto` (the default) tries wasm first, with attention
// slicing (`attentionSliceSize`, default 1), and falls back to cpu when wasm runs out of its 4 GiB heap, saying why.
// On cpu the full forward takes tens of minutes on 2 cores, so by default cpu times conv_in + down_blocks.0 (the
// 64×64 level: two ResNets and two transformers at 320 channels) and `full: true` runs the whole U-Net.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { WASM_HEAP_BYTES, explainBackendError, formatBytes, useBackend } from '../src/backend/backend.js';
import { unetActivationBytes } from '../src/backend/memory.js';
import { CrossAttnDownBlock2D } from '../src/models/unet_blocks.js';
import { UNet2DConditionModel } from '../src/models/unet.js';
import { SD15 } from '../src/models/presets.js';
import { namedParams, type Param } from '../src/nn/module.js';
import { peakRss, trackTensorMemory, wasmHeapBytes } from './memtrack.js';

export type UnetScope = 'full' | 'down0';

export interface UnetBenchOptions {
  /** 'auto' (default): wasm, then cpu if wasm runs out of memory. */
  backend?: 'auto' | 'wasm' | 'cpu';
  /** Attention slicing: maps per slice (default 1); 0 for none. */
  attentionSliceSize?: number;
  /** Run the whole U-Net on cpu too (default: only conv_in + down_blocks.0 there). */
  full?: boolean;
  /** Latent side (default 64) and batch (default 2). */
  latent?: number;
  batch?: number;
  /** Called when an attempt starts (progress display). */
  onStart?: (what: string) => void;
}

/** What one child process measured. */
export interface UnetRun {
  backend: 'wasm' | 'cpu';
  scope: UnetScope;
  /** Filling the weights (random normal, one Param at a time). */
  setupSeconds: number;
  /** The forward pass (synchronous kernels; the output is read back). */
  seconds: number;
  /** process.resourceUsage().maxRSS of the child, bytes. */
  peakRssBytes: number;
  /** Peak of live backend buffers during the forward (weights included), bytes. */
  peakTensorBytes: number;
  /** Peak of tf.memory().numBytes during the forward, sampled at each allocation (counts reshaped views again), bytes. */
  enginePeakBytes: number;
  /** wasm only: the heap's size after the forward (its high-water mark). */
  wasmHeapBytes?: number;
  /** float32 bytes of the parameters the run filled. */
  weightBytes: number;
  /** Our estimate of the peak (weights + activations of the scope), bytes; NaN for the partial scope. */
  estimateBytes: number;
  /** The same without attention slicing (what today's attention() holds either way, see docs/backends.md). */
  estimateUnslicedBytes: number;
}

export interface UnetAttempt {
  backend: 'wasm' | 'cpu';
  scope: UnetScope;
  /** Set when the attempt failed (out of memory, crash). */
  error?: string;
  outOfMemory?: boolean;
  run?: UnetRun;
}

export interface UnetBenchResult {
  latent: number;
  batch: number;
  attentionSliceSize?: number;
  attempts: UnetAttempt[];
  /** The successful run, if any. */
  run?: UnetRun;
}

interface ChildArgs {
  backend: 'wasm' | 'cpu';
  scope: UnetScope;
  latent: number;
  batch: number;
  attentionSliceSize?: number;
}

/** The parameters a scope uses: all of them, or conv_in, the time embedding and down_blocks.0. */
function scopeParams(unet: UNet2DConditionModel, scope: UnetScope): Map<string, Param> {
  const all = namedParams(unet);
  if (scope === 'full') return all;
  return new Map([...all].filter(([k]) => k.startsWith('conv_in.') || k.startsWith('time_embedding.') || k.startsWith('down_blocks.0.')));
}

/** Runs one measurement in this process (the child side). */
export async function measureUnet(a: ChildArgs): Promise<UnetRun> {
  await useBackend(a.backend);
  const cfg = SD15.unet;
  const unet = new UNet2DConditionModel(cfg);
  const params = scopeParams(unet, a.scope);
  const t0 = performance.now();
  let weightBytes = 0;
  for (const [name, p] of params) {
    p.set(tf.randomNormal([...p.shape], 0, 0.02), name);
    weightBytes += p.size * 4;
  }
  const setupSeconds = (performance.now() - t0) / 1000;
  const n = a.batch;
  const sample = tf.randomNormal([n, a.latent, a.latent, cfg.in_channels]) as tf.Tensor4D;
  const context = tf.randomNormal([n, 77, cfg.cross_attention_dim]) as tf.Tensor3D;
  const opts = { attentionSliceSize: a.attentionSliceSize };
  const forward = (): tf.Tensor =>
    a.scope === 'full'
      ? unet.forward(sample, 500, context, opts)
      : tf.tidy(() => {
          const temb = unet.time_embedding.forward(unet.timeProjection(500, n));
          const block = unet.down_blocks[0] as CrossAttnDownBlock2D;
          return block.forward(unet.conv_in.forward(sample), temb, context, opts).h;
        });
  const tracker = trackTensorMemory();
  const base = tf.memory().numBytes; // weights + inputs, all allocated before tracking began
  const t1 = performance.now();
  // (not under tf.profile: an out-of-memory error inside a profiled kernel surfaces as a TypeError from the profiler)
  let out: tf.Tensor;
  try {
    out = forward();
    out.dataSync();
  } finally {
    tracker.stop();
  }
  const seconds = (performance.now() - t1) / 1000;
  out.dispose();
  const activations = (slice?: number): number =>
    a.scope === 'full' ? unetActivationBytes(cfg, { batch: n, h: a.latent, w: a.latent, attentionSliceSize: slice }) : NaN;
  return {
    backend: a.backend,
    scope: a.scope,
    setupSeconds,
    seconds,
    peakRssBytes: peakRss(),
    peakTensorBytes: base + tracker.peak,
    enginePeakBytes: tracker.enginePeak,
    wasmHeapBytes: wasmHeapBytes(),
    weightBytes,
    estimateBytes: weightBytes + activations(a.attentionSliceSize),
    estimateUnslicedBytes: weightBytes + activations(undefined),
  };
}

const self = fileURLToPath(import.meta.url);

function runChild(a: ChildArgs): Promise<UnetAttempt> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--max-old-space-size=8192', self, '--child', JSON.stringify(a)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const line = out.trim().split('\n').pop() ?? '';
      try {
        const r = JSON.parse(line) as { run?: UnetRun; error?: string; outOfMemory?: boolean };
        if (r.run) return resolve({ backend: a.backend, scope: a.scope, run: r.run });
        if (r.error) return resolve({ backend: a.backend, scope: a.scope, error: r.error, outOfMemory: r.outOfMemory });
      } catch {
        // no JSON: the child died (an abort inside wasm, the OOM killer, ...)
      }
      const lastErr = err.trim().split('\n').filter((l) => l.trim() !== '').slice(-3).join(' | ');
      const oom = /out of memory|memory access out of bounds|Aborted\(|Cannot enlarge memory|heap out of memory/i.test(err) || signal === 'SIGKILL';
      resolve({
        backend: a.backend,
        scope: a.scope,
        outOfMemory: oom,
        error: `child exited with ${signal ?? `code ${code}`}${lastErr ? `: ${lastErr.slice(0, 300)}` : ''}`,
      });
    });
  });
}

/** Runs the benchmark (from compiled JS: each attempt in its own process). */
export async function benchUnet(opts: UnetBenchOptions = {}): Promise<UnetBenchResult> {
  if (!self.endsWith('.js')) throw new Error('benchUnet runs its measurements in child processes: run it from the compiled dist/bench');
  const latent = opts.latent ?? 64;
  const batch = opts.batch ?? 2;
  const slice = opts.attentionSliceSize ?? 1;
  const attentionSliceSize = slice > 0 ? slice : undefined;
  const request = opts.backend ?? 'auto';
  const plan: Array<'wasm' | 'cpu'> = request === 'auto' ? ['wasm', 'cpu'] : [request];
  const attempts: UnetAttempt[] = [];
  for (const backend of plan) {
    const scope: UnetScope = backend === 'cpu' && !opts.full ? 'down0' : 'full';
    opts.onStart?.(`U-Net forward on ${backend} (${scope === 'full' ? 'full U-Net' : 'conv_in + down_blocks.0'})`);
    const attempt = await runChild({ backend, scope, latent, batch, attentionSliceSize });
    attempts.push(attempt);
    if (attempt.run) return { latent, batch, attentionSliceSize, attempts, run: attempt.run };
  }
  return { latent, batch, attentionSliceSize, attempts };
}

if (process.argv[2] === '--child' && process.argv[3] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = JSON.parse(process.argv[3]) as ChildArgs;
  try {
    const run = await measureUnet(args);
    process.stdout.write(`${JSON.stringify({ run })}\n`);
  } catch (e) {
    const explained = explainBackendError(e);
    const raw = String((e as Error)?.message ?? e);
    // A full 4 GiB heap shows up as a trap, or as a failed typed-array view on a null allocation.
    const heap = wasmHeapBytes();
    const heapFull = heap !== undefined && heap > 0.9 * WASM_HEAP_BYTES;
    const outOfMemory = explained !== e || /out of memory|memory access out of bounds|Invalid typed array length/i.test(raw) || heapFull;
    let msg = (explained instanceof Error ? explained.message : String(explained)).split('\n')[0]!;
    if (outOfMemory && explained === e) {
      let live = '';
      try {
        live = `; ${formatBytes(tf.memory().numBytes)} of tensors still live after unwinding`;
      } catch {
        // the engine may be unusable after the failure
      }
      msg = `the wasm heap is full (${heap === undefined ? '?' : formatBytes(heap)} of 4 GiB${live}): ${raw.split('\n')[0]}`;
    }
    process.stdout.write(`${JSON.stringify({ error: msg, outOfMemory })}\n`);
    process.exitCode = 2;
  }
}
