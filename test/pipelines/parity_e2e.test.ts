// The e2e parity cases (whole diffusers txt2img / img2img / legacy-inpaint calls) through the sampling core.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { runParity } from '../../src/parity/runner.js';
import { FIXTURES, hasShared } from '../helpers/shared.js';

const CASES = [
  'e2e_txt2img_ddim',
  'e2e_txt2img_euler',
  'e2e_txt2img_dpmpp_2m_karras',
  'e2e_txt2img_pndm',
  'e2e_img2img_ddim',
  'e2e_img2img_euler',
  'e2e_inpaint_legacy_ddim',
];

describe.runIf(hasShared)('e2e parity cases (txt2img, img2img, inpaint)', () => {
  it('every output of every e2e case is computed and within its tolerance, with no tensor left behind', async () => {
    const before = tf.memory().numTensors;
    const report = await runParity(FIXTURES, { only: CASES });
    expect(tf.memory().numTensors).toBe(before);
    for (const c of report.cases) {
      expect(c.status, `${c.case}: ${c.reason ?? ''}`).toBe('ran');
      expect(c.skippedOutputs, c.case).toEqual([]);
      for (const o of c.outputs) console.log(`${o.pass ? 'PASS' : 'FAIL'} ${c.case}/${o.output} max_abs=${o.maxAbsErr.toExponential(2)} atol=${o.atol}`);
    }
    const outputs = report.cases.flatMap((c) => c.outputs.map((o) => `${c.case}/${o.output}`));
    expect(outputs).toEqual([
      'e2e_txt2img_ddim/timesteps', 'e2e_txt2img_ddim/final_latents', 'e2e_txt2img_ddim/image', 'e2e_txt2img_ddim/image_postprocessed',
      'e2e_txt2img_euler/timesteps', 'e2e_txt2img_euler/sigmas', 'e2e_txt2img_euler/final_latents', 'e2e_txt2img_euler/image', 'e2e_txt2img_euler/image_postprocessed',
      'e2e_txt2img_dpmpp_2m_karras/timesteps', 'e2e_txt2img_dpmpp_2m_karras/sigmas', 'e2e_txt2img_dpmpp_2m_karras/final_latents',
      'e2e_txt2img_dpmpp_2m_karras/image', 'e2e_txt2img_dpmpp_2m_karras/image_postprocessed',
      'e2e_txt2img_pndm/timesteps', 'e2e_txt2img_pndm/final_latents', 'e2e_txt2img_pndm/image', 'e2e_txt2img_pndm/image_postprocessed',
      'e2e_img2img_ddim/timesteps', 'e2e_img2img_ddim/timesteps_used', 'e2e_img2img_ddim/final_latents', 'e2e_img2img_ddim/image_out',
      'e2e_img2img_euler/timesteps', 'e2e_img2img_euler/timesteps_used', 'e2e_img2img_euler/final_latents', 'e2e_img2img_euler/image_out',
      'e2e_inpaint_legacy_ddim/timesteps', 'e2e_inpaint_legacy_ddim/final_latents',
    ]);
    expect(report.cases.flatMap((c) => c.outputs.filter((o) => !o.pass).map((o) => `${c.case}/${o.output}`))).toEqual([]);
    expect(report.pass).toBe(true);
  });
});
