// Gradient checkpointing for the U-Net (Chen et al. 2016, "Training deep nets with sublinear memory cost"; what
// diffusers' `enable_gradient_checkpointing()` does with torch.utils.checkpoint), hand-built on tf.customGrad since
// tfjs has none.
//
// Each U-Net block (every down block, the mid block, every up block) runs as ONE customGrad op:
// - forward: tfjs runs a customGrad's forward with the tape off and inside a tidy, so the block's intermediates (its
//   norms, convolutions, attention maps) are freed as soon as it returns; the op saves only its activation inputs
//   (block input, time embedding, context, the up block's skips);
// - backward: the gradient function recomputes the block from the saved inputs under a nested gradient tape and
//   returns d/d(inputs) and d/d(the block's trainable variables). The variables are passed to the op as extra inputs,
//   which is how a customGrad hands gradients to tf.Variables (tfjs' customGrad only differentiates its inputs; the
//   variables' reads inside the forward are not taped).
// A customGrad op has one output, so a down block's outputs (its skips; the last one is also the block's hidden
// state) are packed into one flat tensor and sliced back out; the slices' gradients arrive packed as `dy`.
//
// Results: the forward is the same kernels on the same inputs, so outputs and the loss are bit-identical, and every
// weight gradient is computed by the same backward ops as without checkpointing. What can differ is the grouping of
// sums where a tensor feeds several consumers across a block boundary (a block's output feeds the next block and an
// up block's skip concat; the time embedding every ResNet; the context every cross-attention): tfjs adds the
// contributions in tape order, and a checkpointed block hands back one pre-summed contribution. So the gradients of
// the mid and up blocks are bit-identical and those upstream of a fan-out (down blocks, conv_in, time_embedding, the
// text encoder) can differ in the last bits: measured on the tiny U-Net, 318 of 494 tensors bit-identical, the rest
// within 3e-7 of the largest gradient entry (test/training/dreambooth.test.ts).
//
// Nested tapes: tfjs' Engine.gradients() replaces `state.activeTape` when it starts at gradient depth 0 and sets it
// to null when it ends, and the outer backward pass (which runs at depth 0) still needs its tape afterwards to free
// its saved tensors; `innerGradients` puts it back. That is the one use of engine internals here.
import * as tf from '@tensorflow/tfjs';
import type { UNet2DConditionModel, Timesteps, UNetForwardOptions } from '../models/unet.js';
import { CrossAttnDownBlock2D, CrossAttnUpBlock2D } from '../models/unet_blocks.js';
import { silu } from '../nn/functional.js';
import { namedParams, type Module } from '../nn/module.js';

/** The trainable tf.Variables among a module's parameters (what a checkpointed block must return gradients for). */
export function trainableVariablesOf(m: Module): tf.Variable[] {
  const out: tf.Variable[] = [];
  for (const p of namedParams(m).values()) if (p.value instanceof tf.Variable && p.value.trainable) out.push(p.value);
  return out;
}

/**
 * d f() / d xs seeded with `dy`, callable from inside a gradient function (a backward pass already in progress).
 * Unconnected xs get `undefined`. Tensors of the nested forward and backward are freed before it returns.
 */
function innerGradients(f: () => tf.Tensor, xs: tf.Tensor[], dy: tf.Tensor): Array<tf.Tensor | undefined> {
  const engine = tf.engine();
  const outer = engine.state.activeTape;
  try {
    const { value, grads } = engine.gradients(f, xs, dy, true);
    value.dispose();
    return grads;
  } finally {
    engine.state.activeTape = outer;
  }
}

/**
 * Runs `run(inputs..., constants...)` as one checkpointed op: nothing inside it is kept for the backward pass; the
 * backward recomputes it. `inputs` get gradients, `constants` (also saved, read as they are) do not, and `variables`
 * are the trainable weights `run` reads. Returns `run`'s outputs (same shapes, same values).
 */
export function checkpoint(
  run: (tensors: tf.Tensor[]) => tf.Tensor[],
  inputs: readonly tf.Tensor[],
  constants: readonly tf.Tensor[],
  variables: readonly tf.Variable[],
): tf.Tensor[] {
  const nIn = inputs.length;
  let shapes: number[][] = [];
  const pack = (outs: tf.Tensor[]): tf.Tensor => (outs.length === 1 ? outs[0]! : tf.concat(outs.map((o) => o.reshape([-1]))));
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const acts = args.slice(0, nIn) as tf.Tensor[];
    const outs = run([...acts, ...constants]);
    shapes = outs.map((o) => [...o.shape]);
    save([...acts, ...constants]);
    return {
      value: pack(outs),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const xs = saved.slice(0, nIn);
          const wrt = [...xs, ...variables];
          const grads = innerGradients(() => pack(run([...xs, ...saved.slice(nIn)])), wrt, dy);
          return wrt.map((x, i) => grads[i] ?? tf.zerosLike(x));
        }),
    };
  });
  const packed = op(...inputs, ...variables);
  if (shapes.length === 1) return [packed];
  // unpack: slices (their gradients flow back into the packed output)
  const outs: tf.Tensor[] = [];
  let at = 0;
  for (const shape of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    outs.push(packed.slice([at], [n]).reshape(shape));
    at += n;
  }
  packed.dispose();
  return outs;
}

