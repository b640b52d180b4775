// `txt2img`, `img2img` and `inpaint` cases: whole diffusers pipeline calls, run through the same sampling core as
// `generate` (src/pipelines/sample.ts) with the recorded random draws replayed instead of drawn: txt2img
// [initial_latents]; img2img [posterior_eps, noise]; inpaint [image_posterior_eps, initial_latents (the forward
// noise), masked_image_posterior_eps]. Prompts come as token ids (`prompt_ids`/`negative_prompt_ids`) when the case has
// them, else the case's prompt strings are tokenized with the model's tokenizer as the pipelines do (truncated to 77).
import * as tf from '@tensorflow/tfjs';
import { FormatError } from '../../errors.js';
import type { LoadedTensor } from '../../formats/dtype.js';
import { Conditioning } from '../../pipelines/conditioning.js';
import { decodeLatents, sampleLatents, type SampleSpec } from '../../pipelines/sample.js';
import { replayNoise } from '../../samplers/index.js';
import { CLIPTokenizer } from '../../tokenizer/clip_tokenizer.js';
import type { FixtureCase } from '../fixture.js';
import type { ComputedOutput, KindContext, KindHandler } from '../types.js';
import { schedulerArg } from './scheduler_trajectory.js';
import { nchwOutput, nhwcTensor } from './util.js';

type Mode = 'txt2img' | 'img2img' | 'inpaint';

/** The recorded draws of each mode, in the order the core draws. */
const DRAWS: Record<Mode, readonly string[]> = {
  txt2img: ['initial_latents'],
  img2img: ['posterior_eps', 'noise'],
  inpaint: ['image_posterior_eps', 'initial_latents', 'masked_image_posterior_eps'],
};

function numberArg(fx: FixtureCase, key: string, fallback?: number): number {
  const v = fx.spec.args?.[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new FormatError(fx.jsonPath, `'args.${key}' must be a number`);
  return v;
}

/** [1, 77] ids of a prompt: the case's recorded ids, else the tokenizer's (diffusers: pad to 77, truncate). */
async function promptIds(fx: FixtureCase, tok: CLIPTokenizer, input: string, arg: string): Promise<Int32Array> {
  if (input in fx.spec.inputs) {
    const t: LoadedTensor = await fx.input(input);
    return t.data instanceof Int32Array ? t.data : Int32Array.from(t.data as ArrayLike<number>);
  }
  const text = fx.spec.args?.[arg] ?? '';
  if (typeof text !== 'string') throw new FormatError(fx.jsonPath, `'args.${arg}' must be a string`);
  return Int32Array.from(tok.tokenize(text).inputIds);
}

async function runCase({ fixture: fx, components }: KindContext, mode: Mode): Promise<Map<string, ComputedOutput>> {
  const dir = fx.modelDir;
  const [unet, vae, textEncoder, tok] = await Promise.all([
    components.model(dir, 'unet'),
    components.model(dir, 'vae'),
    components.model(dir, 'text_encoder'),
    components.tokenizer(dir),
  ]);
  const { name, config } = schedulerArg(fx, 'scheduler');
  const ids = [await promptIds(fx, tok, 'prompt_ids', 'prompt'), await promptIds(fx, tok, 'negative_prompt_ids', 'negative_prompt')];
  const loaded = await Promise.all(DRAWS[mode].map((n) => fx.input(n)));
  const image = mode === 'txt2img' ? undefined : await fx.input('image');
  const mask = mode === 'inpaint' ? await fx.input('mask') : undefined;

  const tensors: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => (tensors.push(t), t);
  try {
    const [cond, uncond] = ids.map((row) => keep(tf.tidy(() => textEncoder.forward(tf.tensor2d(row, [1, row.length], 'int32')).lastHiddenState)));
    const draws = loaded.map((t) => keep(nhwcTensor(t)));
    const initImage = image ? keep(nhwcTensor(image)) : undefined;
    const [, height, width] = initImage?.shape ?? [1, numberArg(fx, 'height'), numberArg(fx, 'width')];
    const spec: SampleSpec = {
      sampler: name,
      schedulerConfig: config,
      steps: numberArg(fx, 'num_inference_steps'),
      guidanceScale: numberArg(fx, 'guidance_scale'),
      conditioning: Conditioning.fixed(cond!, uncond!),
      batch: draws[0]!.shape[0],
      width,
      height,
      noise: replayNoise(draws),
      init: initImage ? { image: initImage, strength: numberArg(fx, 'strength', 1) } : undefined,
      mask: mask ? keep(nhwcTensor(mask)) : undefined,
    };
    const run = sampleLatents({ unet, vae }, spec);
    let r = run.next();
    while (!r.done) r = run.next();
    const outcome = r.value;
    keep(outcome.latents);
    const out = new Map<string, ComputedOutput>();
    const list = (xs: readonly number[]): ComputedOutput => ({ data: [...xs], shape: [xs.length] });
    out.set('timesteps', list(outcome.timesteps));
    if (outcome.sigmas && 'sigmas' in fx.spec.outputs) out.set('sigmas', list(outcome.sigmas));
    if ('timesteps_used' in fx.spec.outputs) out.set('timesteps_used', list(outcome.timestepsUsed));
    out.set('final_latents', nchwOutput(outcome.latents));
    const decodedKey = ['image', 'image_out'].find((k) => k in fx.spec.outputs);
    if (decodedKey) {
      const decoded = keep(decodeLatents(vae, outcome.latents));
      out.set(decodedKey, nchwOutput(decoded));
      if ('image_postprocessed' in fx.spec.outputs) {
        out.set('image_postprocessed', nchwOutput(keep(tf.tidy(() => decoded.div(2).add(0.5).clipByValue(0, 1) as tf.Tensor4D))));
      }
    }
    return out;
  } finally {
    tf.dispose(tensors);
  }
}

const COMPONENTS = ['unet', 'vae', 'text_encoder', 'tokenizer'] as const;

export const txt2imgKind: KindHandler = { kind: 'txt2img', components: COMPONENTS, run: (ctx) => runCase(ctx, 'txt2img') };
export const img2imgKind: KindHandler = { kind: 'img2img', components: COMPONENTS, run: (ctx) => runCase(ctx, 'img2img') };
export const inpaintKind: KindHandler = { kind: 'inpaint', components: COMPONENTS, run: (ctx) => runCase(ctx, 'inpaint') };
