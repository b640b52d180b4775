// `npm run bench:learning`: does each training method teach the tiny-shapes model its concept (src/shapes/concepts.ts)?
// Per method: sample the probe prompts on the base model and judge every image with the pixel classifier (before),
// train configs/shapes-<method>.yaml with the real built CLI in a child process (timed), sample the same prompts and
// seeds with the trained artefact (after), print a table. DreamBooth trains twice: with and without prior preservation.
// docs/learning.md explains the concepts and the numbers; the library part is src/shapes/learning.ts.
//
//   npm run bench:learning -- [--methods embed,lora] [--samples N] [--steps N] [--quick] [--model DIR] [--work DIR]
//                             [--json FILE] [--write-docs] [--config-dir DIR] [--sampler S] [--sample-steps N]
//                             [--cfg X] [--seed N] [--backend wasm|cpu|...] [--verbose]
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { arch, cpus, platform } from 'node:os';
import { basename, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { parseBackendRequest, useBackend } from '../src/backend/backend.js';
import { loadCommandConfig, SAMPLERS } from '../src/config/schema.js';
import type { ExtraNetworksRequest } from '../src/pipelines/extras.js';
import { loadModel, type SdModel } from '../src/pipelines/model.js';
import { packagePath } from '../src/paths.js';
import type { SamplerName } from '../src/samplers/index.js';
import { CONCEPTS, METHODS, type MethodName } from '../src/shapes/concepts.js';
import { pixelGrid } from '../src/shapes/fidelity.js';
import {
  afterRequest,
  afterRewrite,
  conceptProbes,
  evaluateProbes,
  formatMarkdown,
  formatMethodTable,
  formatFooter,
  methodSucceeded,
  nativeSize,
  parseTrainingOutput,
  phaseResult,
  pickArtefact,
  replaceResultsBlock,
  type LearningReport,
  type MethodResult,
  type PhaseResult,
  type Probe,
  type ProbeResultWithPngs,
  type SamplingSettings,
  type TrainedResult,
  type TrainingRun,
} from '../src/shapes/learning.js';

const USAGE = `usage: npm run bench:learning -- [options]

  --methods a,b        methods to run (default all: ${METHODS.join(',')})
  --quick              pipeline check: 4 training steps, 2 samples per prompt, 5 sampling steps, no checkpoints/previews
  --samples N          images per probe prompt (default 8; --quick 2)
  --steps N            training steps (training.max_train_steps; default: the config's; --quick 4)
  --model DIR          base model instead of the configs' (passed to training as --set model=DIR)
  --work DIR           run folders, class images, grids (default runs/bench-learning)
  --json FILE          write every number (per-prompt classifications too) as JSON
  --write-docs         rewrite the results block of docs/learning.md
  --config-dir DIR     read shapes-<method>.yaml from DIR instead of configs/
  --sampler S          sampler of the probes (default ddim; one of ${SAMPLERS.join(', ')})
  --sample-steps N     sampling steps (default 25; --quick 5)
  --cfg X              classifier-free guidance scale (default 4)
  --seed N             seed of the first probe image (default 1000)
  --backend B          tensor backend here and for training (default: SDTRAIN_BACKEND, else wasm)
  --verbose            show the training commands' output
`;

interface Args {
  methods: MethodName[];
  quick: boolean;
  samples?: number;
  steps?: number;
  model?: string;
  work: string;
  json?: string;
  writeDocs: boolean;
  configDir?: string;
  sampler: SamplerName;
  sampleSteps?: number;
  cfg: number;
  seed: number;
  backend?: string;
  verbose: boolean;
}

class UsageError extends Error {}

function parseArgs(argv: string[]): Args {
  const out: Args = { methods: [...METHODS], quick: false, work: packagePath('runs', 'bench-learning'), writeDocs: false, sampler: 'ddim', cfg: 4, seed: 1000, verbose: false };
  const int = (v: string, flag: string, min: number): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} needs a whole number >= ${min}, got '${v}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const [flag, inline] = a.startsWith('--') && eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    if (flag === '--methods') {
      const names = value().split(',').map((s) => s.trim()).filter(Boolean);
      for (const m of names) if (!(METHODS as string[]).includes(m)) throw new UsageError(`--methods: unknown method '${m}' (one of ${METHODS.join(', ')})`);
      if (names.length === 0) throw new UsageError('--methods names no method');
      out.methods = METHODS.filter((m) => names.includes(m)); // the spec's order
    } else if (flag === '--quick') out.quick = true;
    else if (flag === '--samples') out.samples = int(value(), flag, 1);
    else if (flag === '--steps') out.steps = int(value(), flag, 1);
    else if (flag === '--model') out.model = resolve(value());
    else if (flag === '--work') out.work = resolve(value());
    else if (flag === '--json') out.json = resolve(value());
    else if (flag === '--write-docs') out.writeDocs = true;
    else if (flag === '--config-dir') out.configDir = resolve(value());
    else if (flag === '--sampler') {
      const s = value();
      if (!(SAMPLERS as readonly string[]).includes(s)) throw new UsageError(`--sampler: unknown sampler '${s}' (one of ${SAMPLERS.join(', ')})`);
      out.sampler = s as SamplerName;
    } else if (flag === '--sample-steps') out.sampleSteps = int(value(), flag, 1);
    else if (flag === '--cfg') {
      const v = value();
      out.cfg = Number(v);
      if (!Number.isFinite(out.cfg) || v.trim() === '') throw new UsageError(`--cfg needs a number, got '${v}'`);
    } else if (flag === '--seed') out.seed = int(value(), flag, 0);
    else if (flag === '--backend') out.backend = value();
    else if (flag === '--verbose') out.verbose = true;
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else throw new UsageError(`unknown argument '${a}'`);
  }
  return out;
}

