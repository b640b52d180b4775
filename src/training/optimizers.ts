// Optimizers over an explicit variable list, written with tfjs ops because tfjs' own lack decoupled weight decay and
// state export. Each follows one PyTorch reference formula (cited per class) and keeps its state as tensors that
// `getState()` copies out as plain Float32Arrays (and `setState()` puts back) for checkpoints and exact resume.
// `step(vars, grads, lr)` updates the variables in place; the learning rate is passed per step (the loop owns the
// schedule). Slots are indexed by the variable's position in the list, which the caller keeps fixed.
import * as tf from '@tensorflow/tfjs';
import type { OPTIMIZERS } from '../config/schema_common.js';

export type OptimizerType = (typeof OPTIMIZERS)[number];

/** One saved slot (first moment, second moment, ...). */
export interface SlotState {
  shape: number[];
  data: Float32Array;
}

export interface OptimizerState {
  type: OptimizerType;
  /** Completed steps (torch's per-parameter `state['step']`, the same for every parameter here). */
  step: number;
  /** Per variable (list position): slot name → values. */
  slots: Array<Record<string, SlotState>>;
}

export interface OptimizerOptions {
  betas?: readonly [number, number];
  weightDecay?: number;
  eps?: number;
  momentum?: number;
}

export abstract class Optimizer {
  abstract readonly type: OptimizerType;
  /** Completed steps. */
  t = 0;
  protected slots: Array<Map<string, tf.Tensor>> = [];

  /**
   * Updates `vars[i]` with `grads[i]` at learning rate `lr` (times `lrScales[i]` when given: per-variable parameter
   * groups). Tensors made here are freed; grads stay the caller's.
   */
  step(vars: readonly tf.Variable[], grads: readonly tf.Tensor[], lr: number, lrScales?: readonly number[]): void {
    if (vars.length !== grads.length) throw new Error(`optimizer: ${vars.length} variables but ${grads.length} gradients`);
    if (lrScales && lrScales.length !== vars.length) throw new Error(`optimizer: ${vars.length} variables but ${lrScales.length} learning-rate scales`);
    this.t += 1;
    vars.forEach((v, i) => {
      const slots = (this.slots[i] ??= new Map());
      const g = grads[i]!;
      if (g.shape.join() !== v.shape.join()) throw new Error(`optimizer: gradient [${g.shape}] for variable ${v.name} [${v.shape}]`);
      const lrI = lrScales ? lr * lrScales[i]! : lr;
      const updated = tf.tidy(() => this.update(v, g, lrI, slots));
      for (const [name, value] of updated.slots) this.setSlot(slots, name, value);
      v.assign(updated.param);
      updated.param.dispose();
    });
  }

  /** New parameter value and new slot values (all created inside the caller's tidy; kept by it). */
  protected abstract update(p: tf.Tensor, g: tf.Tensor, lr: number, slots: Map<string, tf.Tensor>): { param: tf.Tensor; slots: Array<[string, tf.Tensor]> };

  private setSlot(slots: Map<string, tf.Tensor>, name: string, value: tf.Tensor): void {
    const old = slots.get(name);
    slots.set(name, value);
    if (old && old !== value) old.dispose();
  }

  getState(): OptimizerState {
    return {
      type: this.type,
      step: this.t,
      slots: this.slots.map((m) => {
        const out: Record<string, SlotState> = {};
        for (const [k, v] of m) out[k] = { shape: [...v.shape], data: Float32Array.from(v.dataSync() as Float32Array) };
        return out;
      }),
    };
  }

  setState(s: OptimizerState): void {
    if (s.type !== this.type) throw new Error(`optimizer state is for ${s.type}, this optimizer is ${this.type}`);
    this.dispose();
    this.t = s.step;
    this.slots = s.slots.map((r) => new Map(Object.entries(r).map(([k, v]) => [k, tf.tensor(v.data, v.shape, 'float32')])));
  }

  dispose(): void {
    for (const m of this.slots) for (const v of m.values()) v.dispose();
    this.slots = [];
  }
}

const zerosOr = (slots: Map<string, tf.Tensor>, name: string, like: tf.Tensor): tf.Tensor => slots.get(name) ?? tf.zerosLike(like);

/**
 * torch.optim.AdamW (amsgrad=False): p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε).
 */
export class AdamW extends Optimizer {
  readonly type = 'adamw';
  constructor(readonly opts: { betas: readonly [number, number]; weightDecay: number; eps: number }) {
    super();
  }
  protected update(p: tf.Tensor, g: tf.Tensor, lr: number, slots: Map<string, tf.Tensor>) {
    const [b1, b2] = this.opts.betas;
    const decayed = p.mul(1 - lr * this.opts.weightDecay);
    const m = zerosOr(slots, 'exp_avg', p).mul(b1).add(g.mul(1 - b1));
    const v = zerosOr(slots, 'exp_avg_sq', p).mul(b2).add(g.square().mul(1 - b2));
    const bc1 = 1 - b1 ** this.t;
    const bc2 = 1 - b2 ** this.t;
    const denom = v.sqrt().div(Math.sqrt(bc2)).add(this.opts.eps);
    const param = decayed.sub(m.div(denom).mul(lr / bc1));
    return { param, slots: [['exp_avg', m], ['exp_avg_sq', v]] as Array<[string, tf.Tensor]> };
  }
}

/**
 * torch.optim.SGD (dampening 0, nesterov False): g ← g + wd·p (torch's coupled L2 decay); with momentum μ > 0,
 * buf ← g at the first step, then buf ← μ·buf + g, and g ← buf; p ← p − lr·g.
 */
