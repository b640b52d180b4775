// Backward passes through the U-Net and the VAE: parity with diffusers' gradients (grad_ti_dreambooth) on the test
// backend (wasm), and wasm against the cpu backend on the odd-size path (explicit-padding convs, resize-to-size).
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModule, namedParams, type Module } from '../../src/nn/module.js';
import type { UNet2DConditionModel } from '../../src/models/unet.js';
import { useBackend } from '../../src/backend/backend.js';
import { hasShared } from '../helpers/shared.js';
import { loadParityCase, loadTiny, maxAbsDiff, type ParityCase } from '../helpers/parity_case.js';

const report = (what: string, err: number, atol: number): void => console.log(`${what}: max abs err ${err.toExponential(2)} (atol ${atol})`);

/** d loss / d params, with the params' own tensors as the differentiation points (they are what forward reads). */
function gradsOf(model: Module, keys: string[], loss: () => tf.Scalar): { value: number; grads: Map<string, tf.Tensor> } {
  const params = namedParams(model);
  const xs = keys.map((k) => params.get(k)!.t);
  const { value, grads } = tf.valueAndGrads(() => loss())(xs);
  const v = value.dataSync()[0]!;
  value.dispose();
  return { value: v, grads: new Map(keys.map((k, i) => [k, grads[i]!])) };
}

/** Run `f` on the cpu backend and come back (tensors migrate between backends on first use). */
async function onCpu<T>(f: () => T): Promise<T> {
  const back = tf.getBackend();
  await useBackend('cpu'); // (not tf.setBackend: useBackend also silences the cpu backend's console banner)
  try {
    return f();
  } finally {
    await tf.setBackend(back);
  }
}

describe.runIf(hasShared)('U-Net gradients', () => {
  let unet: UNet2DConditionModel;
  let fx: ParityCase;

  beforeAll(async () => {
    unet = await loadTiny('unet');
    fx = await loadParityCase('grad_ti_dreambooth');
  });
  afterAll(() => disposeModule(unet));

  it('grad_ti_dreambooth: loss and the three U-Net weight gradients (and the placeholder embedding) match diffusers', async () => {
    // Text encoder output with the learnable placeholder row (id 49408 = vocab size) substituted into inputs_embeds.
    const clip = await loadTiny('text_encoder');
    const ids = fx.tensor('inputs/input_ids') as tf.Tensor2D;
    const placeholder = fx.tensor('inputs/placeholder_embedding') as tf.Tensor1D;
    const vocab = clip.config.vocab_size;
    const isPlaceholder = ids.equal(vocab).expandDims(2); // [B, 77, 1]
    const tableEmbeds = clip.embed(ids.minimum(vocab - 1) as tf.Tensor2D); // [B, 77, 32]; placeholder rows overwritten below

    // add_noise with diffusers' float32 alphas_cumprod (sched_tables): sqrt(ac)·x0 + sqrt(1 − ac)·noise
    const tables = await loadParityCase('sched_tables');
    const ac = (await tables.tensor('outputs/alphas_cumprod').data()) as Float32Array;
    const ts = Array.from((await fx.tensor('inputs/timesteps').data()) as Int32Array);
    const sqrtA = tf.tensor(ts.map((t) => Math.fround(Math.sqrt(ac[t]!))), [ts.length, 1, 1, 1]);
    const sqrt1mA = tf.tensor(ts.map((t) => Math.fround(Math.sqrt(Math.fround(1 - ac[t]!)))), [ts.length, 1, 1, 1]);
    const latents = fx.nhwc('inputs/latents');
    const noise = fx.nhwc('inputs/noise');
    const noisy = latents.mul(sqrtA).add(noise.mul(sqrt1mA)) as tf.Tensor4D;

    const keys = [
      'down_blocks.0.resnets.0.conv1.weight',
      'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight',
      'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight',
    ];
    const xs = [...keys.map((k) => namedParams(unet).get(k)!.t), placeholder];
    const { value, grads } = tf.valueAndGrads(() => {
      const embeds = tf.where(isPlaceholder, placeholder.reshape([1, 1, -1]).tile([ids.shape[0], ids.shape[1], 1]), tableEmbeds);
      const ctx = clip.forward(ids, { inputsEmbeds: embeds as tf.Tensor3D }).lastHiddenState;
      const pred = unet.forward(noisy, tf.tensor1d(ts, 'int32'), ctx);
      return tf.losses.meanSquaredError(noise, pred) as tf.Scalar; // epsilon target, mean over all elements
    })(xs);

    const loss = fx.tensor('outputs/loss');
    const lossErr = await maxAbsDiff(value.reshape([1]), loss);
    report('grad_ti_dreambooth loss', lossErr, fx.atol('loss'));
    expect(lossErr).toBeLessThanOrEqual(fx.atol('loss'));
    const outs = [...keys.map((k) => `grad_${k}`), 'grad_placeholder_embedding'];
    for (const [i, name] of outs.entries()) {
      const ref = fx.tensor(`outputs/${name}`);
      const refLayout = ref.rank === 4 ? ref.transpose([2, 3, 1, 0]) : ref; // OIHW → HWIO, our conv weight layout
      const err = await maxAbsDiff(grads[i]!, refLayout);
      report(`grad_ti_dreambooth ${name}`, err, fx.atol(name));
      expect(err).toBeLessThanOrEqual(fx.atol(name));
      tf.dispose([ref, refLayout]);
    }
    tf.dispose([value, ...grads, ids, placeholder, isPlaceholder, tableEmbeds, sqrtA, sqrt1mA, latents, noise, noisy, loss]);
    disposeModule(clip);
  });

  it('wasm and cpu agree on the odd-size path (unet_oddsize inputs)', async () => {
    const odd = await loadParityCase('unet_oddsize');
    const sample = odd.nhwc('inputs/sample');
    const t = odd.tensor('inputs/timestep') as tf.Scalar;
    const ctx = odd.tensor('inputs/encoder_hidden_states') as tf.Tensor3D;
    const keys = [
      'conv_in.weight',
      'down_blocks.0.downsamplers.0.conv.weight',
      'down_blocks.1.attentions.1.proj_in.weight',
      'mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight',
      'up_blocks.0.upsamplers.0.conv.weight',
      'up_blocks.1.resnets.2.conv_shortcut.weight',
      'time_embedding.linear_1.weight',
    ];
    const loss = () => unet.forward(sample, t, ctx).square().mean() as tf.Scalar;
    const wasm = gradsOf(unet, keys, loss);
    const cpu = await onCpu(() => gradsOf(unet, keys, loss));
    expect(Math.abs(wasm.value - cpu.value)).toBeLessThanOrEqual(1e-6 * Math.abs(cpu.value));
    for (const k of keys) {
      const g = cpu.grads.get(k)!;
      const scale = (await g.abs().max().data())[0]!;
      const err = await maxAbsDiff(wasm.grads.get(k)!, g);
      console.log(`unet grad ${k}: wasm vs cpu max abs ${err.toExponential(2)} (max |g| ${scale.toExponential(2)})`);
      expect(scale).toBeGreaterThan(0);
      expect(err).toBeLessThanOrEqual(1e-5 * scale);
    }
    tf.dispose([sample, t, ctx, ...wasm.grads.values(), ...cpu.grads.values()]);
  });
});

