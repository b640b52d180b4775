import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError } from '../../src/errors.js';
import {
  ConfigIssuesError,
  dumpResolvedConfig,
  loadConfig,
  parseConfig,
  parseSetArgument,
  parseSetValue,
  pathField,
  type ConfigOptions,
} from '../../src/config/load_config.js';
import { parseCommandConfig } from '../../src/config/schema.js';

const embedYaml = (body = '') => `embed:\n  placeholder_token: <cat>\ndata:\n  datasets:\n    - path: imgs\n${body}`;

/** The error a config throws (fails the test if it loads). */
function errorOf(fn: () => unknown): ConfigIssuesError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect(e).toBeInstanceOf(ConfigIssuesError);
    return e as ConfigIssuesError;
  }
  throw new Error('expected a ConfigError');
}
const embedError = (text: string, opts: ConfigOptions = {}) => errorOf(() => parseCommandConfig('embed', text, 'cat.yaml', opts));

describe('unknown keys', () => {
  it('top-level typo: names the key, suggests, gives line:col', () => {
    const e = embedError(`${embedYaml()}sed: 3\n`);
    expect(e.message).toBe("sed: unknown key 'sed' — did you mean 'seed'? (cat.yaml:6:1)");
  });

  it('nested typo', () => {
    const e = embedError(`${embedYaml()}training:\n  max_train_steps: 10\n  learnig_rate: 0.1\n`);
    expect(e.message).toBe("training.learnig_rate: unknown key 'learnig_rate' — did you mean 'learning_rate'? (cat.yaml:8:3)");
  });

  it('a key from another section is pointed to', () => {
    const e = embedError(`${embedYaml()}learning_rate: 0.1\n`);
    expect(e.message).toContain("unknown key 'learning_rate' — did you mean 'training.learning_rate'?");
  });

  it("another method's section gets a hint", () => {
    const e = embedError(`${embedYaml()}lora:\n  rank: 4\n`);
    expect(e.message).toMatch(/lora: unknown key 'lora' — the 'lora' section belongs to 'sdtrain lora' configs.*\(cat\.yaml:6:1\)/);
  });

  it('no close match: lists the allowed keys', () => {
    const e = embedError(`${embedYaml()}zzzzzzzz: 1\n`);
    expect(e.message).toContain('(allowed here: method, model, vae, backend, seed');
  });
});

describe('type and value errors', () => {
  it('wrong type: expected/got with line:col of the value', () => {
    const e = embedError(`${embedYaml()}training:\n  max_train_steps: fast\n`);
    expect(e.message).toBe('training.max_train_steps: expected a number, got string "fast" (cat.yaml:7:20)');
    expect(e.issues[0]).toMatchObject({ key: 'training.max_train_steps', line: 7, col: 20 });
  });

  it('learning_rate that is neither a number nor a schedule', () => {
    const e = embedError(`${embedYaml()}training:\n  learning_rate: fast\n`);
    expect(e.message).toMatch(/^training\.learning_rate: expected a number or an A1111 learning-rate schedule .*got string "fast" \(cat\.yaml:7:18\)$/);
  });

  it('enum typo suggests the value', () => {
    const e = embedError(`${embedYaml()}backend: gpuu\n`);
    expect(e.message).toBe("backend: expected one of 'auto', 'gpu', 'node', 'wasm', 'cpu', got string \"gpuu\" — did you mean 'gpu'? (cat.yaml:6:10)");
  });

  it('missing required key points at its section', () => {
    const e = embedError('embed:\n  num_vectors: 2\ndata:\n  datasets: [{path: x}]\n');
    expect(e.message).toBe("embed.placeholder_token: missing required key 'placeholder_token' (cat.yaml:1:1)");
  });

  it('lists every problem, one per line, in file order', () => {
    const e = embedError(`${embedYaml()}training:\n  batch_size: 0\n  max_train_steps: 1.5\nsed: 1\nbackend: x\n`);
    const lines = e.message.split('\n');
    expect(lines[0]).toBe('cat.yaml: 4 problems in the configuration:');
    expect(lines.slice(1).map((l) => l.trim().split(':')[0])).toEqual(['training.batch_size', 'training.max_train_steps', 'sed', 'backend']);
    expect(lines[1]).toContain('must be at least 1, got number 0 (cat.yaml:7:15)');
    expect(e.issues).toHaveLength(4);
  });
});

