// Run-folder checkpoints for exact resume. Layout of `<runDir>/checkpoints/step-<n>/`:
//   <the method's files>           e.g. the embedding exports, usable for inference as they are
//   trainer_state.safetensors      written last: trainable variable values, optimizer slots, RNG state, data cursor,
//                                  step, elapsed time and the loss-history tail (metadata keys `sdtrain.*`)
// The folder is assembled under a temporary name and renamed into place, so `step-<n>/` either is complete or does
// not exist; `findLatestCheckpoint` only considers folders that hold trainer_state.safetensors.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { SdtrainError } from '../errors.js';
import type { LoadedTensor, TensorToWrite } from '../formats/dtype.js';
import { SafetensorsFile, writeSafetensors } from '../formats/safetensors.js';
import type { TorchGeneratorState } from '../random/torch_rng.js';
import type { OptimizerState, SlotState } from './optimizers.js';
import type { DataCursor, TrainingMethod } from './types.js';

export const TRAINER_STATE_FILE = 'trainer_state.safetensors';
export const TRAINER_STATE_VERSION = '1';
const STEP_DIR = /^step-(\d+)$/;

/** Everything besides the method's own files that a resume restores. */
export interface TrainerState {
  step: number;
  method: string;
  seed: number;
  /** The trainable variables' values, in trainableVariables() order, with their names (for messages). */
  params: Array<{ name: string; shape: number[]; data: Float32Array }>;
  optimizer: OptimizerState;
  rng: TorchGeneratorState;
  cursor: DataCursor;
  elapsedSeconds: number;
  /** The last losses (for the plot and the summary after a resume). */
  lossTail: { steps: number[]; losses: number[] };
  /** Settings whose change makes a resume inexact (compared with a warning). */
  settings: Record<string, string | number>;
  /** The method's extra state (`stateDict()`). */
  methodState?: Map<string, TensorToWrite>;
}

/** A trainer state as read back: the method's extras are loaded tensors. */
export type LoadedTrainerState = TrainerState & { methodState: Map<string, LoadedTensor> };

export const checkpointDir = (runDir: string, step: number): string => join(runDir, 'checkpoints', `step-${step}`);

/** The newest complete checkpoint folder of a run, or undefined. */
export async function findLatestCheckpoint(runDir: string): Promise<string | undefined> {
  const root = join(runDir, 'checkpoints');
  if (!existsSync(root)) return undefined;
  let best: { step: number; dir: string } | undefined;
  for (const name of await readdir(root)) {
    const m = STEP_DIR.exec(name);
    if (!m || !existsSync(join(root, name, TRAINER_STATE_FILE))) continue;
    const step = Number(m[1]);
    if (!best || step > best.step) best = { step, dir: join(root, name) };
  }
  return best?.dir;
}

