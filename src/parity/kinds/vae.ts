// `vae_encode` / `vae_decode` cases: AutoencoderKL.encode(image).latent_dist and .decode(z).sample, NCHW in the fixture.
import * as tf from '@tensorflow/tfjs';
import type { ComputedOutput, KindHandler } from '../types.js';
import { nchwOutput, nhwcTensor, tidyData } from './util.js';

export const vaeEncodeKind: KindHandler = {
  kind: 'vae_encode',
  components: ['vae'],
  async run({ fixture, components }) {
    const vae = await components.model(fixture.modelDir, 'vae');
    const image = await fixture.input('image');
    const eps = fixture.spec.inputs.sample_eps ? await fixture.input('sample_eps') : undefined;
    return tidyData(() => {
      const x = nhwcTensor(image); // [B, H, W, 3]
      const { mean, logvar } = vae.encode(x);
      const out = new Map<string, ComputedOutput>([
        ['mean', nchwOutput(mean)],
        ['logvar', nchwOutput(logvar)],
        ['std', nchwOutput(tf.exp(logvar.mul(0.5)) as tf.Tensor4D)],
      ]);
      // quant_conv's raw output: cat([mean, logvar]) with logvar not yet clamped
      if (fixture.spec.outputs.moments) out.set('moments', nchwOutput(vae.quant_conv.forward(vae.encoder.forward(x))));
      if (eps) {
        const sample = vae.sample(mean, logvar, nhwcTensor(eps));
        out.set('sample', nchwOutput(sample));
        out.set('sample_scaled', nchwOutput(sample.mul(vae.scalingFactor) as tf.Tensor4D));
      }
      return out;
    });
  },
};

export const vaeDecodeKind: KindHandler = {
  kind: 'vae_decode',
  components: ['vae'],
  async run({ fixture, components }) {
    const vae = await components.model(fixture.modelDir, 'vae');
    const z = await fixture.input('z');
    return tidyData(() => {
      const image = vae.decode(nhwcTensor(z)); // [B, H, W, 3], nominally [-1, 1]
      return new Map([
        ['image', nchwOutput(image)],
        // VaeImageProcessor.postprocess: (x / 2 + 0.5).clamp(0, 1)
        ['image_postprocessed', nchwOutput(image.div(2).add(0.5).clipByValue(0, 1) as tf.Tensor4D)],
      ]);
    });
  },
};
