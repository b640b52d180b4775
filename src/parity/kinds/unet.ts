// `unet` cases: UNet2DConditionModel(sample, timestep, encoder_hidden_states).sample, NCHW in the fixture.
import * as tf from '@tensorflow/tfjs';
import type { Timesteps } from '../../models/unet.js';
import type { KindHandler } from '../types.js';
import { floatTensor, nchwOutput, nhwcTensor, tidyData } from './util.js';

export const unetKind: KindHandler = {
  kind: 'unet',
  components: ['unet'],
  async run({ fixture, components }) {
    const unet = await components.model(fixture.modelDir, 'unet');
    const [sample, timestep, ehs] = await Promise.all([
      fixture.input('sample'),
      fixture.input('timestep'),
      fixture.input('encoder_hidden_states'),
    ]);
    return tidyData(() => {
      // integer (int64) or fractional float timesteps, one per sample or a 0-dim one for the whole batch
      const t: Timesteps = timestep.shape.length === 0 ? timestep.data[0]! : Array.from(timestep.data);
      const out = unet.forward(nhwcTensor(sample), t, floatTensor(ehs) as tf.Tensor3D); // [B, H, W, C]
      return new Map([['sample_out', nchwOutput(out)]]);
    });
  },
};
