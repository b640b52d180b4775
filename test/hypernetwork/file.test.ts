// Writing hypernetworks: our .pt reads back identically and has A1111's dict layout; real torch loads it and A1111's
// own loader code (a copy in a1111_reference.py) rebuilds the same modules and computes what we compute, for every
// activation; the .safetensors variant round-trips with its settings in the metadata.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PyOrderedDict, PyTuple, TorchTensorRef, TorchTensorToWrite, type PyValue } from '../../src/formats/pickle.js';
import { SafetensorsFile, writeSafetensors } from '../../src/formats/safetensors.js';
import { openTorchFile, writeTorchFile } from '../../src/formats/torch.js';
import { readHypernetwork, writeHypernetworkPt, writeHypernetworkSafetensors } from '../../src/hypernetwork/file.js';
import { Hypernetwork, type HypernetworkSettings } from '../../src/hypernetwork/hypernetwork.js';
import { ACTIVATION_NAMES } from '../../src/hypernetwork/module.js';
import { namedParams } from '../../src/nn/module.js';
import { runPythonJson, torchPython } from '../helpers/python_torch.js';
import { useTmpDir } from '../helpers/tmp.js';

const tmp = useTmpDir('sdtrain-hn-');

function weights(hn: Hypernetwork): Map<string, Float32Array> {
  return new Map([...hn.namedParams()].map(([k, p]) => [k, p.t.dataSync() as Float32Array]));
}

function expectSame(a: Hypernetwork, b: Hypernetwork): void {
  // A1111 saves last_layer_dropout as dropout_structure[-2] != 0, whatever the attribute was
  const ds = a.settings.dropoutStructure;
  expect(b.settings).toEqual({ ...a.settings, lastLayerDropout: ds[ds.length - 2] !== 0 });
  expect(b.sizes).toEqual(a.sizes);
  const wa = weights(a);
  const wb = weights(b);
  expect([...wb.keys()]).toEqual([...wa.keys()]);
  for (const [k, v] of wa) expect(Buffer.from(wb.get(k)!.buffer).equals(Buffer.from(v.buffer)), k).toBe(true);
}

const VARIANTS: Array<[string, Partial<HypernetworkSettings>]> = [
  ['defaults', {}],
  ['relu LN xavier', { activationFunc: 'relu', isLayerNorm: true, weightInitialization: 'XavierNormal' }],
  ['prelu dropout', { layerStructure: [1, 1.5, 1.5, 1], activationFunc: 'prelu', useDropout: true, weightInitialization: 'KaimingNormal' }],
  ['swish actout 0.1', { layerStructure: [1, 0.1, 1], activationFunc: 'swish', activateOutput: true, weightInitialization: 'XavierUniform' }],
];

describe('hypernetwork .pt writer', () => {
  it.each(VARIANTS)('%s: reads back identically, with the metadata given', async (_, settings) => {
    const hn = Hypernetwork.create(settings, [32, 64], { seed: 7, name: 'made' });
    const path = join(tmp(), 'rt.pt');
    await writeHypernetworkPt(path, hn, { step: 123, sdCheckpoint: 'abcdef0123', sdCheckpointName: 'v1-5' });
    const back = await readHypernetwork(path);
    expectSame(hn, back);
    expect([back.name, back.step, back.sdCheckpoint, back.sdCheckpointName, back.filename]).toEqual(['made', 123, 'abcdef0123', 'v1-5', path]);
    hn.dispose();
    back.dispose();
  });

  it("lays the dict out as A1111's Hypernetwork.save", async () => {
    const hn = Hypernetwork.create({ activationFunc: 'relu', isLayerNorm: true, layerStructure: [1, 1.5, 1], useDropout: true }, [768, 320], { seed: 1, name: 'hn' });
    const path = join(tmp(), 'layout.pt');
    await writeHypernetworkPt(path, hn);
    const f = await openTorchFile(path);
    const root = f.root as Map<unknown, unknown>;
    expect([...root.keys()]).toEqual([768, 320, 'step', 'name', 'layer_structure', 'activation_func', 'is_layer_norm', 'weight_initialization', 'sd_checkpoint', 'sd_checkpoint_name', 'activate_output', 'use_dropout', 'dropout_structure', 'last_layer_dropout', 'optional_info']);
    const pair = root.get(768) as PyTuple;
    expect(pair).toBeInstanceOf(PyTuple);
    for (const sd of pair.items as PyOrderedDict[]) {
      expect(sd).toBeInstanceOf(PyOrderedDict);
      // Linear, ReLU, LayerNorm, Dropout(0.3), Linear, LayerNorm
      expect([...sd.keys()]).toEqual(['linear.0.weight', 'linear.0.bias', 'linear.2.weight', 'linear.2.bias', 'linear.4.weight', 'linear.4.bias', 'linear.5.weight', 'linear.5.bias']);
      expect([...sd.values()].every((t) => t instanceof TorchTensorRef && !t.requiresGrad && !t.isParameter)).toBe(true);
      expect([...(sd.attrs!.get('_metadata') as Map<string, unknown>).keys()]).toEqual(['', 'linear', 'linear.0', 'linear.1', 'linear.2', 'linear.3', 'linear.4', 'linear.5']);
    }
    expect(f.tensors.find((t) => t.name === '768.0.linear.0.weight')?.shape).toEqual([1152, 768]);
    expect(root.get('dropout_structure')).toEqual([0, 0.3, 0]);
    expect(root.get('last_layer_dropout')).toBe(true);
    expect([root.get('activate_output'), root.get('use_dropout'), root.get('optional_info'), root.get('sd_checkpoint')]).toEqual([false, true, null, null]);
    await f.close();
    hn.dispose();
  });
});