describe.runIf(hasShared)('VAE gradients', () => {
  it('wasm and cpu agree through encode → sample → decode', async () => {
    const vae = await loadTiny('vae');
    const fx = await loadParityCase('vae_encode');
    const image = fx.nhwc('inputs/image');
    const eps = fx.nhwc('inputs/sample_eps');
    const keys = [
      'encoder.conv_in.weight',
      'encoder.down_blocks.0.downsamplers.0.conv.weight', // the asymmetric-pad stride-2 conv
      'encoder.mid_block.attentions.0.to_q.weight',
      'quant_conv.weight',
      'decoder.up_blocks.0.upsamplers.0.conv.weight',
      'decoder.up_blocks.3.resnets.0.norm1.weight',
      'decoder.conv_out.weight',
    ];
    const loss = () => {
      const { mean, logvar } = vae.encode(image);
      return vae.decode(vae.sample(mean, logvar, eps)).sub(image).square().mean() as tf.Scalar;
    };
    const wasm = gradsOf(vae, keys, loss);
    const cpu = await onCpu(() => gradsOf(vae, keys, loss));
    expect(Math.abs(wasm.value - cpu.value)).toBeLessThanOrEqual(1e-6 * Math.abs(cpu.value));
    for (const k of keys) {
      const g = cpu.grads.get(k)!;
      const scale = (await g.abs().max().data())[0]!;
      const err = await maxAbsDiff(wasm.grads.get(k)!, g);
      console.log(`vae grad ${k}: wasm vs cpu max abs ${err.toExponential(2)} (max |g| ${scale.toExponential(2)})`);
      expect(scale).toBeGreaterThan(0);
      expect(err).toBeLessThanOrEqual(1e-5 * scale);
    }
    tf.dispose([image, eps, ...wasm.grads.values(), ...cpu.grads.values()]);
    disposeModule(vae);
  });
});
