// Regenerate configs/sdtrain.schema.json and the key reference in docs/config.md from src/config/schema.ts.
// Usage (after `npm run build`): node dist/scripts/gen_schema.js [--check]
//   --check: write nothing; exit 1 if either file is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../src/config/fields.js';
import { renderConfigReference, renderJsonSchema, replaceReference } from '../src/config/json_schema.js';

const root = packageRoot();
const check = process.argv.includes('--check');
const read = (file: string): string | undefined => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
};

const schemaFile = path.join(root, 'configs', 'sdtrain.schema.json');
const docsFile = path.join(root, 'docs', 'config.md');
const docs = read(docsFile);
if (docs === undefined) {
  console.error(`${docsFile} is missing`);
  process.exit(1);
}
const targets: [string, string][] = [
  [schemaFile, renderJsonSchema()],
  [docsFile, replaceReference(docs, renderConfigReference())],
];

let stale = 0;
for (const [file, text] of targets) {
  const rel = path.relative(root, file);
  if (read(file) === text) {
    console.log(`${rel}: up to date`);
  } else if (check) {
    console.error(`${rel}: out of date — run npm run build && npm run schema`);
    stale++;
  } else {
    writeFileSync(file, text);
    console.log(`${rel}: written`);
  }
}
process.exit(stale > 0 ? 1 : 0);
