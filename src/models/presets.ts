// Model presets: the diffusers config.json contents of the released Stable Diffusion models, as plain objects built by
// spreading a base. Keys are diffusers/transformers config keys, so a preset and a downloaded `unet/config.json` are the
// same kind of object. The manifests (shared/fixtures/manifests) check every key and shape these produce.
import type { AutoencoderKLConfig } from './vae.js';
import type { CLIPTextConfig } from './clip_text.js';
import type { UNet2DConditionConfig } from './unet.js';

export type PredictionType = 'epsilon' | 'v_prediction';

export interface ModelPreset {
  unet: UNet2DConditionConfig;
  vae: AutoencoderKLConfig;
  text_encoder: CLIPTextConfig;
  /** What the U-Net predicts; the weights cannot tell (SD 2.x 512-base and 768-v are the same architecture). */
  prediction_type: PredictionType;
  /** Native image size in pixels (the U-Net's `sample_size` times the VAE's 8x). */
  sample_size: number;
  /** diffusers `scheduler/scheduler_config.json` of the release (the training noise schedule). */
  scheduler: Record<string, unknown>;
}

export const SD15_UNET: UNet2DConditionConfig = {
  sample_size: 64,
  in_channels: 4,
  out_channels: 4,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 768,
  transformer_layers_per_block: 1,
  // Why "head_dim" holds 8: diffusers stores the number of heads under this name for SD 1.x/2.x
  // (unet_2d_condition.py: "num_attention_heads = num_attention_heads or attention_head_dim"). 8 heads of 40/80/160.
  attention_head_dim: 8,
  num_attention_heads: null,
  use_linear_projection: false,
  upcast_attention: false,
};

export const SD21_UNET: UNet2DConditionConfig = {
  ...SD15_UNET,
  sample_size: 96,
  // Heads again, not head size: LDM's `num_head_channels: 64` gives 320/64, 640/64, 1280/64, 1280/64 heads.
  attention_head_dim: [5, 10, 20, 20],
  cross_attention_dim: 1024,
  use_linear_projection: true,
  // The 768-v release sets it (fp16 overflow in q·kᵀ); tfjs runs float32, where it changes nothing.
  upcast_attention: true,
};

export const SD21_BASE_UNET: UNet2DConditionConfig = { ...SD21_UNET, sample_size: 64, upcast_attention: false };

export const SD15_VAE: AutoencoderKLConfig = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 512,
  scaling_factor: 0.18215,
};

/** OpenAI CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14 as diffusers' SD 1.x text_encoder/config.json has it). */
export const SD15_TEXT_ENCODER: CLIPTextConfig = {
  vocab_size: 49408,
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  projection_dim: 768,
  // The legacy ids the released config carries; eos 2 selects transformers' argmax pooling (see clip_text.ts).
  bos_token_id: 0,
  eos_token_id: 2,
  pad_token_id: 1,
};

/** OpenCLIP ViT-H/14 text tower, as diffusers stores it for SD 2.x: 23 of 24 layers (SD 2.x uses the penultimate). */
export const SD21_TEXT_ENCODER: CLIPTextConfig = {
  ...SD15_TEXT_ENCODER,
  hidden_size: 1024,
  intermediate_size: 4096,
  num_hidden_layers: 23,
  num_attention_heads: 16,
  hidden_act: 'gelu',
  projection_dim: 512,
};

/** The LDM training schedule (`linear_start 0.00085, linear_end 0.012`, 1000 steps) as diffusers' releases ship it. */
export const SD_SCHEDULER: Record<string, unknown> = {
  _class_name: 'PNDMScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  clip_sample: false,
  prediction_type: 'epsilon',
};

export const SD15: ModelPreset = {
  unet: SD15_UNET,
  vae: SD15_VAE,
  text_encoder: SD15_TEXT_ENCODER,
  prediction_type: 'epsilon',
  sample_size: 512,
  scheduler: SD_SCHEDULER,
};

/** 9 input channels: 4 noisy latents + 1 mask + 4 masked-image latents. */
export const SD15_INPAINTING: ModelPreset = { ...SD15, unet: { ...SD15_UNET, in_channels: 9 } };

export const SD21_BASE: ModelPreset = {
  unet: SD21_BASE_UNET,
  vae: SD15_VAE,
  text_encoder: SD21_TEXT_ENCODER,
  prediction_type: 'epsilon',
  sample_size: 512,
  scheduler: SD_SCHEDULER,
};

export const SD21_V: ModelPreset = {
  unet: SD21_UNET,
  vae: { ...SD15_VAE, sample_size: 768 },
  text_encoder: SD21_TEXT_ENCODER,
  prediction_type: 'v_prediction',
  sample_size: 768,
  scheduler: { ...SD_SCHEDULER, prediction_type: 'v_prediction' },
};

export const PRESETS = {
  sd15: SD15,
  'sd15-inpainting': SD15_INPAINTING,
  'sd21-base': SD21_BASE,
  'sd21-v': SD21_V,
} as const satisfies Record<string, ModelPreset>;

export type PresetName = keyof typeof PRESETS;