export class SGD extends Optimizer {
  readonly type = 'sgd';
  constructor(readonly opts: { momentum: number; weightDecay: number }) {
    super();
  }
  protected update(p: tf.Tensor, g0: tf.Tensor, lr: number, slots: Map<string, tf.Tensor>) {
    const { momentum, weightDecay } = this.opts;
    let g = weightDecay !== 0 ? g0.add(p.mul(weightDecay)) : g0;
    const out: Array<[string, tf.Tensor]> = [];
    if (momentum !== 0) {
      const prev = slots.get('momentum_buffer');
      g = prev ? prev.mul(momentum).add(g) : g.clone();
      out.push(['momentum_buffer', g]);
    }
    return { param: p.sub(g.mul(lr)), slots: out };
  }
}

/**
 * Lion (Chen et al. 2023, lucidrains/lion-pytorch): c ← sign(β1·m + (1−β1)·g); p ← p·(1 − lr·wd) − lr·c;
 * m ← β2·m + (1−β2)·g.
 */
export class Lion extends Optimizer {
  readonly type = 'lion';
  constructor(readonly opts: { betas: readonly [number, number]; weightDecay: number }) {
    super();
  }
  protected update(p: tf.Tensor, g: tf.Tensor, lr: number, slots: Map<string, tf.Tensor>) {
    const [b1, b2] = this.opts.betas;
    const m0 = zerosOr(slots, 'exp_avg', p);
    const c = m0.mul(b1).add(g.mul(1 - b1)).sign();
    const param = p.mul(1 - lr * this.opts.weightDecay).sub(c.mul(lr));
    return { param, slots: [['exp_avg', m0.mul(b2).add(g.mul(1 - b2))]] as Array<[string, tf.Tensor]> };
  }
}

/**
 * transformers' Adafactor with an external learning rate (scale_parameter=False, relative_step=False,
 * warmup_init=False, beta1=None: the setting kohya and diffusers recommend with a schedule), eps = (1e-30, 1e-3)
 * [eps2 only matters with scale_parameter], clip_threshold 1, decay_rate −0.8:
 *   β2ₜ = 1 − t^−0.8; u = g² + 1e-30;
 *   rank ≥ 2 (factored over the last two axes): r ← β2ₜ·r + (1−β2ₜ)·mean₋₁(u), c ← β2ₜ·c + (1−β2ₜ)·mean₋₂(u),
 *     û = g · rsqrt(r / mean₋₁(r))[..., None] · rsqrt(c)[..., None, :];  otherwise v ← β2ₜ·v + (1−β2ₜ)·u, û = g·rsqrt(v);
 *   û ← û / max(1, rms(û) / clip); p ← p − lr·wd·p − lr·û.
 * The factored axes are the last two of OUR layout: the same as torch for Linear weights [out, in], but [in, out] of
 * HWIO conv kernels where torch factors [kh, kw] (so conv updates differ from torch's Adafactor).
 */
export class Adafactor extends Optimizer {
  readonly type = 'adafactor';
  constructor(readonly opts: { weightDecay: number; eps1?: number; clipThreshold?: number; decayRate?: number }) {
    super();
  }
  protected update(p: tf.Tensor, g: tf.Tensor, lr: number, slots: Map<string, tf.Tensor>) {
    const { weightDecay, eps1 = 1e-30, clipThreshold = 1, decayRate = -0.8 } = this.opts;
    const beta2t = 1 - this.t ** decayRate;
    const u = g.square().add(eps1);
    const out: Array<[string, tf.Tensor]> = [];
    let upd: tf.Tensor;
    if (p.rank >= 2) {
      const r0 = slots.get('exp_avg_sq_row') ?? tf.zeros(p.shape.slice(0, -1));
      const c0 = slots.get('exp_avg_sq_col') ?? tf.zeros([...p.shape.slice(0, -2), p.shape[p.rank - 1]!]);
      const r = r0.mul(beta2t).add(u.mean(-1).mul(1 - beta2t)); // [..., rows]
      const c = c0.mul(beta2t).add(u.mean(-2).mul(1 - beta2t)); // [..., cols]
      const rFactor = r.div(r.mean(-1, true)).rsqrt().expandDims(-1); // [..., rows, 1]
      const cFactor = c.rsqrt().expandDims(-2); // [..., 1, cols]
      upd = rFactor.mul(cFactor).mul(g);
      out.push(['exp_avg_sq_row', r], ['exp_avg_sq_col', c]);
    } else {
      const v = zerosOr(slots, 'exp_avg_sq', p).mul(beta2t).add(u.mul(1 - beta2t));
      upd = v.rsqrt().mul(g);
      out.push(['exp_avg_sq', v]);
    }
    const rms = upd.square().mean().sqrt();
    upd = upd.div(rms.div(clipThreshold).maximum(1));
    const param = p.sub(p.mul(lr * weightDecay)).sub(upd.mul(lr));
    return { param, slots: out };
  }
}

/** The optimizer a config names (`training.optimizer`). */
export function createOptimizer(type: OptimizerType, o: OptimizerOptions = {}): Optimizer {
  const betas = o.betas ?? ([0.9, 0.999] as const);
  const weightDecay = o.weightDecay ?? 0;
  switch (type) {
    case 'adamw':
      return new AdamW({ betas, weightDecay, eps: o.eps ?? 1e-8 });
    case 'sgd':
      return new SGD({ momentum: o.momentum ?? 0, weightDecay });
    case 'lion':
      return new Lion({ betas, weightDecay });
    case 'adafactor':
      return new Adafactor({ weightDecay });
  }
}