describe('YAML syntax', () => {
  it("reports yaml's own line and column", () => {
    const e = embedError('embed:\n  placeholder_token: <cat>\n  num_vectors: [1, 2\ndata: {}\n');
    expect(e.message).toMatch(/YAML syntax error: .*\(cat\.yaml:\d+:\d+\)/);
    expect(e.issues[0]!.line).toBeGreaterThanOrEqual(3);
  });

  it('duplicate keys are an error', () => {
    const e = embedError(`${embedYaml()}seed: 1\nseed: 2\n`);
    expect(e.message).toMatch(/YAML syntax error: Map keys must be unique \(cat\.yaml:7:1\)/);
  });

  it('several documents in one file are an error', () => {
    const e = embedError(`${embedYaml()}---\nseed: 1\n`);
    expect(e.message).toBe('YAML syntax error: the file holds several YAML documents (---); a config is one document (cat.yaml:6:1)');
  });

  it('the top level must be a mapping', () => {
    const e = embedError('- a\n- b\n');
    expect(e.message).toBe('the top level must be a mapping of keys (like \'model: ...\'), got a list of 2 items (cat.yaml:1:1)');
  });

  it('an empty file is an empty mapping (so only required keys are missing)', () => {
    const e = embedError('');
    expect(e.message).toBe("embed: missing required key 'embed' (cat.yaml)");
  });
});

describe('YAML features', () => {
  it('anchors, aliases and << merge keys work', () => {
    const text = 'embed: {placeholder_token: t}\ndata:\n  datasets:\n    - &d {path: a, repeats: 2, caption: {extension: .caption}}\n    - {<<: *d, path: b}\n    - *d\n';
    const { config } = parseCommandConfig('embed', text, '/p/c.yaml');
    expect(config.data.datasets.map((d) => [d.path, d.repeats, d.caption.extension])).toEqual([
      ['/p/a', 2, '.caption'],
      ['/p/b', 2, '.caption'],
      ['/p/a', 2, '.caption'],
    ]);
  });
});

describe('defaults and null', () => {
  it('fills defaults in nested sections', () => {
    const { config } = parseCommandConfig('embed', embedYaml(), '/proj/cat.yaml');
    expect(config.data.resolution).toBe(512);
    expect(config.data.bucketing).toEqual({ enabled: false, min_size: 256, max_size: 1024, step: 64 });
    expect(config.data.datasets[0]!.caption.source).toEqual(['sidecar', 'metadata', 'filename']);
    expect(config.training.optimizer.betas).toEqual([0.9, 0.999]);
    expect(config.training.cond_dropout).toBe(0);
    expect(config.embed.num_vectors).toBe(1);
    expect(config.method).toBe('embed');
  });

  it('`key:` and `key: null` mean "not set"', () => {
    const { config } = parseCommandConfig('embed', `${embedYaml()}vae:\nseed: null\n`, '/proj/cat.yaml');
    expect(config.vae).toBeUndefined();
    expect(config.seed).toBe(0);
  });
});

