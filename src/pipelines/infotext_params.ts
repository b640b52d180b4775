// The A1111 generation parameters ("infotext", PNG text key `parameters`) of one image, with the keys and the key
// order of A1111's `create_infotext` (v1.10; formats.md §8.3, prompts/infotext.json):
//
//   <prompt>[ <lora:name:w>…][ <hypernet:name:m>…]
//   Negative prompt: <negative>
//   Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: …, …
//
// LoRAs and hypernetworks are written as the extra-network tags A1111 users type (A1111 keeps them in the prompt;
// for a hypernetwork we do not write the old `Hypernet:`/`Hypernet strength:` keys), so that "PNG Info → Send to
// txt2img" in A1111 applies them; `splitExtraNetworks` takes them back out. "RNG: CPU" is written because initial
// noise is torch's CPU generator (A1111's default is GPU): with it, A1111 draws the same initial latents for a seed.
import { packageVersion } from '../paths.js';
import { buildInfotext, type InfotextValue } from '../prompts/infotext.js';
import type { EmphasisMode } from '../prompts/conditioning.js';
import type { SamplerName } from '../samplers/index.js';

/** A1111's sampler names (`Sampler:`) and, where it is not the sampler's default, the `Schedule type:`. */
export function samplerInfotext(name: SamplerName, opts: { karrasSigmas?: boolean } = {}): { sampler: string; scheduleType?: string } {
  switch (name) {
    case 'ddim':
      return { sampler: 'DDIM' };
    case 'plms':
      return { sampler: 'PLMS' };
    case 'ddpm':
      return { sampler: 'DDPM' };
    case 'euler':
      return opts.karrasSigmas ? { sampler: 'Euler', scheduleType: 'Karras' } : { sampler: 'Euler' };
    case 'euler_a':
      return { sampler: 'Euler a' };
    // A1111 ≥ 1.9 defaults DPM++ 2M to the Karras schedule, so the plain one needs its schedule written.
    case 'dpmpp_2m':
      return { sampler: 'DPM++ 2M', scheduleType: 'Uniform' };
    case 'dpmpp_2m_karras':
      return { sampler: 'DPM++ 2M', scheduleType: 'Karras' };
  }
}

/** Inverse of `samplerInfotext` (also reads the pre-1.9 "DPM++ 2M Karras" name); undefined for samplers we lack. */
export function samplerFromInfotext(sampler: string, scheduleType?: string): SamplerName | undefined {
  const karras = scheduleType === 'Karras' || / Karras$/.test(sampler);
  switch (sampler.replace(/ Karras$/, '')) {
    case 'DDIM':
      return 'ddim';
    case 'PLMS':
      return 'plms';
    case 'DDPM':
      return 'ddpm';
    case 'Euler':
      return 'euler';
    case 'Euler a':
      return 'euler_a';
    case 'DPM++ 2M':
      // "Automatic" is Karras for DPM++ 2M in A1111 >= 1.9; before 1.9 a plain "DPM++ 2M" was the uniform schedule
      return karras || scheduleType === 'Automatic' ? 'dpmpp_2m_karras' : 'dpmpp_2m';
    default:
      return undefined;
  }
}

const EMPHASIS_NAMES: Record<EmphasisMode, string | undefined> = { original: undefined, no_norm: 'No norm', ignore: 'Ignore', none: 'None' };

export interface ImageInfo {
  prompt: string;
  negativePrompt?: string;
  steps: number;
  sampler: SamplerName;
  /** Euler with `use_karras_sigmas` in the scheduler config. */
  karrasSigmas?: boolean;
  cfgScale: number;
  seed: number;
  width: number;
  height: number;
  modelHash?: string;
  modelName?: string;
  vaeHash?: string;
  vaeName?: string;
  /** Written when the batch has more than one image. */
  batchSize?: number;
  batchPos?: number;
  /** img2img / inpainting. */
  denoisingStrength?: number;
  clipSkip?: number;
  /** DDIM's η when not 0. */
  eta?: number;
  /** Inpainting / outpainting. */
  maskBlur?: number;
  loras?: ReadonlyArray<{ name: string; weight: number; teWeight?: number; hash?: string }>;
  hypernetworks?: ReadonlyArray<{ name: string; strength: number }>;
  /** Textual-inversion embeddings the prompts use, with their short hash (first 12 hex of sha256 of the file). */
  embeddings?: ReadonlyArray<{ name: string; hash: string }>;
  emphasis?: EmphasisMode;
  /** Default `sdtrain <package version>`. */
  version?: string;
}

