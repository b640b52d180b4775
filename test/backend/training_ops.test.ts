// A forward+backward pass of a tiny network built from every op our models (U-Net, VAE, CLIP text encoder) use, run on
// wasm and on cpu with the same weights: any kernel (or gradient kernel) wasm lacks fails here, and every gradient
// must match cpu's.
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { useBackend } from '../../src/backend/backend.js';
import { registerCpuKernelFixes } from '../../src/backend/kernels/index.js';

function rand(shape: number[], seed: number, scale = 1): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

const PARAMS: Record<string, number[]> = {
  embed: [20, 16], // token embedding table (gather)
  lnG: [16],
  lnB: [16],
  wq: [16, 16], // torch layout [out, in]: used with transposeB
  wk: [16, 16],
  wv: [16, 16],
  wc: [16, 8], // text -> image channels
  conv1: [3, 3, 4, 8],
  conv1b: [8],
  gnG: [8],
  gnB: [8],
  down: [3, 3, 8, 8],
  conv1x1: [1, 1, 16, 4],
  convValid: [3, 3, 4, 4],
  fused: [3, 3, 4, 4],
  fusedB: [4],
};

function layerNorm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, [-1], true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), g), b);
}

/** Group norm (2 groups) from reshape + moments: [N,H,W,C] -> [N,H,W,G,C/G], normalised over H, W and C/G. */
function groupNorm(x: tf.Tensor4D, g: tf.Tensor, b: tf.Tensor): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const xg = tf.reshape(x, [n, h, w, 2, c / 2]);
  const { mean, variance } = tf.moments(xg, [1, 2, 4], true);
  const y = tf.reshape(tf.div(tf.sub(xg, mean), tf.sqrt(tf.add(variance, 1e-5))), x.shape);
  return tf.add(tf.mul(y, g), b) as tf.Tensor4D;
}

const gelu = (x: tf.Tensor): tf.Tensor => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2))));
const silu = (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(x));

function loss(p: Record<string, tf.Tensor>): tf.Scalar {
  // Text encoder: embedding, layer norm, one attention head, gelu.
  const ids = tf.tensor2d([[1, 5, 7, 5, 19], [0, 2, 2, 3, 11]], [2, 5], 'int32');
  const h = layerNorm(tf.gather(p['embed']!, ids), p['lnG']!, p['lnB']!); // [2, 5, 16]
  const flat = tf.reshape(h, [10, 16]);
  const proj = (w: string): tf.Tensor3D => tf.reshape(tf.matMul(flat, p[w]!, false, true), [2, 5, 16]);
  const [q, k, v] = [proj('wq'), proj('wk'), proj('wv')];
  const attn = tf.softmax(tf.div(tf.matMul(q, k, false, true), 4)); // [2, 5, 5]
  const text = gelu(tf.matMul(attn, v)); // [2, 5, 16]
  const cond = tf.reshape(tf.matMul(tf.mean(text, 1), p['wc']!), [2, 1, 1, 8]);

  // U-Net-ish image path: conv 3x3, group norm, silu, strided conv with asymmetric padding, two upsamplings,
  // concat, 1x1 conv, pad + valid conv, a fused conv with bias and relu, slice, pow, max.
  const img = tf.tensor4d(rand([2, 8, 8, 4], 99), [2, 8, 8, 4]);
  let x = tf.add(tf.conv2d(img, p['conv1'] as tf.Tensor4D, 1, 'same'), p['conv1b']!) as tf.Tensor4D;
  x = tf.add(silu(groupNorm(x, p['gnG']!, p['gnB']!)), cond) as tf.Tensor4D; // [2, 8, 8, 8]
  const d = tf.conv2d(x, p['down'] as tf.Tensor4D, 2, [[0, 0], [0, 1], [0, 1], [0, 0]]); // [2, 4, 4, 8]
  const up1 = tf.image.resizeNearestNeighbor(d, [8, 8]);
  // Nearest upsampling by reshape + tile. Rank 4 at most: tfjs has no Tile gradient above rank 4.
  const upW = tf.tile(tf.reshape(d, [8, 4, 1, 8]), [1, 1, 2, 1]); // [N*H, W, 2, C]
  const up2 = tf.reshape(tf.tile(tf.reshape(upW, [8, 1, 8, 8]), [1, 2, 1, 1]), [2, 8, 8, 8]); // [N*H, 2, 2W, C]
  const cat = tf.concat([tf.add(up1, up2), x], 3) as tf.Tensor4D; // [2, 8, 8, 16]
  const y = tf.conv2d(cat, p['conv1x1'] as tf.Tensor4D, 1, 'valid'); // [2, 8, 8, 4]
  const yv = tf.conv2d(tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]]), p['convValid'] as tf.Tensor4D, 1, 'valid');
  const yf = tf.fused.conv2d({ x: yv, filter: p['fused'] as tf.Tensor4D, bias: p['fusedB'], strides: 1, pad: 'same', activation: 'relu' });
  const part = tf.slice(tf.add(yf, tf.sigmoid(yv)), [0, 1, 1, 0], [2, 6, 6, 4]);
  const target = tf.tensor4d(rand([2, 6, 6, 4], 7), [2, 6, 6, 4]);
  const mse = tf.mean(tf.squaredDifference(part, target));
  const extra = tf.add(tf.mean(tf.pow(tf.abs(text), 1.5)), tf.mean(tf.max(tf.maximum(part, -0.5), [1, 2])));
  return tf.add(mse, tf.mul(extra, 0.1)) as tf.Scalar;
}

