// Memory: the multistep samplers keep history tensors between steps (PLMS: up to four model outputs and the first
// sample; DPM++ 2M: the previous x0). After N steps, the caller's disposals and `sampler.dispose()`, nothing remains.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { SAMPLERS, runSampler, torchNoise, type SamplerName } from '../../src/samplers/index.js';
import { SD_SCHEDULER_CONFIG } from '../../src/schedules/config.js';

const NAMES = Object.keys(SAMPLERS) as SamplerName[];
const fakeUnet = (x: tf.Tensor4D, t: number): tf.Tensor4D => tf.mul(tf.sin(x), t / 1000) as tf.Tensor4D;

describe('sampler memory', () => {
  it.each(NAMES)('%s: a hand-written loop (tidy per step) + dispose() leaves numTensors unchanged', (name) => {
    const before = tf.memory().numTensors;
    const sampler = SAMPLERS[name](SD_SCHEDULER_CONFIG, { steps: 8, eta: 1, noise: torchNoise(0) });
    let x = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 1) as tf.Tensor4D;
    for (const t of sampler.timesteps) {
      const next = tf.tidy(() => sampler.step(fakeUnet(sampler.scaleModelInput(x, t), t), t, x));
      x.dispose();
      x = next;
    }
    // the history is what remains besides x
    const kept = ({ plms: 4, dpmpp_2m: 1, dpmpp_2m_karras: 1 } as Record<string, number>)[name] ?? 0;
    expect(tf.memory().numTensors).toBe(before + 1 + kept);
    sampler.dispose();
    sampler.dispose(); // idempotent
    x.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it.each(NAMES)('%s: runSampler frees every intermediate and the history, also when stopped early', (name) => {
    const before = tf.memory().numTensors;
    const x0 = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 2) as tf.Tensor4D;
    const full = runSampler(SAMPLERS[name](SD_SCHEDULER_CONFIG, { steps: 6, noise: torchNoise(1) }), fakeUnet, x0);
    let r = full.next();
    while (!r.done) r = full.next();
    r.value.dispose();
    expect(tf.memory().numTensors).toBe(before + 1);

    const partial = runSampler(SAMPLERS[name](SD_SCHEDULER_CONFIG, { steps: 6, noise: torchNoise(1) }), fakeUnet, x0);
    partial.next();
    const second = partial.next();
    if (second.done) throw new Error('expected a step event');
    partial.return(undefined as never); // runs the generator's finally: the sampler's history is freed
    // left: x0 and the latents of the last yielded step, which become the caller's when it stops early
    expect(tf.memory().numTensors).toBe(before + 2);
    tf.dispose([x0, second.value.latents]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