/** `name: hash, …` (A1111 "Lora hashes"/"TI hashes"; colons and commas in names are dropped, as A1111 does). */
const hashList = (items: ReadonlyArray<{ name: string; hash?: string }>): string | undefined => {
  const withHash = items.filter((i) => i.hash);
  return withHash.length ? withHash.map((i) => `${i.name.replace(/[:,]/g, '')}: ${i.hash}`).join(', ') : undefined;
};

/** The `<lora:…>` and `<hypernet:…>` tags for the prompt line. */
export function extraNetworkTags(info: Pick<ImageInfo, 'loras' | 'hypernetworks'>): string {
  const tags = [
    // A1111's order is <lora:name:te:unet>; one number sets both
    ...(info.loras ?? []).map((l) =>
      l.teWeight !== undefined && l.teWeight !== l.weight ? `<lora:${l.name}:${l.teWeight}:${l.weight}>` : `<lora:${l.name}:${l.weight}>`,
    ),
    ...(info.hypernetworks ?? []).map((h) => `<hypernet:${h.name}:${h.strength}>`),
  ];
  return tags.join(' ');
}

const TAG_RE = /\s*<(lora|hypernet):([^:>]+)(?::([^:>]+))?(?::([^:>]+))?>/g;

/** Takes the `<lora:name:w>` / `<lora:name:te:unet>` / `<hypernet:name:m>` tags out of an infotext prompt. */
export function splitExtraNetworks(prompt: string): {
  prompt: string;
  loras: Array<{ name: string; weight: number; teWeight?: number }>;
  hypernetworks: Array<{ name: string; strength: number }>;
} {
  const loras: Array<{ name: string; weight: number; teWeight?: number }> = [];
  const hypernetworks: Array<{ name: string; strength: number }> = [];
  const rest = prompt.replace(TAG_RE, (_m, kind: string, name: string, a?: string, b?: string) => {
    const first = a === undefined ? 1 : Number(a);
    if (kind === 'hypernet') hypernetworks.push({ name, strength: first });
    else if (b === undefined) loras.push({ name, weight: first });
    else loras.push({ name, weight: Number(b), teWeight: first }); // <lora:name:te:unet>
    return '';
  });
  return { prompt: rest, loras, hypernetworks };
}

/** The parameter line's entries in A1111's order; undefined values are left out by `buildInfotext`. */
export function infotextParams(info: ImageInfo): Array<[string, InfotextValue]> {
  const { sampler, scheduleType } = samplerInfotext(info.sampler, { karrasSigmas: info.karrasSigmas });
  const batch = info.batchSize !== undefined && info.batchSize > 1;
  return [
    ['Steps', info.steps],
    ['Sampler', sampler],
    ['Schedule type', scheduleType],
    ['CFG scale', info.cfgScale],
    ['Seed', info.seed],
    ['Size', `${info.width}x${info.height}`],
    ['Model hash', info.modelHash || undefined],
    ['Model', info.modelName],
    ['VAE hash', info.vaeHash || undefined],
    ['VAE', info.vaeName],
    ['Batch size', batch ? info.batchSize : undefined],
    ['Batch pos', batch ? info.batchPos : undefined],
    ['Denoising strength', info.denoisingStrength],
    ['Clip skip', info.clipSkip !== undefined && info.clipSkip > 1 ? info.clipSkip : undefined],
    ['RNG', 'CPU'],
    ['Eta DDIM', info.sampler === 'ddim' && info.eta ? info.eta : undefined],
    ['Mask blur', info.maskBlur],
    ['Lora hashes', hashList(info.loras ?? [])],
    ['TI hashes', hashList(info.embeddings ?? [])],
    ['Emphasis', EMPHASIS_NAMES[info.emphasis ?? 'original']],
    ['Version', info.version ?? `sdtrain ${packageVersion()}`],
  ];
}

/** The whole infotext of an image. */
export function imageInfotext(info: ImageInfo): string {
  const tags = extraNetworkTags(info);
  return buildInfotext({
    prompt: tags ? `${info.prompt} ${tags}` : info.prompt,
    negativePrompt: info.negativePrompt,
    params: infotextParams(info),
  });
}
