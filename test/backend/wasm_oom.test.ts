// Runs in its own process (vitest forks per file): after an out-of-memory trap the wasm module is not reusable.
import * as tf from '@tensorflow/tfjs';
import { expect, it } from 'vitest';
import { explainBackendError } from '../../src/backend/backend.js';
import { WasmOutOfMemoryError } from '../../src/errors.js';

it('running out of the 4 GiB wasm heap gives a message that says so, not "memory access out of bounds"', () => {
  expect(tf.getBackend()).toBe('wasm');
  const held: tf.Tensor[] = [];
  let caught: unknown;
  try {
    for (let i = 0; i < 8; i++) held.push(tf.zeros([256, 1024, 1024])); // 1 GiB each
  } catch (e) {
    caught = e;
  }
  expect(String((caught as Error)?.message)).toMatch(/memory access out of bounds/); // what tfjs-wasm throws
  const explained = explainBackendError(caught);
  expect(explained).toBeInstanceOf(WasmOutOfMemoryError);
  expect((explained as Error).message).toMatch(/wasm backend ran out of memory: .*capped at 4 GiB.*--backend cpu/);
  tf.dispose(held);
});

it('other errors pass through unchanged', () => {
  const e = new Error('shapes do not match');
  expect(explainBackendError(e)).toBe(e);
});
