// `generate`: a sampling request → PNG images with A1111 infotext. txt2img; img2img (`initImage` + `strength`);
// inpainting (`mask`: a 9-channel model gets the masked image, a 4-channel model is blended every step); outpainting
// (`outpaint`: the image is padded and the new area masked, then inpainted). The sampling itself is the core in
// sample.ts, which the parity cases run too.
//
// Seeds as A1111: image i of iteration n uses seed + n·batchSize + i, and each image has its own torch CPU generator
// seeded with its seed, from which everything random about it is drawn in diffusers' order (posterior eps, initial
// noise `randn([1, 4, h/8, w/8])`, masked-image eps, step noise). So one seed gives diffusers' (CPU) latents, and a
// batch of 2 matches two single runs with seeds s and s+1 (batching only changes float summation order in the U-Net).
//
// Inpainting composites the result over the init image with the blurred mask (A1111's overlay; `inpaintOverlay:
// false` keeps the decoded result everywhere, as diffusers does). Outpainting loads the init image at width×height and
// returns (width + left + right)×(height + top + bottom) images.
import * as tf from '@tensorflow/tfjs';
import { SdtrainError } from '../errors.js';
import { writePngText } from '../formats/png_text.js';
import type { EmphasisMode } from '../prompts/conditioning.js';
import { torchNoise, type NoiseSource, type SamplerName } from '../samplers/index.js';
import { encodeConditioning, usedEmbeddings, type Conditioning } from './conditioning.js';
import { applyExtras, type AppliedExtras, type ExtraNetworksRequest } from './extras.js';
import { encodePng, imageSize, imageTensor, loadImage, loadMask, outpaintCanvas, toUint8, type FloatImage, type ImageSource, type OutpaintPadding, type ResizeMode } from './images.js';
import { imageInfotext, type ImageInfo } from './infotext_params.js';
import type { SdModel } from './model.js';
import { decodeLatents, sampleLatents } from './sample.js';
import { vaeScaleFactor } from '../models/vae.js';

export interface GenerateRequest extends ExtraNetworksRequest {
  prompt: string;
  /** Default '' (the empty prompt is the unconditional context). */
  negativePrompt?: string;
  sampler: SamplerName;
  steps: number;
  /** Classifier-free guidance scale; 1 = no guidance (one U-Net half). */
  cfgScale: number;
  /** Pixels, multiples of 8. With `outpaint`, the size the init image is fitted to before padding. */
  width: number;
  height: number;
  /** Seed of the first image: a concrete integer >= 0 (the caller resolves A1111's -1). */
  seed: number;
  /** Images per batch (one U-Net call); default 1. */
  batchSize?: number;
  /** Batches; default 1. */
  nIter?: number;
  /** A1111 "Clip skip"; default 1. Ignored by SD2 models, as in A1111. */
  clipSkip?: number;
  emphasis?: EmphasisMode;
  /** DDIM's η; default 0. */
  eta?: number;
  /** img2img / inpainting / outpainting source. */
  initImage?: ImageSource;
  /** How `initImage` (and `mask`) are fitted to width×height; default 'fill' (scale and crop the middle). */
  resize?: ResizeMode;
  /** Denoising strength in [0, 1] for `initImage`; default 0.75. 0 returns the input re-decoded by the VAE. */
  strength?: number;
  /** Inpainting mask, the init image's size: white = repaint, black = keep. */
  mask?: ImageSource;
  /** A1111 "Mask blur" in pixels (σ of a Gaussian); default 4. */
  maskBlur?: number;
  /** Paste the result over the init image through the blurred mask (A1111); default true. */
  inpaintOverlay?: boolean;
  /** Grow the init image by these pixels (multiples of 8) and paint the new area. */
  outpaint?: OutpaintPadding;
  /** diffusers' attention slicing (bounds memory; same result). */
  attentionSliceSize?: number;
}

export interface GeneratedImage {
  /** The PNG, with the infotext under the text key `parameters`. */
  png: Buffer;
  seed: number;
  infotext: string;
  width: number;
  height: number;
  /** 0-based over the whole request (iteration·batchSize + position in batch). */
  index: number;
  iteration: number;
  batchPos: number;
  /** 8-bit RGB, HWC (when `GenerateOptions.rgb`). */
  rgb?: Uint8Array;
  /** Final latents before decoding, HWC (when `GenerateOptions.latents`; for tests and debugging). */
  latents?: Float32Array;
}

export type GenerateEvent =
  | { type: 'start'; images: number; batches: number; stepsPerBatch: number; width: number; height: number }
  | { type: 'step'; iteration: number; step: number; total: number; t: number; seeds: number[] }
  | { type: 'image'; image: GeneratedImage }
  | { type: 'warning'; message: string };

