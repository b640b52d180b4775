// Text normalisation of OpenAI CLIP's `SimpleTokenizer.encode`, with Python string semantics:
//
//   text = ftfy.fix_text(text); text = html.unescape(html.unescape(text)); text = text.strip()   # basic_clean
//   text = re.sub(r'\s+', ' ', text); text = text.strip()                                        # whitespace_clean
//   text = text.lower()
//
// https://github.com/openai/CLIP/blob/d05afc436d78f1c48dc0dbf8e5980a9d471f35f6/clip/simple_tokenizer.py#L50
//
// `ftfyLite` ports the deterministic fixers of ftfy 6.3.1 `fix_text` (default config), in ftfy's order and with its
// per-line segmentation and fix-until-stable loop. It deliberately OMITS ftfy's mojibake repair (`fix_encoding`:
// the `is_bad` heuristic and its re-encode/re-decode plans, e.g. "cafÃ©" → "café"). That repair is a large
// statistical heuristic and only matters for text that was already garbled by a wrong codec; prompts needing it
// tokenise differently here (fixture flag `ftfy_fix_encoding_changes`). See docs/tokenizer.md.
// https://github.com/rspeer/python-ftfy/blob/v6.3.1/ftfy/__init__.py (fix_text, fix_and_explain)

import type { HtmlUnescaper } from './html_unescape.js';

// Python `str.strip()` / `str.isspace()` set (bidi WS/B/S or category Zs): unlike Unicode White_Space it includes
// U+001C..U+001F; neither includes U+FEFF (JS `\s` does) nor U+180E (Unicode >= 6.3). All BMP, so code units suffice.
const PY_SPACE = new Set<number>([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);
// The `regex` module's `\s` is Unicode White_Space (JS `\s` adds U+FEFF and lacks U+0085).
const WHITESPACE_RUN_RE = /\p{White_Space}+/gu;

/** Python `str.strip()` with no argument. */
export function pyStrip(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && PY_SPACE.has(text.charCodeAt(start))) start++;
  while (end > start && PY_SPACE.has(text.charCodeAt(end - 1))) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

/** CLIP's `whitespace_clean`: collapse every run of Unicode White_Space to one space, then `strip()`. */
export function whitespaceClean(text: string): string {
  return pyStrip(text.replace(WHITESPACE_RUN_RE, ' '));
}

// --- ftfy fixers (ftfy/fixes.py, ftfy/chardata.py) -------------------------------------------------------------

// sloppy-windows-1252 decoding of the C1 bytes 0x80..0x9F (undefined bytes keep their Latin-1 code point).
const CP1252_C1 =
  '\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f' +
  '\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178';
const C1_CONTROL_RE = /[\x80-\x9f]/g;

const LIGATURES: Record<string, string> = {
  '\u0132': 'IJ', '\u0133': 'ij', '\u0149': '\u02bcn',
  '\u01f1': 'DZ', '\u01f2': 'Dz', '\u01f3': 'dz', '\u01c4': 'D\u017d', '\u01c5': 'D\u017e', '\u01c6': 'd\u017e',
  '\u01c7': 'LJ', '\u01c8': 'Lj', '\u01c9': 'lj', '\u01ca': 'NJ', '\u01cb': 'Nj', '\u01cc': 'nj',
  '\ufb00': 'ff', '\ufb01': 'fi', '\ufb02': 'fl', '\ufb03': 'ffi', '\ufb04': 'ffl', '\ufb05': '\u017ft', '\ufb06': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g');

// WIDTH_MAP: U+3000 → ' ', and every U+FF01..U+FFEF whose NFKC form differs.
const WIDTH_MAP = new Map<string, string>([['\u3000', ' ']]);
for (let cp = 0xff01; cp < 0xfff0; cp++) {
  const ch = String.fromCharCode(cp);
  const alt = ch.normalize('NFKC');
  if (alt !== ch) WIDTH_MAP.set(ch, alt);
}
const WIDTH_RE = /[\u3000\uff01-\uffef]/g;

const SINGLE_QUOTE_RE = /[\u02bc\u2018-\u201b]/g;
const DOUBLE_QUOTE_RE = /[\u201c-\u201f]/g;
// With `u`, a paired surrogate is one code point, so this only matches lone ones (ftfy turns them into U+FFFD
// after joining pairs; JS strings already hold pairs as one character).
const LONE_SURROGATE_RE = /[\ud800-\udfff]/gu;
const ANSI_RE = /\x1b\[((?:\p{Nd}|;)*)([a-zA-Z])/gu;
const CONTROL_CHARS_RE = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;

function fixC1Controls(text: string): string {
  return text.replace(C1_CONTROL_RE, (c) => CP1252_C1[c.charCodeAt(0) - 0x80]!);
}

function fixLineBreaks(text: string): string {
  return text.replace(/\r\n/g, '\n').replace(/[\r\u2028\u2029\x85]/g, '\n');
}

/** One segment through ftfy's `fix_and_explain` loop (without `fix_encoding`), until nothing changes. */
function fixSegment(segment: string, unescapeHtml: boolean, html: HtmlUnescaper): string {
  let text = segment;
  for (;;) {
    const orig = text;
    if (unescapeHtml) text = html.ftfyUnescape(text);
    // (fix_encoding would run here: not ported, see the file comment.)
    text = fixC1Controls(text);
    text = text.replace(LIGATURE_RE, (c) => LIGATURES[c]!);
    text = text.replace(WIDTH_RE, (c) => WIDTH_MAP.get(c) ?? c);
    text = text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
    text = fixLineBreaks(text);
    text = text.replace(LONE_SURROGATE_RE, '\uFFFD');
    text = text.replace(ANSI_RE, '');
    text = text.replace(CONTROL_CHARS_RE, '');
    text = text.normalize('NFC');
    if (text === orig) return text;
  }
}

/**
 * ftfy 6.3.1 `fix_text` with the default config minus mojibake repair. The text is fixed line by line (segments end
 * after each '\n'); HTML entities are decoded only until a segment containing '<' is seen (then never again).
 */
export function ftfyLite(text: string, html: HtmlUnescaper): string {
  let out = '';
  let unescapeHtml = true;
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos) + 1;
    if (end === 0) end = text.length;
    const segment = text.slice(pos, end);
    if (unescapeHtml && segment.includes('<')) unescapeHtml = false;
    out += fixSegment(segment, unescapeHtml, html);
    pos = end;
  }
  return out;
}

export interface NormalizeOptions {
  /** Apply the ftfy subset first (default true; false = ftfy.fix_text as the identity). */
  ftfy?: boolean;
}

/** The full CLIP normalisation: ftfy-lite, html.unescape twice, strip, collapse whitespace, strip, lower. */
export function normalizeClipText(text: string, html: HtmlUnescaper, opts: NormalizeOptions = {}): string {
  let t = opts.ftfy === false ? text : ftfyLite(text, html);
  t = pyStrip(html.unescape(html.unescape(t)));
  return whitespaceClean(t).toLowerCase();
}
