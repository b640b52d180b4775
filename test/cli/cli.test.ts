import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packagePath, packageVersion } from '../../src/paths.js';
import { sdtrain } from '../helpers/cli.js';
import { fixture } from '../helpers/shared.js';
import { writeZip } from '../helpers/zip.js';

interface Report {
  format: string;
  tensorCount: number;
  detection: { kind: string; layout?: string; variant?: string; summary: string; details: Record<string, unknown> };
  components?: Record<string, Report>;
}
const inspectJson = async (path: string): Promise<Report> => {
  const r = await sdtrain(['inspect', path, '--json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as Report[])[0]!;
};

describe('sdtrain --help / --version', () => {
  it('--help lists the commands', async () => {
    const r = await sdtrain(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['inspect', 'tokenize', 'config']) expect(r.stdout).toContain(`sdtrain ${c}`);
    expect(r.stdout).toContain('--backend');
  });
  it('--version prints the package version', async () => {
    expect((await sdtrain(['--version'])).stdout.trim()).toBe(packageVersion());
  });
  it('an unknown command is a usage error (exit 2) with a pointer to --help', async () => {
    const r = await sdtrain(['trian']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/sdtrain: error: .*\n.*sdtrain --help/);
  });
});

// The expected kind of every file under ../shared/fixtures/formats (written here, not derived).
const FORMAT_KINDS: Array<[file: string, kind: string, layout: string | undefined, extra?: Record<string, unknown>]> = [
  ['a1111_embedding_sd1.png', 'embedding', 'a1111-png', { vectors: 2, dim: 768, name: 'cattoy-sd1' }],
  ['a1111_embedding_sd1_pixels_only.png', 'embedding', 'a1111-png', { vectors: 2, dim: 768, name: 'cattoy-sd1' }],
  ['a1111_embedding_sd1.pt', 'embedding', 'a1111', { dim: 768 }],
  ['a1111_embedding_tiny.pt', 'embedding', 'a1111', { vectors: 3, dim: 32, name: 'tiny-emb' }],
  ['rinongal_embedding.pt', 'embedding', 'rinongal'],
  ['diffusers_learned_embeds.safetensors', 'embedding', 'diffusers'],
  ['diffusers_learned_embeds_3vec.safetensors', 'embedding', 'diffusers', { vectors: 3 }],
  ['diffusers_learned_embeds_legacy.bin', 'embedding', 'diffusers', { vectors: 1 }],
  ['kohya_embedding_sd1.safetensors', 'embedding', 'kohya', { dim: 768 }],
  ['kohya_embedding_tiny.safetensors', 'embedding', 'kohya', { dim: 32 }],
  ['sdxl_embedding.safetensors', 'embedding', 'sdxl'],
  ['a1111_hypernetwork_sd1_sizes_ln.pt', 'hypernetwork', 'a1111', { sizes: [320, 640, 768, 1280] }],
  ['a1111_hypernetwork_tiny_dropout.pt', 'hypernetwork', 'a1111'],
  ['a1111_hypernetwork_tiny_legacy.pt', 'hypernetwork', 'a1111'],
  ['a1111_hypernetwork_tiny_relu.pt', 'hypernetwork', 'a1111', { activation_func: 'relu' }],
  ['a1111_hypernetwork_tiny_relu_ln.pt', 'hypernetwork', 'a1111', { is_layer_norm: true }],
  ['a1111_hypernetwork_tiny_swish_actout.pt', 'hypernetwork', 'a1111', { activation_func: 'swish', activate_output: true }],
  ['kohya_lora_sd15_r4.safetensors', 'lora', 'kohya', { modules: 264, text_encoder_modules: 72, rank: 4 }],
  ['kohya_lora_tiny_locon.safetensors', 'lora', 'kohya'],
  ['diffusers_peft_lora_tiny.safetensors', 'lora', 'diffusers-peft'],
  ['a1111_infotext_ascii.png', 'infotext_image', undefined],
  ['a1111_infotext_unicode.png', 'infotext_image', undefined],
];

describe('sdtrain inspect on every fixture format file', () => {
  it.each(FORMAT_KINDS)('%s is %s (%s)', async (file, kind, layout, extra) => {
    const r = await inspectJson(fixture('formats', file));
    expect(r.detection.kind).toBe(kind);
    expect(r.detection.layout).toBe(layout);
    if (extra) expect(r.detection.details).toMatchObject(extra);
  });

  it('LoCon is told apart from plain LoRA', async () => {
    expect((await inspectJson(fixture('formats', 'kohya_lora_tiny_locon.safetensors'))).detection.variant).toBe('locon');
    expect((await inspectJson(fixture('formats', 'kohya_lora_sd15_r4.safetensors'))).detection.variant).toBe('lora');
  });

  it('the human table names the kind', async () => {
    const r = await sdtrain(['inspect', fixture('formats', 'kohya_lora_sd15_r4.safetensors')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/kind +LoRA \(kohya layout\): 264 modules \(72 text encoder, 192 U-Net\), rank 4/);
    expect(r.stdout).toMatch(/tensors +792 \(F16 792\)/);
    expect(r.stdout).toMatch(/params +2,359,560/);
  });
});

describe('sdtrain inspect on the tiny models', () => {
  it('the diffusers folder: an SD 1.x pipeline with per-component reports', async () => {
    const r = await inspectJson(fixture('tiny-sd1'));
    expect([r.format, r.detection.kind, r.detection.variant]).toEqual(['diffusers-folder', 'diffusers_pipeline', 'sd1']);
    expect(r.components!.unet!.detection.kind).toBe('unet');
    expect(r.components!.vae!.detection.kind).toBe('vae');
    expect(r.components!.text_encoder!.detection.kind).toBe('text_encoder');
  });
  it('the original single file: an SD 1.x checkpoint with all three components', async () => {
    const r = await inspectJson(fixture('tiny-sd1-original', 'tiny-sd1.safetensors'));
    expect([r.detection.kind, r.detection.layout, r.detection.variant]).toEqual(['checkpoint', 'original', 'sd1']);
    expect(r.tensorCount).toBe(790);
  });
});

describe('sdtrain inspect on bad input', () => {
  it('a missing file: exit 1, one line naming it', async () => {
    const r = await sdtrain(['inspect', '/nonexistent/model.safetensors']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('sdtrain: error: /nonexistent/model.safetensors: no such file or directory');
  });
  it('a .pt whose pickle names os.system is refused, names the global, and runs nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sdtrain-cli-'));
    const sentinel = join(dir, 'pwned');
    // protocol-2 pickle: GLOBAL os.system, MARK, STRING 'touch <sentinel>', TUPLE, REDUCE, STOP, in torch's zip layout
    const pkl = Buffer.from(`\x80\x02cos\nsystem\n(S'touch ${sentinel}'\ntR.`, 'latin1');
    const file = join(dir, 'evil.pt');
    await writeZip(file, [['evil/data.pkl', pkl], ['evil/version', '3\n']]);
    const r = await sdtrain(['inspect', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/evil\.pt.*refusing to load: the pickle names 'os\.system'/);
    expect(existsSync(sentinel)).toBe(false);
  });
  it('a bare (non-zip) pickle is not taken for a torch file, and runs nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sdtrain-cli-'));
    const sentinel = join(dir, 'pwned');
    const file = join(dir, 'evil.ckpt');
    writeFileSync(file, Buffer.from(`\x80\x02cos\nsystem\n(S'touch ${sentinel}'\ntR.`, 'latin1'));
    const r = await sdtrain(['inspect', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/evil\.ckpt: .*zip/);
    expect(existsSync(sentinel)).toBe(false);
  });
  it('a text file is not a model: exit 1, says what is expected', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sdtrain-cli-'));
    writeFileSync(join(dir, 'notes.txt'), 'hello world, this is not a checkpoint');
    const r = await sdtrain(['inspect', join(dir, 'notes.txt')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/notes\.txt: not a recognised file: expected \.safetensors/);
  });
  it('--verbose adds the stack', async () => {
    const r = await sdtrain(['inspect', '/nonexistent/x.ckpt', '--verbose']);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
});

describe('sdtrain tokenize', () => {
  it('prints tokens, ids and the slot count', async () => {
    const r = await sdtrain(['tokenize', 'a photo of a cat']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^1 +320 +a<\/w>$/m);
    expect(r.stdout).toMatch(/5 of 75 tokens used\n$/);
  });
  it('--json with SD2 padding', async () => {
    const r = await sdtrain(['tokenize', 'a cat', '--pad', 'zero', '--json']);
    const j = JSON.parse(r.stdout) as { ids: number[]; input_ids: number[]; token_count: number };
    expect(j.input_ids.slice(0, 5)).toEqual([49406, ...j.ids, 49407, 0]);
    expect(j.token_count).toBe(2);
  });
  it('a prompt over 75 tokens says it is truncated', async () => {
    const r = await sdtrain(['tokenize', Array.from({ length: 80 }, () => 'cat').join(' ')]);
    expect(r.stdout).toMatch(/80 of 75 tokens used \(truncated/);
  });
});

describe('sdtrain dataset check', () => {
  it('shows what each shapes config trains on, DreamBooth instance_data_dir included', async () => {
    const counts: Record<string, number> = {};
    for (const m of ['embed', 'hypernetwork', 'dreambooth', 'lora']) {
      const r = await sdtrain(['dataset', 'check', '--config', packagePath('configs', `shapes-${m}.yaml`), '--json']);
      expect(r.code, r.stderr).toBe(0);
      counts[m] = (JSON.parse(r.stdout) as { totalImages: number }).totalImages;
    }
    expect(counts).toEqual({ embed: 24, hypernetwork: 48, dreambooth: 16, lora: 48 });
    const r = await sdtrain(['dataset', 'check', '--config', packagePath('configs', 'shapes-dreambooth.yaml'), '--json']);
    expect((JSON.parse(r.stdout) as { subsets: Array<{ examples: Array<{ caption: string }> }> }).subsets[0]!.examples[0]!.caption).toBe('a red sks square on a white background');
  });
});

describe('sdtrain config', () => {
  it('a valid config prints resolved', async () => {
    const r = await sdtrain(['config', 'configs/example.yaml', '--set', 'training.max_train_steps=123']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/valid embed config/);
    expect(r.stdout).toMatch(/max_train_steps: 123/);
  });
  it('a typo is a config error (exit 2) naming file, key, line and a suggestion', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sdtrain-cli-'));
    const file = join(dir, 'cat.yaml');
    writeFileSync(file, 'method: embed\ntraining:\n  learnig_rate: 0.005\nembed:\n  placeholder_token: "<cat>"\n');
    const r = await sdtrain(['config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/learnig_rate/);
    expect(r.stderr).toMatch(/did you mean 'learning_rate'/);
    expect(r.stderr).toMatch(/cat\.yaml:3/);
  });
});
