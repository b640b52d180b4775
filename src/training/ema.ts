// Exponential moving average of weights, as diffusers' EMAModel (training_utils.py) with its defaults
// (update_after_step 0, use_ema_warmup False, min_decay 0): after optimizer step n (1-based),
//   decay_n = 0 for n = 1 (the shadow copies the weights), else min(decay, (1 + (n−1)) / (10 + (n−1)));
//   shadow ← shadow − (1 − decay_n)·(shadow − param).
// The warm-up term matters: with decay 0.9999 and the usual 800–1200 DreamBooth steps a plain EMA would stay almost
// at the base weights; with diffusers' schedule the effective decay at step 800 is 800/809 ≈ 0.989.
import * as tf from '@tensorflow/tfjs';
import type { LoadedTensor, TensorToWrite } from '../formats/dtype.js';

/** diffusers EMAModel.get_decay for optimization step `n` (1-based, the count after the update). */
export function emaDecay(n: number, decay: number): number {
  const step = Math.max(0, n - 1);
  if (step <= 0) return 0;
  return Math.min(decay, (1 + step) / (10 + step));
}

export class Ema {
  /** Shadow copies, in the order of the tracked tensors. */
  readonly shadow: tf.Tensor[];
  /** Updates applied (diffusers' optimization_step). */
  steps = 0;

  constructor(
    tracked: readonly tf.Tensor[],
    readonly decay: number,
  ) {
    this.shadow = tracked.map((t) => t.clone());
  }

  /** One update from the current values of `tracked` (same order and shapes as at construction). */
  update(tracked: readonly tf.Tensor[]): void {
    if (tracked.length !== this.shadow.length) throw new Error(`EMA tracks ${this.shadow.length} tensors, got ${tracked.length}`);
    this.steps += 1;
    const d = emaDecay(this.steps, this.decay);
    tracked.forEach((p, i) => {
      const s = this.shadow[i]!;
      const next = d === 0 ? p.clone() : tf.tidy(() => s.sub(s.sub(p).mul(1 - d)));
      s.dispose();
      this.shadow[i] = next;
    });
  }

  /** For checkpoints: `ema.<i>` per shadow tensor, plus `ema.steps`. */
  stateDict(): Map<string, TensorToWrite> {
    const out = new Map<string, TensorToWrite>();
    this.shadow.forEach((s, i) => out.set(`ema.${i}`, { shape: [...s.shape], data: Float32Array.from(s.dataSync() as Float32Array) }));
    out.set('ema.steps', { shape: [1], data: Int32Array.from([this.steps]) });
    return out;
  }

  loadState(state: Map<string, LoadedTensor>): void {
    const steps = state.get('ema.steps');
    if (!steps) throw new Error('checkpoint has no EMA state (ema.steps): it was trained without dreambooth.ema.enabled');
    this.shadow.forEach((s, i) => {
      const t = state.get(`ema.${i}`);
      if (!t || t.shape.join() !== s.shape.join()) throw new Error(`checkpoint EMA tensor ema.${i} is missing or has another shape`);
      this.shadow[i] = tf.tensor(t.data as Float32Array, t.shape, 'float32');
      s.dispose();
    });
    this.steps = Number(steps.data[0]);
  }

  dispose(): void {
    tf.dispose(this.shadow);
  }
}
