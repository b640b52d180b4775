// Every scheduler_trajectory fixture driven through the public sampler contract (scaleModelInput → recorded model
// output → step), with the recorded step noise replayed where diffusers drew it. Tolerance: the case's
// suggested_atol (all of them reproduce diffusers bit for bit on the wasm and cpu backends; the atol is what a
// backend with another float32 summation order may need).
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { createSampler } from '../../src/samplers/index.js';
import type { NoiseSource, SamplerName } from '../../src/samplers/types.js';
import { hasShared } from '../helpers/shared.js';
import { loadSchedCase, type SchedCase } from './sched_case.js';

/** Logged so a drifting run shows how close it is. */
const report = (what: string, err: number, atol: number): void => console.log(`${what}: max abs err ${err.toExponential(2)} (atol ${atol})`);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return Number.isNaN(m) ? Infinity : m;
}

/** Runs the case's trajectory; returns per-step scaled inputs and samples (NHWC, flat) and which steps drew noise. */
function run(fx: SchedCase, name: SamplerName, eta: number) {
  const steps = fx.args.num_inference_steps as number;
  const sampler = createSampler(name, fx.config(), { steps, eta });
  const hasNoise = 'step_noise' in fx.json.inputs;
  const draws = hasNoise ? Array.from({ length: sampler.timesteps.length }, (_, i) => fx.nhwcAt('inputs/step_noise', i)) : [];
  const drew: boolean[] = [];
  const scaled: number[][] = [];
  const samples: number[][] = [];
  let x = fx.nhwc('inputs/initial_sample');
  const before = tf.memory().numTensors;
  for (const [i, t] of sampler.timesteps.entries()) {
    const noise: NoiseSource = () => {
      drew[i] = true;
      return draws[i]!.clone();
    };
    const next = tf.tidy(() => {
      scaled.push(Array.from(sampler.scaleModelInput(x, t).dataSync()));
      return sampler.step(fx.nhwcAt('inputs/model_outputs', i), t, x, noise);
    });
    x.dispose();
    x = next;
    samples.push(Array.from(x.dataSync()));
  }
  x.dispose();
  sampler.dispose();
  expect(tf.memory().numTensors, 'tensors left behind').toBe(before - 1);
  tf.dispose(draws);
  return { sampler, scaled, samples, drew: sampler.timesteps.map((_, i) => drew[i] ?? false) };
}

/** The fixture's stacked [K, B, C, H, W] output as K flat NHWC arrays. */
const stepsOf = (fx: SchedCase, key: string, k: number): number[][] =>
  Array.from({ length: k }, (_, i) => tf.tidy(() => Array.from(fx.nhwcAt(key, i).dataSync())));

const CASES: Array<[string, SamplerName]> = [
  ['sched_ddim', 'ddim'],
  ['sched_ddim_eta1', 'ddim'],
  ['sched_pndm', 'plms'],
  ['sched_euler', 'euler'],
  ['sched_euler_ancestral', 'euler_a'],
  ['sched_dpmpp_2m', 'dpmpp_2m'],
  ['sched_dpmpp_2m_karras', 'dpmpp_2m_karras'],
  ['sched_ddpm', 'ddpm'],
];

describe.runIf(hasShared)('sampler trajectories vs diffusers 0.27.2', () => {
  it.each(CASES)('%s (%s)', async (caseName, name) => {
    const fx = await loadSchedCase(caseName);
    const eta = ((fx.args.step_kwargs as { eta?: number } | undefined)?.eta ?? (fx.args.eta as number | undefined)) ?? 0;
    const { sampler, scaled, samples, drew } = run(fx, name, eta);

    const timestepsKey = 'timesteps' in fx.json.outputs ? 'timesteps' : `timesteps_${sampler.numInferenceSteps}`;
    expect(sampler.timesteps).toEqual(fx.values(`outputs/${timestepsKey}`));
    if ('step_noise_drawn' in fx.json.inputs) expect(drew).toEqual(fx.values('inputs/step_noise_drawn').map((v) => v !== 0));
    else expect(drew.some(Boolean)).toBe(false);
    const observed = fx.json.observed as { init_noise_sigma?: number } | undefined;
    if (observed?.init_noise_sigma !== undefined) expect(sampler.initNoiseSigma).toBe(observed.init_noise_sigma);

    const atol = fx.atol('samples');
    const k = samples.length;
    const eSamples = maxAbsDiff(samples.flat(), stepsOf(fx, 'outputs/samples', k).flat());
    const eScaled = maxAbsDiff(scaled.flat(), stepsOf(fx, 'outputs/scaled_model_inputs', k).flat());
    report(`${caseName} samples`, eSamples, atol);
    report(`${caseName} scaled_model_inputs`, eScaled, atol);
    expect(eSamples).toBeLessThanOrEqual(atol);
    expect(eScaled).toBeLessThanOrEqual(atol);
  });
});