/**
 * Runs `f` without recording anything for gradients (torch.no_grad): its ops are not taped, so their saved
 * tensors are not kept, and nothing flows back through the result. For the frozen text encoder inside a loss.
 */
export function withoutGradient<T extends tf.Tensor>(f: () => T): T {
  return tf.customGrad(() => ({ value: f(), gradFunc: () => [] }))() as T;
}

export interface CheckpointedForwardOptions extends UNetForwardOptions {
  /** The context (text-encoder output) needs a gradient: the text encoder trains. Default false. */
  contextRequiresGrad?: boolean;
  /** The trainable variables a block reads. Default: the trainable tf.Variables among its parameters. */
  variablesOf?: (block: Module) => tf.Variable[];
}

/**
 * UNet2DConditionModel.forward with every block checkpointed (see the file comment). Same arguments, same result;
 * mirrors src/models/unet.ts's forward (the test compares the two outputs bit for bit).
 */
export function checkpointedUNetForward(
  unet: UNet2DConditionModel,
  sample: tf.Tensor4D,
  timestep: Timesteps,
  encoderHiddenStates: tf.Tensor3D,
  opts: CheckpointedForwardOptions = {},
): tf.Tensor4D {
  const { contextRequiresGrad = false, variablesOf = trainableVariablesOf, ...attn } = opts;
  return tf.tidy(() => {
    const [batch, height, width] = sample.shape;
    const ctx = encoderHiddenStates;
    if (ctx.shape[0] !== batch) throw new Error(`UNet2DConditionModel: encoderHiddenStates has batch ${ctx.shape[0]}, sample has ${batch}`);
    const factor = 2 ** unet.numUpsamplers;
    const forwardUpsampleSize = height % factor !== 0 || width % factor !== 0;
    const temb = tf.tidy(() => unet.time_embedding.forward(unet.timeProjection(timestep, batch))); // [B, 4·C0]
    // the context is an input (with a gradient) only when the text encoder trains; otherwise a saved constant
    const ctxIn = contextRequiresGrad ? [ctx] : [];
    const ctxConst = contextRequiresGrad ? [] : [ctx];
    const withCtx = (t: tf.Tensor[], n: number): tf.Tensor3D => t[n] as tf.Tensor3D; // ctx sits after the n activations

    let h = unet.conv_in.forward(sample);
    const skips: tf.Tensor4D[] = [h];
    for (const block of unet.down_blocks) {
      const outs = checkpoint(
        (t) => {
          const x = t[0] as tf.Tensor4D;
          const e = t[1] as tf.Tensor2D;
          return (block instanceof CrossAttnDownBlock2D ? block.forward(x, e, withCtx(t, 2), attn) : block.forward(x, e)).skips;
        },
        [h, temb, ...ctxIn],
        ctxConst,
        variablesOf(block),
      ) as tf.Tensor4D[];
      h = outs[outs.length - 1]!; // a down block's hidden state is its last skip
      skips.push(...outs);
    }

    h = checkpoint(
      (t) => [unet.mid_block.forward(t[0] as tf.Tensor4D, t[1] as tf.Tensor2D, withCtx(t, 2), attn)],
      [h, temb, ...ctxIn],
      ctxConst,
      variablesOf(unet.mid_block),
    )[0] as tf.Tensor4D;

    unet.up_blocks.forEach((block, i) => {
      const blockSkips = skips.splice(skips.length - block.resnets.length);
      const next = skips[skips.length - 1];
      const upsampleSize: [number, number] | undefined =
        forwardUpsampleSize && i < unet.up_blocks.length - 1 && next ? [next.shape[1], next.shape[2]] : undefined;
      const n = blockSkips.length;
      h = checkpoint(
        (t) => {
          const x = t[0] as tf.Tensor4D;
          const s = t.slice(1, 1 + n) as tf.Tensor4D[];
          const e = t[1 + n] as tf.Tensor2D;
          return [block instanceof CrossAttnUpBlock2D ? block.forward(x, s, e, withCtx(t, 2 + n), upsampleSize, attn) : block.forward(x, s, e, upsampleSize)];
        },
        [h, ...blockSkips, temb, ...ctxIn],
        ctxConst,
        variablesOf(block),
      )[0] as tf.Tensor4D;
    });

    return unet.conv_out.forward(silu(unet.conv_norm_out.forward(h))); // [B, H, W, out_channels]
  });
}
