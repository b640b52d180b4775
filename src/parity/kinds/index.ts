// The case kinds the parity runner supports: an explicit list (like tfjs' register_all_kernels.ts). A new kind is
// one handler file plus one line here.
import type { KindHandler } from '../types.js';
import { img2imgKind, inpaintKind, txt2imgKind } from './e2e.js';
import { gradientKind } from './gradient.js';
import { schedulerTableKind } from './scheduler_table.js';
import { schedulerTrajectoryKind } from './scheduler_trajectory.js';
import { textEncoderKind } from './text_encoder.js';
import { tokenizerKind } from './tokenizer.js';
import { torchRngKind } from './torch_rng.js';
import { unetKind } from './unet.js';
import { vaeDecodeKind, vaeEncodeKind } from './vae.js';

export const KIND_HANDLERS: readonly KindHandler[] = [tokenizerKind, textEncoderKind, unetKind, vaeEncodeKind, vaeDecodeKind, schedulerTableKind, schedulerTrajectoryKind, torchRngKind, txt2imgKind, img2imgKind, inpaintKind, gradientKind];

export const KINDS: ReadonlyMap<string, KindHandler> = new Map(KIND_HANDLERS.map((h) => [h.kind, h]));