/** Writes `checkpoints/step-<n>/` atomically (method files, then the trainer state, then one rename). Returns its files. */
export async function writeCheckpoint(runDir: string, method: TrainingMethod, state: TrainerState): Promise<{ dir: string; files: string[] }> {
  const final = checkpointDir(runDir, state.step);
  const tmp = join(runDir, 'checkpoints', `.step-${state.step}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { recursive: true });
  try {
    const written = await method.save(tmp, state.step, 'checkpoint');
    await writeTrainerState(join(tmp, TRAINER_STATE_FILE), state);
    if (existsSync(final)) {
      // A re-run over an old step-<n> (e.g. after resuming from an earlier one): swap, then drop the old one.
      const trash = `${tmp}.old`;
      await rename(final, trash);
      await rename(tmp, final);
      await rm(trash, { recursive: true, force: true });
    } else {
      await rename(tmp, final);
    }
    return { dir: final, files: [...written.map((f) => join(final, relative(tmp, f))), join(final, TRAINER_STATE_FILE)] };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

const meta = (k: string) => `sdtrain.${k}`;

async function writeTrainerState(path: string, s: TrainerState): Promise<void> {
  const tensors = new Map<string, TensorToWrite>();
  s.params.forEach((p, i) => tensors.set(`param.${i}`, { shape: p.shape, data: p.data }));
  s.optimizer.slots.forEach((slots, i) => {
    for (const [name, v] of Object.entries(slots)) tensors.set(`optimizer.${i}.${name}`, { shape: v.shape, data: v.data });
  });
  tensors.set('rng.mt', { shape: [s.rng.mt.length], data: new Int32Array(s.rng.mt.buffer, s.rng.mt.byteOffset, s.rng.mt.length) });
  tensors.set('loss.steps', { shape: [s.lossTail.steps.length], data: Int32Array.from(s.lossTail.steps) });
  tensors.set('loss.values', { shape: [s.lossTail.losses.length], data: Float32Array.from(s.lossTail.losses) });
  for (const [k, t] of s.methodState ?? []) tensors.set(`method.${k}`, { shape: t.shape, data: t.data });
  const metadata: Record<string, string> = {
    [meta('trainer_state')]: TRAINER_STATE_VERSION,
    [meta('step')]: String(s.step),
    [meta('method')]: s.method,
    [meta('seed')]: String(s.seed),
    [meta('param_names')]: JSON.stringify(s.params.map((p) => p.name)),
    [meta('optimizer')]: JSON.stringify({ type: s.optimizer.type, step: s.optimizer.step }),
    [meta('rng')]: JSON.stringify({ seed: s.rng.seed, index: s.rng.index, next_double_normal: s.rng.nextDoubleNormal }),
    [meta('cursor')]: JSON.stringify(s.cursor),
    [meta('elapsed_seconds')]: String(s.elapsedSeconds),
    [meta('settings')]: JSON.stringify(s.settings),
  };
  await writeSafetensors(path, tensors, metadata);
}

/** Reads `trainer_state.safetensors` of a checkpoint folder. */
export async function readCheckpoint(dir: string): Promise<LoadedTrainerState> {
  const path = join(dir, TRAINER_STATE_FILE);
  if (!existsSync(path)) throw new SdtrainError(`${dir}: not a training checkpoint (no ${TRAINER_STATE_FILE})`);
  const file = await SafetensorsFile.open(path);
  try {
    const md = file.metadata;
    const get = (k: string): string => {
      const v = md[meta(k)];
      if (v === undefined) throw new SdtrainError(`${path}: metadata '${meta(k)}' is missing`);
      return v;
    };
    if (get('trainer_state') !== TRAINER_STATE_VERSION) throw new SdtrainError(`${path}: trainer state version ${get('trainer_state')} is not supported (expected ${TRAINER_STATE_VERSION})`);
    const tensors = new Map<string, LoadedTensor>();
    for (const t of file.tensors) tensors.set(t.name, await file.read(t.name));
    const f32 = (t: LoadedTensor): Float32Array => {
      if (!(t.data instanceof Float32Array)) throw new SdtrainError(`${path}: tensor ${t.name} is not float32`);
      return t.data;
    };
    const names = JSON.parse(get('param_names')) as string[];
    const params = names.map((name, i) => {
      const t = tensors.get(`param.${i}`);
      if (!t) throw new SdtrainError(`${path}: tensor param.${i} is missing`);
      return { name, shape: t.shape, data: f32(t) };
    });
    const opt = JSON.parse(get('optimizer')) as { type: OptimizerState['type']; step: number };
    const slots: Array<Record<string, SlotState>> = names.map(() => ({}));
    const methodState = new Map<string, LoadedTensor>();
    for (const [key, t] of tensors) {
      const m = /^optimizer\.(\d+)\.(.+)$/.exec(key);
      if (m) slots[Number(m[1])]![m[2]!] = { shape: t.shape, data: f32(t) };
      if (key.startsWith('method.')) methodState.set(key.slice('method.'.length), t);
    }
    const rngMeta = JSON.parse(get('rng')) as { seed: string; index: number; next_double_normal: number | null };
    const mt = tensors.get('rng.mt')!.data as Int32Array;
    const steps = tensors.get('loss.steps')?.data ?? new Int32Array(0);
    const losses = tensors.get('loss.values')?.data ?? new Float32Array(0);
    return {
      step: Number(get('step')),
      method: get('method'),
      seed: Number(get('seed')),
      params,
      optimizer: { type: opt.type, step: opt.step, slots },
      rng: { seed: rngMeta.seed, index: rngMeta.index, nextDoubleNormal: rngMeta.next_double_normal, mt: new Uint32Array(mt.buffer, mt.byteOffset, mt.length) },
      cursor: JSON.parse(get('cursor')) as DataCursor,
      elapsedSeconds: Number(get('elapsed_seconds')),
      lossTail: { steps: Array.from(steps), losses: Array.from(losses) },
      settings: JSON.parse(get('settings')) as Record<string, string | number>,
      methodState,
    };
  } finally {
    await file.close();
  }
}
