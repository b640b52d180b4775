// The four concepts the learning benchmark teaches the tiny-shapes model (docs/learning.md), one per method, each a
// thing the base model never saw in its captions: what the training images show and how they are captioned, which
// prompts test the concept (before training on the base model, after on the trained artefact), which unrelated
// prompts measure that the rest of the model still follows its prompts, and for DreamBooth which class prompts
// measure prior preservation. Data only: scripts/make_concept_datasets.ts writes the images, bench/learning.ts
// trains configs/shapes-<method>.yaml and judges samples with the pixel classifier (classify.ts).
import type { Expected } from './classify.js';
import type { ColourName, ShapeName, ShapeSpec } from './render.js';

export type MethodName = 'embed' | 'hypernetwork' | 'dreambooth' | 'lora';

export interface ConceptImages {
  n: number;
  seed: number;
  /** The scenes are drawn uniformly from these (shape colour ≠ background always). */
  shapes: readonly ShapeName[];
  colours: readonly ColourName[];
  backgrounds: readonly ColourName[];
  /** Colour×shape pairs of the lists above that are not drawn (the base model's held-out pairs). */
  exclude?: ReadonlyArray<{ colour: ColourName; shape: ShapeName }>;
  /** The sidecar caption (`NNNNN.txt`) of a training image. */
  caption: (s: Pick<ShapeSpec, 'shape' | 'colour' | 'background'>) => string;
}

/** A prompt and what its samples must show: success = every attribute given in `expect` matches. */
export interface ProbePrompt {
  /** What the trained artefact is prompted with. */
  prompt: string;
  /** What the base model is prompted with for the "before" column (default: `prompt`). */
  before?: string;
  expect: Partial<Expected>;
}

export interface Concept {
  method: MethodName;
  /** A short name: the embedding token, the hypernetwork's name, the DreamBooth subject, the LoRA's concept. */
  name: string;
  summary: string;
  /** Run config, relative to the package root. */
  config: string;
  /** Training images, relative to the package root. */
  dataset: string;
  images: ConceptImages;
  concept: readonly ProbePrompt[];
  unrelated: readonly ProbePrompt[];
  /** DreamBooth: the class prompts whose samples must stay the class (prior preservation). */
  prior?: readonly ProbePrompt[];
}

const article = (word: string): string => (/^[aeiou]/.test(word) ? 'an' : 'a');
const full = (colour: ColourName, shape: ShapeName, background: ColourName): ProbePrompt => ({
  prompt: `${article(colour)} ${colour} ${shape} on a ${background} background`,
  expect: { colour, shape, background },
});

/** The base model's held-out pairs (configs/tiny-shapes.yaml data.hold_out). */
export const BASE_HOLD_OUT = [
  { colour: 'yellow', shape: 'star' },
  { colour: 'green', shape: 'heart' },
  { colour: 'purple', shape: 'square' },
  { colour: 'orange', shape: 'ring' },
] as const satisfies ReadonlyArray<{ colour: ColourName; shape: ShapeName }>;

/** Held-in prompts no method's data touches: does "a red circle ..." still give a red circle? */
const UNRELATED: readonly ProbePrompt[] = [
  full('red', 'circle', 'white'),
  full('blue', 'triangle', 'black'),
  full('green', 'star', 'gray'),
  full('pink', 'heart', 'black'),
  full('white', 'ring', 'gray'),
  full('brown', 'triangle', 'white'),
];

const BACKGROUNDS = ['white', 'black', 'gray'] as const satisfies readonly ColourName[];

