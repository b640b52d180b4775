// Reading LoRA files (kohya incl. LoCon, diffusers PEFT, diffusers' 2023 attention-processor layout) into one shape:
// per module the file's down [r, in(, kh, kw)] and up [out, r(, 1, 1)] as float32, its alpha and rank, resolved
// against our models' modules. Names the model lacks are skipped and listed (as A1111 warns and skips); a LoRA whose
// shapes do not fit the model is an error naming every misfit.
import { FormatError, SdtrainError } from '../errors.js';
import { numel, type DType } from '../formats/dtype.js';
import { openTensorFile } from '../formats/tensor_file.js';
import { alphaKeyId, parseLoraKey, peftAlpha, peftConfigs, type LoraLayout, type ParsedKey } from './keys.js';
import { loraTargets, type LoraComponent, type LoraKind, type LoraModels, type LoraTarget, type LoraTargetMap } from './names.js';

export type { LoraLayout } from './keys.js';

export interface LoraTensor {
  shape: number[];
  data: Float32Array;
}

export interface LoraModule {
  /** kohya name (whatever the file's layout). */
  name: string;
  component: LoraComponent;
  /** Our module path inside the component. */
  path: string;
  kind: LoraKind;
  /** [r, in] or, for convs, [r, in, kh, kw] (PyTorch layout, as stored). */
  down: LoraTensor;
  /** [out, r] or [out, r, 1, 1]. */
  up: LoraTensor;
  alpha: number;
  rank: number;
}

export interface LoraFile {
  path: string;
  layout: LoraLayout;
  modules: LoraModule[];
  metadata: Record<string, string>;
  /** Stored dtype of the down/up weights (the first one's). */
  dtype: DType;
  /** Modules in the file that the model does not have (skipped), as the file names them. */
  unknown: string[];
  /** Tensors that are not LoRA weights (e.g. bundled embeddings, alphas without weights), ignored. */
  ignored: string[];
}

export interface ReadLoraOptions {
  /** diffusers' `network_alphas` side dict for legacy files (keys like `unet.<module>.alpha`). */
  networkAlphas?: Record<string, number>;
  /** Check every module's shapes against the model (default true). */
  checkShapes?: boolean;
}

/** A LoRA whose tensors do not fit the model's weights (typically a LoRA for another base model). */
export class LoraMismatchError extends SdtrainError {
  constructor(
    readonly file: string,
    /** One line per misfit: "<name> (<component> <path>): LoRA ΔW [..] (down [..], up [..]), model weight [..]". */
    readonly problems: readonly string[],
  ) {
    const shown = problems.slice(0, 3).join('; ');
    const more = problems.length > 3 ? `; … and ${problems.length - 3} more` : '';
    super(`${file}: this LoRA does not fit the model (made for another base model?): ${problems.length} module(s) with the wrong shape: ${shown}${more}`);
  }
}

const FLOAT_DTYPES: readonly DType[] = ['F16', 'BF16', 'F32', 'F64'];
const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** The model weight's shape in PyTorch layout: Linear [out, in], Conv2d [out, in, kh, kw]. */
export function torchWeightShape(t: LoraTarget): number[] {
  return t.kind === 'linear' ? [t.outFeatures, t.inFeatures] : [t.outFeatures, t.inFeatures, t.kernelSize, t.kernelSize];
}

/** ΔW's shape in PyTorch layout (what up·down gives), or undefined when down/up are not LoRA-shaped. */
export function deltaShape(m: Pick<LoraModule, 'down' | 'up'>): number[] | undefined {
  const [d, u] = [m.down.shape, m.up.shape];
  if ((d.length !== 2 && d.length !== 4) || (u.length !== 2 && u.length !== 4) || u[1] !== d[0]) return undefined;
  if (u.length === 4 && (u[2] !== 1 || u[3] !== 1)) return undefined;
  return [u[0]!, ...d.slice(1)];
}

/** Zero-padding the input channels is allowed for conv_in only: A1111's rule for a 4-channel LoRA on a 9-channel inpainting U-Net. */
export const padsInputChannels = (t: LoraTarget): boolean => t.component === 'unet' && t.path === 'conv_in';

/** Why a module does not fit its target, or undefined when it does. */
export function loraFitProblem(m: Pick<LoraModule, 'down' | 'up'>, t: LoraTarget): string | undefined {
  const delta = deltaShape(m);
  const model = torchWeightShape(t);
  const [out, inL, kh = 1, kw = 1] = delta ?? [];
  const fits =
    delta !== undefined &&
    out === t.outFeatures &&
    (inL === t.inFeatures || (padsInputChannels(t) && inL! < t.inFeatures)) &&
    kh === t.kernelSize &&
    kw === t.kernelSize;
  if (fits) return undefined;
  const what = delta ? `LoRA ΔW ${fmt(delta)}` : 'LoRA tensors do not multiply';
  return `${t.name} (${t.component} ${t.path}): ${what} (down ${fmt(m.down.shape)}, up ${fmt(m.up.shape)}), model weight ${fmt(model)}`;
}

interface Group {
  parsed: ParsedKey;
  down?: string;
  up?: string;
  alpha?: string;
  other: string[];
}

