// Every A1111 hypernetwork fixture (shared/fixtures/formats/a1111_hypernetwork_*.pt) reads, rebuilds the exact module
// sequence (so the `linear.N` indices come out of the settings), holds the descriptor's tensor values, and reproduces
// the descriptor's `forward_expectations` (torch float32, eval mode) at multipliers 1.0 and 0.5.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readHypernetwork } from '../../src/hypernetwork/file.js';
import type { Hypernetwork } from '../../src/hypernetwork/hypernetwork.js';
import { namedParams } from '../../src/nn/module.js';
import { fixture, hasShared } from '../helpers/shared.js';

interface Stats {
  shape: number[];
  first: number[];
  sum: number;
  abs_sum: number;
}
type Expect = { context_k: number[][] | Stats; context_v: number[][] | Stats };
interface ByMultiplier {
  context_rule: string;
  'multiplier_1.0': Expect;
  /** Missing from the legacy descriptor. */
  'multiplier_0.5'?: Expect;
}
interface Descriptor {
  metadata: Record<string, unknown>;
  layers?: Record<string, { k: Record<string, number[]>; v: Record<string, number[]>; module_sequence: string[]; k_values: Record<string, Stats> }>;
  reader_must_find?: { k: Record<string, Stats> };
  forward_expectations: { by_size: Record<string, ByMultiplier> } | ByMultiplier;
}

const NAMES = ['tiny_relu', 'tiny_relu_ln', 'tiny_swish_actout', 'tiny_dropout', 'tiny_legacy', 'sd1_sizes_ln'];
const path = (n: string) => fixture('formats', `a1111_hypernetwork_${n}.pt`);
const descriptor = (n: string): Descriptor => JSON.parse(readFileSync(`${path(n)}.json`, 'utf8')) as Descriptor;

/** The descriptors' rule: context[0, t, c] = float32(sin(0.1 · (t·size + c + 1))), t < 3. */
function context(size: number): tf.Tensor3D {
  const v = new Float32Array(3 * size);
  for (let t = 0; t < 3; t++) for (let c = 0; c < size; c++) v[t * size + c] = Math.fround(Math.sin(0.1 * (t * size + c + 1)));
  return tf.tensor3d(v, [1, 3, size]);
}

function expectStats(got: Float32Array | Int32Array | Uint8Array, want: Stats, tol: number): void {
  want.first.forEach((x, i) => expect(Math.abs(got[i]! - x)).toBeLessThan(tol));
  let sum = 0;
  let abs = 0;
  for (const x of got) {
    sum += x;
    abs += Math.abs(x);
  }
  expect(Math.abs(sum - want.sum)).toBeLessThan(tol * got.length);
  expect(Math.abs(abs - want.abs_sum)).toBeLessThan(tol * got.length);
}

/**
 * For a descriptor without numbers at multiplier m: H_m(x) = x + m·Seq(x) and Seq(x) = H_1(x) − x, so the expected
 * output follows from the definition and torch's multiplier-1 output.
 */
function fromDefinition(one: Expect, size: number, m: number): Expect {
  const x = context(size);
  const xs = x.arraySync()[0]!;
  x.dispose();
  const at = (h: number[][] | Stats) => (h as number[][]).map((row, t) => row.map((y, c) => xs[t]![c]! + m * (y - xs[t]![c]!)));
  return { context_k: at(one.context_k), context_v: at(one.context_v) };
}

/** Largest |ours − torch| over both outputs and both multipliers, per fixture (reported in the test names' log). */
const worst = new Map<string, number>();