describe('hypernetwork .safetensors', () => {
  it.each(VARIANTS)('%s: round-trips with the settings in the metadata', async (_, settings) => {
    const hn = Hypernetwork.create(settings, [64, 32], { seed: 3, name: 'st' });
    hn.step = 55;
    const path = join(tmp(), 'rt.safetensors');
    await writeHypernetworkSafetensors(path, hn, { sdCheckpointName: 'model' });
    const f = await SafetensorsFile.open(path);
    expect(f.metadata['sdtrain.format']).toBe('hypernetwork');
    const meta = JSON.parse(f.metadata['sdtrain.hypernetwork']!) as Record<string, unknown>;
    expect(meta).toMatchObject({ sizes: [64, 32], name: 'st', step: 55, sd_checkpoint_name: 'model', layer_structure: hn.settings.layerStructure, activation_func: hn.settings.activationFunc });
    expect(new Set(f.tensors.map((t) => t.name))).toEqual(new Set(hn.namedParams().keys()));
    expect(f.tensors.find((t) => t.name === '64.v.linear.0.weight')?.shape).toEqual([...hn.namedParams().get('64.v.linear.0.weight')!.shape]);
    await f.close();
    const back = await readHypernetwork(path);
    expectSame(hn, back);
    expect([back.name, back.step, back.sdCheckpointName]).toEqual(['st', 55, 'model']);
    hn.dispose();
    back.dispose();
  });

  it('refuses a safetensors file that is not one of ours', async () => {
    const other = join(tmp(), 'other.safetensors');
    await writeSafetensors(other, { x: { shape: [1], data: new Float32Array(1) } });
    await expect(readHypernetwork(other)).rejects.toThrow(/not an sdtrain hypernetwork/);
  });
});

