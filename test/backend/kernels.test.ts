// The kernels we register on the wasm backend (src/backend/kernels/), each compared with the pure-JS `cpu` backend on
// the same random inputs, plus leak checks and a forward+backward pass of a tiny network using every op our models use.
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from '../../src/backend/backend.js';
import { conv2DTuning } from '../../src/backend/kernels/conv2d.js';
import { conv2DBackpropFilterTuning } from '../../src/backend/kernels/conv2d_backprop_filter.js';
import { conv2DBackpropInputTuning } from '../../src/backend/kernels/conv2d_backprop_input.js';
import { registerCpuKernelFixes } from '../../src/backend/kernels/index.js';

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

/** Deterministic N(0,1)-ish data (mulberry32 + Box-Muller), so a failure reproduces. */
function rand(shape: number[], seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  let s = seed >>> 0;
  const u = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

/** Run `f` on `backend` and return its outputs' data; tensors made inside are disposed. */
async function on(backend: 'wasm' | 'cpu', f: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await useBackend(backend);
  return tf.tidy(() => {
    const r = f();
    return (Array.isArray(r) ? r : [r]).map((t) => Float32Array.from(t.dataSync()));
  });
}

/** max |a - b| <= tol * max |b| (float32 summation-order differences scale with the output). */
function expectClose(actual: Float32Array, expected: Float32Array, tol = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  let scale = 0;
  let err = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    err = Math.max(err, Math.abs(actual[i]! - expected[i]!));
  }
  expect(Number.isFinite(err)).toBe(true);
  expect(err).toBeLessThanOrEqual(tol * Math.max(scale, 1e-6));
}

const padName = (p: Pad): string =>
  typeof p === 'string' || typeof p === 'number' ? String(p) : `explicit h[${p[1]}] w[${p[2]}]`;

const outShape = (x: number[], f: number[], s: number | [number, number], pad: Pad): number[] =>
  tf.backend_util.computeConv2DInfo(x as [number, number, number, number], f as [number, number, number, number], s, 1, pad).outShape;

/** [x shape, filter shape, strides, pad] */
type ConvCase = [number[], number[], number | [number, number], Pad];
const CONV_CASES: ConvCase[] = [
  [[1, 10, 6, 3], [3, 3, 3, 5], 2, [[0, 0], [0, 1], [0, 1], [0, 0]]],
  [[1, 10, 6, 3], [3, 3, 3, 5], 2, [[0, 0], [1, 1], [1, 1], [0, 0]]],
  [[1, 10, 6, 3], [3, 3, 3, 5], 1, [[0, 0], [1, 1], [1, 1], [0, 0]]],
  [[1, 10, 6, 3], [3, 3, 3, 5], 1, [[0, 0], [2, 0], [0, 3], [0, 0]]],
  [[1, 10, 7, 3], [4, 2, 3, 5], 3, [[0, 0], [2, 0], [0, 3], [0, 0]]],
  [[2, 7, 9, 4], [3, 3, 4, 6], 1, 'same'],
  [[2, 7, 9, 4], [3, 3, 4, 6], 2, 'same'],
  [[1, 11, 7, 3], [5, 5, 3, 5], 2, 'same'],
  [[1, 9, 9, 8], [3, 3, 8, 8], [2, 1], 'same'],
  [[2, 8, 8, 4], [3, 3, 4, 6], 2, 'valid'],
  [[2, 10, 10, 4], [3, 3, 4, 6], 2, 'valid'],
  [[2, 9, 5, 4], [3, 3, 4, 6], 1, 'valid'],
  [[2, 7, 9, 4], [1, 1, 4, 6], 1, 'valid'],
  [[2, 7, 9, 4], [1, 1, 4, 6], 2, 'valid'],
  [[2, 6, 6, 4], [3, 3, 4, 2], 1, 1],
  [[2, 16, 16, 32], [3, 3, 32, 48], 1, 'same'],
  [[2, 16, 16, 32], [3, 3, 32, 32], 2, [[0, 0], [0, 1], [0, 1], [0, 0]]],
];
const caseName = ([x, f, s, p]: ConvCase): string => `x=[${x}] f=[${f}] s=${s} p=${padName(p)}`;
const named = <T extends unknown[]>(cases: T[], name: (c: T) => string): [string, ...T][] => cases.map((c) => [name(c), ...c]);

