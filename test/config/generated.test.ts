// The committed generated files (JSON Schema, docs key reference) match the schemas, and every example config loads.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { buildJsonSchema, renderConfigReference, renderJsonSchema, replaceReference } from '../../src/config/json_schema.js';
import { COMMANDS, parseCommandConfig, TRAIN_METHODS, type ConfigCommand } from '../../src/config/schema.js';
import { validateJsonSchema } from './mini_json_schema.js';

const root = path.resolve(import.meta.dirname, '../..');
const read = (rel: string): string => readFileSync(path.join(root, rel), 'utf8');
const REGENERATE = 'out of date: run `npm run build && npm run schema`';

describe('generated files are up to date', () => {
  it('configs/sdtrain.schema.json', () => {
    expect(read('configs/sdtrain.schema.json') === renderJsonSchema(), REGENERATE).toBe(true);
  });

  it('the key reference in docs/config.md', () => {
    const docs = read('docs/config.md');
    expect(replaceReference(docs, renderConfigReference()) === docs, REGENERATE).toBe(true);
  });

  it('the JSON Schema covers every command, with descriptions on every key', () => {
    const schema = buildJsonSchema() as { anyOf: unknown[]; definitions: Record<string, unknown> };
    expect(Object.keys(schema.definitions)).toEqual([...COMMANDS]);
    const missing: string[] = [];
    const walk = (s: Record<string, unknown>, at: string): void => {
      for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, Record<string, unknown>>)) {
        if (typeof v.description !== 'string' || v.description === '') missing.push(`${at}${k}`);
        walk(v, `${at}${k}.`);
        const items = v.items as Record<string, unknown> | undefined;
        if (items && !Array.isArray(items)) walk(items, `${at}${k}[].`);
        for (const alt of (v.anyOf ?? []) as Record<string, unknown>[]) if (alt.items) walk(alt.items as Record<string, unknown>, `${at}${k}[].`);
      }
    };
    for (const [name, def] of Object.entries(schema.definitions)) walk(def as Record<string, unknown>, `${name}: `);
    expect(missing).toEqual([]);
  });
});

describe('example configs', () => {
  // Configs that are not run configs of an sdtrain command, each checked by its own test.
  const OTHER: Record<string, string> = { 'tiny-shapes.yaml': 'the recipe of the bundled model (test/shapes/model.test.ts)' };
  const files = readdirSync(path.join(root, 'configs')).filter((f) => /\.ya?ml$/.test(f) && !(f in OTHER));

  it('there are examples', () => {
    expect(files).toContain('example.yaml');
    expect(files).toContain('sample.yaml');
  });

  it.each(files)('configs/%s validates against its schema', (file) => {
    const text = read(`configs/${file}`);
    expect(text.startsWith('# yaml-language-server: $schema=./sdtrain.schema.json'), 'hook up the editor schema on line 1').toBe(true);
    const method = (parse(text) as { method?: string }).method;
    expect(COMMANDS, `${file} needs a method: key`).toContain(method);
    expect(() => parseCommandConfig(method as ConfigCommand, text, path.join(root, 'configs', file))).not.toThrow();
    // What the editor is told agrees: the JSON Schema accepts the file too.
    expect(validateJsonSchema(buildJsonSchema(), parse(text))).toEqual([]);
  });

  // example.yaml carries the other methods' sections commented out between "# >>> method" and "# <<< method".
  it.each(TRAIN_METHODS.filter((m) => m !== 'embed'))('the commented %s section of example.yaml validates', (method) => {
    const text = read('configs/example.yaml');
    const block = new RegExp(`^# >>> ${method}\\b.*\\n((?:#.*\\n)*?)# <<< ${method}$`, 'm').exec(text);
    expect(block, `no ${method} block`).not.toBeNull();
    const section = parse(block![1]!.replace(/^# ?/gm, '')) as Record<string, unknown>;
    const config = parse(text) as Record<string, unknown>;
    delete config.embed;
    config.method = method;
    Object.assign(config, section);
    expect(() => parseCommandConfig(method, stringify(config), path.join(root, 'configs', 'example.yaml'))).not.toThrow();
    expect(validateJsonSchema(buildJsonSchema(), config)).toEqual([]);
  });
});

describe('the JSON Schema agrees with the loader', () => {
  const schema = buildJsonSchema();
  const loads = (command: ConfigCommand, value: unknown): boolean => {
    try {
      parseCommandConfig(command, stringify(value), '/p/c.yaml');
      return true;
    } catch {
      return false;
    }
  };
  const cases: [ConfigCommand, unknown][] = [
    ['embed', { method: 'embed', embed: { placeholder_token: 'x' }, data: { datasets: [{ path: 'a' }] } }],
    ['embed', { embed: { placeholder_token: 'x' }, data: { datasets: [{ path: 'a' }], resolution: 500 } }],
    ['embed', { embed: { placeholder_token: 'x' }, data: { datasets: [{ path: 'a', extra: 1 }] } }],
    ['lora', { method: 'lora', data: { datasets: [{ path: 'a' }] }, lora: { targets: ['to_q'] }, training: { cond_dropout: [{ until_step: 5, rate: 0 }, { rate: 0.2 }] } }],
    ['lora', { data: { datasets: [{ path: 'a' }] }, lora: { rank: 0 } }],
    ['sample', { method: 'sample', prompt: 'p', loras: ['a:0.5', { path: 'b', strength: 2 }], vae: null }],
    ['sample', { prompt: 'p', sampler: 'euler-a' }],
  ];
  it.each(cases)('%s %j', (command, value) => {
    expect(validateJsonSchema(schema, value).length === 0).toBe(loads(command, value));
  });
});