describe('--set', () => {
  const base = '/proj/cat.yaml';
  it('parses numbers, strings, null and flow YAML; indexes lists', () => {
    const { config } = parseCommandConfig('embed', embedYaml('  resolution: 256\n'), base, {
      set: [
        'training.learning_rate=1e-4',
        'run_name=foo',
        'training.cond_dropout=[{until_step: 500, rate: 0}, {rate: 0.1}]',
        'data.datasets.0.repeats=5',
        'data.resolution=null',
        'training.preview.prompts=["a [name]", b]',
      ],
    });
    expect(config.training.learning_rate).toBe(1e-4);
    expect(config.run_name).toBe('foo');
    expect(config.training.cond_dropout).toEqual([{ until_step: 500, rate: 0 }, { rate: 0.1 }]);
    expect(config.data.datasets[0]!.repeats).toBe(5);
    expect(config.data.resolution).toBe(512); // null unset the file's 256
    expect(config.training.preview.prompts).toEqual(['a [name]', 'b']);
  });

  it('takes text literally for string keys unless quoted', () => {
    const { config } = parseCommandConfig('embed', embedYaml(), base, { set: ['run_name=123', 'embed.init_word="a: b"', 'training.preview.negative_prompt=x # y'] });
    expect(config.run_name).toBe('123');
    expect(config.embed.init_word).toBe('a: b');
    expect(config.training.preview.negative_prompt).toBe('x # y');
  });

  it('a list index one past the end appends', () => {
    const { config } = parseCommandConfig('embed', embedYaml(), base, { set: ['data.datasets.1.path=more'] });
    expect(config.data.datasets.map((d) => d.path)).toEqual(['/proj/imgs', path.resolve('more')]);
  });

  it('malformed arguments are errors naming the argument', () => {
    const e = embedError(embedYaml(), { set: ['training.learning_rate', '=3', 'a..b=1'] });
    expect(e.issues.map((i) => i.message)).toEqual([
      "malformed --set 'training.learning_rate': expected KEY=VALUE (e.g. --set training.learning_rate=1e-4)",
      "malformed --set '=3': the key before '=' is empty (e.g. --set training.learning_rate=1e-4)",
      "malformed --set 'a..b=1': 'a..b' is not a dotted key path like data.datasets.0.repeats",
    ]);
    expect(e.issues[0]!.location).toBe('--set training.learning_rate; config cat.yaml');
  });

  it('an unknown key is an error with a suggestion and the --set as location', () => {
    const e = embedError(embedYaml(), { set: ['training.learnig_rate=1e-4'] });
    expect(e.message).toBe(
      "training.learnig_rate: unknown key 'learnig_rate' — did you mean 'learning_rate'? (--set training.learnig_rate=1e-4; config cat.yaml)",
    );
  });

  it('a bad value from --set is reported at the --set', () => {
    const e = embedError(embedYaml(), { set: ['data.resolution=500'] });
    expect(e.message).toBe('data.resolution: must be a multiple of 8, got number 500 (e.g. 496 or 504) (--set data.resolution=500; config cat.yaml)');
  });

  it('bad paths into lists and scalars', () => {
    const e = embedError(embedYaml(), { set: ['data.datasets.5.repeats=2', 'data.datasets.path=x', 'embed.placeholder_token.x=1', 'x=[1, 2'] });
    expect(e.issues.map((i) => i.message)).toEqual([
      "index 5 is past the end of 'data.datasets' (it has 1 entry; index 1 would add one)",
      "'data.datasets' is a list: address an entry by its number, e.g. data.datasets.0.path",
      "'embed.placeholder_token' is string \"<cat>\", not a mapping or list, so 'embed.placeholder_token.x' cannot be set",
      expect.stringMatching(/^cannot parse the value as YAML: /),
    ]);
  });

  it('parseSetArgument / parseSetValue', () => {
    expect(parseSetArgument('a.0.b=x=y')).toEqual({ ok: true, key: 'a.0.b', keyPath: ['a', 0, 'b'], raw: 'x=y' });
    expect(parseSetValue('1e-4')).toEqual({ ok: true, value: 1e-4 });
    expect(parseSetValue('true')).toEqual({ ok: true, value: true });
    expect(parseSetValue('~')).toEqual({ ok: true, value: null });
    expect(parseSetValue('')).toEqual({ ok: true, value: '' });
    expect(parseSetValue('a photo: of x')).toEqual({ ok: true, value: 'a photo: of x' });
    expect(parseSetValue('{a: 1}')).toEqual({ ok: true, value: { a: 1 } });
    expect(parseSetValue('{a|b} cat', true)).toEqual({ ok: true, value: '{a|b} cat' });
    expect(parseSetValue("'007'", true)).toEqual({ ok: true, value: '007' });
    expect(parseSetValue('!x')).toEqual({ ok: true, value: '!x' });
    expect(parseSetValue('5e-3:100, 1e-3')).toEqual({ ok: true, value: '5e-3:100, 1e-3' });
  });
});