beforeAll(async () => {
  await useBackend('wasm');
  registerCpuKernelFixes();
});
afterAll(async () => {
  await useBackend('wasm');
});

describe('Conv2D (forward) on wasm matches cpu', () => {
  const run = (x: number[], f: number[], s: number | [number, number], pad: Pad) => {
    const xd = rand(x, 16);
    const fd = rand(f, 17);
    type Shape4 = [number, number, number, number];
    return () => tf.conv2d(tf.tensor4d(xd, x as Shape4), tf.tensor4d(fd, f as Shape4), s, pad as 'same');
  };
  it.each(named(CONV_CASES, caseName))('%s, im2col + GEMM', async (_, x, f, s, pad) => {
    const saved = { ...conv2DTuning };
    // Tiny chunks too, so the chunked path (several GEMMs) is what runs.
    Object.assign(conv2DTuning, { method: 'gemm', chunkElements: 1, minChunkPixels: 1 });
    try {
      const [want] = await on('cpu', run(x, f, s, pad));
      const [got] = await on('wasm', run(x, f, s, pad));
      expectClose(got!, want!);
    } finally {
      Object.assign(conv2DTuning, saved);
    }
  });
  it.each(named(CONV_CASES, caseName))('%s, as registered', async (_, x, f, s, pad) => {
    const [want] = await on('cpu', run(x, f, s, pad));
    const [got] = await on('wasm', run(x, f, s, pad));
    expectClose(got!, want!);
  });
});

describe('Conv2DBackpropFilter on wasm matches cpu', () => {
  const run = (x: number[], f: number[], s: number | [number, number], pad: Pad) => {
    const xd = rand(x, 1);
    const dyShape = outShape(x, f, s, pad);
    const dyd = rand(dyShape, 2);
    return () =>
      tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.tensor(xd, x), dy: tf.tensor(dyd, dyShape) }, {
        strides: s,
        pad,
        dataFormat: 'NHWC',
        filterShape: f,
      } as unknown as tf.NamedAttrMap) as tf.Tensor;
  };

  it.each(named(CONV_CASES, caseName))('%s', async (_, x, f, s, pad) => {
    const [want] = await on('cpu', run(x, f, s, pad));
    const [got] = await on('wasm', run(x, f, s, pad));
    expectClose(got!, want!);
  });

  it.each(named(CONV_CASES.slice(0, 8), caseName))('%s, accumulated over many small chunks', async (_, x, f, s, pad) => {
    const saved = { ...conv2DBackpropFilterTuning };
    Object.assign(conv2DBackpropFilterTuning, { chunkElements: 1, minChunkPixels: 1 }); // one output row per chunk
    try {
      const [want] = await on('cpu', run(x, f, s, pad));
      const [got] = await on('wasm', run(x, f, s, pad));
      expectClose(got!, want!);
    } finally {
      Object.assign(conv2DBackpropFilterTuning, saved);
    }
  });
});

