// Checkpoint-loading benchmark: writes a full-size SD 1.5 single-file checkpoint with random values (fp16 on disk,
// ~2.1 GB, in a temp dir, deleted afterwards) and measures the wall time and peak RSS of `loadSingleFile` on the cpu
// backend. The point is the memory claim of src/checkpoints/load.ts: tensors are read, widened and set one at a time,
// so the peak stays near the float32 model size (`weightBytes`) plus the runtime.
//
//   import { benchLoad } from './load.js';  const r = await benchLoad();  // { seconds, peakRssBytes, weightBytes, ... }
//
// When run from compiled JS the load happens in a fresh child process (`node dist/bench/load.js --child <file>`), so
// `peakRssBytes` is the load's own peak and not the generator's or an earlier benchmark's.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useBackend } from '../src/backend/backend.js';
import { componentKeys, textEncoderLayoutOf } from '../src/checkpoints/ldm_keys.js';
import { checkpointShape } from '../src/checkpoints/load.js';
import { buildPipeline, disposePipeline } from '../src/checkpoints/pipeline.js';
import { loadSingleFile } from '../src/checkpoints/single_file.js';
import type { TensorToWrite } from '../src/formats/dtype.js';
import { writeSafetensors } from '../src/formats/safetensors.js';
import { SD15 } from '../src/models/presets.js';
import { namedParams, type Module } from '../src/nn/module.js';

export interface LoadBenchResult {
  /** Wall time of loadSingleFile (header, config derivation, reading, widening, transposing). */
  seconds: number;
  /** process.resourceUsage().maxRSS of the loading process, in bytes. */
  peakRssBytes: number;
  /** The loaded model in float32: parameters × 4. */
  weightBytes: number;
  /** Size of the generated checkpoint on disk. */
  fileBytes: number;
  params: number;
  /** true when the load ran in its own process (compiled JS), false when in this one (peak includes earlier work). */
  isolated: boolean;
}

/** Random fp16 bits in ±[2^-7, 2^-2): finite, normal, cheap to make (no float→half conversion per element). */
function randomHalfs(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const exp = 8 + (s % 5); // biased exponent 8..12
    out[i] = ((s >>> 31) << 15) | (exp << 10) | ((s >>> 8) & 0x3ff);
  }
  return out;
}

/**
 * Writes an SD 1.5 checkpoint in the original single-file layout: every key and shape of the released file (names
 * through our table, which test/checkpoints/presets.test.ts checks against the manifest), random fp16 values.
 */
export async function writeRandomSd15(path: string): Promise<{ params: number }> {
  const pipe = buildPipeline({ unet: SD15.unet, vae: SD15.vae, text_encoder: SD15.text_encoder });
  const keys = {
    unet: componentKeys('unet', SD15.unet),
    vae: componentKeys('vae', SD15.vae),
    text_encoder: componentKeys('text_encoder', textEncoderLayoutOf(SD15.text_encoder)),
  };
  const out = new Map<string, TensorToWrite>();
  let params = 0;
  let seed = 1;
  const add = (model: Module, k: (typeof keys)['unet']) => {
    for (const [name, p] of namedParams(model)) {
      const op = k.map(name)!;
      const shape = op.op === 'reshape' ? [...p.shape, 1, 1] : checkpointShape(p.shape);
      const n = p.size;
      const s = seed++;
      params += n;
      // A getter: the writer materialises one tensor at a time (same seed, so both reads agree).
      out.set(op.key, { shape, dtype: 'F16', get data() { return randomHalfs(n, s); } });
    }
  };
  add(pipe.unet, keys.unet);
  add(pipe.vae, keys.vae);
  add(pipe.textEncoder, keys.text_encoder);
  await writeSafetensors(path, out, { generator: 'sdtrain bench/load.ts (random values)' });
  return { params };
}

/** Loads `path` on the cpu backend in this process and reports time and this process's peak RSS. */
export async function measureLoad(path: string): Promise<{ seconds: number; peakRssBytes: number }> {
  await useBackend('cpu');
  const t0 = performance.now();
  const p = await loadSingleFile(path);
  const seconds = (performance.now() - t0) / 1000;
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  disposePipeline(p);
  return { seconds, peakRssBytes };
}

function runChild(script: string, path: string): Promise<{ seconds: number; peakRssBytes: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, '--child', path], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`load benchmark child exited with code ${code}`));
      try {
        resolve(JSON.parse(out) as { seconds: number; peakRssBytes: number });
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

/** Generates the checkpoint in a temp dir (`opts.dir` to choose), measures the load, deletes the file. */
export async function benchLoad(opts: { dir?: string } = {}): Promise<LoadBenchResult> {
  const dir = await mkdtemp(join(opts.dir ?? tmpdir(), 'sdtrain-bench-load-'));
  try {
    const path = join(dir, 'sd15-random.safetensors');
    const { params } = await writeRandomSd15(path);
    const fileBytes = (await stat(path)).size;
    const self = fileURLToPath(import.meta.url);
    const isolated = self.endsWith('.js');
    const r = isolated ? await runChild(self, path) : await measureLoad(path);
    return { ...r, weightBytes: params * 4, fileBytes, params, isolated };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child' && process.argv[3] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = await measureLoad(process.argv[3]);
  process.stdout.write(JSON.stringify(r));
}
