// `scheduler_table` cases: the training schedule of a scheduler config (`betas`, `alphas`, `alphas_cumprod`,
// `sigmas_train`) and the forward process of each scheduler family (`sched_add_noise`: DDPM's add_noise and
// get_velocity, Euler's and DPM-Solver's add_noise after set_timesteps(10)).
import * as tf from '@tensorflow/tfjs';
import { FormatError } from '../../errors.js';
import { addNoise, getVelocity } from '../../samplers/add_noise.js';
import { createSampler } from '../../samplers/index.js';
import { noiseSchedule } from '../../schedules/betas.js';
import type { FixtureCase } from '../fixture.js';
import type { ComputedOutput, KindHandler } from '../types.js';
import { schedulerArg } from './scheduler_trajectory.js';
import { nchwOutput, nhwcTensor, tidyData } from './util.js';

const table = (xs: Float32Array): ComputedOutput => ({ data: xs, shape: [xs.length] });

function tables(fx: FixtureCase): Map<string, ComputedOutput> {
  const s = noiseSchedule(schedulerArg(fx, 'scheduler').config);
  return new Map([
    ['betas', table(s.betas)],
    ['alphas', table(s.alphas)],
    ['alphas_cumprod', table(s.alphasCumprod)],
    ['sigmas_train', table(s.sigmas)],
  ]);
}

/** The call notes `set_timesteps(10)` for the Euler and DPM schedulers; `args.num_inference_steps` may say otherwise. */
const ADD_NOISE_STEPS = 10;

async function addNoiseOutputs(fx: FixtureCase): Promise<Map<string, ComputedOutput>> {
  const ddpm = schedulerArg(fx, 'ddpm');
  const euler = schedulerArg(fx, 'euler');
  const dpm = schedulerArg(fx, 'dpm');
  const steps = typeof fx.spec.args?.num_inference_steps === 'number' ? fx.spec.args.num_inference_steps : ADD_NOISE_STEPS;
  const [x0, noise, tDdpm, tEuler, tDpm] = await Promise.all(
    ['original_samples', 'noise', 'timesteps_ddpm', 'timesteps_euler', 'timesteps_dpm'].map((n) => fx.input(n)),
  );
  const ac = noiseSchedule(ddpm.config).alphasCumprod;
  return tidyData(() => {
    const x = nhwcTensor(x0!);
    const z = nhwcTensor(noise!);
    const batch = x.shape[0];
    // one sampler's add_noise per sample (each has its own timestep), re-stacked
    const perSample = (name: typeof euler, ts: ArrayLike<number>): tf.Tensor4D => {
      if (ts.length !== batch) throw new FormatError(fx.jsonPath, `${ts.length} timesteps for a batch of ${batch}`);
      const sampler = createSampler(name.name, name.config, { steps });
      const rows = Array.from(ts, (t, b) => sampler.addNoise(x.slice(b, 1), z.slice(b, 1), t));
      return tf.concat(rows, 0);
    };
    return new Map([
      ['ddpm_noisy', nchwOutput(addNoise(x, z, Array.from(tDdpm!.data), ac))],
      ['velocity', nchwOutput(getVelocity(x, z, Array.from(tDdpm!.data), ac))],
      ['euler_noisy', nchwOutput(perSample(euler, tEuler!.data))],
      ['dpm_noisy', nchwOutput(perSample(dpm, tDpm!.data))],
    ]);
  });
}

export const schedulerTableKind: KindHandler = {
  kind: 'scheduler_table',
  components: [],
  async run({ fixture: fx }) {
    const outputs = fx.spec.outputs;
    if ('betas' in outputs || 'alphas_cumprod' in outputs) return tables(fx);
    if ('ddpm_noisy' in outputs) return addNoiseOutputs(fx);
    throw new FormatError(fx.jsonPath, `no scheduler table this handler knows among the outputs (${Object.keys(outputs).join(', ')})`);
  },
};