describe('Conv2DBackpropInput on wasm matches cpu', () => {
  const run = (x: number[], f: number[], s: number | [number, number], pad: Pad) => {
    const fd = rand(f, 3);
    const dyShape = outShape(x, f, s, pad);
    const dyd = rand(dyShape, 4);
    return () =>
      tf.engine().runKernel('Conv2DBackpropInput', { dy: tf.tensor(dyd, dyShape), filter: tf.tensor(fd, f) }, {
        strides: s,
        pad,
        dataFormat: 'NHWC',
        inputShape: x,
      } as unknown as tf.NamedAttrMap) as tf.Tensor;
  };

  /** Run with the kernel's tuning overridden (both formulations, tiny chunks), restoring it after. */
  const withTuning = async (t: Partial<typeof conv2DBackpropInputTuning>, f: () => Promise<void>): Promise<void> => {
    const saved = { ...conv2DBackpropInputTuning };
    Object.assign(conv2DBackpropInputTuning, t);
    try {
      await f();
    } finally {
      Object.assign(conv2DBackpropInputTuning, saved);
    }
  };
  const check = async (x: number[], f: number[], s: number | [number, number], pad: Pad): Promise<void> => {
    const [want] = await on('cpu', run(x, f, s, pad));
    const [got] = await on('wasm', run(x, f, s, pad));
    expectClose(got!, want!);
  };

  it.each(named(CONV_CASES, caseName))('%s, phase convolutions', async (_, x, f, s, pad) => {
    await withTuning({ method: 'conv' }, () => check(x, f, s, pad));
  });
  it.each(named(CONV_CASES, caseName))('%s, GEMM + col2im', async (_, x, f, s, pad) => {
    await withTuning({ method: 'gemm' }, () => check(x, f, s, pad));
  });
  it.each(named(CONV_CASES.slice(0, 8), caseName))('%s, GEMM + col2im over many small chunks', async (_, x, f, s, pad) => {
    await withTuning({ method: 'gemm', chunkElements: 1, minChunkPixels: 1 }, () => check(x, f, s, pad));
  });
});

describe('both conv gradients honour dimRoundingMode (numeric pad, output rows reading past the padding)', () => {
  const cases: [string, number[], number[], number, number, 'ceil' | 'round' | 'floor'][] = [
    ['x=[1,8,8,2] f=[3,3,2,3] s=2 p=1 ceil', [1, 8, 8, 2], [3, 3, 2, 3], 2, 1, 'ceil'],
    ['x=[2,7,9,2] f=[3,3,2,3] s=2 p=1 round', [2, 7, 9, 2], [3, 3, 2, 3], 2, 1, 'round'],
    ['x=[1,8,9,2] f=[2,2,2,3] s=3 p=0 floor', [1, 8, 9, 2], [2, 2, 2, 3], 3, 0, 'floor'],
  ];
  it.each(cases)('%s', async (_, x, f, s, pad, mode) => {
    const info = tf.backend_util.computeConv2DInfo(x as [number, number, number, number], f as [number, number, number, number], s, 1, pad, mode);
    const attrs = { strides: s, pad, dataFormat: 'NHWC', dimRoundingMode: mode } as unknown as tf.NamedAttrMap;
    const xd = rand(x, 13);
    const fd = rand(f, 14);
    const dyd = rand(info.outShape, 15);
    const run = () => [
      tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.tensor(xd, x), dy: tf.tensor(dyd, info.outShape) }, { ...attrs, filterShape: f }) as tf.Tensor,
      tf.engine().runKernel('Conv2DBackpropInput', { dy: tf.tensor(dyd, info.outShape), filter: tf.tensor(fd, f) }, { ...attrs, inputShape: x }) as tf.Tensor,
    ];
    const want = await on('cpu', run);
    for (const method of ['conv', 'gemm'] as const) {
      const saved = conv2DBackpropInputTuning.method;
      conv2DBackpropInputTuning.method = method;
      try {
        const got = await on('wasm', run);
        expectClose(got[0]!, want[0]!);
        expectClose(got[1]!, want[1]!);
      } finally {
        conv2DBackpropInputTuning.method = saved;
      }
    }
  });
});

describe('the full gradient of tf.conv2d (tf.grads) on wasm matches cpu', () => {
  const cases = CONV_CASES.filter(([, , s]) => typeof s === 'number' && s <= 2).slice(0, 10);
  it.each(named(cases, caseName))('%s', async (_, x, f, s, pad) => {
    const xd = rand(x, 5);
    const fd = rand(f, 6);
    const wd = rand(outShape(x, f, s, pad), 7);
    const grads = () => {
      // A weighted sum, so dy is not all ones.
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, pad as 'same'), tf.tensor(wd, outShape(x, f, s, pad)))),
      );
      return g([tf.tensor(xd, x), tf.tensor(fd, f)]);
    };
    const want = await on('cpu', grads);
    const got = await on('wasm', grads);
    expectClose(got[0]!, want[0]!);
    expectClose(got[1]!, want[1]!);
  });
});

