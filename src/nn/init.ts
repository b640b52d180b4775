// Seeded initialisers for training a model from scratch: fill every `Param` of a module tree with PyTorch's default
// distributions for its layer type (the models are shape skeletons, see module.ts):
//   Linear, Conv2d   weight and bias ~ U(−1/√fan_in, 1/√fan_in)   (kaiming_uniform_(a=√5), fan_in = in·kh·kw)
//   GroupNorm, LayerNorm   weight = 1, bias = 0
//   Embedding        weight ~ N(0, embeddingStd²)                  (PyTorch: 1; transformers' CLIP: 0.02)
// The distributions are PyTorch's, not its exact numbers: each parameter draws from its own TorchGenerator seeded
// from (seed, parameter name), in our layout's element order, so adding a layer never changes another's values.
import * as tf from '@tensorflow/tfjs';
import { deriveSeed } from '../data/rng.js';
import { TorchGenerator } from '../random/torch_rng.js';
import { Conv2d, Embedding, GroupNorm, LayerNorm, Linear } from './layers.js';
import { Module, Param } from './module.js';

export interface InitOptions {
  seed: number;
  /** Standard deviation of Embedding weights by parameter name (default 1, PyTorch's nn.Embedding). */
  embeddingStd?: (name: string) => number;
  /**
   * Parameters (full names, e.g. "down_blocks.0.resnets.0.conv2.weight") to start at zero: LDM's `zero_module` on
   * the last layer of each residual branch and on the U-Net's output conv makes every block start as the identity.
   */
  zero?: (name: string) => boolean;
}

const join = (prefix: string, key: string | number): string => (prefix ? `${prefix}.${key}` : String(key));

/** U(−bound, bound) as a tensor of `shape`, from a generator of its own. */
function uniform(shape: readonly number[], bound: number, seed: number): tf.Tensor {
  const u = new TorchGenerator(seed).rand(shape); // [0, 1)
  for (let i = 0; i < u.length; i++) u[i] = (2 * u[i]! - 1) * bound;
  return tf.tensor(u, [...shape], 'float32');
}

function normal(shape: readonly number[], std: number, seed: number): tf.Tensor {
  const n = new TorchGenerator(seed).randn(shape);
  for (let i = 0; i < n.length; i++) n[i] = n[i]! * std;
  return tf.tensor(n, [...shape], 'float32');
}

/**
 * Fills every parameter of `root` (replacing values already there). Throws if a parameter belongs to a layer type
 * it does not know, so nothing is left unfilled.
 */
export function initModule(root: Module, opts: InitOptions): void {
  const seedOf = (name: string): number => deriveSeed(opts.seed, 'init', name);
  const set = (p: Param, name: string, make: () => tf.Tensor): void => {
    p.set(opts.zero?.(name) ? tf.zeros([...p.shape]) : make(), name);
  };
  const visit = (node: unknown, prefix: string): void => {
    if (node instanceof Linear || node instanceof Conv2d) {
      // fan_in: Linear weight [out, in]; Conv2d weight HWIO [kh, kw, in, out]
      const s = node.weight.shape;
      const fanIn = node instanceof Linear ? s[1]! : s[0]! * s[1]! * s[2]!;
      const bound = 1 / Math.sqrt(fanIn);
      set(node.weight, join(prefix, 'weight'), () => uniform(s, bound, seedOf(join(prefix, 'weight'))));
      if (node.bias) set(node.bias, join(prefix, 'bias'), () => uniform(node.bias!.shape, bound, seedOf(join(prefix, 'bias'))));
    } else if (node instanceof GroupNorm || node instanceof LayerNorm) {
      set(node.weight, join(prefix, 'weight'), () => tf.ones([...node.weight.shape]));
      set(node.bias, join(prefix, 'bias'), () => tf.zeros([...node.bias.shape]));
    } else if (node instanceof Embedding) {
      const name = join(prefix, 'weight');
      const std = opts.embeddingStd?.(name) ?? 1;
      set(node.weight, name, () => normal(node.weight.shape, std, seedOf(name)));
    } else if (node instanceof Param) {
      throw new Error(`initModule: parameter ${prefix} [${node.shape.join(', ')}] is not part of a layer it knows how to initialise`);
    } else if (Array.isArray(node)) {
      node.forEach((child, i) => visit(child, join(prefix, i)));
    } else if (node instanceof Module) {
      for (const [key, child] of Object.entries(node)) visit(child, join(prefix, key));
    }
  };
  visit(root, '');
}
