// Merging LoRAs into the model for sampling: W ← W + Σ m·(alpha/r)·up·down, reversibly. The original weight tensors
// are kept (not recomputed by subtraction), so `remove()` restores the base model bit for bit.
import * as tf from '@tensorflow/tfjs';
import { SdtrainError } from '../errors.js';
import type { Param } from '../nn/module.js';
import { loraTargets, type LoraModels, type LoraTarget, type LoraTargetMap } from './names.js';
import { checkLoraFits, deltaShape, type LoraFile, type LoraModule } from './read.js';

export interface LoraToApply {
  file: LoraFile;
  /** Multiplier for the U-Net modules (and the text encoder's unless `teWeight` is given). */
  weight: number;
  /** Multiplier for the text-encoder modules (A1111 `<lora:name:te:unet>`); defaults to `weight`. */
  teWeight?: number;
}

export interface AppliedLoras {
  /** Weights changed (several LoRAs on one module count once). */
  readonly mergedWeights: number;
  /** Module names of the files that the model lacks (skipped, as A1111 does), as `<file>: <name>`. */
  readonly skipped: readonly string[];
  /** True until `remove()`. */
  readonly active: boolean;
  /** Puts the original weight tensors back and frees the merged ones. Idempotent. */
  remove(): void;
}

/**
 * ΔW = m·(alpha/r)·up·down in our layout (Linear [out, in], Conv2d HWIO [kh, kw, in, out]): for a k×k conv
 * ΔW[o, i, :, :] = Σ_r up[o, r]·down[r, i, :, :], transposed to HWIO. A LoRA with fewer input channels than conv_in
 * (a 4-channel LoRA on a 9-channel inpainting U-Net) is zero-padded at the end, as A1111 does. The caller owns the tensor.
 */
export function loraDelta(m: Pick<LoraModule, 'down' | 'up' | 'alpha' | 'rank'>, target: LoraTarget, multiplier: number): tf.Tensor {
  const shape = deltaShape(m);
  if (!shape) throw new Error(`${target.name}: down/up shapes are not a LoRA pair`);
  const [out, inL, kh = 1, kw = 1] = shape as [number, number, number?, number?];
  const r = m.rank;
  const scale = (multiplier * m.alpha) / r;
  return tf.tidy(() => {
    const up = tf.tensor2d(m.up.data, [out, r]);
    const down = tf.tensor2d(m.down.data, [r, inL * kh * kw]);
    const d = tf.matMul(up, down).mul(tf.scalar(scale)); // [out, in·kh·kw]
    if (target.kind === 'linear') return d.reshape([out, inL]);
    let hwio = d.reshape([out, inL, kh, kw]).transpose([2, 3, 1, 0]); // [kh, kw, in, out]
    if (inL < target.inFeatures) hwio = hwio.pad([[0, 0], [0, 0], [0, target.inFeatures - inL], [0, 0]]);
    return hwio;
  });
}

interface Merge {
  target: LoraTarget;
  parts: Array<{ module: LoraModule; multiplier: number }>;
}

/**
 * Merges the LoRAs into `models`' weights and returns a handle that restores them. Multiplier 0 leaves a module
 * untouched (exactly the base weights). All shapes are checked before anything changes; on any error the model is
 * unchanged. Handles that touch the same weights must be removed in reverse order of application.
 */
export function applyLoras(models: LoraModels, loras: readonly LoraToApply[], targets: LoraTargetMap = loraTargets(models)): AppliedLoras {
  const merges = new Map<Param, Merge>();
  const skipped: string[] = [];
  for (const { file, weight, teWeight } of loras) {
    for (const [what, m] of [['weight', weight], ['teWeight', teWeight]] as const) {
      if (m !== undefined && !Number.isFinite(m)) throw new SdtrainError(`${file.path}: LoRA ${what} must be a finite number, got ${m}`);
    }
    checkLoraFits(file, targets);
    for (const module of file.modules) {
      const target = targets.get(module.name);
      if (!target) {
        skipped.push(`${file.path}: ${module.name}`);
        continue;
      }
      const multiplier = module.component === 'text_encoder' ? (teWeight ?? weight) : weight;
      if (multiplier === 0) continue;
      if (!target.weight.value) throw new SdtrainError(`cannot apply a LoRA to ${target.component} ${target.path}: the model's weights are not loaded`);
      let merge = merges.get(target.weight);
      if (!merge) merges.set(target.weight, (merge = { target, parts: [] }));
      merge.parts.push({ module, multiplier });
    }
  }

  // Compute every merged weight first, so a failure (e.g. out of memory) leaves the model as it was.
  const swaps: Array<{ param: Param; original: tf.Tensor; merged: tf.Tensor }> = [];
  try {
    for (const [param, { target, parts }] of merges) {
      const original = param.value!;
      const merged = tf.tidy(() => {
        let w = original;
        for (const { module, multiplier } of parts) w = w.add(loraDelta(module, target, multiplier));
        return w;
      });
      swaps.push({ param, original, merged });
    }
  } catch (err) {
    for (const s of swaps) s.merged.dispose();
    throw err;
  }
  // Assigned directly, not through Param.set (which would dispose the original we keep).
  for (const s of swaps) s.param.value = s.merged;

  let active = true;
  return {
    mergedWeights: swaps.length,
    skipped,
    get active() {
      return active;
    },
    remove() {
      if (!active) return;
      const moved = swaps.find((s) => s.param.value !== s.merged);
      if (moved) {
        throw new SdtrainError(
          'cannot remove these LoRAs: a weight they merged has been replaced since (remove LoRA handles in reverse order of application)',
        );
      }
      for (const s of swaps) {
        s.merged.dispose();
        s.param.value = s.original;
      }
      active = false;
    },
  };
}