const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

const CLI = packagePath('dist', 'src', 'cli', 'main.js');

/** Runs the built CLI; resolves with its exit code, output and wall time. */
function runCli(args: string[], verbose: boolean): Promise<{ code: number; stdout: string; stderr: string; seconds: number }> {
  return new Promise((done, fail) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (verbose) process.stderr.write(d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (verbose) process.stderr.write(d);
    });
    child.on('error', fail);
    child.on('close', (code, signal) => done({ code: code ?? (signal ? 128 : -1), stdout, stderr, seconds: (performance.now() - t0) / 1000 }));
  });
}

/** The CLI's error line(s), else the last lines of its stderr. */
function errorOf(stderr: string): string {
  const lines = stderr.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  const errors = lines.filter((l) => /error/i.test(l));
  return (errors.length ? errors : lines.slice(-3)).join(' | ') || 'no output';
}

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

interface Plan {
  args: Args;
  sampling: SamplingSettings;
  /** Training steps override. */
  steps?: number;
}

/** Models loaded once per path (the base model serves every method's "before" and the extra networks' "after"). */
class Models {
  private readonly loaded = new Map<string, Promise<SdModel>>();
  get(path: string): Promise<SdModel> {
    let m = this.loaded.get(path);
    if (!m) this.loaded.set(path, (m = loadModel(path)));
    return m;
  }
  async dispose(path?: string): Promise<void> {
    for (const [p, m] of this.loaded) {
      if (path !== undefined && p !== path) continue;
      (await m.catch(() => undefined))?.dispose();
      this.loaded.delete(p);
    }
  }
}

async function writeGrid(plan: Plan, results: readonly ProbeResultWithPngs[], file: string): Promise<void> {
  const pngs = results.flatMap((r) => r.images.map((i) => i.png));
  if (pngs.length === 0) return;
  await mkdir(join(plan.args.work, 'grids'), { recursive: true });
  await writeFile(join(plan.args.work, 'grids', file), await pixelGrid(pngs, plan.sampling.samplesPerPrompt));
}

