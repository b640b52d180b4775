// Models and tokenizers loaded for parity cases, keyed by model_dir + component and shared between cases; the runner
// frees a component after the last case that uses it.
import { join } from 'node:path';
import { loadComponentFolder, type ComponentModels, type ComponentName } from '../checkpoints/diffusers_folder.js';
import { disposeModule, Module } from '../nn/module.js';
import { CLIPTokenizer } from '../tokenizer/clip_tokenizer.js';

export class ComponentCache {
  private readonly entries = new Map<string, Promise<unknown>>();

  /** The component `<modelDir>/<component>` built by `load(componentDir)`, loaded once. */
  get<T>(modelDir: string, component: string, load: (componentDir: string) => Promise<T>): Promise<T> {
    const key = join(modelDir, component);
    let p = this.entries.get(key);
    if (!p) {
      p = load(key);
      this.entries.set(key, p);
      // a failed load is not cached: the next case retries (and reports the same error)
      p.catch(() => this.entries.delete(key));
    }
    return p as Promise<T>;
  }

  /** The network in `<modelDir>/<component>` (config.json + weights, through the checkpoint loader), loaded once. */
  model<C extends ComponentName>(modelDir: string, component: C): Promise<ComponentModels[C]> {
    return this.get(modelDir, component, (dir) => loadComponentFolder(dir, component));
  }

  /** The tokenizer in `<modelDir>/tokenizer`, loaded once. */
  tokenizer(modelDir: string): Promise<CLIPTokenizer> {
    return this.get(modelDir, 'tokenizer', (dir) => CLIPTokenizer.fromDiffusersFolder(dir));
  }

  /** Frees one component (its tensors, if it is a Module). */
  async release(modelDir: string, component: string): Promise<void> {
    const key = join(modelDir, component);
    const p = this.entries.get(key);
    this.entries.delete(key);
    const v = await p?.catch(() => undefined);
    if (v instanceof Module) disposeModule(v);
  }

  async releaseAll(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const v of await Promise.all(all.map((p) => p.catch(() => undefined)))) if (v instanceof Module) disposeModule(v);
  }
}