describe('BatchMatMul on wasm matches cpu', () => {
  /** [a shape, b shape, transposeA, transposeB] */
  type MmCase = [number[], number[], boolean, boolean];
  const cases: MmCase[] = [
    [[3, 40, 50], [3, 50, 30], false, false],
    [[3, 50, 40], [3, 50, 30], true, false],
    [[3, 40, 50], [3, 30, 50], false, true],
    [[3, 50, 40], [3, 30, 50], true, true],
    [[50, 40], [30, 50], true, true],
    [[64, 48], [40, 48], false, true],
    [[1, 50, 40], [3, 50, 30], true, false],
    [[3, 50, 40], [50, 30], true, false],
    [[3, 40, 50], [50, 30], false, false],
    [[2, 3, 40, 50], [2, 3, 30, 50], false, true],
    [[4, 5], [4, 3], true, false], // tiny: stays on the stock kernel
  ];
  const name = ([a, b, ta, tb]: MmCase): string => `a=[${a}] b=[${b}] tA=${ta} tB=${tb}`;
  it.each(named(cases, name))('%s', async (_, a, b, ta, tb) => {
    const ad = rand(a, 8);
    const bd = rand(b, 9);
    const run = () => tf.matMul(tf.tensor(ad, a), tf.tensor(bd, b), ta, tb);
    const [want] = await on('cpu', run);
    const [got] = await on('wasm', run);
    expectClose(got!, want!);
  });
});

describe('UnsortedSegmentSum on wasm matches cpu', () => {
  /** [x shape, segment ids, numSegments] */
  type SegCase = [number[], number[], number];
  const cases: SegCase[] = [
    [[6, 4], [0, 2, 2, 5, 1, 0], 6],
    [[5, 3, 2], [4, 0, 4, 1, 1], 5],
    [[4, 3], [3, 3, 3, 3], 7], // empty segments are zero
    [[4, 3], [-1, 9, 2, 2], 3], // out-of-range ids are dropped
  ];
  const name = ([x, ids, n]: SegCase): string => `x=[${x}] ids=[${ids}] n=${n}`;
  it.each(named(cases, name))('%s', async (_, x, ids, n) => {
    const xd = rand(x, 10);
    const run = () => tf.unsortedSegmentSum(tf.tensor(xd, x), tf.tensor1d(ids, 'int32'), n);
    const [want] = await on('cpu', run);
    const [got] = await on('wasm', run);
    expectClose(got!, want!, 1e-6);
  });

  it('is the gradient of gather (an embedding table)', async () => {
    const table = rand([50, 8], 11);
    const ids = [3, 7, 3, 49, 0, 7, 7];
    const run = () => tf.grad((t: tf.Tensor) => tf.sum(tf.square(tf.gather(t, tf.tensor1d(ids, 'int32')))))(tf.tensor(table, [50, 8]));
    const [want] = await on('cpu', run);
    const [got] = await on('wasm', run);
    expectClose(got!, want!, 1e-6);
  });
});

