import { describe, expect, it } from 'vitest';
import { FormatError } from '../../src/errors.js';
import { writePngText } from '../../src/formats/png_text.js';
import {
  captionRule,
  embeddedCaption,
  filenameCaption,
  fillTemplate,
  readCaptionFile,
  readMetadataJsonl,
  renderCaption,
  resolveCaption,
  shuffleTags,
} from '../../src/data/captions.js';
import { generatorFor } from '../../src/data/rng.js';
import { OBJECT_TEMPLATES, STYLE_TEMPLATES, templateLines } from '../../src/data/templates.js';
import type { CaptionConfig } from '../../src/data/types.js';
import { useTmpDir } from '../helpers/tmp.js';
import { solid, sub, writeText } from './helpers.js';

const tmp = useTmpDir('sdtrain-captions-');
const cfg = (c: Partial<CaptionConfig>): CaptionConfig => ({
  source: ['sidecar', 'metadata', 'filename'],
  extension: '.txt',
  templates: 'object',
  shuffle_tags: false,
  keep_tokens: 0,
  ...c,
});
const noMeta = { metadata: new Map<string, string>() };

describe('filename captions (A1111 rule)', () => {
  it.each([
    ['a_red_cat.png', 'a red cat'],
    ['a red cat (2).jpg', 'a red cat'],
    ['dog_01.png', 'dog'],
    ['dog 2.webp', 'dog'],
    ['00012-0-a cat on a mat.png', 'a cat on a mat'],
    ['1girl_solo.png', '1girl solo'],
    ['r2d2.png', 'r2d2'],
    ['  spaced__out  .png', 'spaced out'],
  ])('%s → %s', (name, want) => expect(filenameCaption(name)).toBe(want));

  it('a stem without letters gives no caption', () => {
    expect(filenameCaption('00001.png')).toBeUndefined();
    expect(filenameCaption('123-456.png')).toBeUndefined();
  });
});

describe('sidecar files', () => {
  it('reads UTF-8 (BOM dropped, whitespace collapsed); missing or blank → undefined', async () => {
    const d = tmp();
    expect(await readCaptionFile(writeText(sub(d, 'a.txt'), '\ufeff  a photo,\n of  ünïcode \r\n'))).toBe('a photo, of ünïcode');
    expect(await readCaptionFile(writeText(sub(d, 'blank.txt'), ' \n '))).toBeUndefined();
    expect(await readCaptionFile(sub(d, 'nope.txt'))).toBeUndefined();
  });

  it('invalid UTF-8 is a FormatError naming the file', async () => {
    const f = writeText(sub(tmp(), 'bad.txt'), new Uint8Array([0x61, 0xff, 0xfe, 0x62]));
    const err = await readCaptionFile(f).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FormatError);
    expect((err as FormatError).file).toBe(f);
    expect((err as Error).message).toMatch(/not valid UTF-8/);
  });
});

describe('metadata.jsonl', () => {
  it('maps file_name (relative to the jsonl folder) to text', async () => {
    const d = sub(tmp(), 'meta');
    const f = writeText(sub(d, 'metadata.jsonl'), '{"file_name": "a.png", "text": "first"}\n\n{"file_name": "sub/b.png", "caption": " second "}\n{"file_name": "c.png", "text": null}\n');
    const m = await readMetadataJsonl(f);
    expect([...m.entries()]).toEqual([
      [sub(d, 'a.png'), 'first'],
      [sub(d, 'sub', 'b.png'), 'second'],
    ]);
  });

  it('malformed lines are errors naming file and line', async () => {
    const d = sub(tmp(), 'badmeta');
    await expect(readMetadataJsonl(writeText(sub(d, 'metadata.jsonl'), '{"file_name": "a.png", "text": "x"}\n{oops\n'))).rejects.toThrow(/metadata\.jsonl: line 2: not valid JSON/);
    await expect(readMetadataJsonl(writeText(sub(d, 'm2', 'metadata.jsonl'), '{"text": "x"}\n'))).rejects.toThrow(/line 1: needs a "file_name"/);
  });

  it('embedded PNG text: the A1111 parameters prompt, else Description', async () => {
    const png = await solid(8, 8, [1, 2, 3]).png().toBuffer();
    const params = writePngText(png, { parameters: 'a cat, best quality\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1' });
    expect(embeddedCaption(params, 'x.png')).toBe('a cat, best quality');
    expect(embeddedCaption(writePngText(png, { Description: 'a described image' }), 'x.png')).toBe('a described image');
    expect(embeddedCaption(png, 'x.png')).toBeUndefined();
    expect(embeddedCaption(new Uint8Array([1, 2, 3]), 'x.jpg')).toBeUndefined();
  });
});

