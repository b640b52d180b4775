// The run folder's human-facing files: config.resolved.yaml, loss.jsonl (one JSON line per optimizer step) and
// loss.png (a line chart: raw loss and its moving average, drawn as SVG and rasterised by sharp).
import { existsSync } from 'node:fs';
import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { dumpResolvedConfig, type ResolvedSource } from '../config/load_config.js';
import { writeFileAtomic } from '../formats/atomic.js';
import { writeFully } from '../formats/io.js';

export const RESOLVED_CONFIG_FILE = 'config.resolved.yaml';
export const LOSS_LOG_FILE = 'loss.jsonl';
export const LOSS_PLOT_FILE = 'loss.png';

/** One line of loss.jsonl. `step` counts completed optimizer steps (1-based); `time` is seconds since the run began. */
export interface LossRecord {
  step: number;
  loss: number;
  lr: number;
  time: number;
  /** Loss parts a method logs too (the VAE's reconstruction and KL terms), restored on resume. */
  rec?: number;
  kl?: number;
}

async function writeTextAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  await writeFileAtomic(path, (fh) => writeFully(fh, bytes, 0));
}

export async function writeResolvedConfig(runDir: string, config: unknown, source?: ResolvedSource): Promise<string> {
  const path = join(runDir, RESOLVED_CONFIG_FILE);
  await writeTextAtomic(path, dumpResolvedConfig(config, source));
  return path;
}

export async function appendLossRecord(runDir: string, r: LossRecord): Promise<void> {
  await appendFile(join(runDir, LOSS_LOG_FILE), `${JSON.stringify(r)}\n`);
}

/**
 * The records of loss.jsonl up to `step` (inclusive); the file is rewritten without the later ones, which a run
 * interrupted after its last checkpoint left behind and the resumed run is about to redo.
 */
export async function truncateLossLog(runDir: string, step: number): Promise<LossRecord[]> {
  const path = join(runDir, LOSS_LOG_FILE);
  if (!existsSync(path)) return [];
  const kept: LossRecord[] = [];
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    if (line.trim() === '') continue;
    try {
      const r = JSON.parse(line) as LossRecord;
      if (typeof r.step === 'number' && r.step <= step) kept.push(r);
    } catch {
      // a line cut short by a crash: dropped
    }
  }
  await writeTextAtomic(path, kept.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return kept;
}

const fmt = (x: number): string => (x === 0 ? '0' : Math.abs(x) >= 0.01 && Math.abs(x) < 1000 ? x.toPrecision(3) : x.toExponential(1));

/** At most `n` points: consecutive records averaged in equal-sized groups. */
function thin<T extends Pick<LossRecord, 'step' | 'loss'>>(records: T[], n: number): Array<Pick<LossRecord, 'step' | 'loss'>> {
  if (records.length <= n) return records;
  const per = Math.ceil(records.length / n);
  const out: Array<Pick<LossRecord, 'step' | 'loss'>> = [];
  for (let i = 0; i < records.length; i += per) {
    const group = records.slice(i, i + per);
    out.push({ step: group.at(-1)!.step, loss: group.reduce((a, r) => a + r.loss, 0) / group.length });
  }
  return out;
}

/** The loss chart as an SVG document (pure). Non-finite losses are skipped. */
export function lossChartSvg(records: readonly Pick<LossRecord, 'step' | 'loss'>[], opts: { width?: number; height?: number; title?: string } = {}): string {
  const W = opts.width ?? 800;
  const H = opts.height ?? 400;
  const m = { l: 70, r: 20, t: 30, b: 40 };
  const pts = thin(records.filter((r) => Number.isFinite(r.loss)), 2000);
  const steps = pts.map((p) => p.step);
  const losses = pts.map((p) => p.loss);
  const lo = (xs: number[], d: number) => xs.reduce((a, b) => Math.min(a, b), d);
  const hi = (xs: number[], d: number) => xs.reduce((a, b) => Math.max(a, b), d);
  const x0 = lo(steps, 0);
  const x1 = hi(steps, x0 + 1);
  const y0 = lo(losses, 0);
  const y1 = hi(losses, y0 + 1e-6);
  const sx = (s: number) => m.l + ((s - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (v: number) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
  const path = (xs: number[], ys: number[]) => xs.map((x, i) => `${i === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(ys[i]!).toFixed(1)}`).join('');
  // trailing moving average over ~5% of the points (running sum)
  const window = Math.max(1, Math.round(pts.length / 20));
  let sum = 0;
  const avg = losses.map((v, i) => {
    sum += v - (i >= window ? losses[i - window]! : 0);
    return sum / Math.min(i + 1, window);
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const grid = ticks
    .map((f) => {
      const y = y0 + f * (y1 - y0);
      const x = Math.round(x0 + f * (x1 - x0));
      return (
        `<line x1="${m.l}" x2="${W - m.r}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#e5e5e5"/>` +
        `<text x="${m.l - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${fmt(y)}</text>` +
        `<text x="${sx(x).toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle">${x}</text>`
      );
    })
    .join('');
  const title = (opts.title ?? 'training loss').replace(/[<>&]/g, '');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    grid,
    `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#888"/>`,
    `<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#888"/>`,
    pts.length > 0 ? `<path d="${path(steps, losses)}" fill="none" stroke="#9ecae1" stroke-width="1"/>` : '',
    pts.length > 0 ? `<path d="${path(steps, avg)}" fill="none" stroke="#08519c" stroke-width="2"/>` : '',
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${title}</text>`,
    `<text x="${W / 2}" y="${H - 6}" text-anchor="middle">step</text>`,
    '</svg>',
  ].join('');
}

/** Renders loss.png into the run folder (atomically); returns its path. */
export async function writeLossPlot(runDir: string, records: readonly Pick<LossRecord, 'step' | 'loss'>[], title?: string): Promise<string> {
  const path = join(runDir, LOSS_PLOT_FILE);
  const png = await sharp(Buffer.from(lossChartSvg(records, { ...(title !== undefined ? { title } : {}) }))).png().toBuffer();
  await writeTextAtomic(path, png);
  return path;
}