function groupKeys(path: string, names: readonly string[]): { groups: Map<string, Group>; layout: LoraLayout; ignored: string[] } {
  const groups = new Map<string, Group>();
  const ignored: string[] = [];
  const layouts = new Set<LoraLayout>();
  for (const key of names) {
    const p = parseLoraKey(key);
    if (!p) {
      ignored.push(key);
      continue;
    }
    if (p.layout) layouts.add(p.layout);
    let g = groups.get(p.id);
    if (!g) groups.set(p.id, (g = { parsed: p, other: [] }));
    else if (g.parsed.role === 'alpha' && p.role !== 'alpha') g.parsed = p; // prefer the weights' naming
    if (p.role === 'other') g.other.push(key);
    else g[p.role] = key;
  }
  if (layouts.size === 0) {
    const first = names.slice(0, 3).join(', ');
    throw new FormatError(
      path,
      `not a LoRA file: none of its ${names.length} tensors is named like LoRA weights (kohya '<lora_unet_…>.lora_down.weight', ` +
        `PEFT '<module>.lora_A.weight', diffusers '<module>.to_q_lora.down.weight')${first ? `; it has e.g. ${first}` : ''}`,
    );
  }
  if (layouts.size > 1) throw new FormatError(path, `mixes LoRA layouts (${[...layouts].join(', ')}); expected one`);
  return { groups, layout: [...layouts][0]!, ignored };
}

/**
 * Reads a LoRA file (safetensors, or a torch .bin/.pt) and resolves its modules against `models` (or a prebuilt
 * name map: shapes only, so a skeleton pipeline works). Alpha: kohya's `alpha` tensor (missing or 0 ⇒ rank); PEFT's
 * `lora_adapter_metadata` (missing ⇒ rank, as diffusers assumes); legacy: `<module>.alpha` tensors or
 * `opts.networkAlphas` (missing ⇒ rank).
 */
export async function readLora(path: string, models: LoraModels | LoraTargetMap, opts: ReadLoraOptions = {}): Promise<LoraFile> {
  const targets = models instanceof Map ? models : loraTargets(models);
  const file = await openTensorFile(path);
  try {
    const { groups, layout, ignored } = groupKeys(path, file.tensors.map((t) => t.name));
    const infos = new Map(file.tensors.map((t) => [t.name, t]));
    const peft = peftConfigs(file.metadata);
    const sideAlphas = new Map(Object.entries(opts.networkAlphas ?? {}).map(([k, v]) => [alphaKeyId(k), v]));
    const modules: LoraModule[] = [];
    const unknown: string[] = [];
    let dtype: DType | undefined;

    const readFloat = async (key: string) => {
      const info = infos.get(key)!;
      if (!FLOAT_DTYPES.includes(info.dtype)) throw new FormatError(path, `LoRA weights must be floating point, got ${info.dtype}`, key);
      const t = await file.read(key);
      return { shape: t.shape, data: t.data as Float32Array, dtype: info.dtype };
    };

    for (const [id, g] of groups) {
      if (g.other.length > 0) {
        throw new FormatError(
          path,
          `module ${g.parsed.label} has tensors other than down/up/alpha (${g.other.join(', ')}): only plain LoRA/LoCon is ` +
            `supported, not LyCORIS LoHa/LoKr/Tucker or DoRA`,
        );
      }
      if (!g.down && !g.up) {
        ignored.push(g.alpha!);
        continue;
      }
      if (!g.down || !g.up) {
        throw new FormatError(path, `module ${g.parsed.label} has a ${g.down ? 'down' : 'up'} weight but no ${g.down ? 'up' : 'down'} weight`);
      }
      const target = targets.get(id);
      if (!target) {
        unknown.push(g.parsed.label);
        continue;
      }
      const down = await readFloat(g.down);
      const up = await readFloat(g.up);
      dtype ??= down.dtype;
      const rank = down.shape[0] ?? 0;
      if (!deltaShape({ down, up }) || rank === 0) {
        throw new FormatError(path, `module ${g.parsed.label}: down ${fmt(down.shape)} and up ${fmt(up.shape)} are not a LoRA pair (up [out, r(, 1, 1)], down [r, in(, kh, kw)])`);
      }
      let alpha: number | undefined;
      if (g.alpha) {
        const a = await readFloat(g.alpha);
        if (numel(a.shape) !== 1) throw new FormatError(path, `alpha must be a scalar, got shape ${fmt(a.shape)}`, g.alpha);
        // kohya's LoRAModule reads alpha 0 as "no alpha" (= rank); its own saves never store 0.
        alpha = a.data[0]! || undefined;
      }
      alpha ??= sideAlphas.get(id) ?? (layout === 'peft' ? peftAlpha(peft?.[target.component], target.path, rank) : undefined) ?? rank;
      if (layout === 'peft' && peft?.[target.component]?.use_dora) {
        throw new FormatError(path, `DoRA adapters (use_dora) are not supported`);
      }
      const { component, path: modulePath, kind } = target;
      modules.push({ name: id, component, path: modulePath, kind, down: strip(down), up: strip(up), alpha, rank });
    }
    if (opts.checkShapes ?? true) checkLoraFits({ path, modules }, targets);
    return { path, layout, modules, metadata: file.metadata, dtype: dtype ?? 'F32', unknown, ignored };
  } finally {
    await file.close();
  }
}

const strip = (t: LoraTensor & { dtype: DType }): LoraTensor => ({ shape: t.shape, data: t.data });

/** Throws LoraMismatchError listing every module whose shapes do not fit its target (modules the map lacks are not checked). */
export function checkLoraFits(file: Pick<LoraFile, 'path' | 'modules'>, targets: LoraTargetMap): void {
  const problems: string[] = [];
  for (const m of file.modules) {
    const t = targets.get(m.name);
    const p = t && loraFitProblem(m, t);
    if (p) problems.push(p);
  }
  if (problems.length > 0) throw new LoraMismatchError(file.path, problems);
}