describe('source order', () => {
  it('tries sources in order; kohya .caption extension', async () => {
    const d = sub(tmp(), 'order');
    const img = sub(d, 'a_blue_dog.png');
    writeText(sub(d, 'a_blue_dog.caption'), 'from caption file');
    writeText(sub(d, 'a_blue_dog.txt'), 'from txt');
    const meta = { metadata: new Map([[img, 'from metadata']]) };
    const bytes = new Uint8Array();
    expect(await resolveCaption(img, bytes, cfg({}), meta)).toEqual({ source: 'sidecar', text: 'from txt' });
    expect(await resolveCaption(img, bytes, cfg({ extension: '.caption' }), meta)).toEqual({ source: 'sidecar', text: 'from caption file' });
    expect(await resolveCaption(img, bytes, cfg({ source: ['metadata', 'sidecar'] }), meta)).toEqual({ source: 'metadata', text: 'from metadata' });
    expect(await resolveCaption(img, bytes, cfg({ source: ['filename'] }), meta)).toEqual({ source: 'filename', text: 'a blue dog' });
    expect(await resolveCaption(img, bytes, cfg({ extension: '.none' }), noMeta)).toEqual({ source: 'filename', text: 'a blue dog' });
    expect(await resolveCaption(sub(d, '0001.png'), bytes, cfg({ source: ['sidecar', 'filename'] }), noMeta)).toEqual({ source: null, text: '' });
  });

  it("'template' carries [filewords] from the other sources, in either position", async () => {
    const d = sub(tmp(), 'tpl');
    const img = sub(d, 'red_ball.png');
    const bytes = new Uint8Array();
    // template first: always the template; filewords from the later sources
    expect(await resolveCaption(img, bytes, cfg({ source: ['template', 'sidecar', 'filename'] }), noMeta)).toEqual({ source: 'template', text: 'red ball' });
    // template last: only when the others give nothing
    writeText(sub(d, 'red_ball.txt'), 'captioned');
    expect(await resolveCaption(img, bytes, cfg({ source: ['sidecar', 'template'] }), noMeta)).toEqual({ source: 'sidecar', text: 'captioned' });
    expect(await resolveCaption(sub(d, 'x.png'), bytes, cfg({ source: ['sidecar', 'template'] }), noMeta)).toEqual({ source: 'template', text: '' });
  });
});

describe('templates and rendering', () => {
  it('built-in sets are the TI paper lists with A1111 [filewords]', () => {
    expect(OBJECT_TEMPLATES).toHaveLength(27);
    expect(STYLE_TEMPLATES).toHaveLength(19);
    expect(OBJECT_TEMPLATES[0]).toBe('a photo of a [name], [filewords]');
    expect(STYLE_TEMPLATES[0]).toBe('a painting in the style of [name], [filewords]');
    expect(templateLines(['mine [name]'])).toEqual(['mine [name]']);
  });

  it('fills [name], {} and [filewords]; empty filewords leave no dangling comma', () => {
    expect(fillTemplate('a photo of a [name], [filewords]', 'red, round', '<tok>')).toBe('a photo of a <tok>, red, round');
    expect(fillTemplate('a photo of a [name], [filewords]', '', '<tok>')).toBe('a photo of a <tok>');
    expect(fillTemplate('[filewords], art by {}', '', 'X')).toBe('art by X');
    expect(fillTemplate('a [filewords], b', '', 'X')).toBe('a, b');
  });

  it('templates with [name] need a token', () => {
    expect(() => captionRule(cfg({ source: ['template'] }), undefined, 2)).toThrow(/data\.datasets\[2\]\.caption: the templates use \[name\]/);
    expect(() => captionRule(cfg({ source: ['template'], templates: ['a photo of sks dog'] }), undefined, 0)).not.toThrow();
    expect(() => captionRule(cfg({}), undefined, 0)).not.toThrow(); // no template source
  });

  it('shuffle_tags keeps keep_tokens leading tags, is seeded and varies per draw', () => {
    const text = 'first, second, a, b, c, d, e, f';
    const a = shuffleTags(text, 2, generatorFor(1, 'x'));
    expect(a).toBe(shuffleTags(text, 2, generatorFor(1, 'x')));
    expect(a.startsWith('first, second, ')).toBe(true);
    expect(a.split(', ').sort()).toEqual(text.split(', ').sort());
    const seen = new Set(Array.from({ length: 20 }, (_, i) => shuffleTags(text, 2, generatorFor(i, 'x'))));
    expect(seen.size).toBeGreaterThan(5);
  });

  it('renders a template per use from the rng', () => {
    const rule = captionRule(cfg({ source: ['template'] }), '<cat>', 0);
    const info = { source: 'template' as const, text: 'sitting' };
    const out = new Set(Array.from({ length: 30 }, (_, i) => renderCaption(info, rule, generatorFor(i))));
    expect(out.size).toBeGreaterThan(5);
    for (const s of out) expect(s).toMatch(/<cat>, sitting$/);
    const plain = captionRule(cfg({}), undefined, 0);
    expect(renderCaption({ source: 'sidecar', text: 'a, b' }, plain, generatorFor(0))).toBe('a, b');
  });
});
