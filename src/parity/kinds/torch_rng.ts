// `torch_rng` cases: PyTorch CPU generator outputs, named after the call: `randn_seed<S>_<shape>` (torch.randn),
// `rand_seed<S>_<n>` (torch.rand), `randint_seed<S>_<low>_<high>_x<n>` (torch.randint) and
// `sequential_randn_<a>_then_<b>_then_<c>` (successive randn calls on one generator, seed in the note).
// Shapes come from the fixture's tensor specs. Outputs with other names are left uncomputed (reported as skipped).
import { FormatError } from '../../errors.js';
import { TorchGenerator } from '../../random/torch_rng.js';
import type { TensorSpec } from '../fixture.js';
import type { ComputedOutput, KindHandler } from '../types.js';

function compute(name: string, spec: TensorSpec, where: string): ComputedOutput | undefined {
  const shape = spec.shape;
  let m: RegExpExecArray | null;
  if ((m = /^randn_seed(\d+)_/.exec(name))) return { data: new TorchGenerator(BigInt(m[1]!)).randn(shape), shape };
  if ((m = /^rand_seed(\d+)_/.exec(name))) return { data: new TorchGenerator(BigInt(m[1]!)).rand(shape), shape };
  if ((m = /^randint_seed(\d+)_(-?\d+)_(-?\d+)_/.exec(name))) {
    return { data: new TorchGenerator(BigInt(m[1]!)).randint(Number(m[2]), Number(m[3]), shape), shape };
  }
  if ((m = /^sequential_randn_(\d+(?:_then_\d+)*)$/.exec(name))) {
    const seed = /seeded (\d+)/.exec(spec.note ?? '')?.[1];
    if (seed === undefined) throw new FormatError(where, `output '${name}': its note does not say which seed ("seeded N")`);
    const g = new TorchGenerator(BigInt(seed));
    const parts = m[1]!.split('_then_').map((n) => g.randn([Number(n)]));
    const data = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      data.set(p, at);
      at += p.length;
    }
    return { data, shape: [data.length] };
  }
  return undefined;
}

export const torchRngKind: KindHandler = {
  kind: 'torch_rng',
  components: [],
  async run({ fixture: fx }) {
    const out = new Map<string, ComputedOutput>();
    for (const [name, spec] of Object.entries(fx.spec.outputs)) {
      const got = compute(name, spec, fx.jsonPath);
      if (got) out.set(name, got);
    }
    return out;
  },
};
