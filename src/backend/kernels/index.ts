// Kernels the wasm backend lacks for training, registered by an explicit list (like tfjs' register_all_kernels.ts).
import { registerKernel, type KernelConfig } from '@tensorflow/tfjs';

const WASM_TRAINING_KERNELS: KernelConfig[] = [];

let registered = false;

/** Register (once) every kernel in the list on the wasm backend. */
export function registerWasmKernels(): void {
  if (registered) return;
  registered = true;
  for (const k of WASM_TRAINING_KERNELS) registerKernel(k);
}
