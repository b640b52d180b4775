import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { channelsFirst, channelsLast, maxAbsDiff, toleranceFor } from '../../src/parity/compare.js';
import { parsePythonJson } from '../../src/parity/fixture.js';
import { KINDS } from '../../src/parity/kinds/index.js';
import { runParity } from '../../src/parity/runner.js';
import type { CaseReport } from '../../src/parity/types.js';
import { FIXTURES, hasShared } from '../helpers/shared.js';

describe('parity comparison helpers', () => {
  it('channelsLast / channelsFirst are inverse NCHW <-> NHWC transposes', () => {
    const data = Float32Array.from({ length: 2 * 3 * 2 * 4 }, (_, i) => i);
    const nhwc = channelsLast(data, [2, 3, 2, 4]);
    expect(nhwc.shape).toEqual([2, 2, 4, 3]);
    // element (n=1, c=2, h=1, w=3) sits at NHWC index ((1*2+1)*4+3)*3+2
    expect(nhwc.data[((1 * 2 + 1) * 4 + 3) * 3 + 2]).toBe(((1 * 3 + 2) * 2 + 1) * 4 + 3);
    const back = channelsFirst(nhwc.data, nhwc.shape);
    expect(back.shape).toEqual([2, 3, 2, 4]);
    expect(Array.from(back.data)).toEqual(Array.from(data));
  });

  it('reads JSON as Python writes it (bare NaN / Infinity / -Infinity outside strings)', () => {
    const v = parsePythonJson('{"a": -Infinity, "b": [NaN, Infinity, 1e-5], "s": "NaN -Infinity \\" Infinity", "n": -2}');
    expect(v).toEqual({ a: -Infinity, b: [NaN, Infinity, 1e-5], s: 'NaN -Infinity " Infinity', n: -2 });
  });

  it('maxAbsDiff treats NaN as an infinite error', () => {
    expect(maxAbsDiff([1, 2, 3], [1, 2.5, 3])).toBe(0.5);
    expect(maxAbsDiff([1, NaN], [1, 2])).toBe(Infinity);
  });

  it('tolerance: suggested, else the case maximum, else 1e-4 x max|ref|; integers exact', () => {
    const outputs = {
      a: { key: 'outputs/a', shape: [1], dtype: 'float32', suggested_atol: 2e-5 },
      b: { key: 'outputs/b', shape: [1], dtype: 'float32', suggested_atol: 7e-5 },
      c: { key: 'outputs/c', shape: [1], dtype: 'float32' },
      ids: { key: 'outputs/ids', shape: [1], dtype: 'int64' },
    };
    expect(toleranceFor(outputs.a, outputs, [1])).toEqual({ atol: 2e-5, source: 'suggested' });
    expect(toleranceFor(outputs.c, outputs, [1])).toEqual({ atol: 7e-5, source: 'case' });
    const g = toleranceFor(outputs.c, { c: outputs.c }, [-3, 2]);
    expect(g.source).toBe('guideline');
    expect(g.atol).toBeCloseTo(3e-4, 12);
    expect(toleranceFor(outputs.ids, outputs, [1])).toEqual({ atol: 0, source: 'exact' });
  });
});

describe.runIf(hasShared)('parity runner on shared/fixtures', () => {
  it('every case of a supported kind passes, the rest are skipped, nothing leaks', async () => {
    const before = tf.memory().numTensors;
    const seen: CaseReport[] = [];
    const report = await runParity(FIXTURES, { onCase: (r) => seen.push(r) });
    expect(tf.memory().numTensors).toBe(before);
    expect(seen).toEqual(report.cases);

    const failures = report.cases.flatMap((c) =>
      c.status === 'error' ? [`${c.case}: ${c.reason}`] : c.outputs.filter((o) => !o.pass).map((o) => `${c.case}/${o.output}: ${o.maxAbsErr} > ${o.atol}`),
    );
    expect(failures).toEqual([]);
    for (const c of report.cases) {
      expect(c.status, c.case).toBe(KINDS.has(c.kind) ? 'ran' : 'skipped');
      if (c.status === 'ran') {
        expect(c.outputs.length, c.case).toBeGreaterThan(0);
        // every output of the supported kinds is computed
        expect(c.skippedOutputs, c.case).toEqual([]);
      } else {
        expect(c.reason).toBe(`kind '${c.kind}' not implemented yet`);
      }
    }
    const ran = report.cases.filter((c) => c.status === 'ran').map((c) => c.case);
    expect(ran).toEqual([
      'tokenizer',
      'text_encoder',
      'unet',
      'unet_oddsize',
      'vae_encode',
      'vae_decode',
      'sched_tables',
      'sched_ddim',
      'sched_euler',
      'sched_dpmpp_2m_karras',
      'sched_pndm',
      'sched_dpmpp_2m',
      'sched_euler_ancestral',
      'sched_ddim_eta1',
      'sched_ddpm',
      'sched_add_noise',
      'e2e_txt2img_ddim',
      'e2e_txt2img_euler',
      'e2e_txt2img_dpmpp_2m_karras',
      'e2e_txt2img_pndm',
      'e2e_img2img_ddim',
      'e2e_img2img_euler',
      'e2e_inpaint_legacy_ddim',
      'grad_ti_dreambooth',
      'torch_rng',
    ]);
    // nothing is skipped: every kind in the fixture set has a handler
    expect(report.cases.filter((c) => c.status !== 'ran')).toEqual([]);

    expect(report.tokenizerCases).toBeDefined();
    expect(report.tokenizerCases!.mismatches).toEqual([]);
    expect(report.tokenizerCases!.exact).toBe(report.tokenizerCases!.total - report.tokenizerCases!.skipped.length);
    expect(report.pass).toBe(true);
  });

  it('runs a subset by name and rejects unknown names', async () => {
    const report = await runParity(FIXTURES, { only: ['text_encoder'] });
    expect(report.cases.map((c) => c.case)).toEqual(['text_encoder']);
    expect(report.cases[0]!.outputs.map((o) => o.output)).toEqual([
      'last_hidden_state',
      'pooler_output',
      'penultimate_hidden_state',
      'clip_skip_2_embeds',
    ]);
    expect(report.tokenizerCases).toBeUndefined();
    await expect(runParity(FIXTURES, { only: ['nope'] })).rejects.toThrow(/no such case\(s\).*nope/);
  });
});
