// `sdtrain merge`: bake LoRAs into a checkpoint, W ← W + Σ weight·(alpha/r)·up·down (the same merge `sdtrain sample
// --lora` does for one run, lora/apply.ts), written as an original-layout single .safetensors or a diffusers folder.
// The LoRA files are read and shape-checked against the base model's configs before its weights are loaded. Output is
// atomic: a single file is renamed into place, a folder is assembled under a temporary name and renamed.
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { weightBytes } from '../../backend/memory.js';
import { writeDiffusersFolder } from '../../checkpoints/diffusers_folder.js';
import { buildPipeline, type PipelineConfigs } from '../../checkpoints/pipeline.js';
import { writeSingleFile } from '../../checkpoints/single_file.js';
import { splitStrength } from '../../config/schema.js';
import { SdtrainError } from '../../errors.js';
import { applyLoras } from '../../lora/apply.js';
import { loraTargets } from '../../lora/names.js';
import { readLora, type LoraFile } from '../../lora/read.js';
import { addnetHash } from '../../lora/write.js';
import { SD_SCHEDULER } from '../../models/presets.js';
import { packageVersion } from '../../paths.js';
import { loadModel, readModelConfigs, sha256File } from '../../pipelines/model.js';
import { chooseBackend } from '../backend_choice.js';
import { UsageError } from '../usage.js';

interface Args {
  model: string;
  lora: string[];
  out: string;
  dtype?: string;
  overwrite?: boolean;
  backend?: string;
}

/** What the merged model records about its making (safetensors metadata / sdtrain_merge.json). */
interface MergeRecord {
  base: string;
  loras: Array<{ file: string; weight: number; hash: string; modules: number }>;
  dtype: 'F32' | 'F16';
}

const isDir = (p: string): boolean => existsSync(p) && statSync(p).isDirectory();

export const merge: CommandModule<object, Args> = {
  command: 'merge',
  describe: 'Merge LoRAs into a checkpoint: write a single .safetensors or a diffusers folder',
  builder: (y) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'the base model: a diffusers folder or a .safetensors/.ckpt checkpoint' })
      .option('lora', { type: 'string', array: true, demandOption: true, describe: 'FILE[:weight] (repeatable; kohya, PEFT or legacy diffusers layout; default weight 1)' })
      .option('out', { type: 'string', demandOption: true, describe: 'OUT.safetensors (original single-file layout) or a folder (diffusers layout)' })
      .option('dtype', { choices: ['f32', 'f16'], default: 'f32', describe: 'stored precision of the merged weights' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace --out if it exists' })
      .example('$0 merge --model sd15.safetensors --lora cat.safetensors:0.8 --out sd15-cat.safetensors', '')
      .example('$0 merge --model models/sd15 --lora a.safetensors --lora b.safetensors:0.5 --out models/sd15-ab', ''),
  handler: async (argv) => {
    const base = resolve(argv.model);
    const out = resolve(argv.out);
    const single = extname(out).toLowerCase() === '.safetensors';
    if (!single && extname(out) !== '' && !isDir(out)) {
      throw new UsageError(`--out ${argv.out}: write a .safetensors file (single-file checkpoint) or a folder name (diffusers layout)`);
    }
    if (out === base) throw new UsageError('--out must differ from --model (the base model is never overwritten)');
    if (existsSync(out) && !argv.overwrite) throw new UsageError(`--out ${argv.out} exists; pass --overwrite to replace it`);
    if (existsSync(out) && single === isDir(out)) throw new UsageError(`--out ${argv.out} exists and is a ${single ? 'folder' : 'file'}`);
    const requests = argv.lora.map((s) => splitStrength(s));
    for (const r of requests) {
      if (!Number.isFinite(r.strength)) throw new UsageError(`--lora ${r.path}: the weight must be a number`);
      if (!existsSync(r.path)) throw new SdtrainError(`--lora ${r.path}: no such file`);
    }
    const dtype = argv.dtype === 'f16' ? 'F16' : 'F32';

    // Read and check every LoRA against the model's shapes before loading its weights.
    const configs = await readModelConfigs(base);
    const targets = loraTargets(buildPipeline(configs));
    const files: LoraFile[] = [];
    for (const r of requests) files.push(await readLora(r.path, targets));
    const touched = new Set(files.flatMap((f) => f.modules.map((m) => m.name)));
    const mergedBytes = [...touched].reduce((n, name) => n + (targets.get(name)?.weight.size ?? 0) * 4, 0);
    await chooseBackend(argv.backend, undefined, weightBytes(configs) + mergedBytes);

    const model = await loadModel(base);
    try {
      for (const a of model.assumed) process.stderr.write(`assumed: ${a}\n`);
      const applied = applyLoras(model, files.map((file, i) => ({ file, weight: requests[i]!.strength })));
      for (const s of applied.skipped) process.stderr.write(`warning: LoRA module not in this model, skipped: ${s}\n`);
      const record: MergeRecord = {
        base: basename(base),
        loras: await Promise.all(
          files.map(async (f, i) => ({
            file: basename(f.path),
            weight: requests[i]!.strength,
            hash: (extname(f.path).toLowerCase() === '.safetensors' ? await addnetHash(f.path) : await sha256File(f.path)).slice(0, 12),
            modules: f.modules.length,
          })),
        ),
        dtype,
      };
      const pipeline = { unet: model.unet, vae: model.vae, textEncoder: model.textEncoder, configs: configsOf(model) };
      if (single) {
        await mkdir(dirname(out), { recursive: true });
        await writeSingleFile(out, pipeline, {
          dtype,
          metadata: {
            'sdtrain.version': packageVersion(),
            'sdtrain.merged_base': record.base,
            'sdtrain.merged_loras': JSON.stringify(record.loras),
          },
        });
      } else {
        await writeFolderAtomically(out, async (dir) => {
          const schedulerFile = join(base, 'scheduler', 'scheduler_config.json');
          const scheduler = isDir(base) && existsSync(schedulerFile) ? (JSON.parse(await readFile(schedulerFile, 'utf8')) as Record<string, unknown>) : { ...SD_SCHEDULER, prediction_type: model.predictionType };
          delete scheduler._diffusers_version;
          const tokenizerDir = join(base, 'tokenizer');
          await writeDiffusersFolder(dir, pipeline, { fp16: dtype === 'F16', schedulerConfig: scheduler, ...(isDir(tokenizerDir) ? { tokenizerDir } : {}) });
          await writeFile(join(dir, 'sdtrain_merge.json'), `${JSON.stringify({ sdtrain_version: packageVersion(), ...record }, null, 2)}\n`);
        });
      }
      process.stderr.write(`merged ${files.length} LoRA file(s) into ${applied.mergedWeights} weights\n`);
      process.stdout.write(`wrote ${out}\n`);
    } finally {
      model.dispose();
    }
  },
};

/** The component configs of a loaded model (what the writers name and lay out tensors by). */
function configsOf(m: { unet: { config: PipelineConfigs['unet'] }; vae: { config: PipelineConfigs['vae'] }; textEncoder: { config: PipelineConfigs['text_encoder'] } }): PipelineConfigs {
  return { unet: m.unet.config, vae: m.vae.config, text_encoder: m.textEncoder.config };
}

/** Builds a folder under a temporary sibling name and renames it into place (replacing an old one last). */
async function writeFolderAtomically(target: string, build: (dir: string) => Promise<void>): Promise<void> {
  const tmp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  try {
    await build(tmp);
    if (existsSync(target)) {
      const old = `${tmp}.old`;
      await rename(target, old);
      await rename(tmp, target);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, target);
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}
