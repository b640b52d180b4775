// Test helper: fill a model's Params from one safetensors (or torch) file, keys = namedParams keys. The logic lives in
// src/parity/load.ts (the parity runner uses it too) until src/checkpoints/ has a diffusers loader.
import type { Module } from '../../src/nn/module.js';
import { fillFromTensorFiles, type FillOptions } from '../../src/parity/load.js';

export function fillFromSafetensors(model: Module, path: string, opts: FillOptions = {}): Promise<void> {
  return fillFromTensorFiles(model, [path], opts);
}
