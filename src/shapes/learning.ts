// The learning benchmark's library part (bench/learning.ts is the command, docs/learning.md the write-up): which
// prompts probe a concept (concepts.ts) before and after training, sampling them through the same `generate` path
// `sdtrain sample` uses (model + extra networks) and judging every image with the pixel classifier, the result types,
// reading the training command's output, and the tables (pure functions returning strings; nothing here prints).
import { generate } from '../pipelines/generate.js';
import type { ExtraNetworksRequest } from '../pipelines/extras.js';
import type { SdModel } from '../pipelines/model.js';
import { nativeImageSize } from '../checkpoints/pipeline.js';
import type { SamplerName } from '../samplers/index.js';
import { classifyImage, type Classification, type Expected } from './classify.js';
import { matches, type Concept, type MethodName } from './concepts.js';

export type ProbeGroup = 'concept' | 'prior' | 'unrelated';
/** Row order of the tables. */
export const PROBE_GROUPS: readonly ProbeGroup[] = ['concept', 'prior', 'unrelated'];

/** One prompt as a model is prompted with it, and what each of its images must show. */
export interface Probe {
  group: ProbeGroup;
  prompt: string;
  expect: Partial<Expected>;
}

/**
 * The probes of a concept in a fixed order (concept, prior, unrelated), so that probe i gets the same seeds before and
 * after training. `before`: concept prompts use their `before` form (what the base model understands). `rewrite` is
 * applied to every prompt (after: the embedding's placeholder → the keyword its file is loaded under).
 */
export function conceptProbes(c: Concept, phase: 'before' | 'after', rewrite: (p: string) => string = (p) => p): Probe[] {
  const out: Probe[] = [];
  for (const p of c.concept) out.push({ group: 'concept', prompt: rewrite(phase === 'before' ? (p.before ?? p.prompt) : p.prompt), expect: p.expect });
  for (const p of c.prior ?? []) out.push({ group: 'prior', prompt: rewrite(p.prompt), expect: p.expect });
  for (const p of c.unrelated) out.push({ group: 'unrelated', prompt: rewrite(p.prompt), expect: p.expect });
  return out;
}

/** How every probe is sampled (txt2img at size×size; probe i's images use seeds seed + i·samplesPerPrompt + k). */
export interface SamplingSettings {
  sampler: SamplerName;
  steps: number;
  cfgScale: number;
  seed: number;
  samplesPerPrompt: number;
  /** Image side in pixels; default the model's native size (U-Net sample_size × the VAE's downscale). */
  size?: number;
}

export const probeSeed = (s: Pick<SamplingSettings, 'seed' | 'samplesPerPrompt'>, probeIndex: number): number => s.seed + probeIndex * s.samplesPerPrompt;

/** The model's native image side: U-Net sample_size (SD 1.x's 64 when the config has none) × the VAE's downscale factor (32 for tiny-shapes). */
export const nativeSize = (model: SdModel): number => nativeImageSize({ unet: model.unet.config, vae: model.vae.config });

export type Attributes = Pick<Classification, 'shape' | 'colour' | 'background'>;

export interface JudgedImage {
  seed: number;
  classification: Attributes;
  /** Every attribute the probe expects matches (`matches`). */
  success: boolean;
}

export interface ProbeResult extends Probe {
  images: JudgedImage[];
}

/** A probe result with its images' PNGs (for grids); `stripPngs` drops them. */
export interface ProbeResultWithPngs extends Probe {
  images: Array<JudgedImage & { png: Buffer }>;
}

/** Judges one classification against a probe's expectation. */
export function judgeImage(c: Attributes, expect: Partial<Expected>): boolean {
  return matches(c, expect);
}

export interface EvaluateOptions {
  /** Extra networks applied for every probe (embeddings, hypernetworks, LoRAs), exactly as `sdtrain sample` does. */
  extras?: ExtraNetworksRequest;
  signal?: AbortSignal;
  /** `generate`'s warnings (e.g. an embedding file it skipped): an "after" phase that silently lost its extra would look like the base. */
  onWarning?: (message: string) => void;
  onProbe?: (r: ProbeResultWithPngs, index: number, total: number) => void;
}

