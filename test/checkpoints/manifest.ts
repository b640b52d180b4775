// Reads the full-size key/shape manifests (shared/fixtures/manifests/*.json) for the checkpoint tests.
import { readFileSync } from 'node:fs';
import { fixture } from '../helpers/shared.js';

export type Component = 'unet' | 'vae' | 'text_encoder';

export interface MappingEntry {
  original: string;
  op: 'rename' | 'reshape' | 'slice_rows';
  rows?: [number, number];
  from?: number[];
  to?: number[];
}

export interface Manifest {
  model: string;
  diffusers_configs: Record<Component, Record<string, unknown>>;
  diffusers: Record<Component, { param_count: number; num_tensors: number; tensors: Record<string, number[]> }>;
  original: {
    param_count: Record<Component | 'total', number>;
    num_tensors: number;
    tensors: Record<string, { shape: number[]; kind: string; dtype: string }>;
  };
  mapping_diffusers_to_original: Record<Component, Record<string, MappingEntry>>;
}

const cache = new Map<string, Manifest>();

export function manifest(name: 'sd15' | 'sd15_inpaint' | 'sd21_v'): Manifest {
  let m = cache.get(name);
  if (!m) cache.set(name, (m = JSON.parse(readFileSync(fixture('manifests', `${name}.json`), 'utf8')) as Manifest));
  return m;
}

export const MANIFESTS = ['sd15', 'sd15_inpaint', 'sd21_v'] as const;
export const COMPONENTS: Component[] = ['unet', 'vae', 'text_encoder'];
