// The sampling core shared by `generate` and the parity handlers: prompt contexts + random draws + (optionally) an
// init image and a mask → final latents, following diffusers' StableDiffusion{,Img2Img,Inpaint}Pipeline (0.27.2):
//
// - txt2img: x = noise · init_noise_sigma.
// - img2img: image latents = scaling · (mean + std · eps); x = add_noise(latents, noise, first timestep of the last
//   ⌊steps·strength⌋ steps), which are the steps run. No steps left (strength 0): the image latents are the result.
// - inpainting, 9-channel U-Net: the U-Net also gets [mask, masked-image latents] (masked image = image · (mask < 0.5));
//   strength 1 starts from pure noise, less from the noised image latents.
// - inpainting, 4-channel U-Net (legacy): after step i the area to keep is reset to the image latents noised to the
//   next timestep, x = (1 − m)·add_noise(latents, noise, t[i+1]) + m·x; after the last step to the clean latents.
//
// The latent mask m is the pixel mask binarized at 0.5, then nearest-downsampled to the latent grid (`F.interpolate`).
// Random draws come from ONE noise source, in diffusers' order: [image posterior eps], initial noise, [masked-image
// posterior eps], then the stochastic samplers' step noise. `generate` passes per-image torch generators (a seed
// reproduces diffusers on the CPU); the parity handlers replay the recorded draws.
import * as tf from '@tensorflow/tfjs';
import type { UNet2DConditionModel } from '../models/unet.js';
import { vaeScaleFactor, type AutoencoderKL } from '../models/vae.js';
import { addNoiseDpm, addNoiseSigma } from '../samplers/add_noise.js';
import { createSampler, img2imgTimesteps, runSampler, type NoiseSource, type Sampler, type SamplerName, type SamplerStepEvent } from '../samplers/index.js';
import type { SchedulerConfig } from '../schedules/config.js';
import type { Conditioning } from './conditioning.js';
import { createCfgDenoiser } from './denoiser.js';

export interface SampleSpec {
  sampler: SamplerName;
  schedulerConfig: SchedulerConfig;
  steps: number;
  /** DDIM's η (default 0). */
  eta?: number;
  guidanceScale: number;
  conditioning: Conditioning;
  /** Images sampled together (B). */
  batch: number;
  /** Image size in pixels (multiples of the VAE's downsampling factor, 8 for SD). */
  width: number;
  height: number;
  /** Every random draw, in the order above. */
  noise: NoiseSource;
  /** img2img / inpainting source: RGB [1, H, W, 3] in [-1, 1] (shared by the batch), and the strength in [0, 1]. */
  init?: { image: tf.Tensor4D; strength: number };
  /** Inpainting: [1, H, W, 1], 1 = repaint (binarized at 0.5 here). Needs `init`. */
  mask?: tf.Tensor4D;
  attentionSliceSize?: number;
}

export interface SampleOutcome {
  /** [B, h, w, c]: owned by the caller. */
  latents: tf.Tensor4D;
  /** The sampler's whole schedule and the part that ran (img2img runs the tail). */
  timesteps: readonly number[];
  timestepsUsed: readonly number[];
  sigmas: readonly number[] | undefined;
}

/** What the core needs of a model. */
export interface SamplingNetworks {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
}

/** diffusers' `add_noise` at position `index` of the sampler's schedule (σ-samplers: that step's σ, as diffusers 0.27 uses its step index). */
function noiseAtIndex(sampler: Sampler, x0: tf.Tensor4D, noise: tf.Tensor4D, index: number): tf.Tensor4D {
  if (!sampler.sigmas) return sampler.addNoise(x0, noise, sampler.timesteps[index]!);
  const sigma = sampler.sigmas[index]!;
  return sampler.name === 'dpmpp_2m' || sampler.name === 'dpmpp_2m_karras' ? addNoiseDpm(x0, noise, sigma) : addNoiseSigma(x0, noise, sigma);
}

/** The pixel mask [1, H, W, 1] → binary latent mask [1, h, w, 1] (binarize at 0.5, nearest downsampling). */
export function latentMask(mask: tf.Tensor4D, h: number, w: number): tf.Tensor4D {
  return tf.tidy(() => tf.image.resizeNearestNeighbor(tf.cast(tf.greaterEqual(mask, 0.5), 'float32') as tf.Tensor4D, [h, w], false, false));
}

/** scaling · (mean + std · eps) of `image` [1, H, W, 3], repeated for a batch (one eps per image). */
function imageLatents(vae: AutoencoderKL, image: tf.Tensor4D, eps: tf.Tensor4D, opts: { attentionSliceSize?: number }): tf.Tensor4D {
  return tf.tidy(() => {
    const { mean, logvar } = vae.encode(image, opts);
    const b = eps.shape[0];
    const tile = (t: tf.Tensor4D) => (b === 1 ? t : tf.tile(t, [b, 1, 1, 1]));
    return tf.mul(vae.sample(tile(mean), tile(logvar), eps), vae.scalingFactor);
  });
}

/**
 * Runs the sampler for `spec`, yielding after every step; returns the final latents. Tensors it makes are freed when
 * it ends (also when the caller stops iterating early); the inputs stay the caller's.
 */
