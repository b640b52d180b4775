// The package entry exports the public API without side effects (importing it picks no backend).
import * as tf from '@tensorflow/tfjs';
import { expect, it } from 'vitest';

it('src/index.ts exports the public API and changes no backend', async () => {
  const before = tf.getBackend();
  const api = await import('../src/index.js');
  for (const name of ['useBackend', 'SafetensorsFile', 'openTorchFile', 'inspectPath', 'CLIPTokenizer', 'UNet2DConditionModel', 'loadModel', 'generate', 'train', 'TextualInversion', 'readLora', 'readHypernetwork']) {
    expect(api, name).toHaveProperty(name);
  }
  expect(tf.getBackend()).toBe(before);
});
