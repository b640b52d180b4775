// Write the training images of the learning benchmark's concepts (src/shapes/concepts.ts, docs/shapes.md): one
// folder per method, datasets/shapes-<method>/ (PNGs, sidecar .txt captions, labels.jsonl, world.json), 32×32.
// Usage (after `npm run build`):
//   node dist/scripts/make_concept_datasets.js [--only embed,lora] [--out-root <dir>]
// --out-root replaces the package root the concepts' dataset paths are relative to (default: this package), so
// --out-root /tmp/x writes /tmp/x/datasets/shapes-embed/ ... The same concepts write the same bytes.
import { rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SdtrainError } from '../src/errors.js';
import { writeConceptDataset } from '../src/shapes/concept_dataset.js';
import { CONCEPTS, METHODS, type MethodName } from '../src/shapes/concepts.js';

const USAGE = `usage: make_concept_datasets [--only ${METHODS.join(',')}] [--out-root DIR]`;

/** The package root: dist/scripts/ → ../.., scripts/ (tsx) → .. */
function packageRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.split(/[\\/]/).includes('dist') ? resolve(here, '../..') : resolve(here, '..');
}

function parseOnly(text: string | undefined): MethodName[] {
  if (text === undefined) return [...METHODS];
  const items = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new SdtrainError(`--only names no method\n${USAGE}`);
  for (const m of items) if (!(METHODS as string[]).includes(m)) throw new SdtrainError(`--only: unknown method '${m}' (one of ${METHODS.join(', ')})`);
  return [...new Set(items)] as MethodName[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { only: { type: 'string' }, 'out-root': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const root = values['out-root'] !== undefined ? resolve(values['out-root']) : packageRoot();
  for (const method of parseOnly(values.only)) {
    const c = CONCEPTS[method];
    const out = join(root, c.dataset);
    const started = performance.now();
    await rm(out, { recursive: true, force: true }); // no stale images from a bigger earlier n
    const labels = await writeConceptDataset(out, c.images);
    const captions = new Set(labels.map((l) => l.caption));
    console.log(
      `${method}: wrote ${labels.length} images to ${out} in ${((performance.now() - started) / 1000).toFixed(1)} s ` +
        `(${captions.size} distinct caption${captions.size === 1 ? '' : 's'}, e.g. "${labels[0]!.caption}")`,
    );
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof SdtrainError ? `make_concept_datasets: ${err.message}` : err);
  process.exit(err instanceof SdtrainError ? 2 : 1);
});
