import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BackendUnavailableError,
  WASM_BUDGET_BYTES,
  parseBackendRequest,
  useBackend,
} from '../../src/backend/backend.js';

describe('backend selection', () => {
  afterAll(async () => {
    await useBackend('wasm');
  });

  it('auto never picks wasm for a job estimated beyond its 4 GiB heap, and says why', async () => {
    const sd15Bytes = 4.3e9; // SD 1.5 float32 weights alone
    const choice = await useBackend('auto', { estimatedBytes: sd15Bytes });
    expect(choice.backend).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(choice.notes.at(-1)).toMatch(/wasm skipped: the job needs about 4\.0 GiB.*4 GiB heap.*cpu backend/);
  });

  it('auto picks wasm (here: no tfjs-node installed) for a job that fits, noting what it skipped', async () => {
    const choice = await useBackend('auto', { estimatedBytes: WASM_BUDGET_BYTES - 1 });
    expect(choice.backend).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(choice.notes).toEqual(['gpu: not installed', 'node: not installed']);
  });

  it.each([
    ['gpu', /backend 'gpu' is not available: not installed\. Install it with: npm install @tensorflow\/tfjs-node-gpu@4\.22\.0/],
    ['node', /backend 'node' is not available: not installed\. Install it with: npm install @tensorflow\/tfjs-node@4\.22\.0/],
  ] as const)('asking for %s when it is not installed is a clear error with the install command', async (name, re) => {
    const err = await useBackend(name).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect((err as Error).message).toMatch(re);
    expect(tf.getBackend()).toBe('wasm'); // the failed request left the active backend alone
  });

  it('explicit cpu and wasm work', async () => {
    expect((await useBackend('cpu')).tfjsName).toBe('cpu');
    expect(tf.add(1, 2).dataSync()[0]).toBe(3);
    expect((await useBackend('wasm')).tfjsName).toBe('wasm');
  });

  it('parses requests case-insensitively and rejects unknown names, naming the source', () => {
    expect(parseBackendRequest('WASM', '--backend')).toBe('wasm');
    expect(parseBackendRequest(undefined, 'SDTRAIN_BACKEND')).toBe('auto');
    expect(() => parseBackendRequest('cuda', 'SDTRAIN_BACKEND')).toThrow(/SDTRAIN_BACKEND: unknown backend 'cuda' \(expected one of auto, gpu, node, wasm, cpu\)/);
  });
});