/**
 * Samples every probe (one batch of samplesPerPrompt images each, through `generate` with the extras in the request)
 * and judges each image with the pixel classifier. Everything `generate` allocates is released before it returns.
 */
export async function evaluateProbes(model: SdModel, probes: readonly Probe[], s: SamplingSettings, o: EvaluateOptions = {}): Promise<ProbeResultWithPngs[]> {
  const size = s.size ?? nativeSize(model);
  const results: ProbeResultWithPngs[] = [];
  for (const [i, p] of probes.entries()) {
    if (o.signal?.aborted) throw o.signal.reason ?? new Error('aborted');
    const images = await generate(
      model,
      {
        prompt: p.prompt,
        sampler: s.sampler,
        steps: s.steps,
        cfgScale: s.cfgScale,
        width: size,
        height: size,
        seed: probeSeed(s, i),
        batchSize: s.samplesPerPrompt,
        ...o.extras,
      },
      { rgb: true, hashes: false, signal: o.signal, onEvent: (e) => (e.type === 'warning' ? o.onWarning?.(e.message) : undefined) },
    );
    const judged = images.map((img) => {
      const c = classifyImage(img.rgb!, img.width, img.height);
      const classification = { shape: c.shape, colour: c.colour, background: c.background };
      return { seed: img.seed, classification, success: judgeImage(classification, p.expect), png: img.png };
    });
    const r = { ...p, images: judged };
    results.push(r);
    o.onProbe?.(r, i, probes.length);
  }
  return results;
}

/** The results without their PNGs (for JSON). */
export function stripPngs(results: readonly ProbeResult[]): ProbeResult[] {
  return results.map((r) => ({ ...r, images: r.images.map(({ seed, classification, success }) => ({ seed, classification, success })) }));
}

export interface Score {
  successes: number;
  images: number;
}

/** Successful images over all images of the results. */
export function score(results: ReadonlyArray<{ images: ReadonlyArray<{ success: boolean }> }>): Score {
  const all = results.flatMap((r) => r.images);
  return { successes: all.filter((x) => x.success).length, images: all.length };
}

export const rate = (s: Score): number => (s.images === 0 ? Number.NaN : s.successes / s.images);

/** One model (+ extras) judged on a concept's probes. */
export interface PhaseResult {
  /** What was sampled: the model path, and the extra network if any. */
  model: string;
  extra?: string;
  /** Score per probe group present (prior only for DreamBooth). */
  scores: Partial<Record<ProbeGroup, Score>>;
  /** Seconds spent sampling and judging. */
  seconds: number;
  /** What `generate` warned about (an embedding skipped, a LoRA module the model lacks, ...), once each. */
  warnings?: string[];
  probes: ProbeResult[];
}

export function phaseResult(
  results: readonly ProbeResult[],
  meta: { model: string; extra?: string; seconds: number; warnings?: readonly string[] },
): PhaseResult {
  const scores: Partial<Record<ProbeGroup, Score>> = {};
  for (const g of PROBE_GROUPS) {
    const rs = results.filter((r) => r.group === g);
    if (rs.length) scores[g] = score(rs);
  }
  const probes = stripPngs(results);
  const warnings = [...new Set(meta.warnings ?? [])];
  return { model: meta.model, ...(meta.extra !== undefined ? { extra: meta.extra } : {}), scores, seconds: meta.seconds, ...(warnings.length ? { warnings } : {}), probes };
}

/** One training run of the built CLI. */
export interface TrainingRun {
  /** The CLI arguments after `node dist/src/cli/main.js`. */
  args: string[];
  exitCode: number;
  /** Wall seconds of the child process (start-up, data, training, checkpoints, previews, export). */
  seconds: number;
  steps?: number;
  lossFirst?: number;
  lossLast?: number;
  /** The final files the run wrote. */
  files: string[];
  /** The file or folder the "after" samples use. */
  artefact?: string;
  /** The command's error line(s) when it failed. */
  error?: string;
}

