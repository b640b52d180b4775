// The training set of one learning-benchmark concept (concepts.ts): a shapes dataset folder (PNG + sidecar .txt +
// labels.jsonl + world.json, dataset.ts) whose scenes are drawn from the concept's restricted lists of shapes, colours
// and backgrounds, without the excluded pairs, and captioned by the concept's own caption function. Deterministic:
// the same concept writes the same bytes (image i depends only on the concept's seed and i).
import type { ConceptImages } from './concepts.js';
import { writeShapesDataset, type ShapeLabel, type ShapesDatasetOptions } from './dataset.js';

/** Image side of the concept datasets: the tiny-shapes model's resolution. */
export const CONCEPT_IMAGE_SIZE = 32;

/** The generator options that draw a concept's training images (default scale range and margin). */
export function conceptDatasetOptions(images: ConceptImages, imageSize = CONCEPT_IMAGE_SIZE): ShapesDatasetOptions {
  return {
    n: images.n,
    seed: images.seed,
    imageSize,
    shapes: images.shapes,
    colours: images.colours,
    backgrounds: images.backgrounds,
    holdOut: images.exclude ?? [],
    caption: images.caption,
  };
}

/** Writes a concept's training images into `outDir` (created if needed); returns the labels. */
export function writeConceptDataset(outDir: string, images: ConceptImages, opts: { imageSize?: number; onProgress?: (done: number, n: number) => void } = {}): Promise<ShapeLabel[]> {
  return writeShapesDataset(outDir, conceptDatasetOptions(images, opts.imageSize), opts.onProgress);
}
