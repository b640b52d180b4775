// Python's `html.unescape` (3.11) and ftfy 6.3.1's stricter `fixes.unescape_html`, driven by the HTML5 entity
// table shipped in `assets/html5_entities.json` (Python stdlib data: `html.entities.html5`, `html._invalid_charrefs`,
// `html._invalid_codepoints`).
//
// https://github.com/python/cpython/blob/3.11/Lib/html/__init__.py#L91 (_replace_charref, unescape)
// https://github.com/rspeer/python-ftfy/blob/v6.3.1/ftfy/fixes.py (unescape_html), ftfy/chardata.py (HTML_ENTITIES)

import { readFile } from 'node:fs/promises';
import { FormatError } from '../errors.js';
import { packagePath } from '../paths.js';

/** The JSON layout of `assets/html5_entities.json`. */
export interface Html5EntityData {
  /** Entity name (without `&`, with or without the trailing `;`) → replacement text. */
  entities: Record<string, string>;
  /** Decimal code point (as a string key) → replacement, for numeric references the HTML5 spec remaps. */
  invalid_charrefs: Record<string, string>;
  /** Code points that numeric references drop entirely. */
  invalid_codepoints: number[];
}

// Python: re.compile(r'&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)'). `u` so that {1,32} counts code points.
const CHARREF_RE = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;
// ftfy: re.compile(r"&#?[0-9A-Za-z]{1,24};") (ASCII classes, the semicolon is required).
const FTFY_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;

export class HtmlUnescaper {
  private readonly entities: Map<string, string>;
  private readonly invalidCharrefs: Map<number, string>;
  private readonly invalidCodepoints: Set<number>;
  private ftfyEntities: Map<string, string> | undefined;

  constructor(data: Html5EntityData) {
    this.entities = new Map(Object.entries(data.entities));
    this.invalidCharrefs = new Map(Object.entries(data.invalid_charrefs).map(([k, v]) => [Number(k), v]));
    this.invalidCodepoints = new Set(data.invalid_codepoints);
  }

  /** Python `html.unescape(s)`: named references (legacy ones also without `;`, longest prefix), numeric references. */
  unescape(s: string): string {
    if (!s.includes('&')) return s;
    return s.replace(CHARREF_RE, (_m, ref: string) => this.replaceCharref(ref));
  }

  /**
   * ftfy's `unescape_html`: only `&name;` / `&#num;` forms with the semicolon, named ones from the HTML5 table plus
   * all-caps spellings of lowercase entity names (`&EACUTE;` → `É`) where Python would leave them alone.
   */
  ftfyUnescape(s: string): string {
    if (!s.includes('&')) return s;
    const table = this.ftfyTable();
    return s.replace(FTFY_ENTITY_RE, (entity) => {
      const named = table.get(entity);
      if (named !== undefined) return named;
      if (entity.startsWith('&#')) {
        // "If html.unescape only decoded part of the string, that's not what we want."
        const decoded = this.unescape(entity);
        return decoded.includes(';') ? entity : decoded;
      }
      return entity;
    });
  }

  private replaceCharref(ref: string): string {
    if (ref[0] === '#') {
      const hex = ref[1] === 'x' || ref[1] === 'X';
      const digits = ref.slice(hex ? 2 : 1).replace(/;$/, '');
      // Python ints are unbounded; a float is enough to tell "> 0x10FFFF" apart.
      const num = parseInt(digits, hex ? 16 : 10);
      const remapped = this.invalidCharrefs.get(num);
      if (remapped !== undefined) return remapped;
      if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\uFFFD';
      if (this.invalidCodepoints.has(num)) return '';
      return String.fromCodePoint(num);
    }
    const whole = this.entities.get(ref);
    if (whole !== undefined) return whole;
    // Longest legacy prefix (entity names are ASCII, so slicing UTF-16 units is the same as slicing code points
    // wherever a prefix can match).
    for (let x = ref.length - 1; x > 1; x--) {
      const prefix = this.entities.get(ref.slice(0, x));
      if (prefix !== undefined) return prefix + ref.slice(x);
    }
    return '&' + ref;
  }

  private ftfyTable(): Map<string, string> {
    if (this.ftfyEntities) return this.ftfyEntities;
    const out = new Map<string, string>();
    for (const [name, char] of this.entities) {
      if (!name.endsWith(';')) continue;
      out.set('&' + name, char);
      if (name === name.toLowerCase()) {
        const upper = '&' + name.toUpperCase();
        if (this.unescape(upper) === upper) out.set(upper, char.toUpperCase());
      }
    }
    this.ftfyEntities = out;
    return out;
  }
}

let bundled: Promise<HtmlUnescaper> | undefined;

/** The unescaper over the bundled `assets/html5_entities.json`, loaded once per process. */
export function bundledHtmlUnescaper(): Promise<HtmlUnescaper> {
  const file = packagePath('assets', 'html5_entities.json');
  bundled ??= readFile(file, 'utf8').then(
    (text) => {
      const data = JSON.parse(text) as Partial<Html5EntityData>;
      if (!data.entities || !data.invalid_charrefs || !data.invalid_codepoints) {
        throw new FormatError(file, 'expected the keys entities, invalid_charrefs and invalid_codepoints');
      }
      return new HtmlUnescaper(data as Html5EntityData);
    },
  ).catch((err: unknown) => {
    bundled = undefined;
    throw err;
  });
  return bundled;
}