/** The training command's stdout summary (`renderSummary`): steps, first and recent loss, the files it wrote. */
export function parseTrainingOutput(stdout: string): Pick<TrainingRun, 'steps' | 'lossFirst' | 'lossLast' | 'files'> {
  const out: Pick<TrainingRun, 'steps' | 'lossFirst' | 'lossLast' | 'files'> = { files: [] };
  for (const line of stdout.split(/\r?\n/)) {
    const done = /^(?:done|stopped): (\d+) steps in [\d.]+ s, loss (\S+) → (\S+)/.exec(line);
    if (done) {
      out.steps = Number(done[1]);
      const [a, b] = [Number(done[2]), Number(done[3])];
      if (Number.isFinite(a)) out.lossFirst = a;
      if (Number.isFinite(b)) out.lossLast = b;
    }
    const wrote = /^wrote (.+)$/.exec(line);
    if (wrote) out.files.push(wrote[1]!.trim());
  }
  return out;
}

/**
 * The artefact "after" samples with: the embedding (`.safetensors`), the hypernetwork (A1111 `.pt`), the LoRA
 * (`.safetensors`), the DreamBooth diffusers folder (the written path without an extension).
 */
export function pickArtefact(method: MethodName, files: readonly string[]): string | undefined {
  const ext = (f: string) => /\.[a-z0-9]+$/i.exec(f.split(/[\\/]/).pop()!)?.[0]?.toLowerCase();
  switch (method) {
    case 'embed':
    case 'lora':
      return files.find((f) => ext(f) === '.safetensors');
    case 'hypernetwork':
      return files.find((f) => ext(f) === '.pt') ?? files.find((f) => ext(f) === '.safetensors');
    case 'dreambooth':
      return files.find((f) => ext(f) === undefined);
  }
}

/** What the trained artefact's "after" phase samples with. */
export function afterRequest(method: MethodName, artefact: string, baseModel: string): { model: string; extras: ExtraNetworksRequest } {
  switch (method) {
    case 'embed':
      return { model: baseModel, extras: { embeddings: [artefact] } };
    case 'hypernetwork':
      return { model: baseModel, extras: { hypernetworks: [{ path: artefact, strength: 1 }] } };
    case 'lora':
      return { model: baseModel, extras: { loras: [{ path: artefact, weight: 1 }] } };
    case 'dreambooth':
      return { model: artefact, extras: {} };
  }
}

/** Prompt rewrite of the "after" phase: an embedding is prompted by its file name (A1111), not its placeholder. */
export function afterRewrite(method: MethodName, placeholder: string | undefined, artefact: string): (p: string) => string {
  if (method !== 'embed' || !placeholder) return (p) => p;
  const keyword = artefact.split(/[\\/]/).pop()!.replace(/\.[^.]+$/, '');
  return (p) => p.split(placeholder).join(keyword);
}

/** A trained artefact and how it did. */
export interface TrainedResult {
  training?: TrainingRun;
  after?: PhaseResult;
  /** Why there is no "after" (training or sampling failed). */
  error?: string;
}

export interface MethodResult {
  method: MethodName;
  /** Concept name and summary (concepts.ts). */
  concept: string;
  summary: string;
  config: string;
  /** The base model on the probes. */
  before?: PhaseResult;
  /** The artefact trained with the config (DreamBooth: with prior preservation) on the same probes and seeds. */
  after?: PhaseResult;
  training?: TrainingRun;
  /** DreamBooth only: the same config trained without prior preservation. */
  withoutPrior?: TrainedResult;
  /** What went wrong before `after` existed (config, base sampling, training, sampling the artefact). */
  error?: string;
}

/** The trained variants of a result with their labels: base column excluded. */
export function trainedVariants(r: MethodResult): Array<{ label: string } & Partial<TrainedResult>> {
  const trained = { label: r.method === 'dreambooth' ? 'with prior loss' : 'trained', training: r.training, after: r.after };
  if (r.method !== 'dreambooth') return [trained];
  return [trained, { label: 'without prior loss', ...r.withoutPrior }];
}

/** Whether every part of the result exists and nothing failed. */
export function methodSucceeded(r: MethodResult): boolean {
  return !r.error && !!r.before && !!r.after && (r.method !== 'dreambooth' || (!!r.withoutPrior?.after && !r.withoutPrior.error));
}

