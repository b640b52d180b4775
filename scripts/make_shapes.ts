// Write a synthetic shapes dataset (docs/shapes.md): PNGs, sidecar .txt captions, labels.jsonl and world.json.
// Usage (after `npm run build`):
//   node dist/scripts/make_shapes.js --out datasets/shapes --n 2000 --seed 0 --size 32 \
//     [--hold-out "blue star,green heart"] [--shapes "circle,square,..."] [--min-scale 0.5] [--max-scale 0.8]
// The same options write the same bytes; image i depends only on (seed, i).
import { parseArgs } from 'node:util';
import { SdtrainError } from '../src/errors.js';
import { writeShapesDataset } from '../src/shapes/dataset.js';
import { comboKey, parseCombos, parseShapes, SHAPES } from '../src/shapes/render.js';

const USAGE = `usage: make_shapes --out DIR [--n 2000] [--seed 0] [--size 32] [--hold-out "blue star,green heart"]
                   [--shapes "${SHAPES.join(',')}"] [--min-scale 0.5] [--max-scale 0.8]`;

function int(name: string, v: string | undefined, fallback: number, min: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new SdtrainError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

function num(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new SdtrainError(`--${name} must be a number, got '${v}'`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      n: { type: 'string' },
      seed: { type: 'string' },
      size: { type: 'string' },
      'hold-out': { type: 'string' },
      shapes: { type: 'string' },
      'min-scale': { type: 'string' },
      'max-scale': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.out) throw new SdtrainError(`--out is required\n${USAGE}`);
  const n = int('n', values.n, 2000, 1);
  const seed = int('seed', values.seed, 0, 0);
  const imageSize = int('size', values.size, 32, 8);
  const holdOut = values['hold-out'] ? parseCombos(values['hold-out']) : [];
  const shapes = values.shapes ? parseShapes(values.shapes) : [...SHAPES];
  const started = performance.now();
  let last = 0;
  await writeShapesDataset(
    values.out,
    { n, seed, imageSize, holdOut, shapes, minScale: num('min-scale', values['min-scale'], 0.5), maxScale: num('max-scale', values['max-scale'], 0.8) },
    (done, total) => {
      if (done === total || performance.now() - last > 2000) {
        last = performance.now();
        process.stderr.write(`\r${done}/${total} images`);
      }
    },
  );
  process.stderr.write('\n');
  const held = holdOut.length > 0 ? `; held out: ${holdOut.map(comboKey).join(', ')}` : '';
  console.log(`wrote ${n} ${imageSize}×${imageSize} images to ${values.out} in ${((performance.now() - started) / 1000).toFixed(1)} s (seed ${seed}, shapes: ${shapes.join(', ')}${held})`);
}

main().catch((err: unknown) => {
  console.error(err instanceof SdtrainError ? `make_shapes: ${err.message}` : err);
  process.exit(err instanceof SdtrainError ? 2 : 1);
});
