// `gradient` cases: one backward pass of the diffusion loss, as textual inversion and DreamBooth train:
//   loss = mse(unet(add_noise(latents, noise, t), t, text_encoder(ids with the placeholder row)), target)
// and its gradients with respect to the placeholder embedding and the U-Net weights the case lists (`args.params`).
// The placeholder (id = vocab size, a row the table does not have) enters through inputs_embeds, which is the
// fixture's own equivalent formulation: the gradient sums over the placeholder's positions.
import * as tf from '@tensorflow/tfjs';
import { namedParams } from '../../nn/module.js';
import { addNoise, trainingTarget } from '../../samplers/add_noise.js';
import { noiseSchedule } from '../../schedules/betas.js';
import { parseSchedulerConfig } from '../../schedules/config.js';
import type { ComputedOutput, KindHandler } from '../types.js';
import { floatTensor, intTensor, nchwOutput, nhwcTensor, plainOutput, tidyData } from './util.js';

interface GradientArgs {
  scheduler?: { config?: unknown };
  prediction_type?: 'epsilon' | 'v_prediction';
  params?: string[];
  placeholder_id?: number;
}

export const gradientKind: KindHandler = {
  kind: 'gradient',
  components: ['text_encoder', 'unet'],
  async run({ fixture, components }) {
    const args = (fixture.spec.args ?? {}) as GradientArgs;
    const te = await components.model(fixture.modelDir, 'text_encoder');
    const unet = await components.model(fixture.modelDir, 'unet');
    const scheduler = parseSchedulerConfig(args.scheduler?.config ?? {}, `${fixture.jsonPath} args.scheduler`);
    const alphasCumprod = noiseSchedule(scheduler).alphasCumprod;
    const [ids, placeholder, latents, noise, timesteps] = await Promise.all(
      ['input_ids', 'placeholder_embedding', 'latents', 'noise', 'timesteps'].map((n) => fixture.input(n)),
    );
    const keys = args.params ?? [];
    const params = namedParams(unet);
    return tidyData(() => {
      const inputIds = intTensor(ids!) as tf.Tensor2D; // [B, T]
      const vocab = te.config.vocab_size;
      const placeholderId = args.placeholder_id ?? vocab;
      const isPlaceholder = inputIds.equal(placeholderId).expandDims(2); // [B, T, 1]
      const tableEmbeds = te.embed(inputIds.minimum(vocab - 1) as tf.Tensor2D); // [B, T, C]
      const ts = Array.from(timesteps!.data);
      const x0 = nhwcTensor(latents!);
      const eps = nhwcTensor(noise!);
      const noisy = addNoise(x0, eps, ts, alphasCumprod);
      const target = trainingTarget(args.prediction_type ?? scheduler.prediction_type, x0, eps, ts, alphasCumprod);
      const row = floatTensor(placeholder!) as tf.Tensor1D; // [C]
      const xs = [row, ...keys.map((k) => params.get(k)!.t)];
      const { value, grads } = tf.valueAndGrads((r: tf.Tensor) => {
        const [b, t] = inputIds.shape;
        const embeds = tf.where(isPlaceholder, r.reshape([1, 1, -1]).tile([b, t, 1]), tableEmbeds) as tf.Tensor3D;
        const ctx = te.forward(inputIds, { inputsEmbeds: embeds }).lastHiddenState;
        const pred = unet.forward(noisy, ts, ctx);
        return tf.losses.meanSquaredError(target, pred) as tf.Scalar; // mean over every element, as F.mse_loss
      })(xs);
      const out = new Map<string, ComputedOutput>([
        ['loss', plainOutput(value.reshape([1]))],
        ['grad_placeholder_embedding', plainOutput(grads[0]!)],
      ]);
      keys.forEach((k, i) => {
        const g = grads[i + 1]!;
        // U-Net conv weights are HWIO here and OIHW in the fixture.
        out.set(`grad_${k}`, g.rank === 4 ? plainOutput(g.transpose([3, 2, 0, 1])) : plainOutput(g));
      });
      return out;
    });
  },
};
