import { describe, expect, expectTypeOf, it } from 'vitest';
import { ConfigIssuesError } from '../../src/config/load_config.js';
import { CONFIG_SCHEMAS, parseCommandConfig, splitStrength, type ConfigCommand, type EmbedConfig, type LoraConfig, type SampleConfig, type TrainConfig } from '../../src/config/schema.js';

const DATA = 'data:\n  datasets:\n    - path: imgs\n';
const MIN: Record<ConfigCommand, string> = {
  embed: `embed:\n  placeholder_token: <cat>\n${DATA}`,
  hypernetwork: DATA,
  dreambooth: DATA,
  lora: DATA,
  sample: 'prompt: a cat\n',
};

function problems(command: ConfigCommand, text: string): string[] {
  try {
    parseCommandConfig(command, text, 'cat.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigIssuesError);
    return (e as ConfigIssuesError).issues.map((i) => `${i.key}: ${i.message} (${i.location})`);
  }
  throw new Error('expected the config to be rejected');
}
const load = <C extends ConfigCommand>(command: C, text: string) => parseCommandConfig(command, text, '/proj/cat.yaml').config;

describe('every command', () => {
  it.each(Object.keys(CONFIG_SCHEMAS) as ConfigCommand[])('%s: a minimal config loads with defaults', (command) => {
    const config = load(command, MIN[command]);
    expect(config.method).toBe(command);
    expect(config.backend).toBe('auto');
  });

  it('method: must match the command', () => {
    expect(problems('lora', `method: embed\n${DATA}`)).toEqual([
      "method: this config is for 'sdtrain embed' (method: embed), but the command is 'sdtrain lora' — run 'sdtrain embed', or change method: to lora (cat.yaml:1:9)",
    ]);
    expect(problems('lora', `method: lorra\n${DATA}`)[0]).toContain("unknown method 'lorra' — this command expects method: lora (did you mean 'lora'?)");
    expect(load('lora', `method: lora\n${DATA}`).method).toBe('lora');
  });
});

describe('data', () => {
  it('resolution must be a multiple of 8, and says so', () => {
    expect(problems('embed', `${MIN.embed}  resolution: 500\n`)).toEqual(['data.resolution: must be a multiple of 8, got number 500 (e.g. 496 or 504) (cat.yaml:6:15)']);
  });

  it('training images are required', () => {
    expect(problems('embed', 'embed: {placeholder_token: x}\n')).toEqual(['data.datasets: no training images: add at least one entry with a path (cat.yaml)']);
    expect(problems('dreambooth', 'seed: 1\n')[0]).toContain('(or set dreambooth.instance_data_dir)');
    expect(load('dreambooth', 'dreambooth:\n  instance_data_dir: dog\n  instance_prompt: a photo of sks dog\n').dreambooth.instance_data_dir).toBe('/proj/dog');
  });

  it('caption, bucketing and crop checks', () => {
    const text = `${MIN.embed}      caption: {source: [sidecar, sidecar], templates: objct, extension: txt}\n  crop: random\n  bucketing: {min_size: 512, max_size: 256}\n`;
    expect(problems('embed', text)).toEqual([
      'data.datasets.0.caption.source: lists a source more than once (cat.yaml:6:25)',
      "data.datasets.0.caption.templates: expected one of 'object', 'style' or a list, got string \"objct\" — did you mean 'object'? (cat.yaml:6:56)",
      "data.datasets.0.caption.extension: must be a file extension starting with '.', like '.txt' (cat.yaml:6:74)",
      'data.bucketing.min_size: must not exceed max_size (256) (cat.yaml:8:25)',
    ]);
    // Cross-key checks run once the keys themselves are valid.
    expect(problems('embed', `${MIN.embed}  crop: random\n`)).toEqual([
      "data.crop: 'random' needs cache_latents: false (a cached latent is one fixed crop) (cat.yaml:6:9)",
    ]);
    expect(load('embed', `${MIN.embed}  crop: random\n  cache_latents: false\n`).data.crop).toBe('random');
  });
});

describe('training', () => {
  it('accepts an A1111 learning-rate string and rejects a bad one clearly', () => {
    expect(load('embed', `${MIN.embed}training:\n  learning_rate: "5e-3:100, 1e-3:1000, 1e-4"\n`).training.learning_rate).toBe('5e-3:100, 1e-3:1000, 1e-4');
    const [p] = problems('embed', `${MIN.embed}training:\n  learning_rate: "5e-3:100, 1e-3:50"\n`);
    expect(p).toContain('training.learning_rate: expected a number or an A1111 learning-rate schedule');
    expect(p).toContain('steps must increase, but 50 comes after 100');
    expect(p).toContain('(cat.yaml:7:18)');
    expect(problems('embed', `${MIN.embed}training:\n  learning_rate: "1e-3:100"\n  lr_scheduler: cosine\n`)).toEqual([
      "training.lr_scheduler: must be 'constant' when learning_rate is a schedule string (the string already is the schedule), got 'cosine' (cat.yaml:8:17)",
    ]);
    expect(problems('embed', `${MIN.embed}training:\n  learning_rate: -1\n`)).toEqual(['training.learning_rate: must be greater than 0, got number -1 (cat.yaml:7:18)']);
  });

  it('cond_dropout: number or schedule, validated', () => {
    const ok = load('lora', `${DATA}training:\n  cond_dropout: [{until_step: 500, rate: 0}, {rate: 0.1}]\n`);
    expect(ok.training.cond_dropout).toEqual([{ until_step: 500, rate: 0 }, { rate: 0.1 }]);
    expect(problems('lora', `${DATA}training:\n  cond_dropout:\n    - {until_step: 500, rate: 0}\n    - {until_step: 400, rate: 1.5}\n    - {until_step: 900, rate: 0.1}\n`)).toEqual([
      'training.cond_dropout.1.until_step: until_step must increase: 400 is not after 500 (cat.yaml:7:20)',
      'training.cond_dropout.1.rate: must be at most 1, got number 1.5 (cat.yaml:7:31)',
      'training.cond_dropout.2.until_step: the last entry must not have until_step (its rate holds to the end of training) (cat.yaml:8:20)',
    ]);
    expect(problems('lora', `${DATA}training:\n  cond_dropout: [{rate: 0}, {rate: 0.1}]\n`)[0]).toContain('every entry but the last needs until_step');
    expect(problems('lora', `${DATA}training:\n  cond_dropout: lots\n`)).toEqual(['training.cond_dropout: expected a number or a list, got string "lots" (cat.yaml:5:17)']);
  });

  it('per-method defaults', () => {
    expect(load('embed', MIN.embed).training).toMatchObject({ cond_dropout: 0, learning_rate: 5e-3 });
    for (const m of ['hypernetwork', 'dreambooth', 'lora'] as const) expect(load(m, MIN[m]).training.cond_dropout).toBe(0.1);
  });
});

describe('method sections', () => {
  it('embed', () => {
    expect(load('embed', MIN.embed).embed).toEqual({
      placeholder_token: '<cat>', num_vectors: 1, init_word: '*', init_multi_token: 'mean', export: { safetensors: true, a1111_pt: true, kohya: false },
    });
    expect(problems('embed', `embed:\n  placeholder_token: my cat\n  num_vectors: 0\n${DATA}`)).toEqual([
      'embed.placeholder_token: must be one word without spaces, e.g. <my-cat> (cat.yaml:2:22)',
      'embed.num_vectors: must be at least 1, got number 0 (cat.yaml:3:16)',
    ]);
  });

  it('hypernetwork', () => {
    const h = load('hypernetwork', MIN.hypernetwork).hypernetwork;
    expect(h).toMatchObject({ layer_structure: [1, 2, 1], activation_func: 'linear', weight_initialization: 'Normal', is_layer_norm: false });
    expect(problems('hypernetwork', `${DATA}hypernetwork:\n  layer_structure: [2, 1]\n  activation_func: Relu\n  dropout_structure: [0, 0.1]\n`)).toEqual([
      'hypernetwork.layer_structure: must start and end with 1 (sizes are multiples of the attention width), e.g. [1, 2, 1] (cat.yaml:5:20)',
      expect.stringContaining("hypernetwork.activation_func: expected one of 'linear', 'relu'"),
    ]);
    expect(problems('hypernetwork', `${DATA}hypernetwork:\n  dropout_structure: [0, 0.1]\n`)).toEqual([
      'hypernetwork.dropout_structure: needs 3 entries (one per layer_structure entry), got 2 (cat.yaml:5:22)',
    ]);
  });

  it('dreambooth prior preservation needs class keys', () => {
    expect(problems('dreambooth', `${DATA}dreambooth:\n  with_prior_preservation: true\n`)).toEqual([
      'dreambooth.class_data_dir: is required when with_prior_preservation is true (cat.yaml:4:1)',
      'dreambooth.class_prompt: is required when with_prior_preservation is true (cat.yaml:4:1)',
    ]);
    const d = load('dreambooth', `${DATA}dreambooth:\n  with_prior_preservation: true\n  class_data_dir: cls\n  class_prompt: a dog\n`).dreambooth;
    expect(d).toMatchObject({ class_data_dir: '/proj/cls', prior_loss_weight: 1, num_class_images: 100, ema: { enabled: false, decay: 0.9999 }, export: { diffusers: true, single_file: true } });
  });

  it('lora: alpha defaults to rank; conv keys checked', () => {
    expect(load('lora', MIN.lora).lora).toMatchObject({ rank: 4, alpha: 4, targets: 'attention', dropout: 0 });
    expect(load('lora', `${DATA}lora: {rank: 8, targets: all, conv_rank: 2}\n`).lora).toMatchObject({ alpha: 8, conv_rank: 2, conv_alpha: 2 });
    expect(load('lora', `${DATA}lora: {targets: [to_q, to_v]}\n`).lora.targets).toEqual(['to_q', 'to_v']);
    expect(problems('lora', `${DATA}lora: {conv_rank: 2}\n`)).toEqual([
      'lora.conv_rank: has no effect with targets: attention (no convolutions are targeted); use targets: all (cat.yaml:4:19)',
    ]);
  });
});

describe('sample', () => {
  it('defaults and weighted files', () => {
    const c = load('sample', `${MIN.sample}loras: ["a.safetensors:0.5", {path: b.safetensors}]\nhypernetworks: [h.pt]\n`);
    expect(c).toMatchObject({ steps: 20, cfg_scale: 7, sampler: 'euler_a', seed: -1, negative_prompt: '' });
    expect([c.width, c.height]).toEqual([undefined, undefined]); // the model's native size, resolved when it is read
    expect(c.loras).toEqual([{ path: '/proj/a.safetensors', strength: 0.5 }, { path: '/proj/b.safetensors', strength: 1 }]);
    expect(c.hypernetworks).toEqual([{ path: '/proj/h.pt', strength: 1 }]);
    expect(c.out).toBe('/proj/outputs');
  });

  it('checks', () => {
    expect(problems('sample', 'width: 100\nmask: m.png\n')).toEqual([
      'width: must be a multiple of 8, got number 100 (e.g. 96 or 104) (cat.yaml:1:8)',
      "prompt: missing required key 'prompt' (cat.yaml)",
    ]);
    expect(problems('sample', `${MIN.sample}mask: m.png\n`)).toEqual(['mask: needs init_image (cat.yaml:2:7)']);
  });

  it('splitStrength', () => {
    expect(splitStrength('x.pt:0.8')).toEqual({ path: 'x.pt', strength: 0.8 });
    expect(splitStrength('C:\\models\\x.pt')).toEqual({ path: 'C:\\models\\x.pt', strength: 1 });
    expect(splitStrength('C:\\x.pt:-1')).toEqual({ path: 'C:\\x.pt', strength: -1 });
  });
});

describe('inferred types (checked by tsc)', () => {
  it('are precise', () => {
    expectTypeOf<EmbedConfig['method']>().toEqualTypeOf<'embed'>();
    expectTypeOf<TrainConfig['method']>().toEqualTypeOf<'embed' | 'hypernetwork' | 'dreambooth' | 'lora'>();
    expectTypeOf<LoraConfig['lora']['alpha']>().toEqualTypeOf<number>();
    expectTypeOf<SampleConfig['loras'][number]>().toEqualTypeOf<{ path: string; strength: number }>();
    expectTypeOf<EmbedConfig['training']['cond_dropout']>().toEqualTypeOf<number | { until_step?: number | undefined; rate: number }[]>();
  });
});
