// `text_encoder` cases: CLIPTextModel(input_ids, output_hidden_states=True) and the clip-skip-2 embedding.
import * as tf from '@tensorflow/tfjs';
import type { ComputedOutput, KindHandler } from '../types.js';
import { intTensor, plainOutput, tidyData } from './util.js';

export const textEncoderKind: KindHandler = {
  kind: 'text_encoder',
  components: ['text_encoder'],
  async run({ fixture, components }) {
    const model = await components.model(fixture.modelDir, 'text_encoder');
    const ids = await fixture.input('input_ids');
    return tidyData(() => {
      const inputIds = intTensor(ids) as tf.Tensor2D; // [B, T]
      const out = model.forward(inputIds, { outputHiddenStates: true });
      const hs = out.hiddenStates!;
      const result = new Map<string, ComputedOutput>([
        ['last_hidden_state', plainOutput(out.lastHiddenState)],
        ['pooler_output', plainOutput(out.pooledOutput)],
      ]);
      // hidden_states[-2] and "CLIP skip 2" need at least two layers
      if (hs.length >= 3) {
        result.set('penultimate_hidden_state', plainOutput(hs[hs.length - 2]!));
        result.set('clip_skip_2_embeds', plainOutput(model.forward(inputIds, { clipSkip: 2 }).lastHiddenState));
      }
      return result;
    });
  },
};
