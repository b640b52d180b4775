// The denoising loop as the pipelines will run it (runSampler + img2imgTimesteps + addNoise), replaying the guided
// model outputs diffusers recorded in the e2e fixtures instead of calling the U-Net: txt2img from the initial latents
// (times init_noise_sigma), img2img from the noised image latents. Checks every U-Net input (the scaled latents of
// the uncond row, the timestep) and every step's output against diffusers.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { createSampler, img2imgTimesteps, runSampler, type Denoiser, type SamplerName } from '../../src/samplers/index.js';
import { hasShared } from '../helpers/shared.js';
import { loadSchedCase, type SchedCase } from './sched_case.js';

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

/** Replays `intermediates/guided_model_output[k]` and checks what the loop feeds the U-Net at call k. */
function replayDenoiser(fx: SchedCase, errors: number[], unetIn?: { key: string; row: number }): Denoiser {
  let k = 0;
  return (x, t) => {
    if (fx.json.intermediates?.unet_in_timestep) expect(t).toBe(fx.values('intermediates/unet_in_timestep')[k]);
    if (unetIn) {
      const ref = fx.nhwcAt(unetIn.key, k).slice([unetIn.row, 0, 0, 0], [1, -1, -1, -1]);
      errors.push(maxAbsDiff(x, ref));
    }
    return fx.nhwcAt('intermediates/guided_model_output', k++);
  };
}

const TXT2IMG: Array<[string, SamplerName]> = [
  ['e2e_txt2img_ddim', 'ddim'],
  ['e2e_txt2img_euler', 'euler'],
  ['e2e_txt2img_dpmpp_2m_karras', 'dpmpp_2m_karras'],
  ['e2e_txt2img_pndm', 'plms'],
];

describe.runIf(hasShared)('sampler loop with recorded guided outputs (e2e fixtures)', () => {
  it.each(TXT2IMG)('%s: txt2img with %s', async (caseName, name) => {
    const fx = await loadSchedCase(caseName);
    const before = tf.memory().numTensors;
    const sampler = createSampler(name, fx.config(), { steps: fx.args.num_inference_steps as number });
    expect(sampler.timesteps).toEqual(fx.values('outputs/timesteps'));
    if ('sigmas' in fx.json.outputs) expect(sampler.sigmas).toEqual(fx.values('outputs/sigmas'));

    const inputErrors: number[] = [];
    const stepErrors: number[] = [];
    const x0 = tf.tidy(() => tf.mul(fx.nhwc('inputs/initial_latents'), sampler.initNoiseSigma) as tf.Tensor4D);
    const loop = runSampler(sampler, replayDenoiser(fx, inputErrors, { key: 'intermediates/unet_in_sample', row: 0 }), x0);
    let r = loop.next();
    while (!r.done) {
      const ev = r.value;
      stepErrors.push(tf.tidy(() => maxAbsDiff(ev.latents, fx.nhwcAt('intermediates/step_prev_sample', ev.step - 1))));
      r = loop.next();
    }
    const final = r.value;
    const err = tf.tidy(() => maxAbsDiff(final, fx.nhwc('outputs/final_latents')));
    tf.dispose([final, x0]);
    expect(tf.memory().numTensors, 'tensors left behind').toBe(before);

    const atol = fx.atol('final_latents');
    console.log(`${caseName}: final_latents max abs err ${err.toExponential(2)} (atol ${atol}); worst U-Net input ${Math.max(...inputErrors).toExponential(2)}`);
    expect(inputErrors.length).toBe(sampler.timesteps.length);
    expect(Math.max(...inputErrors, ...stepErrors, err)).toBeLessThanOrEqual(atol);
  });

  it.each([
    ['e2e_img2img_ddim', 'ddim'],
    ['e2e_img2img_euler', 'euler'],
  ] as const)('%s: img2img (strength 0.6) with %s', async (caseName, name) => {
    const fx = await loadSchedCase(caseName);
    const before = tf.memory().numTensors;
    const sampler = createSampler(name, fx.config(), { steps: fx.args.num_inference_steps as number });
    const start = img2imgTimesteps(sampler, fx.args.strength as number);
    expect(sampler.timesteps).toEqual(fx.values('outputs/timesteps'));
    expect(start.timesteps).toEqual(fx.values('outputs/timesteps_used'));
    expect(start.latentTimestep).toBe(fx.values('intermediates/noise_timestep')[0]);

    const noised = tf.tidy(() => sampler.addNoise(fx.nhwc('intermediates/init_latents'), fx.nhwc('inputs/noise'), start.latentTimestep));
    const eStart = tf.tidy(() => maxAbsDiff(noised, fx.nhwc('intermediates/start_latents')));
    const stepErrors: number[] = [];
    const loop = runSampler(sampler, replayDenoiser(fx, []), noised, { beginIndex: start.beginIndex });
    let r = loop.next();
    while (!r.done) {
      const ev = r.value;
      stepErrors.push(tf.tidy(() => maxAbsDiff(ev.latents, fx.nhwcAt('intermediates/step_prev_sample', ev.step - 1))));
      r = loop.next();
    }
    expect(stepErrors.length).toBe(6);
    const err = tf.tidy(() => maxAbsDiff(r.value, fx.nhwc('outputs/final_latents')));
    tf.dispose([r.value, noised]);
    expect(tf.memory().numTensors, 'tensors left behind').toBe(before);

    const atol = fx.atol('final_latents');
    console.log(`${caseName}: start_latents err ${eStart.toExponential(2)}, final_latents err ${err.toExponential(2)} (atol ${atol})`);
    expect(Math.max(eStart, err, ...stepErrors)).toBeLessThanOrEqual(atol);
  });
});
