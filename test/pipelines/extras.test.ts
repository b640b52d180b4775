// Extra networks in generate(): a LoRA, an embedding and a hypernetwork (tiny fixtures) change the image, are
// recorded in the infotext with A1111's hashes, and are gone afterwards (the model gives the plain image again).
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transformerAttentions } from '../../src/hypernetwork/apply.js';
import { addnetHash } from '../../src/lora/write.js';
import { generate, type GenerateEvent, type GenerateRequest } from '../../src/pipelines/generate.js';
import { loadModel, type SdModel } from '../../src/pipelines/model.js';
import { parseInfotext } from '../../src/prompts/infotext.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { maxDiff, TINY } from './helpers.js';

const LORA = fixture('formats', 'kohya_lora_tiny_locon.safetensors');
const EMBEDDING = fixture('formats', 'a1111_embedding_tiny.pt');
const HYPERNET = fixture('formats', 'a1111_hypernetwork_tiny_relu.pt');
const REQ: GenerateRequest = { prompt: 'a photo of a1111_embedding_tiny', sampler: 'ddim', steps: 3, cfgScale: 7, width: 96, height: 64, seed: 9 };

describe.runIf(hasShared)('generate with LoRA, embedding and hypernetwork', () => {
  let model: SdModel;
  beforeAll(async () => {
    model = await loadModel(TINY);
  });
  afterAll(() => model?.dispose());

  it('applies them, records them A1111-style, and removes them afterwards', async () => {
    const [plain] = await generate(model, REQ, { rgb: true });
    const before = tf.memory().numTensors;
    const events: GenerateEvent[] = [];
    const [img] = await generate(
      model,
      { ...REQ, loras: [{ path: LORA, weight: 0.8 }], embeddings: [EMBEDDING], hypernetworks: [{ path: HYPERNET, strength: 0.5 }] },
      { rgb: true, onEvent: (e) => events.push(e) },
    );
    expect(tf.memory().numTensors).toBe(before);
    expect(transformerAttentions(model.unet).every((a) => a.kvTransform === undefined)).toBe(true);
    expect(maxDiff(img!.rgb!, plain!.rgb!)).toBeGreaterThan(0);

    const [again] = await generate(model, REQ, { rgb: true });
    expect(again!.rgb).toEqual(plain!.rgb); // LoRA removed bit for bit, hooks detached

    const parsed = parseInfotext(img!.infotext);
    expect(parsed.prompt).toBe('a photo of a1111_embedding_tiny <lora:kohya_lora_tiny_locon:0.8> <hypernet:a1111_hypernetwork_tiny_relu:0.5>');
    const ti = createHash('sha256').update(readFileSync(EMBEDDING)).digest('hex').slice(0, 12);
    expect(parsed.params['Lora hashes']).toBe(`kohya_lora_tiny_locon: ${(await addnetHash(LORA)).slice(0, 12)}`);
    expect(parsed.params['TI hashes']).toBe(`a1111_embedding_tiny: ${ti}`);
    expect(events.filter((e) => e.type === 'warning')).toEqual([]);
  });

  it('an embedding not used by the prompt is not listed; a missing LoRA file fails before anything is applied', async () => {
    const [img] = await generate(model, { ...REQ, prompt: 'a photo', embeddings: [EMBEDDING] });
    expect(parseInfotext(img!.infotext).params['TI hashes']).toBeUndefined();
    const before = tf.memory().numTensors;
    await expect(generate(model, { ...REQ, loras: [{ path: LORA }, { path: '/nonexistent/x.safetensors' }] })).rejects.toThrow(/nonexistent/);
    expect(tf.memory().numTensors).toBe(before);
  });
});
