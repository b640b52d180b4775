// The learning rate at each optimizer step: diffusers' `get_scheduler` names (transformers' optimization.py lambdas,
// applied by LambdaLR once per optimizer step, so step 0 is the first update) or an A1111 "rate:until_step" string.
// Pure numbers, no tfjs.
//
// One deliberate difference from diffusers: `lr_warmup_steps` applies to every schedule, 'constant' and A1111 strings
// included (diffusers' 'constant' silently ignores num_warmup_steps; our config documents warm-up as always applied).
import { learningRateSchedule, rateAt } from '../config/schedules.js';
import type { LR_SCHEDULERS } from '../config/schema_common.js';

export type LrSchedulerName = (typeof LR_SCHEDULERS)[number];

export interface LrScheduleConfig {
  /** `training.learning_rate`: a number or an A1111 schedule string (then `scheduler` must be 'constant'). */
  learningRate: number | string;
  scheduler: LrSchedulerName;
  warmupSteps: number;
  /** `max_train_steps`: where linear reaches 0 and cosine ends. */
  totalSteps: number;
  /** Restarts for cosine_with_restarts (diffusers `lr_num_cycles`). */
  numCycles?: number;
}

/**
 * The multiplier of diffusers' schedule at a 0-based optimizer step (before warm-up):
 *   constant / constant_with_warmup: 1
 *   linear: (T - s) / (T - W), floored at 0
 *   cosine: ½(1 + cos(π · progress))                            (num_cycles 0.5: one half-wave)
 *   cosine_with_restarts: ½(1 + cos(π · ((cycles · progress) mod 1))), 0 once progress ≥ 1
 * with progress = (s - W) / (T - W).
 */
export function scheduleFactor(name: LrSchedulerName, step: number, warmup: number, total: number, numCycles = 1): number {
  if (name === 'constant' || name === 'constant_with_warmup') return 1;
  const span = Math.max(1, total - warmup);
  if (name === 'linear') return Math.max(0, (total - step) / span);
  const progress = (step - warmup) / span;
  if (name === 'cosine') return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
  if (progress >= 1) return 0;
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((numCycles * progress) % 1))));
}

/** Linear warm-up from 0: s / W for s < W (transformers: `current_step / max(1, num_warmup_steps)`), then 1. */
export function warmupFactor(step: number, warmup: number): number {
  return step < warmup ? step / Math.max(1, warmup) : 1;
}

/** A function from the 0-based optimizer step to its learning rate. */
export function learningRateAt(cfg: LrScheduleConfig): (step: number) => number {
  const pieces = learningRateSchedule(cfg.learningRate);
  if (typeof cfg.learningRate === 'string' && cfg.scheduler !== 'constant') {
    throw new RangeError(`an A1111 learning-rate string is itself the schedule; lr_scheduler must be 'constant', got '${cfg.scheduler}'`);
  }
  const { warmupSteps: w, totalSteps: t, numCycles = 1 } = cfg;
  return (step) => {
    const base = rateAt(pieces, step);
    if (step < w) return base * warmupFactor(step, w);
    return base * scheduleFactor(cfg.scheduler, step, w, t, numCycles);
  };
}
