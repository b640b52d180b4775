// sdtrain as a library: the public API, re-exports only (no side effects: choose a backend with `useBackend` first).
export { useBackend, parseBackendRequest, explainBackendError, type BackendChoice, type BackendRequest } from './backend/backend.js';
export { estimateJob, type MemoryEstimate } from './backend/memory.js';
export * from './errors.js';

// files
export { SafetensorsFile, writeSafetensors } from './formats/safetensors.js';
export { openTorchFile, writeTorchFile, flattenTensors } from './formats/torch.js';
export { openTensorFile } from './formats/tensor_file.js';
export { readPngText, writePngText } from './formats/png_text.js';
export { inspectPath, type FileReport } from './checkpoints/inspect.js';
export { detect, type Detection } from './checkpoints/detect.js';

// models and checkpoints
export { CLIPTokenizer } from './tokenizer/clip_tokenizer.js';
export { CLIPTextModel, parseClipTextConfig } from './models/clip_text.js';
export { UNet2DConditionModel, parseUNetConfig } from './models/unet.js';
export { AutoencoderKL, parseVaeConfig } from './models/vae.js';
export { PRESETS } from './models/presets.js';
export { loadDiffusersFolder, writeDiffusersFolder } from './checkpoints/diffusers_folder.js';
export { loadSingleFile, writeSingleFile } from './checkpoints/single_file.js';

// sampling
export { loadModel, type SdModel } from './pipelines/model.js';
export { generate, generateImages, type GenerateRequest, type GeneratedImage } from './pipelines/generate.js';
export { createSampler, SAMPLERS } from './samplers/index.js';
export { TorchGenerator } from './random/torch_rng.js';
export { parseEmphasis } from './prompts/emphasis.js';
export { buildInfotext, parseInfotext } from './prompts/infotext.js';

// training
export { loadCommandConfig, CONFIG_SCHEMAS } from './config/schema.js';
export { openDataset } from './data/dataset.js';
export { train } from './training/loop.js';
export { TextualInversion } from './training/textual_inversion.js';
export { readLora } from './lora/read.js';
export { applyLoras } from './lora/apply.js';
export { readHypernetwork, writeHypernetworkPt } from './hypernetwork/file.js';
export { Hypernetwork } from './hypernetwork/hypernetwork.js';
export { DreamBooth } from './training/dreambooth.js';
export { ensureClassImages } from './training/class_images.js';
export { LoraTraining } from './training/lora.js';
export { writeKohyaLora, kohyaLoraMetadata } from './lora/write.js';