async function samplePhase(
  plan: Plan,
  models: Models,
  label: string,
  modelPath: string,
  probes: Probe[],
  extras: ExtraNetworksRequest,
  extra: string | undefined,
  grid: string,
): Promise<PhaseResult> {
  const model = await models.get(modelPath);
  const t0 = performance.now();
  const warnings: string[] = [];
  const results = await evaluateProbes(model, probes, { ...plan.sampling, size: plan.sampling.size ?? nativeSize(model) }, {
    extras,
    onWarning: (m) => warnings.push(m),
    onProbe: (_r, i, n) => {
      if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K  ${label}: prompt ${i + 1}/${n}`);
    },
  });
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  await writeGrid(plan, results, grid);
  return phaseResult(results, { model: modelPath, extra, seconds: (performance.now() - t0) / 1000, warnings });
}

/** Trains one variant with the CLI and samples its artefact. */
async function trainAndSample(
  plan: Plan,
  models: Models,
  method: MethodName,
  config: string,
  baseModel: string,
  runName: string,
  set: string[],
  placeholder: string | undefined,
): Promise<TrainedResult> {
  const { args } = plan;
  const runDir = join(args.work, runName);
  await rm(runDir, { recursive: true, force: true });
  const sets = [`output_dir=${args.work}`, `run_name=${runName}`, ...set];
  const cliArgs = [method, '--config', config, ...sets.flatMap((s) => ['--set', s]), ...(args.backend ? ['--backend', args.backend] : [])];
  log(`${method}: training ${runName}: node ${CLI} ${cliArgs.join(' ')}`);
  const r = await runCli(cliArgs, args.verbose);
  const parsed = parseTrainingOutput(r.stdout);
  const training: TrainingRun = { args: cliArgs, exitCode: r.code, seconds: r.seconds, ...parsed, artefact: pickArtefact(method, parsed.files) };
  if (r.code !== 0) {
    log(`${method}: training ${runName} failed (exit ${r.code}): ${errorOf(r.stderr)}`);
    return { training: { ...training, error: errorOf(r.stderr) }, error: `training failed (exit ${r.code}): ${errorOf(r.stderr)}` };
  }
  if (!training.artefact) return { training, error: `training wrote no ${method} artefact (files: ${parsed.files.join(', ') || 'none'})` };
  log(`${method}: trained in ${r.seconds.toFixed(1)} s → ${training.artefact}`);
  try {
    const after = afterRequest(method, training.artefact, baseModel);
    const probes = conceptProbes(CONCEPTS[method], 'after', afterRewrite(method, placeholder, training.artefact));
    const phase = await samplePhase(plan, models, `${runName} after`, after.model, probes, after.extras, method === 'dreambooth' ? undefined : training.artefact, `${runName}-after.png`);
    if (method === 'dreambooth') await models.dispose(after.model);
    return { training, after: phase };
  } catch (e) {
    if (method === 'dreambooth') await models.dispose(training.artefact);
    return { training, error: `sampling the trained ${method} failed: ${messageOf(e)}` };
  }
}

async function runMethod(plan: Plan, models: Models, method: MethodName): Promise<MethodResult> {
  const { args } = plan;
  const concept = CONCEPTS[method];
  const config = args.configDir ? join(args.configDir, basename(concept.config)) : packagePath(concept.config);
  const result: MethodResult = { method, concept: concept.name, summary: concept.summary, config };

  // Every --set the runs share; validated here first (with the library's config loader), so a bad config is one clear
  // error before anything trains.
  const set: string[] = [];
  if (args.model) set.push(`model=${args.model}`);
  if (plan.steps !== undefined) set.push(`training.max_train_steps=${plan.steps}`);
  if (args.quick) set.push('training.save_every_n_steps=0', 'training.preview.every_n_steps=0');
  if (method === 'dreambooth') {
    set.push('dreambooth.export.diffusers=true');
    if (args.quick) set.push('dreambooth.num_class_images=4');
    // Class images drawn by another base model must not mix with the configured folder's.
    if (args.model) {
      const tag = `${basename(args.model).replace(/[^\w.-]/g, '_')}-${createHash('sha256').update(args.model).digest('hex').slice(0, 8)}`;
      set.push(`dreambooth.class_data_dir=${join(args.work, 'class-images', tag)}`);
    }
  }
  let baseModel: string;
  let placeholder: string | undefined;
  try {
    const { config: cfg } = await loadCommandConfig(method, config, { set: [...set, `output_dir=${args.work}`] });
    baseModel = cfg.model;
    if (cfg.method === 'embed') placeholder = cfg.embed.placeholder_token;
  } catch (e) {
    return { ...result, error: `config ${config}: ${messageOf(e)}` };
  }
  // The probes must prompt with the token the config trains, or "after" would never use the embedding.
  const untokened = placeholder === undefined ? [] : concept.concept.filter((p) => !p.prompt.includes(placeholder));
  if (untokened.length) return { ...result, error: `the config trains ${placeholder}, but the probe prompt '${untokened[0]!.prompt}' does not contain it` };

  try {
    log(`${method}: sampling the base model (${baseModel})`);
    result.before = await samplePhase(plan, models, `${method} before`, baseModel, conceptProbes(concept, 'before'), {}, undefined, `${method}-before.png`);
  } catch (e) {
    return { ...result, error: `sampling the base model failed: ${messageOf(e)}` };
  }
  const trained = await trainAndSample(plan, models, method, config, baseModel, method, method === 'dreambooth' ? [...set, 'dreambooth.with_prior_preservation=true'] : set, placeholder);
  Object.assign(result, { training: trained.training, after: trained.after }, trained.error ? { error: trained.error } : {});
  if (method === 'dreambooth') {
    result.withoutPrior = await trainAndSample(plan, models, method, config, baseModel, 'dreambooth-no-prior', [...set, 'dreambooth.with_prior_preservation=false'], placeholder);
  }
  return result;
}

function machineNote(backend: string): string {
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'} (${platform()} ${arch()}), Node ${process.version}, backend ${backend}`;
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`bench:learning: ${e.message}\n\n${USAGE}`);
    return 2;
  }
  const t0 = performance.now();
  const request = parseBackendRequest(args.backend ?? process.env['SDTRAIN_BACKEND'] ?? 'wasm', args.backend ? '--backend' : 'SDTRAIN_BACKEND');
  const choice = await useBackend(request);
  args.backend ??= choice.backend; // training runs on the same backend
  const plan: Plan = {
    args,
    steps: args.steps ?? (args.quick ? 4 : undefined),
    sampling: {
      sampler: args.sampler,
      steps: args.sampleSteps ?? (args.quick ? 5 : 25),
      cfgScale: args.cfg,
      seed: args.seed,
      samplesPerPrompt: args.samples ?? (args.quick ? 2 : 8),
    },
  };
  await mkdir(args.work, { recursive: true });
  log(`bench:learning: ${args.methods.join(', ')}${args.quick ? ' (--quick)' : ''}; backend ${choice.backend}; work folder ${args.work}`);

  const models = new Models();
  const methods: MethodResult[] = [];
  let size: number | undefined;
  try {
    for (const method of args.methods) {
      const r = await runMethod(plan, models, method);
      methods.push(r);
      if (size === undefined && r.before) size = nativeSize(await models.get(r.before.model));
      process.stdout.write(`${formatMethodTable(r)}\n\n`);
    }
  } finally {
    await models.dispose();
  }

  const report: LearningReport = {
    date: new Date().toISOString(),
    machine: machineNote(choice.backend),
    command: ['npm run bench:learning', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' '),
    model: args.model ?? methods.find((m) => m.before)?.before?.model ?? packagePath('checkpoints', 'tiny-shapes'),
    quick: args.quick,
    ...(plan.steps !== undefined ? { steps: plan.steps } : {}),
    sampling: { ...plan.sampling, ...(size !== undefined ? { size } : {}) },
    methods,
    seconds: (performance.now() - t0) / 1000,
  };
  // The tables were printed as each method finished (formatReport would give them again).
  process.stdout.write(`${formatFooter(report)}\n`);
  if (args.json) {
    await writeFile(args.json, `${JSON.stringify(report, null, 2)}\n`);
    log(`wrote ${args.json}`);
  }
  if (args.writeDocs) {
    const doc = packagePath('docs', 'learning.md');
    const shown = { ...report, model: report.model.startsWith(packagePath()) ? report.model.slice(packagePath().length + 1) : report.model };
    await writeFile(doc, replaceResultsBlock(await readFile(doc, 'utf8'), formatMarkdown(shown)));
    log(`rewrote the results in ${doc}`);
  }
  log(`grids of the samples: ${join(args.work, 'grids')}; tensors left: ${tf.memory().numTensors}`);
  return methods.every(methodSucceeded) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench:learning failed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