describe('hypernetwork reader errors', () => {
  /** A relu [1, 2, 1] state dict for width 8 (keys linear.0, linear.2) under the given settings keys. */
  async function file(name: string, settings: Array<[string, PyValue]>): Promise<string> {
    const sd = () => {
      const d = new PyOrderedDict();
      for (const [k, shape] of [['linear.0.weight', [16, 8]], ['linear.0.bias', [16]], ['linear.2.weight', [8, 16]], ['linear.2.bias', [8]]] as const) {
        d.set(k, new TorchTensorToWrite({ shape: [...shape], data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }));
      }
      return d;
    };
    const path = join(tmp(), name);
    await writeTorchFile(path, new Map<PyValue, PyValue>([[8, new PyTuple([sd(), sd()])], ...settings]));
    return path;
  }

  it('reads keys at the positions the settings give, strictly (as load_state_dict)', async () => {
    const ok = await readHypernetwork(await file('ok.pt', [['activation_func', 'relu'], ['activate_output', false]]));
    expect(ok.layers.get(8)![0].describe()).toEqual(['Linear(8->16)', 'ReLU', 'Linear(16->8)']);
    ok.dispose();
    // activate_output missing: A1111's load default True adds a ReLU after the last Linear; the keys still fit
    const dflt = await readHypernetwork(await file('default.pt', [['activation_func', 'relu']]));
    expect(dflt.layers.get(8)![0].describe()).toEqual(['Linear(8->16)', 'ReLU', 'Linear(16->8)', 'ReLU']);
    dflt.dispose();
    await expect(readHypernetwork(await file('ln.pt', [['activation_func', 'relu'], ['is_layer_norm', true]]))).rejects.toThrow(
      /hypernetwork module 8\.k \(Linear\(8->16\), ReLU, LayerNorm, Linear\(16->8\), ReLU, LayerNorm\) weights do not match.*missing 4 keys: linear\.3\.weight.*linear\.2\.weight \(file \[8, 16\], structure expects \[16\]\)/,
    );
    await expect(readHypernetwork(await file('none.pt', []))).rejects.toThrow(/missing 2 keys: linear\.1\.weight, linear\.1\.bias; unexpected 2 keys: linear\.2\.weight, linear\.2\.bias/);
    await expect(readHypernetwork(await file('act.pt', [['activation_func', 'glu']]))).rejects.toThrow(/unsupported activation function: glu \(torch\.nn\.GLU halves the width/);
    await expect(readHypernetwork(await file('ls.pt', [['layer_structure', [2, 1]]]))).rejects.toThrow(/layer_structure must start and end with 1/);
  });
});

/** context [2, 3, size] as a1111_reference.py builds it. */
function context(size: number): tf.Tensor3D {
  const v = new Float32Array(2 * 3 * size);
  for (let i = 0; i < v.length; i++) v[i] = Math.fround(Math.sin(0.1 * (i + 1)));
  return tf.tensor3d(v, [2, 3, size]);
}

interface RefFile {
  types: Record<string, unknown>;
  int_keys: number[];
  metadata: Record<string, unknown>;
  sequences: Record<string, string[]>;
  outputs: Record<string, Record<string, [number[][][], number[][][]]>>;
}

describe.runIf(torchPython)("real torch + A1111's loader code (a1111_reference.py)", () => {
  it('loads our files with the right Python types and computes what we compute, for every activation', async () => {
    const names = ACTIVATION_NAMES.filter((n) => n !== 'linear');
    const files = new Map<string, Hypernetwork>();
    for (const act of [...names, null, 'linear']) {
      const hn = Hypernetwork.create(
        { activationFunc: act, activateOutput: act === 'relu', isLayerNorm: act === 'gelu', layerStructure: act === 'tanh' ? [1, 0.5, 1.5, 1] : [1, 2, 1], useDropout: act === 'tanh', weightInitialization: 'XavierNormal' },
        [16, 24],
        { seed: names.indexOf(act ?? '') + 10, name: `hn-${act}` },
      );
      const path = join(tmp(), `act-${act}.pt`);
      await writeHypernetworkPt(path, hn, { step: 9, sdCheckpoint: null, sdCheckpointName: 'm' });
      files.set(path, hn);
    }
    const script = readFileSync(fileURLToPath(new URL('./a1111_reference.py', import.meta.url)), 'utf8');
    const ref = await runPythonJson<{ version: string; activation_names: string[]; files: Record<string, RefFile> }>(script, [...files.keys()]);

    // A1111's activation table on this torch, minus what it cannot build, is ours
    expect(ref.activation_names.filter((n) => !['threshold', 'glu', 'multiheadattention'].includes(n)).sort()).toEqual([...ACTIVATION_NAMES].sort());

    let max = 0;
    for (const [path, hn] of files) {
      const r = ref.files[path]!;
      expect(r.int_keys).toEqual([16, 24]);
      const k16 = (r.types['16'] as { tuple: Array<{ OrderedDict: Record<string, string> }> }).tuple[0]!.OrderedDict;
      expect(Object.keys(k16)).toEqual([...namedParams(hn.layers.get(16)![0]).keys()]);
      expect(Object.values(k16).every((t) => /^Tensor torch.float32 \[.*\] grad=False$/.test(t))).toBe(true);
      const ls = hn.settings.layerStructure.map(() => 'float');
      expect(r.types).toMatchObject({
        step: 'int', name: 'str', layer_structure: ls, activation_func: hn.settings.activationFunc === null ? 'None' : 'str', is_layer_norm: 'bool',
        weight_initialization: 'str', sd_checkpoint: 'None', sd_checkpoint_name: 'str', activate_output: 'bool', use_dropout: 'bool',
        dropout_structure: hn.settings.dropoutStructure.map((p) => (p === 0 ? 'int' : 'float')), last_layer_dropout: 'bool', optional_info: 'None',
      });
      expect(r.metadata).toMatchObject({ step: 9, name: hn.name, layer_structure: hn.settings.layerStructure, dropout_structure: hn.settings.dropoutStructure });
      for (const size of [16, 24]) {
        const [k] = hn.layers.get(size)!;
        expect(r.sequences[size]).toEqual(k.describe().map((d) => d.replace(/\(.*\)$/, '')));
        for (const m of ['1.0', '0.5']) {
          const [wantK, wantV] = r.outputs[size]![m]!;
          const got = tf.tidy(() => hn.apply(context(size), context(size), Number(m)).map((t) => t.arraySync() as number[][][]));
          for (const [g, w] of [[got[0]!, wantK], [got[1]!, wantV]] as const) {
            const gf = g.flat(2);
            w.flat(2).forEach((x, i) => (max = Math.max(max, Math.abs(gf[i]! - x) / Math.max(1, Math.abs(x)))));
          }
        }
      }
      hn.dispose();
    }
    console.log(`torch ${ref.version}: our hypernetwork forward vs A1111's code, max relative difference ${max.toExponential(2)} over ${files.size} files`);
    expect(max).toBeLessThan(1e-5);
  });
});
