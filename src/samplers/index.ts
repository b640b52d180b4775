// The samplers by name: an explicit registry (like tfjs' register_all_kernels.ts). A new sampler is one file plus one
// line here; `SamplerName` comes from the config schema's list, so the two cannot drift apart.
import type { SchedulerConfig } from '../schedules/config.js';
import { createDdim } from './ddim.js';
import { createDdpm } from './ddpm.js';
import { createDpmpp2m } from './dpmpp_2m.js';
import { createEuler } from './euler.js';
import { createEulerAncestral } from './euler_ancestral.js';
import { createPlms } from './pndm.js';
import type { Sampler, SamplerFactory, SamplerName, SamplerOptions } from './types.js';

export const SAMPLERS: Readonly<Record<SamplerName, SamplerFactory>> = {
  ddim: createDdim,
  plms: createPlms,
  euler: createEuler, // Karras σ only if the config asks (use_karras_sigmas)
  euler_a: createEulerAncestral,
  dpmpp_2m: (config, opts) => createDpmpp2m(config, { ...opts, karras: false }),
  dpmpp_2m_karras: (config, opts) => createDpmpp2m(config, { ...opts, karras: true }),
  ddpm: createDdpm,
};

/** A sampler by name over `opts.steps` steps of the schedule in `config` (a parsed `scheduler_config.json`). */
export function createSampler(name: SamplerName, config: SchedulerConfig, opts: SamplerOptions): Sampler {
  const factory = SAMPLERS[name];
  if (!factory) throw new RangeError(`unknown sampler '${String(name)}' (known: ${Object.keys(SAMPLERS).join(', ')})`);
  return factory(config, opts);
}

export type { Denoiser, NoiseSource, Sampler, SamplerFactory, SamplerName, SamplerOptions, SamplerStepEvent } from './types.js';
export { addNoise, getVelocity, trainingTarget } from './add_noise.js';
export { img2imgTimesteps, runSampler, type Img2imgStart, type RunSamplerOptions } from './loop.js';
export { replayNoise, torchNoise } from './noise.js';