export interface GenerateOptions {
  onEvent?: (event: GenerateEvent) => void;
  /** Checked between steps: aborting throws the signal's reason. */
  signal?: AbortSignal;
  rgb?: boolean;
  latents?: boolean;
  /**
   * Hash the checkpoint, VAE, LoRA and embedding files for the infotext (default true). The checkpoint hash reads
   * the whole file once per model object (seconds for a 2–4 GB file); false leaves the hash keys out.
   */
  hashes?: boolean;
}

/** Per-image torch CPU generators for a batch: shape [B, …] draws [1, …] from generator i for image i. */
export function seedNoise(seeds: readonly number[]): NoiseSource {
  const sources = seeds.map((s) => torchNoise(s));
  return (shape) => {
    if (shape[0] !== seeds.length) throw new Error(`noise for a batch of ${shape[0]}, but ${seeds.length} seeds`);
    const rest = shape.slice(1);
    return tf.tidy(() => (sources.length === 1 ? sources[0]!([1, ...rest]) : tf.concat(sources.map((s) => s([1, ...rest])), 0)));
  };
}

function validate(model: SdModel, r: GenerateRequest): void {
  const f = vaeScaleFactor(model.vae.config);
  const whole = (key: string, v: unknown, min: number) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new SdtrainError(`${key} must be a whole number >= ${min}, got ${String(v)}`);
  };
  for (const key of ['width', 'height'] as const) {
    whole(key, r[key], f);
    if (r[key] % f !== 0) throw new SdtrainError(`${key} must be a multiple of ${f}, got ${r[key]} (try ${Math.max(f, Math.round(r[key] / f) * f)})`);
  }
  whole('steps', r.steps, 1);
  whole('seed', r.seed, 0);
  whole('batchSize', r.batchSize ?? 1, 1);
  whole('nIter', r.nIter ?? 1, 1);
  if (!Number.isFinite(r.cfgScale)) throw new SdtrainError(`cfgScale must be a number, got ${r.cfgScale}`);
  const strength = r.strength ?? 0.75;
  if (!(strength >= 0 && strength <= 1)) throw new SdtrainError(`strength must lie in [0, 1], got ${strength}`);
  if (!((r.maskBlur ?? 4) >= 0)) throw new SdtrainError(`maskBlur must be >= 0 pixels, got ${r.maskBlur}`);
  if (r.initImage === undefined) {
    if (r.mask !== undefined) throw new SdtrainError('a mask needs an init image (initImage): inpainting repaints part of a given image');
    if (r.outpaint !== undefined) throw new SdtrainError('outpainting needs an init image (initImage) to extend');
  }
  if (r.mask !== undefined && r.outpaint !== undefined) throw new SdtrainError('mask and outpaint cannot be combined: outpainting makes its own mask');
}

interface Prepared {
  width: number;
  height: number;
  image?: FloatImage;
  mask?: FloatImage;
}

async function prepareImages(r: GenerateRequest): Promise<Prepared> {
  if (r.initImage === undefined) return { width: r.width, height: r.height };
  const fit = { width: r.width, height: r.height, resize: r.resize };
  const blur = r.maskBlur ?? 4;
  const image = await loadImage(r.initImage, { ...fit, what: typeof r.initImage === 'string' ? r.initImage : 'init image' });
  if (r.outpaint) {
    const canvas = outpaintCanvas(image, r.outpaint, blur);
    return { width: canvas.image.width, height: canvas.image.height, ...canvas };
  }
  if (r.mask === undefined) return { ...fit, image };
  const size = await imageSize(r.initImage, typeof r.initImage === 'string' ? r.initImage : 'init image');
  return { ...fit, image, mask: await loadMask(r.mask, { ...fit, blur, imageSize: size }) };
}