describe('precedence: flag > --set > file > default', () => {
  const text = `${embedYaml()}seed: 1\ntraining:\n  batch_size: 2\n  max_train_steps: 7\n`;
  const opts: ConfigOptions = {
    set: ['training.batch_size=3', 'training.max_train_steps=8', 'training.max_train_steps=9'],
    overrides: { 'training.batch_size': 4, 'training.learning_rate': undefined },
  };
  it('applies in order', () => {
    const { config, source } = parseCommandConfig('embed', text, '/proj/cat.yaml', opts);
    expect(config.training.batch_size).toBe(4); // flag beats --set and file
    expect(config.training.max_train_steps).toBe(9); // the last --set wins, beats file
    expect(config.seed).toBe(1); // file beats default
    expect(config.training.learning_rate).toBe(5e-3); // default (undefined flags are ignored)
    expect(source.origin('training.batch_size')).toBe('flag');
    expect(source.origin('training.max_train_steps')).toBe('set');
    expect(source.origin('seed')).toBe('file');
    expect(source.origin(['training', 'learning_rate'])).toBe('default');
    expect(source.overrides).toEqual({ 'training.batch_size': 4 });
  });

  it('flag errors use the flag label', () => {
    const e = embedError(embedYaml(), { overrides: { 'training.batch_size': 0 }, overrideLabels: { 'training.batch_size': '--batch-size 0' } });
    expect(e.message).toBe('training.batch_size: must be at least 1, got number 0 (--batch-size 0; config cat.yaml)');
  });
});

describe('relative paths', () => {
  it('file values and defaults resolve against the config folder; command-line values against cwd', () => {
    const { config } = parseCommandConfig('embed', `${embedYaml()}vae: ../vae.safetensors\ndata:\n  datasets: [{path: imgs}, {path: /abs/imgs}, {path: '~/x'}]\n`.replace(/^data:\n {2}datasets:\n {4}- path: imgs\n/m, ''), '/proj/configs/cat.yaml', {
      set: ['output_dir=out'],
      cwd: '/work',
    });
    expect(config.vae).toBe('/proj/vae.safetensors');
    expect(config.data.datasets[0]!.path).toBe('/proj/configs/imgs');
    expect(config.data.datasets[1]!.path).toBe('/abs/imgs');
    expect(config.data.datasets[2]!.path).toMatch(/\/x$/);
    expect(config.data.datasets[2]!.path).not.toContain('~');
    expect(config.output_dir).toBe('/work/out');
    expect(path.isAbsolute(config.model)).toBe(true);
    expect(config.model.endsWith(path.join('checkpoints', 'tiny-shapes'))).toBe(true);
  });

  it('baseDir overrides the folder', () => {
    const { config } = parseCommandConfig('embed', embedYaml(), 'x.yaml', { baseDir: '/elsewhere' });
    expect(config.data.datasets[0]!.path).toBe('/elsewhere/imgs');
    expect(config.output_dir).toBe('/elsewhere/runs');
  });

  it('pathField works in any schema', () => {
    const S = z.strictObject({ files: z.array(pathField()).default([]), out: pathField().optional() });
    const { config } = parseConfig('files: [a, b/c]\nout: o\n', '/p/q.yaml', S);
    expect(config).toEqual({ files: ['/p/a', '/p/b/c'], out: '/p/o' });
  });
});

describe('loadConfig and dumpResolvedConfig', () => {
  it('reads a file, and the resolved dump loads back to the same config', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'sdtrain-config-'));
    const file = path.join(dir, 'cat.yaml');
    await writeFile(file, embedYaml());
    const { config, source } = await loadConfig(file, (await import('../../src/config/schema.js')).EmbedConfigSchema, { set: ['seed=5'] });
    expect(config.data.datasets[0]!.path).toBe(path.join(dir, 'imgs'));
    const dumped = dumpResolvedConfig(config, source);
    expect(dumped).toMatch(/^# sdtrain resolved configuration/);
    expect(dumped).toContain('# --set seed=5');
    const multiLine = parseCommandConfig('embed', embedYaml(), file, { set: ['run_name=a'], overrides: { 'training.preview.prompts': ['x\ny'] } });
    const dumped2 = dumpResolvedConfig(multiLine.config, multiLine.source);
    expect(parseCommandConfig('embed', dumped2, file).config).toEqual(multiLine.config);
    const again = parseCommandConfig('embed', dumped, '/somewhere/else/config.resolved.yaml');
    expect(again.config).toEqual(config);
  });

  it('a missing file is a ConfigError naming it', async () => {
    await expect(loadConfig('/nonexistent/cat.yaml', z.object({}))).rejects.toThrow(/cannot read config file \/nonexistent\/cat\.yaml: no such file/);
  });
});
