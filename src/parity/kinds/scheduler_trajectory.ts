// `scheduler_trajectory` cases: a diffusers scheduler built from its resolved config, its timesteps/σ for several step
// counts, and a trajectory driven by recorded model outputs (and recorded step noise for the stochastic ones):
// `scaled_model_inputs[i] = scale_model_input(x, t_i)`, `samples[i] = x = step(model_outputs[i], t_i, x)`.
import * as tf from '@tensorflow/tfjs';
import { FormatError } from '../../errors.js';
import type { LoadedTensor } from '../../formats/dtype.js';
import { createSampler } from '../../samplers/index.js';
import type { NoiseSource, Sampler, SamplerName } from '../../samplers/types.js';
import { parseSchedulerConfig, type SchedulerConfig } from '../../schedules/config.js';
import { channelsFirst, channelsLast } from '../compare.js';
import type { FixtureCase } from '../fixture.js';
import type { ComputedOutput, KindHandler } from '../types.js';
import { nhwcTensor } from './util.js';

type Json = Record<string, unknown>;

/** A diffusers scheduler class (+ its resolved config) → our sampler name, checking the algorithm matches ours. */
export function samplerForClass(className: string, raw: Json, where: string): SamplerName {
  const expect = (key: string, value: unknown) => {
    if (raw[key] !== undefined && raw[key] !== value) throw new FormatError(where, `${className} with ${key}=${JSON.stringify(raw[key])} is not implemented (only ${JSON.stringify(value)})`);
  };
  switch (className) {
    case 'DDIMScheduler':
      return 'ddim';
    case 'PNDMScheduler':
      expect('skip_prk_steps', true);
      return 'plms';
    case 'EulerDiscreteScheduler':
      return 'euler';
    case 'EulerAncestralDiscreteScheduler':
      return 'euler_a';
    case 'DDPMScheduler':
      return 'ddpm';
    case 'DPMSolverMultistepScheduler':
      expect('algorithm_type', 'dpmsolver++');
      expect('solver_order', 2);
      expect('solver_type', 'midpoint');
      return raw.use_karras_sigmas === true ? 'dpmpp_2m_karras' : 'dpmpp_2m';
    default:
      throw new FormatError(where, `scheduler class '${className}' has no sampler here`);
  }
}

/** `{class, config}` of a case's `args` entry, parsed. */
export function schedulerArg(fx: FixtureCase, key: string): { name: SamplerName; config: SchedulerConfig } {
  const entry = fx.spec.args?.[key] as { class?: unknown; config?: unknown } | undefined;
  if (!entry || typeof entry.class !== 'string' || typeof entry.config !== 'object' || entry.config === null) {
    throw new FormatError(fx.jsonPath, `'args.${key}' must hold a scheduler 'class' and its 'config'`);
  }
  const raw = entry.config as Json;
  return { name: samplerForClass(entry.class, raw, fx.jsonPath), config: parseSchedulerConfig(raw, `${fx.jsonPath} args.${key}.config`) };
}

const asFloat32 = (d: LoadedTensor['data']): Float32Array => (d instanceof Float32Array ? d : Float32Array.from(d));

/** Slice k of a stacked NCHW tensor [K, B, C, H, W] as an NHWC Tensor4D [B, H, W, C]. */
function sliceNhwc(t: LoadedTensor, k: number): tf.Tensor4D {
  const inner = t.shape.slice(1);
  const size = inner.reduce((a, b) => a * b, 1);
  const { data, shape } = channelsLast(asFloat32(t.data).subarray(k * size, (k + 1) * size), inner);
  return tf.tensor4d(data, shape as [number, number, number, number]);
}

/** Stacks NHWC results back to the fixture's [K, B, C, H, W]. */
function stackNchw(xs: Float32Array[], nhwcShape: readonly number[]): ComputedOutput {
  const parts = xs.map((x) => channelsFirst(x, nhwcShape));
  const size = parts[0]?.data.length ?? 0;
  const data = new Float32Array(size * parts.length);
  parts.forEach((p, k) => data.set(p.data, k * size));
  return { data, shape: [parts.length, ...(parts[0]?.shape ?? [])] };
}

