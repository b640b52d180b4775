// Kernels the wasm backend lacks (or runs slowly) for training, registered by an explicit list (like tfjs'
// register_all_kernels.ts); plus fixes for wrong kernels of the cpu backend.
import { getKernel, registerKernel, unregisterKernel, type KernelConfig } from '@tensorflow/tfjs';
import { batchMatMulConfig } from './batch_mat_mul.js';
import { conv2DConfig } from './conv2d.js';
import { conv2DBackpropFilterConfig } from './conv2d_backprop_filter.js';
import { conv2DBackpropInputConfig } from './conv2d_backprop_input.js';
import { resizeNearestNeighborGradCpuConfig } from './resize_nearest_neighbor_grad_cpu.js';
import { unsortedSegmentSumConfig } from './unsorted_segment_sum.js';
import { rememberStockKernel } from './wasm_helpers.js';

const WASM_TRAINING_KERNELS: KernelConfig[] = [
  // Replaces the stock one: batched or transposed products (attention, every matmul gradient) ran 10x slower.
  batchMatMulConfig,
  // Replaces the stock one for big filters over few pixels (the 1280-channel U-Net levels), where it ran at half speed.
  conv2DConfig,
  // Missing: the filter gradient of conv2d.
  conv2DBackpropFilterConfig,
  // Replaces the stock one (a direct loop at ~1/8 of the forward conv's speed).
  conv2DBackpropInputConfig,
  // Missing: the gradient of gather (the token-embedding table).
  unsortedSegmentSumConfig,
];

const CPU_KERNEL_FIXES: KernelConfig[] = [
  // Replaces the stock one: wrong for batch > 1 (nearest upsampling in every U-Net/VAE decoder block).
  resizeNearestNeighborGradCpuConfig,
];

/** Register `k`, replacing (and remembering) a kernel already registered under its name and backend. */
function registerReplacing(k: KernelConfig): void {
  const stock = getKernel(k.kernelName, k.backendName);
  if (stock === undefined) {
    registerKernel(k);
    return;
  }
  // Why unregister: `registerKernel` throws on a duplicate. The stock kernel stays reachable through `stockKernel`
  // (our kernels call it, the benchmark compares with it).
  rememberStockKernel(stock);
  unregisterKernel(k.kernelName, k.backendName);
  // Why chain the stock setupFunc: the engine runs the setupFuncs of the *registered* kernels when the backend is set
  // up, and a stock wasm kernelFunc only works after its setup (that is where it binds its C++ function).
  const stockSetup = stock.setupFunc;
  const ownSetup = k.setupFunc;
  registerKernel({
    ...k,
    setupFunc: (backend) => {
      stockSetup?.(backend);
      ownSetup?.(backend);
    },
  });
}

let registered = false;

/** Register (once) every kernel in the list on the wasm backend. */
export function registerWasmKernels(): void {
  if (registered) return;
  registered = true;
  for (const k of WASM_TRAINING_KERNELS) registerReplacing(k);
}

let cpuFixed = false;

/** Register (once) the fixed cpu kernels. Call before training on the cpu backend. */
export function registerCpuKernelFixes(): void {
  if (cpuFixed) return;
  cpuFixed = true;
  for (const k of CPU_KERNEL_FIXES) registerReplacing(k);
}