export interface LearningReport {
  /** ISO date of the run. */
  date: string;
  /** Cores, CPU, OS, Node, backend. */
  machine: string;
  /** The command line that produced it. */
  command: string;
  model: string;
  quick: boolean;
  /** Training steps override (--steps / --quick), if any. */
  steps?: number;
  /** `size` is missing when no model could be loaded. */
  sampling: SamplingSettings;
  methods: MethodResult[];
  seconds: number;
}

// ---- formatting (pure) ----

export function formatScore(s: Score | undefined): string {
  if (!s) return '-';
  if (s.images === 0) return '0/0';
  return `${s.successes}/${s.images} (${Math.round(100 * rate(s))}%)`;
}

const pct = (s: Score | undefined): string => (s && s.images ? `${Math.round(100 * rate(s))}%` : '-');

export function formatSeconds(s: number): string {
  return s >= 600 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(s < 10 ? 1 : 0)} s`;
}

export function formatTraining(t: TrainingRun | undefined): string {
  if (!t) return '-';
  if (t.exitCode !== 0) return `failed (exit ${t.exitCode}) after ${formatSeconds(t.seconds)}`;
  const loss = t.lossFirst !== undefined && t.lossLast !== undefined ? `, loss ${t.lossFirst.toFixed(4)} → ${t.lossLast.toFixed(4)}` : '';
  return `${t.steps ?? '?'} steps, ${formatSeconds(t.seconds)}${loss}`;
}

export function formatSampling(s: SamplingSettings): string {
  const n = s.samplesPerPrompt;
  const size = s.size !== undefined ? `${s.size}×${s.size}` : "the model's native size";
  return `${s.sampler}, ${s.steps} steps, CFG ${s.cfgScale}, ${n} image${n === 1 ? '' : 's'} per prompt from seed ${s.seed} on, ${size}`;
}

/** Aligned columns: the first column left-aligned, the others too (cells are text). */
export function alignedTable(head: readonly string[], body: ReadonlyArray<readonly string[]>): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('   ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('   '), ...body.map(line)].join('\n');
}

const GROUP_LABEL: Record<ProbeGroup, string> = { concept: 'concept success', prior: 'class prior kept', unrelated: 'unrelated fidelity' };

function probeCount(r: MethodResult, g: ProbeGroup): number {
  const p = r.before ?? r.after ?? r.withoutPrior?.after;
  return p ? p.probes.filter((x) => x.group === g).length : 0;
}

/** One method's table: rows concept / class prior / unrelated (base → trained columns), training, and errors. */
export function formatMethodTable(r: MethodResult): string {
  const vs = trainedVariants(r);
  const groups = PROBE_GROUPS.filter((g) => r.before?.scores[g] ?? vs.some((v) => v.after?.scores[g]));
  const body = groups.map((g) => [`${GROUP_LABEL[g]} (${probeCount(r, g)} prompt${probeCount(r, g) === 1 ? '' : 's'})`, formatScore(r.before?.scores[g]), ...vs.map((v) => formatScore(v.after?.scores[g]))]);
  body.push(['training', '', ...vs.map((v) => formatTraining(v.training))]);
  const lines = [`${r.method}: ${r.concept}: ${r.summary}`, alignedTable(['', 'base', ...vs.map((v) => v.label)], body)];
  if (r.error) lines.push(`  error: ${r.error}`);
  if (r.withoutPrior?.error) lines.push(`  without prior loss: ${r.withoutPrior.error}`);
  const warnings = new Set([r.before, ...vs.map((v) => v.after)].flatMap((p) => p?.warnings ?? []));
  for (const w of warnings) lines.push(`  warning: ${w}`);
  return lines.join('\n');
}

/** The one-line summary: concept success base → trained per method (DreamBooth also the prior kept), total time. */
export function formatSummary(rep: Pick<LearningReport, 'methods' | 'seconds'>): string {
  const parts = rep.methods.map((r) => {
    const c = `${r.method} ${pct(r.before?.scores.concept)} → ${pct(r.after?.scores.concept)}`;
    if (r.method !== 'dreambooth') return c;
    return (
      `${c} (${pct(r.withoutPrior?.after?.scores.concept)} without prior loss; class prior ${pct(r.before?.scores.prior)} base, ` +
      `${pct(r.after?.scores.prior)} with prior loss, ${pct(r.withoutPrior?.after?.scores.prior)} without)`
    );
  });
  const failed = rep.methods.filter((r) => !methodSucceeded(r)).map((r) => r.method);
  const trainSeconds = rep.methods.reduce((a, r) => a + (r.training?.seconds ?? 0) + (r.withoutPrior?.training?.seconds ?? 0), 0);
  return (
    `summary: concept success base → trained: ${parts.join('; ')}. Training ${formatSeconds(trainSeconds)}, ` +
    `all ${formatSeconds(rep.seconds)}${failed.length ? `. FAILED: ${failed.join(', ')}` : ''}`
  );
}

/** What follows the method tables: the sampling settings and model, and the summary line. */
export function formatFooter(rep: LearningReport): string {
  return [
    `sampling: ${formatSampling(rep.sampling)}, the same seeds before and after; model ${rep.model}` +
      `${rep.steps !== undefined ? `; ${rep.steps} training steps` : ''}${rep.quick ? ' (--quick: checks the pipeline, not the learning)' : ''}`,
    formatSummary(rep),
  ].join('\n\n');
}

/** The whole report: one table per method, then the footer. */
export function formatReport(rep: LearningReport): string {
  return [...rep.methods.map((r) => formatMethodTable(r)), formatFooter(rep)].join('\n\n');
}

const md = (s: string): string => s.replace(/\|/g, '\\|');

/** The results block of docs/learning.md: a Markdown table of every method, the settings, date, machine, command. */
export function formatMarkdown(rep: LearningReport): string {
  const head = '| method | concept | concept success, base → trained | unrelated fidelity, base → trained | class prior kept: base / with / without prior loss | training |';
  const rows = rep.methods.map((r) => {
    const after = r.after?.scores;
    const noPrior = r.withoutPrior?.after?.scores;
    const db = r.method === 'dreambooth';
    const concept = `${formatScore(r.before?.scores.concept)} → ${formatScore(after?.concept)}${db ? ` (without prior loss: ${formatScore(noPrior?.concept)})` : ''}`;
    const unrelated = `${formatScore(r.before?.scores.unrelated)} → ${formatScore(after?.unrelated)}${db ? ` (without: ${formatScore(noPrior?.unrelated)})` : ''}`;
    const prior = db ? `${formatScore(r.before?.scores.prior)} / ${formatScore(after?.prior)} / ${formatScore(noPrior?.prior)}` : '';
    const training = db ? `${formatTraining(r.training)}; without prior loss: ${formatTraining(r.withoutPrior?.training)}` : formatTraining(r.training);
    return `| ${r.method} | \`${md(r.concept)}\` | ${concept} | ${unrelated} | ${prior} | ${md(training)} |`;
  });
  const errors = rep.methods.flatMap((r) => [r.error, r.withoutPrior?.error].filter((e): e is string => !!e).map((e) => `- ${r.method}: ${e}`));
  return [
    `Run ${rep.date.slice(0, 10)} on ${rep.machine}${rep.quick ? ' (**--quick**: a pipeline check, not a measure of learning)' : ''}:`,
    '',
    '```sh',
    rep.command,
    '```',
    '',
    head,
    '|---|---|---|---|---|---|',
    ...rows,
    '',
    `Model \`${rep.model}\`${rep.steps !== undefined ? `, ${rep.steps} training steps (override)` : ', training steps as configured'}. ` +
      `Sampling: ${formatSampling(rep.sampling)}; the same seeds before and after. Whole benchmark: ${formatSeconds(rep.seconds)}.`,
    ...(errors.length ? ['', 'Errors:', '', ...errors] : []),
  ].join('\n');
}

export const RESULTS_START = '<!-- learning-results:start -->';
export const RESULTS_END = '<!-- learning-results:end -->';

/** `doc` with the text between the results markers replaced by `block` (the markers stay). */
export function replaceResultsBlock(doc: string, block: string): string {
  const a = doc.indexOf(RESULTS_START);
  const b = doc.indexOf(RESULTS_END);
  if (a < 0 || b < 0 || b < a) throw new Error(`the document has no ${RESULTS_START} … ${RESULTS_END} block`);
  return `${doc.slice(0, a + RESULTS_START.length)}\n${block.trim()}\n${doc.slice(b)}`;
}
