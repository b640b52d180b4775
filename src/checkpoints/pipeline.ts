// The three models of a Stable Diffusion checkpoint with their configs, as the loaders return them and the writers take.
import { AutoencoderKL, vaeScaleFactor, type AutoencoderKLConfig } from '../models/vae.js';
import { CLIPTextModel, type CLIPTextConfig } from '../models/clip_text.js';
import { UNet2DConditionModel, type UNet2DConditionConfig } from '../models/unet.js';
import { disposeModule } from '../nn/module.js';

export interface PipelineConfigs {
  unet: UNet2DConditionConfig;
  vae: AutoencoderKLConfig;
  text_encoder: CLIPTextConfig;
}

/**
 * The image side a model was trained at: unet sample_size × the VAE's downscale factor (diffusers' default size);
 * 512 (SD 1.x's) when the U-Net config does not say.
 */
export function nativeImageSize(c: Pick<PipelineConfigs, 'unet' | 'vae'>): number {
  return c.unet.sample_size === null ? 512 : c.unet.sample_size * vaeScaleFactor(c.vae);
}

export interface Pipeline {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  textEncoder: CLIPTextModel;
  configs: PipelineConfigs;
}

/** Shape-only skeletons (no tensors allocated) for the loaders to fill. */
export function buildPipeline(configs: PipelineConfigs): Pipeline {
  return {
    unet: new UNet2DConditionModel(configs.unet),
    vae: new AutoencoderKL(configs.vae),
    textEncoder: new CLIPTextModel(configs.text_encoder),
    configs,
  };
}

export function disposePipeline(p: Pick<Pipeline, 'unet' | 'vae' | 'textEncoder'>): void {
  disposeModule(p.unet);
  disposeModule(p.vae);
  disposeModule(p.textEncoder);
}
