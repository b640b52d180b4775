// Models and tokenizers loaded for parity cases, keyed by model_dir + component and shared between cases; the runner
// frees a component after the last case that uses it.
import { join } from 'node:path';
import { disposeModule, Module } from '../nn/module.js';

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
