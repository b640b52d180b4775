// Writes datasets/cat/: a handful of drawn cat faces (SVG rendered with sharp) with caption files, so the example
// config runs on a fresh clone. Seeded: the same command writes the same files. Replace them with your photos.
//   node scripts/make_cat_dataset.mjs [outDir]
import sharp from 'sharp';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const out = process.argv[2] ?? 'datasets/cat';
mkdirSync(out, { recursive: true });
let s = 12345;
const rand = () => ((s = (Math.imul(1664525, s) + 1013904223) >>> 0) / 2 ** 32);
const furs = [['orange', '#e8892b'], ['grey', '#8a8d91'], ['black', '#222222'], ['white', '#f2f2f2'], ['brown', '#7b4a2a'], ['ginger', '#d9772e']];
const backs = [['blue', '#4a78c2'], ['green', '#5fa35a'], ['pink', '#e7a1c0'], ['yellow', '#e9d86a'], ['purple', '#8a63b8'], ['teal', '#3aa7a3']];
const size = 128;
for (let i = 0; i < 6; i++) {
  const [furName, fur] = furs[i];
  const [backName, back] = backs[(i * 5) % backs.length];
  const cx = 64 + (rand() - 0.5) * 16, cy = 70 + (rand() - 0.5) * 12, r = 34 + rand() * 8;
  const eye = fur === '#222222' ? '#d4c22a' : '#2a7a2a';
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}">
  <rect width="100%" height="100%" fill="${back}"/>
  <polygon points="${cx - r * 0.9},${cy - r * 0.3} ${cx - r * 0.75},${cy - r * 1.35} ${cx - r * 0.15},${cy - r * 0.85}" fill="${fur}" stroke="#111" stroke-width="2"/>
  <polygon points="${cx + r * 0.9},${cy - r * 0.3} ${cx + r * 0.75},${cy - r * 1.35} ${cx + r * 0.15},${cy - r * 0.85}" fill="${fur}" stroke="#111" stroke-width="2"/>
  <circle cx="${cx}" cy="${cy}" r="${r}" fill="${fur}" stroke="#111" stroke-width="2"/>
  <ellipse cx="${cx - r * 0.38}" cy="${cy - r * 0.15}" rx="${r * 0.14}" ry="${r * 0.2}" fill="${eye}"/>
  <ellipse cx="${cx + r * 0.38}" cy="${cy - r * 0.15}" rx="${r * 0.14}" ry="${r * 0.2}" fill="${eye}"/>
  <polygon points="${cx - r * 0.1},${cy + r * 0.15} ${cx + r * 0.1},${cy + r * 0.15} ${cx},${cy + r * 0.28}" fill="#e58a9a"/>
  <path d="M${cx - r * 0.2},${cy + r * 0.42} Q${cx},${cy + r * 0.55} ${cx + r * 0.2},${cy + r * 0.42}" stroke="#111" stroke-width="2" fill="none"/>
  <line x1="${cx - r * 0.2}" y1="${cy + r * 0.25}" x2="${cx - r * 1.1}" y2="${cy + r * 0.1}" stroke="#111" stroke-width="1.5"/>
  <line x1="${cx + r * 0.2}" y1="${cy + r * 0.25}" x2="${cx + r * 1.1}" y2="${cy + r * 0.1}" stroke="#111" stroke-width="1.5"/>
</svg>`;
  const name = `cat_${String(i + 1).padStart(2, '0')}`;
  await sharp(Buffer.from(svg)).png().toFile(join(out, `${name}.png`));
  writeFileSync(join(out, `${name}.txt`), `a drawing of ${/^[aeiou]/.test(furName) ? 'an' : 'a'} ${furName} cat face on a ${backName} background\n`);
}