const flat = (xs: readonly number[]): ComputedOutput => ({ data: [...xs], shape: [xs.length] });

/** Runs the recorded trajectory; checks that noise is drawn exactly where diffusers drew it. */
async function trajectory(fx: FixtureCase, sampler: Sampler): Promise<{ scaled: ComputedOutput; samples: ComputedOutput }> {
  const has = (name: string) => name in fx.spec.inputs;
  const [initial, outputs] = await Promise.all([fx.input('initial_sample'), fx.input('model_outputs')]);
  const stepNoise = has('step_noise') ? await fx.input('step_noise') : undefined;
  const drawn = has('step_noise_drawn') ? Array.from((await fx.input('step_noise_drawn')).data, (v) => v !== 0) : undefined;
  const steps = outputs.shape[0]!;
  if (steps !== sampler.timesteps.length) {
    throw new FormatError(fx.jsonPath, `${steps} model outputs for ${sampler.timesteps.length} timesteps of ${sampler.name}`);
  }
  const scaled: Float32Array[] = [];
  const samples: Float32Array[] = [];
  const drew: boolean[] = [];
  let x = nhwcTensor(initial);
  const shape = x.shape;
  try {
    for (const [i, t] of sampler.timesteps.entries()) {
      drew[i] = false;
      const noise: NoiseSource = () => {
        if (!stepNoise) throw new FormatError(fx.jsonPath, `${sampler.name} drew noise at step ${i}, but the case recorded none`);
        drew[i] = true;
        return sliceNhwc(stepNoise, i);
      };
      const next = tf.tidy(() => {
        const xIn = sampler.scaleModelInput(x, t);
        scaled.push(xIn.dataSync() as Float32Array);
        return sampler.step(sliceNhwc(outputs, i), t, x, noise);
      });
      x.dispose();
      x = next;
      samples.push(x.dataSync() as Float32Array);
    }
  } finally {
    x.dispose();
    sampler.dispose();
  }
  if (drawn && drawn.some((d, i) => d !== drew[i])) {
    throw new Error(`${sampler.name} drew step noise at steps [${drew.map(Number).join(',')}], diffusers at [${drawn.map(Number).join(',')}]`);
  }
  return { scaled: stackNchw(scaled, shape), samples: stackNchw(samples, shape) };
}

export const schedulerTrajectoryKind: KindHandler = {
  kind: 'scheduler_trajectory',
  components: [],
  async run({ fixture: fx }) {
    const { name, config } = schedulerArg(fx, 'scheduler');
    const args = fx.spec.args ?? {};
    const stepKwargs = (args.step_kwargs ?? {}) as Json;
    const eta = typeof stepKwargs.eta === 'number' ? stepKwargs.eta : typeof args.eta === 'number' ? args.eta : 0;
    const steps = args.num_inference_steps;
    if (typeof steps !== 'number') throw new FormatError(fx.jsonPath, "'args.num_inference_steps' must be a number");

    const out = new Map<string, ComputedOutput>();
    for (const output of Object.keys(fx.spec.outputs)) {
      const m = /^(leading_)?(timesteps|sigmas)(?:_(\d+))?$/.exec(output);
      if (!m) continue;
      const cfg: SchedulerConfig = m[1] ? { ...config, timestep_spacing: 'leading' } : config;
      const s = createSampler(name, cfg, { steps: m[3] ? Number(m[3]) : steps, eta });
      const values = m[2] === 'timesteps' ? s.timesteps : s.sigmas;
      if (values) out.set(output, flat(values));
    }
    const { scaled, samples } = await trajectory(fx, createSampler(name, config, { steps, eta }));
    out.set('scaled_model_inputs', scaled);
    out.set('samples', samples);
    return out;
  },
};