/** Generates the request's images one by one (each yielded as soon as it is encoded). */
export async function* generateImages(model: SdModel, request: GenerateRequest, opts: GenerateOptions = {}): AsyncGenerator<GeneratedImage> {
  validate(model, request);
  const emit = (e: GenerateEvent) => opts.onEvent?.(e);
  const prepared = await prepareImages(request);
  const { width, height } = prepared;
  const batch = request.batchSize ?? 1;
  const nIter = request.nIter ?? 1;
  const strength = request.initImage !== undefined ? (request.strength ?? 0.75) : 1;

  const extras: AppliedExtras = await applyExtras(model, request);
  const tensors: tf.Tensor[] = [];
  let conditioning: Conditioning | undefined;
  try {
    for (const message of extras.warnings) emit({ type: 'warning', message });
    conditioning = encodeConditioning(model, { ...request, embeddings: extras.registry });
    const info = await imageInfo(model, request, extras, { width, height, strength: prepared.image ? strength : undefined, hashes: opts.hashes ?? true });
    const image = prepared.image && imageTensor(prepared.image); // [1, H, W, 3]
    const mask = prepared.mask && imageTensor(prepared.mask); // [1, H, W, 1]
    for (const t of [image, mask]) if (t) tensors.push(t);
    const runs = prepared.image ? Math.min(Math.floor(request.steps * strength), request.steps) : request.steps;
    emit({ type: 'start', images: batch * nIter, batches: nIter, stepsPerBatch: runs, width, height });

    for (let n = 0; n < nIter; n++) {
      const seeds = Array.from({ length: batch }, (_, i) => request.seed + n * batch + i);
      const run = sampleLatents(model, {
        sampler: request.sampler,
        schedulerConfig: model.schedulerConfig,
        steps: request.steps,
        eta: request.eta,
        guidanceScale: request.cfgScale,
        conditioning,
        batch,
        width,
        height,
        noise: seedNoise(seeds),
        init: image && { image, strength },
        mask,
        attentionSliceSize: request.attentionSliceSize,
      });
      let r = run.next();
      try {
        while (!r.done) {
          emit({ type: 'step', iteration: n, step: r.value.step, total: r.value.total, t: r.value.t, seeds });
          await new Promise((resolve) => setImmediate(resolve)); // let progress output and signals through
          if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
          r = run.next();
        }
      } finally {
        if (!r.done) run.return(undefined as never);
      }
      const latents = r.value.latents;
      try {
        for (let i = 0; i < batch; i++) {
          const out = await finishImage(model, latents, i, { image, mask, overlay: request.inpaintOverlay ?? true, opts, attentionSliceSize: request.attentionSliceSize });
          const infotext = imageInfotext({ ...info, seed: seeds[i]!, batchSize: batch, batchPos: i });
          const result: GeneratedImage = {
            png: writePngText(await encodePng(out.rgb, width, height), { parameters: infotext }),
            seed: seeds[i]!,
            infotext,
            width,
            height,
            index: n * batch + i,
            iteration: n,
            batchPos: i,
            ...(opts.rgb ? { rgb: out.rgb } : {}),
            ...(out.latents ? { latents: out.latents } : {}),
          };
          emit({ type: 'image', image: result });
          yield result;
        }
      } finally {
        latents.dispose();
      }
    }
  } finally {
    conditioning?.dispose();
    tf.dispose(tensors);
    extras.release();
  }
}

/** All images of the request (see `generateImages`). */
export async function generate(model: SdModel, request: GenerateRequest, opts: GenerateOptions = {}): Promise<GeneratedImage[]> {
  const out: GeneratedImage[] = [];
  for await (const image of generateImages(model, request, opts)) out.push(image);
  return out;
}

/** Decodes image i of the batch, pastes it over the init image through the mask (overlay), and quantizes it. */
async function finishImage(
  model: SdModel,
  latents: tf.Tensor4D,
  i: number,
  o: { image?: tf.Tensor; mask?: tf.Tensor; overlay: boolean; opts: GenerateOptions; attentionSliceSize?: number },
): Promise<{ rgb: Uint8Array; latents?: Float32Array }> {
  const one = tf.slice(latents, [i, 0, 0, 0], [1, -1, -1, -1]);
  const rgb = tf.tidy(() => {
    const decoded = decodeLatents(model.vae, one, { attentionSliceSize: o.attentionSliceSize });
    if (!(o.overlay && o.mask && o.image)) return decoded;
    return tf.add(tf.mul(decoded, o.mask), tf.mul(o.image, tf.sub(1, o.mask))) as tf.Tensor4D;
  });
  try {
    return { rgb: await toUint8(rgb), ...(o.opts.latents ? { latents: (await one.data()) as Float32Array } : {}) };
  } finally {
    tf.dispose([one, rgb]);
  }
}

async function imageInfo(
  model: SdModel,
  r: GenerateRequest,
  extras: AppliedExtras,
  size: { width: number; height: number; strength?: number; hashes: boolean },
): Promise<Omit<ImageInfo, 'seed'>> {
  const used = usedEmbeddings(model, [r.prompt, r.negativePrompt ?? ''], extras.registry);
  const [modelHash, vaeHash, loraHashes, embeddings] = size.hashes
    ? await Promise.all([model.hash(), model.vaeHash(), extras.loraHashes(), extras.embeddingHashes(used)])
    : [undefined, undefined, [], used.map((name) => ({ name, hash: '' }))];
  return {
    prompt: r.prompt,
    negativePrompt: r.negativePrompt,
    steps: r.steps,
    sampler: r.sampler,
    karrasSigmas: model.schedulerConfig.use_karras_sigmas,
    cfgScale: r.cfgScale,
    width: size.width,
    height: size.height,
    modelHash,
    modelName: model.name,
    vaeHash,
    vaeName: model.vaeName,
    denoisingStrength: size.strength,
    clipSkip: r.clipSkip,
    eta: r.eta,
    maskBlur: r.mask !== undefined || r.outpaint !== undefined ? r.maskBlur ?? 4 : undefined,
    loras: extras.loras.map((l, i) => ({ ...l, hash: loraHashes[i] })),
    hypernetworks: extras.hypernetworks,
    embeddings,
    emphasis: r.emphasis,
  };
}
