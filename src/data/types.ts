// Types shared by the data pipeline (scan → captions → buckets → batches → images/latents).
import type { z } from 'zod';
import type { CAPTION_SOURCES, DataSchema } from '../config/schema_common.js';

/** The validated `data` section of a run config (`EmbedConfig['data']` etc.). */
export type DataConfig = z.output<typeof DataSchema>;
/** One entry of `data.datasets`. */
export type SubsetConfig = DataConfig['datasets'][number];
/** `data.datasets[].caption`. */
export type CaptionConfig = SubsetConfig['caption'];
export type CaptionSource = (typeof CAPTION_SOURCES)[number];

/** Where an image's caption comes from, resolved once at scan time. */
export interface CaptionInfo {
  /** The source that gave the caption; `null` when none did (the caption is then ''). */
  source: CaptionSource | null;
  /**
   * The caption text (whitespace collapsed). For source 'template' this is the `[filewords]` text: the caption from
   * the first non-template source (in the configured order) that has one for this image, or ''.
   */
  text: string;
}

/** A usable training image. */
export interface DataItem {
  /** Position in `Dataset.items` (scan order: subset, then relPath in code-unit order). */
  index: number;
  /** Absolute path. */
  path: string;
  /** Path relative to the subset folder, '/'-separated. */
  relPath: string;
  /** Index into `data.datasets`. */
  subset: number;
  /** Size after EXIF orientation. */
  width: number;
  height: number;
  /** sha256 (hex) of the file's bytes. */
  sha256: string;
  caption: CaptionInfo;
}

/** A file that was found but not used, and why. */
export interface SkippedFile {
  path: string;
  subset: number;
  reason: string;
}

/** A training size (pixels); without bucketing the only one is resolution × resolution. */
export interface Bucket {
  width: number;
  height: number;
}

/** A position in the infinite batch stream: `index` is the batch number inside `epoch` (both from 0). */
export interface DataCursor {
  epoch: number;
  index: number;
}

export type Warn = (message: string) => void;
