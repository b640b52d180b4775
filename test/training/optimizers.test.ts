// Optimizers against the PyTorch formulas, computed by hand in float64 (scalar loops written from the torch / lion-pytorch
// / transformers source), and — where torch is installed — against torch.optim.AdamW and SGD themselves.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Adafactor, AdamW, createOptimizer, Lion, SGD, type Optimizer } from '../../src/training/optimizers.js';
import { runPythonJson, torchPython } from '../helpers/python_torch.js';

const P0 = [0.5, -1.25, 2, 0.001, -0.3, 0.75]; // a [2, 3] parameter
const GRADS = [
  [0.1, -0.2, 0.3, -0.4, 0.5, 0.05],
  [-0.3, 0.1, 0.2, 0.0, -0.6, 0.25],
  [0.05, 0.05, -0.5, 0.2, 0.1, -0.15],
];
const LRS = [0.1, 0.05, 0.02];

/** Runs `opt` for the three steps above; the parameter after each step. */
function run(opt: Optimizer, shape = [2, 3]): number[][] {
  const init = tf.tensor(P0, shape);
  const v = tf.variable(init, true, `opt-test-${Math.random()}`);
  init.dispose();
  const out: number[][] = [];
  GRADS.forEach((g, i) => {
    const gt = tf.tensor(g, shape);
    opt.step([v], [gt], LRS[i]!);
    gt.dispose();
    out.push(Array.from(v.dataSync()));
  });
  v.dispose();
  opt.dispose();
  return out;
}

function expectClose(actual: number[][], expected: number[][], atol = 2e-6): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((row, i) => row.forEach((x, j) => expect(Math.abs(x - expected[i]![j]!)).toBeLessThanOrEqual(atol)));
}

function refAdamW(b1: number, b2: number, wd: number, eps: number): number[][] {
  const p = [...P0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  return GRADS.map((g, s) => {
    const t = s + 1;
    const lr = LRS[s]!;
    for (let i = 0; i < p.length; i++) {
      p[i]! *= 1 - lr * wd;
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! ** 2;
      const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** t) + eps;
      p[i]! -= (lr / (1 - b1 ** t)) * (m[i]! / denom);
    }
    return [...p];
  });
}

function refSgd(mu: number, wd: number): number[][] {
  const p = [...P0];
  let buf: number[] | undefined;
  return GRADS.map((g0, s) => {
    const g = g0.map((x, i) => x + wd * p[i]!);
    const d = mu === 0 ? g : (buf = buf ? buf.map((b, i) => mu * b + g[i]!) : [...g]);
    for (let i = 0; i < p.length; i++) p[i]! -= LRS[s]! * d[i]!;
    return [...p];
  });
}

function refLion(b1: number, b2: number, wd: number): number[][] {
  const p = [...P0];
  const m = p.map(() => 0);
  return GRADS.map((g, s) => {
    const lr = LRS[s]!;
    for (let i = 0; i < p.length; i++) {
      const c = Math.sign(b1 * m[i]! + (1 - b1) * g[i]!);
      p[i] = p[i]! * (1 - lr * wd) - lr * c;
      m[i] = b2 * m[i]! + (1 - b2) * g[i]!;
    }
    return [...p];
  });
}

/** transformers Adafactor(lr, scale_parameter=False, relative_step=False, beta1=None) on a [rows, cols] parameter (or 1-D). */
function refAdafactor(wd: number, rows: number, cols: number, factored: boolean): number[][] {
  const p = [...P0];
  const r = Array<number>(rows).fill(0);
  const c = Array<number>(cols).fill(0);
  const v = p.map(() => 0);
  return GRADS.map((g, s) => {
    const t = s + 1;
    const lr = LRS[s]!;
    const b2t = 1 - t ** -0.8;
    const u = g.map((x) => x * x + 1e-30);
    let upd: number[];
    if (factored) {
      for (let i = 0; i < rows; i++) r[i] = b2t * r[i]! + (1 - b2t) * (u.slice(i * cols, (i + 1) * cols).reduce((a, b) => a + b, 0) / cols);
      for (let j = 0; j < cols; j++) c[j] = b2t * c[j]! + (1 - b2t) * (Array.from({ length: rows }, (_, i) => u[i * cols + j]!).reduce((a, b) => a + b, 0) / rows);
      const rMean = r.reduce((a, b) => a + b, 0) / rows;
      upd = g.map((x, k) => x / Math.sqrt(r[Math.floor(k / cols)]! / rMean) / Math.sqrt(c[k % cols]!));
    } else {
      for (let k = 0; k < p.length; k++) v[k] = b2t * v[k]! + (1 - b2t) * u[k]!;
      upd = g.map((x, k) => x / Math.sqrt(v[k]!));
    }
    const rms = Math.sqrt(upd.reduce((a, b) => a + b * b, 0) / upd.length);
    const scale = Math.max(1, rms / 1);
    for (let k = 0; k < p.length; k++) p[k] = p[k]! - wd * lr * p[k]! - (lr * upd[k]!) / scale;
    return [...p];
  });
}

