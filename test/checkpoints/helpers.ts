// Shared assertions for the checkpoint tests.
import { expect } from 'vitest';
import type { Pipeline } from '../../src/checkpoints/pipeline.js';
import { namedParams } from '../../src/nn/module.js';

type Models = Pick<Pipeline, 'unet' | 'vae' | 'textEncoder'>;

/** Every parameter of `a` and `b` has the same names and the same bytes. */
export function expectIdentical(a: Models, b: Models): void {
  for (const c of ['unet', 'vae', 'textEncoder'] as const) {
    const pa = namedParams(a[c]);
    const pb = namedParams(b[c]);
    expect([...pa.keys()]).toEqual([...pb.keys()]);
    const differ: string[] = [];
    for (const [k, p] of pa) {
      const x = p.t.dataSync() as Float32Array;
      const y = pb.get(k)!.t.dataSync() as Float32Array;
      if (!Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength))) differ.push(`${c}.${k}`);
    }
    expect(differ).toEqual([]);
  }
}
