// How the U-Net uses hypernetworks (A1111's `apply_hypernetworks`, formats.md §5.3): in attn1 and attn2 of every
// BasicTransformerBlock, before the key/value projections, start from ctx_k = ctx_v = context and, for each
// hypernetwork in order, map them by its pair for the context width (`context.shape[-1]`) if it has one. attn1's
// context is the image tokens (SD 320/640/1280 by block), attn2's the text encoding (768 SD1, 1024 SD2). The query
// is never changed. Nothing is merged into the weights: the hook runs on every call, so training goes through it.
import type * as tf from '@tensorflow/tfjs';
import { SdtrainError } from '../errors.js';
import { Attention, BasicTransformerBlock } from '../models/attention.js';
import { Module } from '../nn/module.js';
import type { Hypernetwork } from './hypernetwork.js';

export interface HypernetworkToApply {
  hn: Hypernetwork;
  /** The multiplier m in x + Seq(x)·m (A1111's `<hypernet:name:m>`); ignored in training mode, where m = 1. */
  strength: number;
}

export interface AttachedHypernetworks {
  /** Attention layers hooked (attn1 and attn2 of every transformer block). */
  readonly attentions: number;
  /** Of those, the ones whose context width at least one of the hypernetworks has a pair for. */
  readonly affected: number;
  /** Hypernetwork widths no attention layer of this U-Net has (their pairs never run), as `<name>: <width>`. */
  readonly unusedWidths: readonly string[];
  /** True until `detach()`. */
  readonly attached: boolean;
  /** Removes the hooks. Idempotent. */
  detach(): void;
}

/** ctx → [ctx_k, ctx_v] through the hypernetworks in order (A1111's `apply_hypernetworks`). */
export function applyHypernetworks<T extends tf.Tensor>(list: readonly HypernetworkToApply[], context: T): [T, T] {
  let k = context;
  let v = context;
  for (const { hn, strength } of list) [k, v] = hn.apply(k, v, strength);
  return [k, v];
}

/** attn1 and attn2 of every BasicTransformerBlock under `root` (a U-Net), in field order. */
export function transformerAttentions(root: Module): Attention[] {
  const out: Attention[] = [];
  const seen = new Set<object>();
  const walk = (node: unknown): void => {
    if (node === null || typeof node !== 'object' || seen.has(node)) return;
    seen.add(node);
    if (node instanceof BasicTransformerBlock) out.push(node.attn1, node.attn2);
    else if (Array.isArray(node)) node.forEach(walk);
    else if (node instanceof Module) Object.values(node).forEach(walk);
  };
  walk(root);
  return out;
}

/**
 * Hooks the hypernetworks into every transformer attention of `unet` (see the top of this file) and returns a
 * handle that removes the hooks. Strength 0 leaves the U-Net's output bit for bit as without the hypernetwork.
 * Refuses a U-Net that already has hooks (attach several hypernetworks in one call, in the order A1111 lists them).
 */
export function attachHypernetworks(unet: Module, list: readonly HypernetworkToApply[]): AttachedHypernetworks {
  for (const { hn, strength } of list) {
    if (!Number.isFinite(strength)) throw new SdtrainError(`hypernetwork ${hn.name || '(unnamed)'}: strength must be a finite number, got ${strength}`);
  }
  const attentions = transformerAttentions(unet);
  if (attentions.some((a) => a.kvTransform !== undefined)) {
    throw new SdtrainError('this U-Net already has hypernetworks attached: detach them first, or attach all of them in one call');
  }
  const items = [...list];
  const hook = (context: tf.Tensor3D): [tf.Tensor3D, tf.Tensor3D] => applyHypernetworks(items, context);
  for (const a of attentions) a.kvTransform = hook;

  // The context width of an attention is what its to_k takes.
  const widths = new Set(attentions.map((a) => a.to_k.inFeatures));
  const affected = attentions.filter((a) => items.some(({ hn }) => hn.layers.has(a.to_k.inFeatures))).length;
  const unusedWidths = items.flatMap(({ hn }) => hn.sizes.filter((s) => !widths.has(s)).map((s) => `${hn.name || '(unnamed)'}: ${s}`));

  let attached = true;
  return {
    attentions: attentions.length,
    affected,
    unusedWidths,
    get attached() {
      return attached;
    },
    detach() {
      if (!attached) return;
      for (const a of attentions) if (a.kvTransform === hook) a.kvTransform = undefined;
      attached = false;
    },
  };
}
