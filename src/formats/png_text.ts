// PNG text chunks: read tEXt / zTXt / iTXt, and insert tEXt or iTXt. A1111 stores generation parameters under the key
// `parameters` and training-preview embeddings under `sd-ti-embedding`. PIL writes tEXt when the text is Latin-1
// encodable and iTXt (UTF-8) otherwise, so both must be read (formats.md §8.3).
import { inflateSync, crc32 as zlibCrc32 } from 'node:zlib';
import { FormatError } from '../errors.js';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && Buffer.from(bytes.subarray(0, 8)).equals(SIGNATURE);
}

interface Chunk {
  type: string;
  data: Buffer;
  /** Offset of the chunk's length field in the file. */
  offset: number;
}

function* chunks(png: Buffer, file: string): Generator<Chunk> {
  if (!isPng(png)) throw new FormatError(file, 'not a PNG file (bad signature)');
  let off = 8;
  while (off < png.length) {
    if (off + 12 > png.length) throw new FormatError(file, `truncated PNG chunk header at byte ${off}`);
    const len = png.readUInt32BE(off);
    const type = png.toString('latin1', off + 4, off + 8);
    if (off + 12 + len > png.length) throw new FormatError(file, `truncated PNG chunk '${type}' at byte ${off}`);
    yield { type, data: png.subarray(off + 8, off + 8 + len), offset: off };
    off += 12 + len;
    if (type === 'IEND') return;
  }
  throw new FormatError(file, 'PNG has no IEND chunk');
}

/** All text chunks (tEXt, zTXt, iTXt), keyed by keyword. */
export function readPngText(png: Buffer, file = '<png>'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of chunks(png, file)) {
    const parsed = parseTextChunk(c, file);
    // PIL's `im.text` keeps the last value of a repeated keyword; do the same.
    if (parsed) out[parsed[0]] = parsed[1];
  }
  return out;
}

function parseTextChunk(c: Chunk, file: string): [string, string] | undefined {
  const nul = c.data.indexOf(0);
  if (c.type !== 'tEXt' && c.type !== 'zTXt' && c.type !== 'iTXt') return undefined;
  if (nul < 1) throw new FormatError(file, `malformed ${c.type} chunk at byte ${c.offset} (no keyword)`);
  const key = c.data.toString('latin1', 0, nul);
  try {
    if (c.type === 'tEXt') return [key, c.data.toString('latin1', nul + 1)];
    if (c.type === 'zTXt') return [key, inflateSync(c.data.subarray(nul + 2)).toString('latin1')];
    // iTXt: keyword\0 compressionFlag compressionMethod languageTag\0 translatedKeyword\0 text(UTF-8)
    const compressed = c.data[nul + 1] === 1;
    const langEnd = c.data.indexOf(0, nul + 3);
    const transEnd = c.data.indexOf(0, langEnd + 1);
    if (langEnd < 0 || transEnd < 0) throw new Error('missing separators');
    const body = c.data.subarray(transEnd + 1);
    return [key, (compressed ? inflateSync(body) : body).toString('utf8')];
  } catch (e) {
    throw new FormatError(file, `malformed ${c.type} chunk '${key}': ${(e as Error).message}`, undefined, { cause: e });
  }
}

function makeChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlibCrc32(data, zlibCrc32(Buffer.from(type, 'latin1'))) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

const isLatin1 = (s: string): boolean => /^[\u0000-\u00ff]*$/.test(s);

/**
 * Return a copy of `png` with text chunks for `entries` inserted after IHDR (existing chunks with the same keywords
 * are dropped). Latin-1 text goes to tEXt, anything else to uncompressed iTXt, as PIL does.
 */
export function writePngText(png: Buffer, entries: Record<string, string>, file = '<png>'): Buffer {
  const parts: Buffer[] = [SIGNATURE];
  for (const c of chunks(png, file)) {
    const parsed = parseTextChunk(c, file);
    if (parsed && parsed[0] in entries) continue;
    parts.push(png.subarray(c.offset, c.offset + 12 + c.data.length));
    if (c.type === 'IHDR') {
      for (const [key, text] of Object.entries(entries)) {
        if (!/^[\u0020-\u007e\u00a1-\u00ff]{1,79}$/.test(key)) throw new FormatError(file, `invalid PNG text keyword '${key}'`);
        const data = isLatin1(text)
          ? Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0]), Buffer.from(text, 'latin1')])
          : Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, 'utf8')]);
        parts.push(makeChunk(isLatin1(text) ? 'tEXt' : 'iTXt', data));
      }
    }
  }
  return Buffer.concat(parts);
}