export function* sampleLatents(net: SamplingNetworks, spec: SampleSpec): Generator<SamplerStepEvent, SampleOutcome> {
  const { unet, vae } = net;
  const f = vaeScaleFactor(vae.config);
  const [h, w, c] = [spec.height / f, spec.width / f, vae.config.latent_channels];
  if (!Number.isInteger(h) || !Number.isInteger(w)) throw new RangeError(`image size ${spec.width}×${spec.height} is not a multiple of ${f}`);
  if (spec.mask && !spec.init) throw new RangeError('a mask needs an init image');
  const shape = [spec.batch, h, w, c];
  const nine = unet.config.in_channels === 4 + 1 + c;
  const sliced = { attentionSliceSize: spec.attentionSliceSize };
  const sampler = createSampler(spec.sampler, spec.schedulerConfig, { steps: spec.steps, eta: spec.eta, noise: spec.noise });
  const strength = spec.init ? spec.init.strength : 1;
  if (!(strength >= 0 && strength <= 1)) throw new RangeError(`strength must lie in [0, 1], got ${strength}`);
  const runs = Math.min(Math.floor(spec.steps * strength), spec.steps);
  const owned: tf.Tensor[] = [];
  const own = <T extends tf.Tensor>(t: T): T => (owned.push(t), t);
  const draw = () => own(spec.noise(shape) as tf.Tensor4D);
  let released = false;
  try {
    const outcome = (latents: tf.Tensor4D, used: readonly number[]): SampleOutcome => ({
      latents,
      timesteps: sampler.timesteps,
      timestepsUsed: used,
      sigmas: sampler.sigmas,
    });
    let x0: tf.Tensor4D | undefined; // image latents
    if (spec.init && (!spec.mask || strength < 1 || !nine)) x0 = own(imageLatents(vae, spec.init.image, draw(), sliced));
    if (spec.init && runs === 0) {
      released = true;
      sampler.dispose();
      return outcome(x0!.clone(), []);
    }
    const start = spec.init ? img2imgTimesteps(sampler, strength) : undefined;
    const noise = draw();
    const fromNoise = !spec.init || (spec.mask !== undefined && strength === 1);
    const x = own(fromNoise ? tf.tidy(() => tf.mul(noise, sampler.initNoiseSigma) as tf.Tensor4D) : noiseAtIndex(sampler, x0!, noise, start!.beginIndex));

    const mask = spec.mask ? own(latentMask(spec.mask, h, w)) : undefined; // [1, h, w, 1]
    let inpaint: { mask: tf.Tensor4D; maskedImageLatents: tf.Tensor4D } | undefined;
    if (nine || spec.mask) {
      const eps = draw(); // diffusers draws the masked image's posterior eps even when a 4-channel U-Net ignores it
      if (nine) {
        // No mask: everything is repainted and the masked image is all 0 (A1111's txt2img/img2img conditioning).
        const m = mask ?? own(tf.ones([1, h, w, 1]) as tf.Tensor4D);
        const masked = own(
          tf.tidy(() => {
            if (!spec.mask) return tf.zeros([1, spec.height, spec.width, 3]) as tf.Tensor4D;
            return tf.mul(spec.init!.image, tf.cast(tf.less(spec.mask, 0.5), 'float32')) as tf.Tensor4D;
          }),
        );
        const tileB = (t: tf.Tensor4D) => own(spec.batch === 1 ? t.clone() : tf.tile(t, [spec.batch, 1, 1, 1]));
        inpaint = { mask: tileB(m), maskedImageLatents: own(imageLatents(vae, masked, eps, sliced)) };
      }
    }
    const legacy = spec.mask && !nine ? { mask: mask!, x0: x0!, noise } : undefined;
    const afterStep = legacy
      ? (y: tf.Tensor4D, index: number): tf.Tensor4D => {
          // after the last step the kept area is the clean image latents (no re-noising)
          const last = index + 1 >= sampler.timesteps.length;
          const keep = last ? legacy.x0 : noiseAtIndex(sampler, legacy.x0, legacy.noise, index + 1);
          return tf.add(tf.mul(keep, tf.sub(1, legacy.mask)), tf.mul(y, legacy.mask));
        }
      : undefined;

    const denoise = createCfgDenoiser({
      unet,
      conditioning: spec.conditioning,
      guidanceScale: spec.guidanceScale,
      batch: spec.batch,
      inpaint,
      attentionSliceSize: spec.attentionSliceSize,
    });
    released = true; // runSampler disposes the sampler
    const latents = yield* runSampler(sampler, denoise, x, { beginIndex: start?.beginIndex, afterStep });
    return outcome(latents, start ? start.timesteps : sampler.timesteps);
  } finally {
    if (!released) sampler.dispose();
    tf.dispose(owned);
  }
}

/** Latents [B, h, w, c] → RGB [B, H, W, 3], nominally [-1, 1] (`vae.decode(latents / scaling_factor)`). */
export function decodeLatents(vae: AutoencoderKL, latents: tf.Tensor4D, opts: { attentionSliceSize?: number } = {}): tf.Tensor4D {
  return tf.tidy(() => vae.decode(tf.div(latents, vae.scalingFactor), opts));
}
