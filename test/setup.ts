// The one place (besides the CLI entry) that chooses a backend: tests run on the embedded default, wasm,
// unless SDTRAIN_TEST_BACKEND names another (e.g. `cpu` to cross-check).
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../src/backend/backend.js';

const wanted = process.env.SDTRAIN_TEST_BACKEND ?? 'wasm';
await useBackend(wanted === 'auto' ? 'auto' : (wanted as 'wasm' | 'cpu' | 'node' | 'gpu'));
