// Python `re` character classes for str patterns, as JS regex source (use with the `u` flag), and Python's float()
// for the number shapes A1111's prompt regexes accept. JS `\s`, `\w`, `\d` and `\b` are ASCII-ish or differ in
// their whitespace set, so the A1111 ports spell these out.

/** Python `\s` (str.isspace): JS `\s` lacks U+001C..U+001F and U+0085 and adds U+FEFF. */
export const PY_S = '[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
/** Python `\w` (str.isalnum() or '_'). */
export const PY_W = '[\\p{L}\\p{N}_]';
/** Python `\d` (Unicode decimal digits). */
export const PY_D = '\\p{Nd}';

/** `\bWORD\b` for a word made of word characters, with Python's Unicode word boundary. */
export const pyWord = (word: string): string => `(?<!${PY_W})${word}(?!${PY_W})`;

const ND = /\p{Nd}/u;

/** The value 0..9 of a Unicode decimal digit: Nd code points come in complete, aligned runs of ten. */
function digitValue(ch: string): number {
  let cp = ch.codePointAt(0)!;
  let n = 0;
  while (ND.test(String.fromCodePoint(cp - 1))) {
    cp--;
    n++;
  }
  return n % 10;
}

/**
 * Python `float(s)` for strings made of an optional sign, digits (any Unicode Nd) and dots, which is all A1111's
 * weight regexes let through. NaN where Python raises ValueError (`.`, `1.2.3`).
 */
export function pyFloat(s: string): number {
  const ascii = s.replace(/\p{Nd}/gu, (d) => (d >= '0' && d <= '9' ? d : String(digitValue(d))));
  if (!/^[+-]?(\d+\.?\d*|\.\d+)$/.test(ascii)) return NaN;
  return Number(ascii);
}
