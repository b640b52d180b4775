// Finding training images: every subset folder is searched recursively (fast-glob; dot files and folders ignored)
// for .jpg/.jpeg/.png/.webp/.avif/.gif in any letter case. Each image is read once: hashed (sha256, for the latent
// cache), fully decoded (so a corrupt or truncated file is found now, reported in `skipped` and through onWarning,
// and never reaches training) and captioned. Image-like files of formats we do not read (.bmp, .tiff, ...) are
// skipped with that reason; other files (captions, metadata.jsonl, ...) are ignored. Caption problems (a caption file
// that is not UTF-8, a malformed metadata.jsonl) are errors: fixing them beats training on the wrong text.
// A subset without a single usable image is an error naming its folder.
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import fg from 'fast-glob';
import { FormatError, SdtrainError } from '../errors.js';
import { readMetadataJsonl, resolveCaption } from './captions.js';
import { IMAGE_EXTENSIONS, probeImage, UNSUPPORTED_IMAGE_EXTENSIONS } from './images.js';
import type { DataItem, SkippedFile, SubsetConfig, Warn } from './types.js';

export interface ScanOptions {
  onWarning?: Warn;
  /** Called after each image is read: (done, total) over all subsets. */
  onProgress?: (done: number, total: number) => void;
  /** Images read in parallel (default 4). */
  concurrency?: number;
}

export interface ScanResult {
  /** Usable images: subset by subset, each subset's in code-unit order of relPath. */
  items: DataItem[];
  skipped: SkippedFile[];
}

async function listFiles(folder: string, index: number): Promise<string[]> {
  const where = `data.datasets[${index}].path`;
  let isDir: boolean;
  try {
    isDir = (await stat(folder)).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SdtrainError(`${where}: ${folder} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (err as Error).message})`}`, { cause: err });
  }
  if (!isDir) throw new SdtrainError(`${where}: ${folder} is a file, expected a folder of images`);
  const rel = await fg('**/*', { cwd: folder, onlyFiles: true, dot: false, followSymbolicLinks: true, suppressErrors: true });
  return rel.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

async function mapPool<T, R>(xs: readonly T[], n: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(xs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await f(xs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, xs.length) }, worker));
  return out;
}

/** The reason text of a FormatError about `file` (its message without the leading "file: "). */
function reasonOf(err: unknown, file: string): string {
  const msg = (err as Error).message;
  return msg.startsWith(`${file}: `) ? msg.slice(file.length + 2) : msg;
}

type Found = { folder: string; index: number; images: string[]; metadata: Map<string, string> };

/** Scans all subsets (see the top of this file). */
export async function scanDatasets(datasets: readonly SubsetConfig[], opts: ScanOptions = {}): Promise<ScanResult> {
  if (datasets.length === 0) {
    throw new SdtrainError('data.datasets is empty: add at least one folder of training images (data.datasets: [{path: my-images}])');
  }
  const warn = opts.onWarning ?? (() => undefined);
  const skipped: SkippedFile[] = [];
  const found: Found[] = [];
  for (const [index, ds] of datasets.entries()) {
    const folder = path.resolve(ds.path);
    const files = await listFiles(folder, index);
    const metadata = new Map<string, string>();
    if (ds.caption.source.includes('metadata')) {
      for (const f of files.filter((f) => path.posix.basename(f) === 'metadata.jsonl')) {
        for (const [k, v] of await readMetadataJsonl(path.join(folder, f))) metadata.set(k, v);
      }
    }
    const images: string[] = [];
    for (const rel of files) {
      const ext = path.extname(rel).toLowerCase();
      if (IMAGE_EXTENSIONS.has(ext)) images.push(rel);
      else if (UNSUPPORTED_IMAGE_EXTENSIONS.has(ext)) {
        skipped.push({ path: path.join(folder, rel), subset: index, reason: `unsupported image format '${ext}' (use png, jpg, webp, avif or gif)` });
      }
    }
    found.push({ folder, index, images, metadata });
  }

  const total = found.reduce((n, f) => n + f.images.length, 0);
  let done = 0;
  const items: DataItem[] = [];
  for (const { folder, index, images, metadata } of found) {
    const cfg = datasets[index]!.caption;
    const results = await mapPool(images, opts.concurrency ?? 4, async (rel): Promise<DataItem | SkippedFile> => {
      const file = path.join(folder, rel);
      try {
        let bytes: Buffer;
        try {
          bytes = await readFile(file);
        } catch (err) {
          throw new FormatError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
        }
        const { width, height } = await probeImage(bytes, file);
        const caption = await resolveCaption(file, bytes, cfg, { metadata });
        const sha256 = createHash('sha256').update(bytes).digest('hex');
        return { index: -1, path: file, relPath: rel, subset: index, width, height, sha256, caption };
      } catch (err) {
        // Only the image itself is skippable; a bad caption or metadata file is the user's to fix.
        if (err instanceof FormatError && err.file === file) return { path: file, subset: index, reason: reasonOf(err, file) };
        throw err;
      } finally {
        opts.onProgress?.(++done, total);
      }
    });
    for (const r of results) {
      if ('reason' in r) skipped.push(r);
      else items.push({ ...r, index: items.length });
    }
    const used = new Set(images.map((rel) => path.join(folder, rel)));
    const orphans = [...metadata.keys()].filter((k) => !used.has(k));
    if (orphans.length > 0) {
      const some = orphans.slice(0, 3).map((p) => path.relative(folder, p)).join(', ');
      warn(`${folder}: metadata.jsonl names ${orphans.length} file(s) that are not images in the folder (${some}${orphans.length > 3 ? ', ...' : ''})`);
    }
  }
  skipped.sort((a, b) => a.subset - b.subset || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const s of skipped) warn(`skipped ${s.path}: ${s.reason}`);

  const empty = found.filter((f) => !items.some((it) => it.subset === f.index));
  if (empty.length > 0) {
    const list = empty.map((f) => {
      const bad = skipped.filter((s) => s.subset === f.index).length;
      return `${f.folder} (data.datasets[${f.index}].path${bad > 0 ? `; ${bad} file(s) skipped` : '; no png/jpg/webp/avif/gif files'})`;
    });
    throw new SdtrainError(`no usable training images in ${list.join(', ')}`);
  }
  return { items, skipped };
}
