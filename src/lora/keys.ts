// Tensor names of the three LoRA layouts, parsed to (module, role). Every module is identified by its kohya name, so
// one lookup in the name map (names.ts) resolves all layouts:
//   kohya             lora_unet_<path_>.lora_down.weight | .lora_up.weight | .alpha
//   PEFT              unet.<path>.lora_A.weight (down) | .lora_B.weight (up); alphas in `lora_adapter_metadata`
//   diffusers-legacy  unet.<…>.attn1.processor.to_q_lora.down.weight, <…>.proj_in.lora.down.weight,
//                     text_encoder.<…>.self_attn.to_q_lora.down.weight, <…>.mlp.fc1.lora_linear_layer.down.weight
import { kohyaName, type LoraComponent } from './names.js';

export type LoraLayout = 'kohya' | 'peft' | 'diffusers-legacy';

export interface ParsedKey {
  /** Undefined for a bare `<module>.alpha` outside kohya names (it belongs to whichever layout the file has). */
  layout?: LoraLayout;
  /** kohya name of the module (for a component we do not have, e.g. `text_encoder_2.`, a name nothing resolves). */
  id: string;
  /** The module as the file names it (kohya: the name; others: the key up to the LoRA part). */
  label: string;
  /** Diffusers/transformers component and path (PEFT and legacy keys only). */
  component?: LoraComponent;
  path?: string;
  role: 'down' | 'up' | 'alpha' | 'other';
  /** The part after the module, e.g. `lora_down.weight`, `hada_w1_a`, `lora_magnitude_vector`. */
  part: string;
}

const TE_PROJ: Record<string, string> = { to_q: 'q_proj', to_k: 'k_proj', to_v: 'v_proj', to_out: 'out_proj' };

/** `unet.` / `text_encoder.` / PEFT's `base_model.model.` / none → component and path (unprefixed: by the path). */
function splitComponent(stem: string): { component: LoraComponent; path: string } {
  if (stem.startsWith('unet.')) return { component: 'unet', path: stem.slice(5) };
  if (stem.startsWith('text_encoder.')) return { component: 'text_encoder', path: stem.slice(13) };
  const path = stem.startsWith('base_model.model.') ? stem.slice(17) : stem;
  // Anything else (text_encoder_2., transformer., ...) stays in the path and resolves to nothing.
  return { component: path.startsWith('text_model.') ? 'text_encoder' : 'unet', path };
}

/** Legacy module spellings → our path: `attn1.processor.to_q_lora` → `attn1.to_q`, `proj_in.lora` → `proj_in`. */
function legacyPath(component: LoraComponent, path: string): string {
  const m = /^(.*?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora$/.exec(path);
  if (m) {
    const proj = component === 'text_encoder' ? TE_PROJ[m[2]!]! : m[2] === 'to_out' ? 'to_out.0' : m[2]!;
    return `${m[1]}.${proj}`;
  }
  return path.replace(/\.(?:lora|lora_linear_layer)$/, '');
}

function diffusersKey(layout: LoraLayout | undefined, label: string, role: ParsedKey['role'], part: string, legacy: boolean): ParsedKey {
  const { component, path: raw } = splitComponent(label);
  const path = legacy ? legacyPath(component, raw) : raw;
  return { layout, id: kohyaName(component, path), label, component, path, role, part };
}

/** Parses one tensor name; undefined when it is not LoRA-shaped at all (e.g. a bundled embedding). */
export function parseLoraKey(key: string): ParsedKey | undefined {
  let m = /^(lora_(?:unet|te\d*)_[^.]+)\.(.+)$/.exec(key);
  if (m) {
    const part = m[2]!;
    const role = part === 'lora_down.weight' ? 'down' : part === 'lora_up.weight' ? 'up' : part === 'alpha' ? 'alpha' : 'other';
    return { layout: 'kohya', id: m[1]!, label: m[1]!, role, part };
  }
  if ((m = /^(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$/.exec(key))) {
    return diffusersKey('peft', m[1]!, m[2] === 'A' ? 'down' : 'up', `lora_${m[2]}.weight`, false);
  }
  if ((m = /^(.+)\.(lora_magnitude_vector|lora_embedding_[AB])(?:\.[^.]+)?$/.exec(key))) {
    return diffusersKey('peft', m[1]!, 'other', m[2]!, false);
  }
  if ((m = /^(.+?(?:_lora|\.lora|\.lora_linear_layer))\.(down|up)\.weight$/.exec(key))) {
    return diffusersKey('diffusers-legacy', m[1]!, m[2] as 'down' | 'up', `${m[2]}.weight`, true);
  }
  if ((m = /^(.+?)(?:\.down\.weight)?\.alpha$/.exec(key))) return diffusersKey(undefined, m[1]!, 'alpha', 'alpha', true);
  return undefined;
}

/** The id a `network_alphas` entry (diffusers' side dict for legacy files) refers to. */
export function alphaKeyId(key: string): string {
  return parseLoraKey(key.endsWith('.alpha') ? key : `${key}.alpha`)!.id;
}

// ---------------------------------------------------------------------------------------------------------------
// PEFT adapter config (diffusers `lora_adapter_metadata`)

interface PeftConfig {
  r?: number;
  lora_alpha?: number;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  use_rslora?: boolean;
  use_dora?: boolean;
}

/** `<component>.`-prefixed LoraConfig fields → per-component configs; undefined without (valid) metadata. */
export function peftConfigs(metadata: Record<string, string>): Partial<Record<LoraComponent, PeftConfig>> | undefined {
  const raw = metadata['lora_adapter_metadata'];
  if (raw === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (json === null || typeof json !== 'object') return undefined;
  const out: Partial<Record<LoraComponent, Record<string, unknown>>> = {};
  for (const [k, v] of Object.entries(json as Record<string, unknown>)) {
    const m = /^(unet|text_encoder)\.(.+)$/.exec(k);
    if (m) (out[m[1] as LoraComponent] ??= {})[m[2]!] = v;
  }
  return out as Partial<Record<LoraComponent, PeftConfig>>;
}

/** PEFT's pattern lookup: a pattern matches the full module path or a suffix after a '.'. */
function patternValue(patterns: Record<string, number> | undefined, path: string): number | undefined {
  if (!patterns) return undefined;
  for (const [pattern, value] of Object.entries(patterns)) {
    if (pattern === path) return value;
    try {
      if (new RegExp(`(^|.*\\.)${pattern}$`).test(path)) return value;
    } catch {
      // not a valid regex: only the exact match above applies
    }
  }
  return undefined;
}

/** kohya-style alpha (ΔW = alpha/rank · up·down) for a PEFT module of the given rank; undefined if unspecified. */
export function peftAlpha(cfg: PeftConfig | undefined, path: string, rank: number): number | undefined {
  if (!cfg) return undefined;
  const alpha = patternValue(cfg.alpha_pattern, path) ?? cfg.lora_alpha;
  if (typeof alpha !== 'number') return undefined;
  // rsLoRA scales by alpha/√r; as a kohya alpha over the same rank that is alpha·√r.
  return cfg.use_rslora ? alpha * Math.sqrt(rank) : alpha;
}