describe.runIf(hasShared)('A1111 hypernetwork fixtures', () => {
  for (const n of NAMES) {
    describe(n, () => {
      const d = descriptor(n);
      let hn: Hypernetwork;

      it('reads with the settings and module sequence of the descriptor', async () => {
        hn = await readHypernetwork(path(n));
        const m = d.metadata;
        expect(hn.name).toBe(m.name);
        expect(hn.step).toBe(m.step);
        expect(hn.sdCheckpoint).toBe(m.sd_checkpoint);
        expect(hn.sdCheckpointName).toBe(m.sd_checkpoint_name);
        if (n === 'tiny_legacy') {
          // A1111's load defaults: [1, 2, 1], no activation, no LN, no dropout, activate_output True (moot here)
          expect(hn.settings).toMatchObject({ layerStructure: [1, 2, 1], activationFunc: null, isLayerNorm: false, activateOutput: true, useDropout: false, lastLayerDropout: false, dropoutStructure: [0, 0, 0], weightInitialization: 'Normal' });
          return;
        }
        expect(hn.settings).toEqual({
          layerStructure: m.layer_structure,
          activationFunc: m.activation_func,
          isLayerNorm: m.is_layer_norm,
          weightInitialization: m.weight_initialization,
          useDropout: m.use_dropout,
          activateOutput: m.activate_output,
          lastLayerDropout: m.last_layer_dropout,
          dropoutStructure: m.dropout_structure,
          optionalInfo: m.optional_info,
        });
        expect(new Set(hn.sizes.map(String))).toEqual(new Set(Object.keys(d.layers!)));
        for (const [size, layer] of Object.entries(d.layers!)) {
          const [k, v] = hn.layers.get(Number(size))!;
          expect(k.describe()).toEqual(layer.module_sequence);
          expect(v.describe()).toEqual(layer.module_sequence);
          // The key indices come from the rebuilt structure and equal the file's.
          expect(Object.fromEntries([...namedParams(k)].map(([key, p]) => [key, [...p.shape]]))).toEqual(layer.k);
          expect(Object.fromEntries([...namedParams(v)].map(([key, p]) => [key, [...p.shape]]))).toEqual(layer.v);
        }
      });

      it('holds the tensor values of the descriptor', () => {
        if (d.reader_must_find) {
          // legacy: linear1/linear2 were renamed to linear.0/linear.1
          const [k] = hn.layers.get(32)!;
          const params = namedParams(k);
          for (const [key, stats] of Object.entries(d.reader_must_find.k)) {
            const p = params.get(key.replace(/^linear([12])/, (_, i: string) => `linear.${Number(i) - 1}`))!;
            expect([...p.shape]).toEqual(stats.shape);
            expectStats(p.t.dataSync(), stats, 1e-7);
          }
          return;
        }
        for (const [size, layer] of Object.entries(d.layers!)) {
          const params = namedParams(hn.layers.get(Number(size))![0]);
          for (const [key, stats] of Object.entries(layer.k_values)) expectStats(params.get(key)!.t.dataSync(), stats, 1e-7);
        }
      });

      const title =
        n === 'tiny_legacy'
          ? 'reproduces forward_expectations at multiplier 1.0, and at 0.5 the value the module definition gives from them (the descriptor has no 0.5 numbers)'
          : 'reproduces forward_expectations at multipliers 1.0 and 0.5 (float32, tolerance 1e-5)';
      it(title, () => {
        const fe = d.forward_expectations;
        const bySize: Record<string, ByMultiplier> = 'by_size' in fe ? fe.by_size : { 32: fe };
        const before = tf.memory().numTensors;
        let max = 0;
        for (const [size, e] of Object.entries(bySize)) {
          expect(e.context_rule).toContain('sin(0.1 * (t * size + c + 1))');
          for (const m of ['1.0', '0.5'] as const) {
            const want = e[`multiplier_${m}`] ?? fromDefinition(e['multiplier_1.0'], Number(size), Number(m));
            const [k, v] = tf.tidy(() => hn.apply(context(Number(size)), context(Number(size)), Number(m)).map((t) => t.squeeze([0])));
            for (const [got, w] of [[k!, want.context_k], [v!, want.context_v]] as const) {
              const data = got.dataSync();
              if (Array.isArray(w)) {
                expect(got.shape).toEqual([w.length, w[0]!.length]);
                w.flat().forEach((x, i) => {
                  max = Math.max(max, Math.abs(data[i]! - x));
                  expect(Math.abs(data[i]! - x)).toBeLessThan(1e-5);
                });
              } else {
                expect(got.shape).toEqual(w.shape);
                w.first.forEach((x, i) => (max = Math.max(max, Math.abs(data[i]! - x))));
                expectStats(data, w, 1e-5);
              }
            }
            tf.dispose([k!, v!]);
          }
        }
        worst.set(n, max);
        expect(tf.memory().numTensors).toBe(before);
        console.log(`hypernetwork parity ${n}: max |ours − torch| = ${max.toExponential(2)}`);
        hn.dispose();
      });
    });
  }
});