describe('ResizeNearestNeighborGrad is the adjoint of the forward resize', () => {
  // Ground truth from the forward kernel itself: resizing an image of pixel indices tells which input pixel each
  // output pixel copies, and the gradient must be the scatter-add of dy by that map.
  /** [backend, images shape, size, alignCorners, halfPixelCenters] */
  type ResizeCase = ['cpu' | 'wasm', number[], [number, number], boolean, boolean];
  const cases: ResizeCase[] = [];
  for (const backend of ['cpu', 'wasm'] as const) {
    cases.push([backend, [2, 4, 4, 3], [8, 8], false, false]);
    cases.push([backend, [3, 3, 5, 2], [7, 11], false, false]);
    cases.push([backend, [2, 5, 4, 2], [3, 9], true, false]);
  }
  // Only the cpu replacement honours halfPixelCenters (the stock wasm kernel ignores it; our models do not use it).
  cases.push(['cpu', [2, 3, 5, 2], [7, 11], false, true]);
  const name = ([b, x, size, ac, hp]: ResizeCase): string => `${b}: x=[${x}] size=[${size}] alignCorners=${ac} halfPixel=${hp}`;
  it.each(named(cases, name))('%s', async (_, backend, x, size, ac, hp) => {
    await useBackend(backend);
    const [n, h, w, c] = x as [number, number, number, number];
    const [oh, ow] = size;
    const dyd = rand([n, oh, ow, c], 12);
    const got = tf.tidy(() => {
      const dy = tf.tensor(dyd, [n, oh, ow, c]);
      const f = (t: tf.Tensor): tf.Scalar => tf.sum(tf.mul(tf.image.resizeNearestNeighbor(t as tf.Tensor4D, size, ac, hp), dy));
      return Float32Array.from(tf.grad(f)(tf.zeros(x)).dataSync());
    });
    const index = tf.tidy(() =>
      tf.image.resizeNearestNeighbor(tf.range(0, h * w).reshape([1, h, w, 1]) as tf.Tensor4D, size, ac, hp).dataSync(),
    );
    const want = new Float32Array(n * h * w * c);
    for (let b = 0; b < n; b++) {
      for (let p = 0; p < oh * ow; p++) {
        for (let k = 0; k < c; k++) {
          const i = (b * h * w + index[p]!) * c + k;
          want[i] = want[i]! + dyd[(b * oh * ow + p) * c + k]!;
        }
      }
    }
    expectClose(got, want, 1e-6);
  });
});

describe('the kernels leak neither tensors nor wasm buffers', () => {
  const backendDataIds = (): number => (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
  const leakCases: [string, () => tf.Tensor[]][] = [
    [
      'conv2d grads (Conv2DBackpropFilter, Conv2DBackpropInput), stride 1',
      () => tf.grads((x: tf.Tensor, f: tf.Tensor) => tf.sum(tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, 'same')))([tf.ones([2, 9, 7, 4]), tf.ones([3, 3, 4, 5])]),
    ],
    [
      'conv2d grads, stride 2 with asymmetric padding',
      () =>
        tf.grads((x: tf.Tensor, f: tf.Tensor) =>
          tf.sum(tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 2, [[0, 0], [0, 1], [0, 1], [0, 0]])),
        )([tf.ones([2, 10, 6, 4]), tf.ones([3, 3, 4, 5])]),
    ],
    [
      'conv2d grads, a big filter over few pixels (the GEMM + col2im input gradient)',
      () =>
        tf.grads((x: tf.Tensor, f: tf.Tensor) => tf.sum(tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, 'same')))([
          tf.ones([1, 2, 3, 16]),
          tf.ones([3, 3, 16, 8]),
        ]),
    ],
    [
      'conv2d forward by per-tap GEMMs (forced) and its grads',
      () => {
        const saved = conv2DTuning.method;
        conv2DTuning.method = 'gemm';
        try {
          return tf.grads((x: tf.Tensor, f: tf.Tensor) => tf.sum(tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 2, 'same')))([
            tf.ones([2, 5, 6, 16]),
            tf.ones([3, 3, 16, 8]),
          ]);
        } finally {
          conv2DTuning.method = saved;
        }
      },
    ],
    [
      'matMul grads (BatchMatMul with transposes and batches)',
      () => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.matMul(a, b, false, true)))([tf.ones([3, 40, 50]), tf.ones([3, 30, 50])]),
    ],
    [
      'gather grad (UnsortedSegmentSum)',
      () => [tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d([1, 1, 4], 'int32'))))(tf.ones([6, 3]))],
    ],
  ];
  it.each(leakCases)('%s', async (_, f) => {
    await useBackend('wasm');
    tf.dispose(tf.tidy(f)); // warm-up: first calls may cache constants
    const tensors = tf.memory().numTensors;
    const ids = backendDataIds();
    for (let i = 0; i < 3; i++) {
      const r = tf.tidy(f); // frees the inputs and every intermediate tensor, keeps the gradients
      r.forEach((t) => t.dataSync());
      tf.dispose(r);
    }
    expect(tf.memory().numTensors).toBe(tensors);
    expect(backendDataIds()).toBe(ids);
  });
});