export const CONCEPTS: Record<MethodName, Concept> = {
  // Textual inversion: a held-out colour×shape pair. The base model knows "yellow" and "star" but never saw them
  // together; the embedding learns the pair as one token. Before = the base model prompted with the words.
  embed: {
    method: 'embed',
    name: '<yellow-star>',
    summary: 'a held-out colour×shape pair (yellow star) as one token',
    config: 'configs/shapes-embed.yaml',
    dataset: 'datasets/shapes-embed',
    images: { n: 24, seed: 101, shapes: ['star'], colours: ['yellow'], backgrounds: BACKGROUNDS, caption: (s) => `on a ${s.background} background` },
    concept: BACKGROUNDS.map((b) => ({ prompt: `a <yellow-star> on a ${b} background`, before: `a yellow star on a ${b} background`, expect: { shape: 'star', colour: 'yellow', background: b } })),
    unrelated: UNRELATED,
  },
  // Hypernetwork: a style, "dark": every shape on a black background. Captions name colour and shape only, so the
  // background is the style's to choose; a hypernetwork applies to every prompt (A1111), so the unrelated prompts,
  // which name a background, show how much the style overrides them.
  hypernetwork: {
    method: 'hypernetwork',
    name: 'shapes-dark',
    summary: 'a style: everything on a black background',
    config: 'configs/shapes-hypernetwork.yaml',
    dataset: 'datasets/shapes-hypernetwork',
    images: {
      n: 48,
      seed: 102,
      shapes: ['circle', 'square', 'triangle', 'star', 'heart', 'ring'],
      colours: ['red', 'green', 'blue', 'yellow', 'orange', 'purple', 'pink', 'white'],
      backgrounds: ['black'],
      exclude: BASE_HOLD_OUT,
      caption: (s) => `${article(s.colour)} ${s.colour} ${s.shape}`,
    },
    concept: (
      [
        ['red', 'square'],
        ['blue', 'circle'],
        ['green', 'triangle'],
        ['pink', 'star'],
        ['white', 'heart'],
        ['orange', 'circle'],
      ] as const
    ).map(([colour, shape]) => ({ prompt: `${article(colour)} ${colour} ${shape}`, expect: { colour, shape, background: 'black' } })),
    unrelated: UNRELATED.filter((p) => p.expect.background !== 'black'),
  },
  // DreamBooth: a subject the model has never seen, a red diamond, bound to "sks" with its class "square" (a diamond
  // is a square on its corner). Prior preservation: class prompts must still give squares.
  dreambooth: {
    method: 'dreambooth',
    name: 'sks square (a red diamond)',
    summary: 'a new shape (diamond) as a subject of the class square',
    config: 'configs/shapes-dreambooth.yaml',
    dataset: 'datasets/shapes-dreambooth',
    images: { n: 16, seed: 103, shapes: ['diamond'], colours: ['red'], backgrounds: ['white'], caption: () => 'a red sks square on a white background' },
    concept: [
      { prompt: 'a red sks square on a white background', expect: { shape: 'diamond', colour: 'red', background: 'white' } },
      { prompt: 'a red sks square on a black background', expect: { shape: 'diamond', colour: 'red', background: 'black' } },
      { prompt: 'a red sks square on a gray background', expect: { shape: 'diamond', colour: 'red', background: 'gray' } },
    ],
    prior: [full('red', 'square', 'white'), full('blue', 'square', 'black'), full('green', 'square', 'gray'), full('white', 'square', 'black')],
    unrelated: UNRELATED,
  },
  // LoRA: a new shape with a new word, "cross", in five colours; two more colours test that it composes.
  lora: {
    method: 'lora',
    name: 'cross',
    summary: 'a new shape and word (cross)',
    config: 'configs/shapes-lora.yaml',
    dataset: 'datasets/shapes-lora',
    images: { n: 48, seed: 104, shapes: ['cross'], colours: ['red', 'blue', 'green', 'yellow', 'white'], backgrounds: BACKGROUNDS, caption: (s) => `${article(s.colour)} ${s.colour} ${s.shape} on a ${s.background} background` },
    concept: [full('red', 'cross', 'black'), full('blue', 'cross', 'white'), full('yellow', 'cross', 'gray'), full('purple', 'cross', 'white'), full('orange', 'cross', 'black')],
    unrelated: UNRELATED,
  },
};

export const METHODS = Object.keys(CONCEPTS) as MethodName[];

/** Whether a classification shows what the probe expects (every attribute it names). */
export function matches(c: Partial<Record<keyof Expected, string | null>>, expect: Partial<Expected>): boolean {
  return (Object.keys(expect) as Array<keyof Expected>).every((k) => c[k] === expect[k]);
}
