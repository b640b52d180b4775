// Normalisation pieces with Python semantics. Expected values were produced by CPython 3.11 `html.unescape`,
// ftfy 6.3.1 `fix_text` and `str.strip`.
import { beforeAll, describe, expect, test } from 'vitest';
import { bundledHtmlUnescaper, type HtmlUnescaper } from '../../src/tokenizer/html_unescape.js';
import { ftfyLite, normalizeClipText, pyStrip, whitespaceClean } from '../../src/tokenizer/normalize.js';

let html: HtmlUnescaper;
beforeAll(async () => {
  html = await bundledHtmlUnescaper();
});

describe('html.unescape (Python 3.11)', () => {
  test.each([
    ['&amp;amp;', '&amp;'],
    ['&copy2023', '©2023'], // legacy entity without ';'
    ['&notit;', '¬it;'], // longest legacy prefix
    ['&not', '¬'],
    ['&ampx', '&x'],
    ['&lt<', '<<'],
    ['&NotNestedGreaterGreater;', '\u2aa2\u0338'],
    ['&EACUTE;', '&EACUTE;'], // unknown: left alone
    ['&#65', 'A'],
    ['&#x41;', 'A'],
    ['&#x;', '&#x;'],
    ['&#128;', '€'], // invalid_charrefs fix-up table
    ['&#x80', '€'],
    ['&#0;', '\uFFFD'],
    ['&#13;', '\r'],
    ['&#1;', ''], // invalid code point: dropped
    ['&#xD800;', '\uFFFD'],
    ['&#1114112;', '\uFFFD'],
    ['&#99999999999999999999;', '\uFFFD'],
    ['no entities', 'no entities'],
  ])('%j → %j', (input, expected) => {
    expect(html.unescape(input)).toBe(expected);
  });
});

describe('ftfy 6.3.1 fix_text subset', () => {
  test.each([
    ['&EACUTE; &NTILDE; &eacute; &eacute', 'É Ñ é &eacute'], // ftfy: all-caps entities, ';' required
    ['&lt;b&gt; &amp;amp;amp;', '<b> &'], // fixed until stable
    ['<b> &amp; c', '<b> &amp; c'], // '<' seen: no unescaping
    ['line1 &amp;\n<b>\n&amp;', 'line1 &\n<b>\n&amp;'], // ... from that line on
    ['price \x80 \x85x', 'price € …x'], // C1 controls read as windows-1252
    ['\x1b[31mred\x1b[0m', 'red'],
    ['a\x00b\x0bc\x7fd\ufeffe\u206af', 'abcdef'],
    ['cafe\u0301', 'café'],
    ['\ufb01 \u01c4 \u0149', "fi DŽ 'n"],
    ['\uff26\uff35\uff2c\uff2c\u3000\uff76\uff9e', 'FULL ガ'],
    ['\u201chi\u201d \u2018x\u2019 \u02bcy', '"hi" \'x\' \'y'],
    ['a\r\nb\rc\u2028d\u2029e', 'a\nb\nc\nd\ne'],
    ['&#x2019;s', "'s"],
    ['lone \ud800 surrogate', 'lone \uFFFD surrogate'],
  ])('%j → %j', (input, expected) => {
    expect(ftfyLite(input, html)).toBe(expected);
  });
});

describe('Python whitespace', () => {
  test('str.strip() strips U+001C..U+001F and U+0085 but not U+FEFF', () => {
    expect(pyStrip('\x1c\x1f\x85\u3000 a b\u2029\t')).toBe('a b');
    expect(pyStrip('\ufeffa\ufeff')).toBe('\ufeffa\ufeff');
    expect(pyStrip('   ')).toBe('');
  });

  test('\\s is Unicode White_Space: U+0085 collapses, U+FEFF and U+200B do not', () => {
    expect(whitespaceClean('a\x85b\u00a0\u2003c')).toBe('a b c');
    expect(whitespaceClean('a\ufeffb\u200bc')).toBe('a\ufeffb\u200bc');
    expect(whitespaceClean('a\x1cb')).toBe('a\x1cb'); // not White_Space, only stripped at the ends
  });
});

describe('normalizeClipText', () => {
  test('unescapes twice after ftfy, even when ftfy skipped entities because of "<"', () => {
    expect(normalizeClipText('<b> &amp;amp; C', html)).toBe('<b> & c');
    expect(normalizeClipText('  Tabs\tAND\nNewlines  ', html)).toBe('tabs and newlines');
    expect(normalizeClipText('İstanbul ΣΙΣΥΦΟΣ', html)).toBe('i̇stanbul σισυφος');
  });

  test('ftfy can be switched off', () => {
    expect(normalizeClipText('ﬁne “q”', html, { ftfy: false })).toBe('ﬁne “q”');
    expect(normalizeClipText('ﬁne “q”', html)).toBe('fine "q"');
  });
});
