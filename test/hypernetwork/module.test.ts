// The module as A1111 builds it (positions, widths, activations, layer norm, dropout), creation vs load defaults,
// A1111's initialisers, training mode (seeded dropout, multiplier 1) and trainable variables.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Hypernetwork, creationSettings, loadedSettings, parseDropoutStructure } from '../../src/hypernetwork/hypernetwork.js';
import { ACTIVATION_NAMES, HypernetworkModule, seededRng, type ModuleStructure } from '../../src/hypernetwork/module.js';
import type { Linear } from '../../src/nn/layers.js';
import { namedParams } from '../../src/nn/module.js';

const structure = (s: Partial<ModuleStructure>): ModuleStructure => ({
  layerStructure: [1, 2, 1], activationFunc: null, isLayerNorm: false, activateOutput: false, dropoutStructure: [0, 0, 0], ...s,
});
const keys = (m: HypernetworkModule) => Object.fromEntries([...namedParams(m)].map(([k, p]) => [k, [...p.shape]]));

describe('HypernetworkModule structure', () => {
  it.each([
    ['relu [1,2,1]', 32, structure({ activationFunc: 'relu' }), ['Linear(32->64)', 'ReLU', 'Linear(64->32)'], ['linear.0', 'linear.2']],
    ['relu + LN', 32, structure({ activationFunc: 'relu', isLayerNorm: true }), ['Linear(32->64)', 'ReLU', 'LayerNorm', 'Linear(64->32)', 'LayerNorm'], ['linear.0', 'linear.2', 'linear.3', 'linear.4']],
    ['swish = Hardswish, activate_output', 32, structure({ activationFunc: 'swish', activateOutput: true }), ['Linear(32->64)', 'Hardswish', 'Linear(64->32)', 'Hardswish'], ['linear.0', 'linear.2']],
    ['"linear" adds nothing', 32, structure({ activationFunc: 'linear', activateOutput: true }), ['Linear(32->64)', 'Linear(64->32)'], ['linear.0', 'linear.1']],
    ['dropout after hidden layers', 32, structure({ layerStructure: [1, 1.5, 1.5, 1], activationFunc: 'linear', dropoutStructure: [0, 0.3, 0.3, 0] }), ['Linear(32->48)', 'Dropout', 'Linear(48->48)', 'Dropout', 'Linear(48->32)'], ['linear.0', 'linear.2', 'linear.4']],
    ['int() truncates: 768·0.1 → 76', 768, structure({ layerStructure: [1, 0.1, 1], activationFunc: 'relu', isLayerNorm: true }), ['Linear(768->76)', 'ReLU', 'LayerNorm', 'Linear(76->768)', 'LayerNorm'], ['linear.0', 'linear.2', 'linear.3', 'linear.4']],
    ['prelu has a weight', 8, structure({ activationFunc: 'prelu', activateOutput: true }), ['Linear(8->16)', 'PReLU', 'Linear(16->8)', 'PReLU'], ['linear.0', 'linear.1', 'linear.2', 'linear.3']],
  ] as const)('%s', (_, dim, s, sequence, modules) => {
    const m = new HypernetworkModule(dim, s);
    expect(m.describe()).toEqual(sequence);
    const names = Object.keys(keys(m));
    expect([...new Set(names.map((k) => k.replace(/\.(weight|bias)$/, '')))]).toEqual(modules);
    if (s.activationFunc === 'prelu') expect(keys(m)['linear.1.weight']).toEqual([1]);
  });

  it("rejects what A1111 rejects, with A1111's reasons", () => {
    expect(() => new HypernetworkModule(8, structure({ activationFunc: 'ReLU' }))).toThrow(/unsupported activation function: ReLU \(known: linear, relu/);
    expect(() => new HypernetworkModule(8, structure({ activationFunc: 'threshold' }))).toThrow(/Threshold needs constructor arguments/);
    expect(() => new HypernetworkModule(8, structure({ layerStructure: [1, 2, 2] }))).toThrow(/must start and end with 1/);
    expect(() => new HypernetworkModule(8, structure({ dropoutStructure: [0, 1, 0] }))).toThrow(/dropout probability must be 0 or in \(0, 1\)/);
    expect(() => new HypernetworkModule(8, structure({ layerStructure: [1, 0.1, 1] }))).toThrow(/gives width 0/);
  });
});

describe('settings defaults', () => {
  it('creation: [1,2,1], linear, Normal, activate_output off, last_layer_dropout on', () => {
    expect(creationSettings()).toEqual({
      layerStructure: [1, 2, 1], activationFunc: 'linear', isLayerNorm: false, weightInitialization: 'Normal', useDropout: false,
      activateOutput: false, lastLayerDropout: true, dropoutStructure: [0, 0, 0], optionalInfo: null,
    });
    expect(creationSettings({ useDropout: true }).dropoutStructure).toEqual([0, 0.3, 0]);
    expect(creationSettings({ useDropout: true, layerStructure: [1, 2, 2, 1] }).dropoutStructure).toEqual([0, 0.3, 0.3, 0]);
  });

  it('load: activate_output on, last_layer_dropout off, use_dropout from a non-zero dropout_structure', () => {
    expect(loadedSettings({})).toEqual({
      layerStructure: [1, 2, 1], activationFunc: null, isLayerNorm: false, weightInitialization: 'Normal', useDropout: false,
      activateOutput: true, lastLayerDropout: false, dropoutStructure: [0, 0, 0], optionalInfo: null,
    });
    expect(loadedSettings({ useDropout: true, layerStructure: [1, 2, 2, 1] }).dropoutStructure).toEqual([0, 0.3, 0, 0]);
    expect(loadedSettings({ useDropout: false, dropoutStructure: [0, 0.1, 0] }).useDropout).toBe(true);
    expect(parseDropoutStructure([1, 2, 2, 2, 1], true, true)).toEqual([0, 0.3, 0.3, 0.3, 0]);
  });
});

function stats(t: tf.Tensor): { mean: number; std: number; min: number; max: number } {
  const v = Array.from(t.dataSync());
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
  return { mean, std, min: Math.min(...v), max: Math.max(...v) };
}

describe('initialisation (A1111 create)', () => {
  it.each([
    ['Normal', 0.01, undefined],
    ['XavierNormal', Math.sqrt(2 / (64 + 128)), undefined],
    ['XavierUniform', Math.sqrt(6 / (64 + 128)) / Math.sqrt(3), Math.sqrt(6 / (64 + 128))],
    ['KaimingNormal', Math.sqrt(2 / 64), undefined],
    ['KaimingUniform', Math.sqrt(6 / 64) / Math.sqrt(3), Math.sqrt(6 / 64)],
  ])('%s: Linear weights with std %f, zero biases; LayerNorm weights N(0, 0.01)', (init, std, bound) => {
    const hn = Hypernetwork.create({ weightInitialization: init, isLayerNorm: true, activationFunc: 'prelu' }, [64], { seed: 5 });
    const p = hn.namedParams();
    const w = stats(p.get('64.k.linear.0.weight')!.t); // [128, 64]
    expect(Math.abs(w.mean)).toBeLessThan(std / 10);
    expect(w.std / std).toBeCloseTo(1, 1);
    if (bound) expect(Math.max(-w.min, w.max)).toBeLessThanOrEqual(bound);
    for (const k of ['64.k.linear.0.bias', '64.v.linear.3.bias', '64.k.linear.2.bias']) expect(stats(p.get(k)!.t)).toMatchObject({ min: 0, max: 0 });
    const ln = stats(p.get('64.k.linear.2.weight')!.t); // LayerNorm after the PReLU, not 1s
    expect(ln.std).toBeGreaterThan(0.005);
    expect(ln.std).toBeLessThan(0.015);
    expect(p.get('64.k.linear.1.weight')!.t.dataSync()).toEqual(new Float32Array([0.25])); // PReLU
    hn.dispose();
  });

  it('is deterministic in the seed; k and v differ', () => {
    const a = Hypernetwork.create({}, [16], { seed: 1 });
    const b = Hypernetwork.create({}, [16], { seed: 1 });
    const c = Hypernetwork.create({}, [16], { seed: 2 });
    const w = (h: Hypernetwork, k: string) => h.namedParams().get(k)!.t.dataSync();
    expect(w(a, '16.k.linear.0.weight')).toEqual(w(b, '16.k.linear.0.weight'));
    expect(w(a, '16.k.linear.0.weight')).not.toEqual(w(c, '16.k.linear.0.weight'));
    expect(w(a, '16.k.linear.0.weight')).not.toEqual(w(a, '16.v.linear.0.weight'));
    expect(() => Hypernetwork.create({ weightInitialization: 'Zeros' }, [16])).toThrow(/not one of Normal, XavierUniform/);
    [a, b, c].forEach((h) => h.dispose());
  });
});

describe('forward, training mode, variables', () => {
  const x = () => tf.tensor3d(Float32Array.from({ length: 2 * 5 * 16 }, (_, i) => Math.sin(i)), [2, 5, 16]);

  it('eval: x + Seq(x)·m; training: dropout from the rng, multiplier 1', () => {
    const hn = Hypernetwork.create({ activationFunc: 'relu', useDropout: true, weightInitialization: 'XavierNormal' }, [16], { seed: 3 });
    const [k] = hn.layers.get(16)!;
    expect(k.describe()).toEqual(['Linear(16->32)', 'ReLU', 'Dropout', 'Linear(32->16)']);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const input = x();
      const seq = k.sequence(input);
      for (const m of [1, 0.5, 0]) expect(k.forward(input, m).sub(input.add(seq.mul(m))).abs().max().dataSync()[0]).toBe(0);
      const t1 = k.forward(input, 0.5, { training: true, rng: seededRng(9) });
      const t2 = k.forward(input, 0.5, { training: true, rng: seededRng(9) });
      const t3 = k.forward(input, 0.5, { training: true, rng: seededRng(10) });
      expect(t1.dataSync()).toEqual(t2.dataSync()); // same seed, same masks
      expect(t1.dataSync()).not.toEqual(t3.dataSync());
      // training ignores the multiplier: the same masks at m = 0.5 and m = 1
      expect(k.forward(input, 1, { training: true, rng: seededRng(9) }).dataSync()).toEqual(t1.dataSync());
      // the same thing by hand: Linear, ReLU, mask {0, 1/(1−p)} drawn element by element (P(0) = 0.3), Linear
      const rng = seededRng(9);
      const hidden = tf.relu((k.linear[0] as Linear).forward(input));
      const maskValues = Float32Array.from({ length: hidden.size }, () => (rng() < 0.3 ? 0 : Math.fround(1 / 0.7)));
      const byHand = input.add((k.linear[3] as Linear).forward(hidden.mul(tf.tensor(maskValues, hidden.shape))));
      expect(t1.dataSync()).toEqual(byHand.dataSync());
      const dropped = maskValues.filter((m) => m === 0).length / maskValues.length;
      expect(dropped).toBeGreaterThan(0.25);
      expect(dropped).toBeLessThan(0.35);
    });
    expect(() => tf.tidy(() => k.forward(x(), 1, { training: true }))).toThrow(/needs a random source/);
    expect(tf.memory().numTensors).toBe(before);
    hn.train(seededRng(1));
    expect(hn.training).toBe(true);
    hn.eval();
    hn.dispose();
  });

  it('trainableVariables(): tf.Variables that gradients reach, in namedParams order, without leaking', () => {
    const hn = Hypernetwork.create({ activationFunc: 'mish', isLayerNorm: true, weightInitialization: 'XavierNormal' }, [16, 8], { seed: 2 });
    const before = tf.memory().numTensors;
    const vars = hn.trainableVariables();
    expect(tf.memory().numTensors).toBe(before); // the replaced tensors were freed
    expect(vars.length).toBe(hn.namedParams().size);
    expect(vars.every((v) => v instanceof tf.Variable && v.trainable)).toBe(true);
    expect(hn.trainableVariables()).toEqual(vars);
    hn.train(seededRng(1));
    const { value, grads } = tf.variableGrads(() => {
      const input = x();
      const [k, v] = hn.apply(input, input, 1);
      return k.square().sum().add(v.mul(0.5).sum()) as tf.Scalar;
    }, vars);
    [...hn.namedParams().keys()].forEach((name, i) => {
      const g = grads[vars[i]!.name];
      // the 8-wide pair never sees the 16-wide context: no gradient reaches it
      if (name.startsWith('8.')) return expect(g, name).toBeUndefined();
      expect(tf.tidy(() => g!.abs().sum().dataSync()[0]), name).toBeGreaterThan(0);
    });
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);
    hn.dispose();
    expect(tf.memory().numTensors).toBe(before - vars.length);
  });

  it.each(ACTIVATION_NAMES)('%s: gradients reach every weight and are finite (training mode, large inputs)', (act) => {
    const hn = Hypernetwork.create({ activationFunc: act, activateOutput: true, isLayerNorm: true, useDropout: true, layerStructure: [1, 2, 2, 1], weightInitialization: 'XavierNormal' }, [16], { seed: 4 });
    const vars = hn.trainableVariables();
    hn.train(seededRng(2));
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => {
      const input = x().mul(30); // past softplus' threshold and exp's float32 range
      const [k, v] = hn.apply(input, input, 1);
      return k.square().mean().add(v.mean()) as tf.Scalar;
    }, vars);
    expect(Object.keys(grads).length).toBe(vars.length);
    for (const g of Object.values(grads)) expect(tf.tidy(() => g.isFinite().all().dataSync()[0])).toBe(1);
    expect(Number.isFinite(value.dataSync()[0])).toBe(true);
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);
    hn.dispose();
  });
});
