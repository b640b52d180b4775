// The A1111 parameters of a generated image: sampler names, key order, extra-network tags, parse-back.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageInfotext, infotextParams, samplerFromInfotext, samplerInfotext, splitExtraNetworks } from '../../src/pipelines/infotext_params.js';
import { parseInfotext } from '../../src/prompts/infotext.js';
import { SAMPLERS } from '../../src/config/schema_common.js';
import { fixture, hasShared } from '../helpers/shared.js';

const BASE = { prompt: 'a cat', steps: 20, sampler: 'euler_a' as const, cfgScale: 7, seed: 1, width: 512, height: 768, version: 'sdtrain 0.1.0' };

describe('infotext parameters', () => {
  it('uses A1111 sampler names, with Schedule type where A1111 needs it, and reads them back', () => {
    expect(SAMPLERS.map((s) => samplerInfotext(s))).toEqual([
      { sampler: 'DDIM' },
      { sampler: 'PLMS' },
      { sampler: 'Euler' },
      { sampler: 'Euler a' },
      { sampler: 'DPM++ 2M', scheduleType: 'Uniform' },
      { sampler: 'DPM++ 2M', scheduleType: 'Karras' },
      { sampler: 'DDPM' },
    ]);
    for (const s of SAMPLERS) {
      const { sampler, scheduleType } = samplerInfotext(s);
      expect(samplerFromInfotext(sampler, scheduleType)).toBe(s);
    }
    expect(samplerFromInfotext('DPM++ 2M Karras')).toBe('dpmpp_2m_karras'); // before A1111 1.9
    expect(samplerFromInfotext('DPM++ 2M', 'Automatic')).toBe('dpmpp_2m_karras');
    expect(samplerFromInfotext('UniPC')).toBeUndefined();
  });

  it("writes A1111's keys in A1111's order and leaves out what does not apply", () => {
    const text = imageInfotext({
      ...BASE,
      negativePrompt: 'blurry, lowres',
      sampler: 'dpmpp_2m_karras',
      modelHash: '6ce0161689',
      modelName: 'v1-5-pruned-emaonly',
      clipSkip: 2,
      loras: [{ name: 'sks_dog', weight: 0.8, hash: '0123456789ab' }],
      embeddings: [{ name: 'cattoy-sd1', hash: 'abcdef012345' }],
    });
    expect(text).toBe(
      'a cat <lora:sks_dog:0.8>\nNegative prompt: blurry, lowres\n' +
        'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, Model hash: 6ce0161689, ' +
        'Model: v1-5-pruned-emaonly, Clip skip: 2, RNG: CPU, Lora hashes: "sks_dog: 0123456789ab", TI hashes: "cattoy-sd1: abcdef012345", Version: sdtrain 0.1.0',
    );
    const img2img = infotextParams({ ...BASE, denoisingStrength: 0.55, maskBlur: 4, batchSize: 2, batchPos: 1, eta: 0.5, sampler: 'ddim', emphasis: 'no_norm', clipSkip: 1 });
    expect(img2img.filter(([, v]) => v !== undefined)).toEqual([
      ['Steps', 20],
      ['Sampler', 'DDIM'],
      ['CFG scale', 7],
      ['Seed', 1],
      ['Size', '512x768'],
      ['Batch size', 2],
      ['Batch pos', 1],
      ['Denoising strength', 0.55],
      ['RNG', 'CPU'],
      ['Eta DDIM', 0.5],
      ['Mask blur', 4],
      ['Emphasis', 'No norm'],
      ['Version', 'sdtrain 0.1.0'],
    ]);
  });

  it('extra-network tags use A1111 syntax (<lora:name:te:unet>) and split back out', () => {
    const text = imageInfotext({
      ...BASE,
      loras: [{ name: 'a', weight: 1 }, { name: 'b', weight: 0.7, teWeight: 0.3 }],
      hypernetworks: [{ name: 'anime', strength: 0.5 }],
    });
    const parsed = parseInfotext(text);
    expect(parsed.prompt).toBe('a cat <lora:a:1> <lora:b:0.3:0.7> <hypernet:anime:0.5>');
    expect(splitExtraNetworks(parsed.prompt)).toEqual({
      prompt: 'a cat',
      loras: [{ name: 'a', weight: 1 }, { name: 'b', weight: 0.7, teWeight: 0.3 }],
      hypernetworks: [{ name: 'anime', strength: 0.5 }],
    });
  });

  it.runIf(hasShared)('matches the reference infotext of prompts/infotext.json case 0 (same parameters)', () => {
    const ref = JSON.parse(readFileSync(fixture('prompts', 'infotext.json'), 'utf8')) as { cases: Array<{ infotext: string }> };
    const text = imageInfotext({
      ...BASE,
      prompt: 'a photo of (a cat:1.2), masterpiece',
      negativePrompt: 'blurry, lowres',
      sampler: 'dpmpp_2m_karras',
      seed: 1234567890,
      modelHash: '6ce0161689',
      modelName: 'v1-5-pruned-emaonly',
      clipSkip: 2,
      loras: [{ name: 'sks_dog', weight: 1, hash: '0123456789ab' }],
      embeddings: [{ name: 'cattoy-sd1', hash: 'abcdef012345' }],
      version: 'v1.10.1',
    });
    // ours adds the LoRA tag to the prompt and "RNG: CPU"; everything else is A1111's text
    expect(text.replace(' <lora:sks_dog:1>', '').replace(' RNG: CPU,', '')).toBe(ref.cases[0]!.infotext);
  });
});