async function gradsOn(backend: 'wasm' | 'cpu'): Promise<Record<string, Float32Array>> {
  await useBackend(backend);
  return tf.tidy(() => {
    const names = Object.keys(PARAMS);
    const tensors = names.map((n, i) => tf.tensor(rand(PARAMS[n]!, i + 1, 0.5), PARAMS[n]!));
    const f = (...ts: tf.Tensor[]): tf.Scalar => loss(Object.fromEntries(names.map((n, i) => [n, ts[i]!])));
    const { value, grads } = tf.valueAndGrads(f)(tensors);
    const out: Record<string, Float32Array> = { loss: Float32Array.from(value.dataSync()) };
    names.forEach((n, i) => (out[n] = Float32Array.from(grads[i]!.dataSync())));
    return out;
  });
}

beforeAll(() => {
  // tfjs-backend-cpu's ResizeNearestNeighborGrad is wrong for batch > 1 (see resize_nearest_neighbor_grad_cpu.ts).
  registerCpuKernelFixes();
});
afterAll(async () => {
  await useBackend('wasm');
});

it('a network using every op our models use trains on wasm, with the same gradients as on cpu', async () => {
  const want = await gradsOn('cpu');
  const got = await gradsOn('wasm');
  const report: string[] = [];
  for (const name of Object.keys(want)) {
    const a = got[name]!;
    const b = want[name]!;
    let scale = 0;
    let err = 0;
    for (let i = 0; i < b.length; i++) {
      scale = Math.max(scale, Math.abs(b[i]!));
      err = Math.max(err, Math.abs(a[i]! - b[i]!));
    }
    if (!(scale > 0) || !(err <= 1e-4 * scale)) report.push(`${name}: max |wasm - cpu| = ${err} vs max |cpu| = ${scale}`);
  }
  expect(report).toEqual([]);
});

it('the tiny network does not leak tensors or wasm buffers', async () => {
  await useBackend('wasm');
  await gradsOn('wasm');
  const tensors = tf.memory().numTensors;
  const ids = (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
  await gradsOn('wasm');
  expect(tf.memory().numTensors).toBe(tensors);
  expect((tf.backend() as unknown as { numDataIds(): number }).numDataIds()).toBe(ids);
});