describe('optimizers match the torch formulas (3 steps, varying lr)', () => {
  it.each([
    [0.9, 0.999, 0.01, 1e-8],
    [0.8, 0.99, 0, 1e-3],
    [0.9, 0.999, 0.5, 1e-8],
  ])('AdamW betas (%f, %f), weight_decay %f, eps %g', (b1, b2, wd, eps) => {
    expectClose(run(new AdamW({ betas: [b1, b2], weightDecay: wd, eps })), refAdamW(b1, b2, wd, eps));
  });

  it('AdamW first step is lr·sign(g) (plus decay) — the textbook table', () => {
    const [first] = run(new AdamW({ betas: [0.9, 0.999], weightDecay: 0, eps: 1e-8 }));
    // m̂ = g, v̂ = g² ⇒ Δ = lr · g / (|g| + eps)
    expectClose([first!], [P0.map((p, i) => p - 0.1 * Math.sign(GRADS[0]![i]!) * (Math.abs(GRADS[0]![i]!) / (Math.abs(GRADS[0]![i]!) + 1e-8)))]);
  });

  it.each([
    [0, 0],
    [0.9, 0],
    [0.9, 0.1],
  ])('SGD momentum %f, weight_decay %f', (mu, wd) => {
    expectClose(run(new SGD({ momentum: mu, weightDecay: wd })), refSgd(mu, wd));
  });

  it.each([
    [0.9, 0.99, 0],
    [0.95, 0.98, 0.1],
  ])('Lion betas (%f, %f), weight_decay %f', (b1, b2, wd) => {
    expectClose(run(new Lion({ betas: [b1, b2], weightDecay: wd })), refLion(b1, b2, wd));
  });

  it.each([0, 0.01])('Adafactor factored [2, 3], weight_decay %f', (wd) => {
    expectClose(run(new Adafactor({ weightDecay: wd })), refAdafactor(wd, 2, 3, true), 5e-6);
  });

  it('Adafactor unfactored (1-D)', () => {
    expectClose(run(new Adafactor({ weightDecay: 0 }), [6]), refAdafactor(0, 1, 6, false), 5e-6);
  });
});

describe('optimizer state', () => {
  it.each(['adamw', 'sgd', 'lion', 'adafactor'] as const)('%s: getState/setState continues bit-identically, and leaks nothing', (type) => {
    const before = tf.memory().numTensors;
    const mk = () => createOptimizer(type, { momentum: 0.9, weightDecay: 0.01 });
    const straight = run(mk());
    // two steps, save, restore into a fresh optimizer, one more step
    const a = mk();
    const init = tf.tensor(P0, [2, 3]);
    const v = tf.variable(init, true, `opt-state-${type}`);
    init.dispose();
    for (const s of [0, 1]) {
      const g = tf.tensor(GRADS[s]!, [2, 3]);
      a.step([v], [g], LRS[s]!);
      g.dispose();
    }
    const state = a.getState();
    a.dispose();
    const b = mk();
    b.setState(structuredClone(state));
    const g = tf.tensor(GRADS[2]!, [2, 3]);
    b.step([v], [g], LRS[2]!);
    g.dispose();
    expect(Array.from(v.dataSync())).toEqual(straight[2]);
    expect(state.step).toBe(2);
    expect(Object.values(state.slots[0]!).every((s) => s.data instanceof Float32Array)).toBe(true);
    b.dispose();
    v.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe.runIf(torchPython)('against torch.optim (real PyTorch)', () => {
  const script = (ctor: string) => `
import json, torch
p = torch.nn.Parameter(torch.tensor(${JSON.stringify(P0)}, dtype=torch.float32).reshape(2, 3))
opt = ${ctor}
out = []
for g, lr in zip(${JSON.stringify(GRADS)}, ${JSON.stringify(LRS)}):
    for grp in opt.param_groups: grp['lr'] = lr
    p.grad = torch.tensor(g, dtype=torch.float32).reshape(2, 3)
    opt.step()
    out.append(p.detach().reshape(-1).tolist())
print(json.dumps(out))`;

  it('AdamW(betas=(0.9, 0.999), weight_decay=0.01, eps=1e-8)', async () => {
    const ref = await runPythonJson<number[][]>(script('torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), weight_decay=0.01, eps=1e-8)'));
    expectClose(run(new AdamW({ betas: [0.9, 0.999], weightDecay: 0.01, eps: 1e-8 })), ref, 1e-6);
  });

  it('SGD(momentum=0.9, weight_decay=0.1)', async () => {
    const ref = await runPythonJson<number[][]>(script('torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)'));
    expectClose(run(new SGD({ momentum: 0.9, weightDecay: 0.1 })), ref, 1e-6);
  });
});
