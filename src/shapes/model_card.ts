// README.md of checkpoints/tiny-shapes/: how the model was made and what it knows, from the config and the numbers the
// build recorded (stage times, losses, prompt fidelity).
import { vaeScaleFactor } from '../models/vae.js';
import type { TinyShapesConfig } from './config.js';
import type { Accuracy } from './fidelity.js';
import { SHAPES } from './geometry.js';
import { BACKGROUND_COLOURS, comboKey, SHAPE_COLOURS } from './render.js';

/** What scripts/train_tiny_shapes.ts records in `<work>/build.json`. */
export interface BuildRecord {
  /** Wall-clock seconds per stage (summed over resumed runs). */
  seconds: Record<string, number>;
  vae?: { steps: number; firstLoss?: number; finalLoss?: number; finalRec?: number };
  base?: { steps: number; firstLoss?: number; finalLoss?: number };
  fidelity?: { heldIn: Accuracy; heldOut: Accuracy; samplesPerPrompt: number; steps: number; cfgScale: number; sampler: string };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const mins = (s: number | undefined) => (s === undefined ? '–' : `${(s / 60).toFixed(1)} min`);
const num = (x: number | undefined) => (x === undefined ? '–' : x.toPrecision(3));

export function modelCard(c: TinyShapesConfig, r: BuildRecord, params: { unet: number; vae: number; text_encoder: number }): string {
  const d = c.data;
  const unknown = SHAPES.filter((s) => !d.shapes.includes(s));
  const u = c.model.unet;
  const v = c.model.vae;
  const te = c.model.text_encoder;
  const f = vaeScaleFactor(v);
  const t = c.training;
  const fid = r.fidelity;
  const acc = (a: Accuracy) => `${pct(a.all)} | ${pct(a.shape)} | ${pct(a.colour)} | ${pct(a.background)} | ${a.images}`;
  const total = Object.values(r.seconds).reduce((a, b) => a + b, 0);
  return `# tiny-shapes

The embedded default model of sdtrain: a Stable Diffusion 1.x-architecture pipeline (diffusers folder, float16
weights) trained **from scratch by sdtrain** on a synthetic world of ${d.image_size}×${d.image_size} images of one
coloured shape on a plain background. It exists so that sampling and every fine-tuning method can run, and be
checked for learning, in minutes on a CPU. It knows nothing outside its world.

## What it knows

Prompts of the form it was trained on: \`a blue star on a black background\`, \`an orange circle on a white background\`.

- shapes: ${d.shapes.join(', ')}
- shape colours: ${SHAPE_COLOURS.join(', ')}
- backgrounds: ${BACKGROUND_COLOURS.join(', ')} (never the shape's own colour)
- held out — these colour×shape pairs were never drawn, so never captioned: ${d.hold_out.map((h) => `\`${comboKey(h)}\``).join(', ') || 'none'}
${unknown.length > 0 ? `- never seen at all (left for teaching new concepts): ${unknown.join(', ')}\n` : ''}- native size: ${d.image_size}×${d.image_size} pixels (\`--width ${d.image_size} --height ${d.image_size}\`); the scheduler is SD's (PNDM config, ε-prediction), so every sampler works.

## Prompt fidelity

${
  fid
    ? `Each prompt sampled ${fid.samplesPerPrompt}× (${fid.sampler}, ${fid.steps} steps, CFG ${fid.cfgScale}) from this folder's fp16 weights and judged by the pixel classifier of \`src/shapes/classify.ts\` (docs/shapes.md):

| prompts | all three right | shape | colour | background | images |
|---|---|---|---|---|---|
| held-in colour×shape pairs | ${acc(fid.heldIn)} |
| held-out pairs | ${acc(fid.heldOut)} |

\`sample_blue_star.png\`: eight samples of "a blue star on a black background" (seeds 0–7). \`samples.png\`: samples of
held-in prompts (rows of ${fid.samplesPerPrompt * 4}) and, last, held-out ones.`
    : 'Not measured yet (run the eval stage).'
}

## How it was made

\`\`\`sh
npm run build && node dist/scripts/train_tiny_shapes.js --config configs/tiny-shapes.yaml
\`\`\`

\`training_config.yaml\` (here) is that config. Stages, all seeded (seed ${c.seed}):

1. **data** — ${d.n} images from \`src/shapes/render.ts\` (seed ${d.seed}; shape size ${d.min_scale}–${d.max_scale} of the image, random position), captions from the labels.
2. **VAE** — AutoencoderKL, ${v.block_out_channels.length} levels [${v.block_out_channels.join(', ')}], ${v.latent_channels} latent channels (${d.image_size / f}×${d.image_size / f} latents, ${f}× downsampling), ${params.vae.toLocaleString('en')} parameters; ${c.vae.steps} steps of ${c.vae.batch_size}, AdamW ${c.vae.learning_rate}, loss = mean ${c.vae.reconstruction === 'l1' ? 'L1' : 'squared'} reconstruction error + ${c.vae.kl_weight} · mean KL (\`src/shapes/train_vae.ts\`). Loss ${num(r.vae?.firstLoss)} → ${num(r.vae?.finalLoss)} (reconstruction ${num(r.vae?.finalRec)}; \`vae_loss.png\`). scaling_factor = 1/std of the latents = ${v.scaling_factor.toFixed(5)}.
3. **U-Net + text encoder**, jointly from scratch on sdtrain's training loop (\`src/shapes/train_base.ts\`): U-Net [${u.block_out_channels.join(', ')}] with cross-attention (${params.unet.toLocaleString('en')} parameters); CLIP text encoder ${te.num_hidden_layers} layers × ${te.hidden_size} wide, ${te.num_attention_heads} heads, the real CLIP tokenizer and its ${te.vocab_size}-token table (${params.text_encoder.toLocaleString('en')} parameters, most of them the table). ${t.max_train_steps} steps of ${t.batch_size}, AdamW ${t.learning_rate} (${t.lr_scheduler}, ${t.lr_warmup_steps} warm-up steps), min-SNR γ ${t.min_snr_gamma ?? 'off'}, ${typeof t.cond_dropout === 'number' ? pct(t.cond_dropout) : 'scheduled'} of captions dropped (classifier-free guidance). Loss ${num(r.base?.firstLoss)} → ${num(r.base?.finalLoss)} (\`unet_loss.png\`).
4. **export** — this folder, float16 (\`*.fp16.safetensors\`), with the CLIP tokenizer files and SD's scheduler config.

Wall-clock time on the build machine (2 cores, wasm backend, shared with other jobs): data ${mins(r.seconds.data)}, VAE ${mins(r.seconds.vae)}, U-Net + text encoder ${mins(r.seconds.base)}, export ${mins(r.seconds.export)}, eval ${mins(r.seconds.eval)}; total ${mins(total)}.
`;
}
