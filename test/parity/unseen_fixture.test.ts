// The runner on a fixture directory it has never seen: no index.json (cases found by walking parity/), an SD2-style
// text encoder (exact gelu, 3 heads of 16, 3 layers, padding with id 0, a stored position_ids buffer) whose reference
// outputs come from an independent float64 torch implementation written here, an SD2-padded tokenizer folder checked
// against tokenizer/cases.json's sd2_input_ids, a kind the runner does not know, and a JSON that is not a case.
import * as tf from '@tensorflow/tfjs';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runParity } from '../../src/parity/runner.js';
import type { ParityReport } from '../../src/parity/types.js';
import { runPythonJson, torchPython } from '../helpers/python_torch.js';
import { fixture, hasShared } from '../helpers/shared.js';
import { useTmpDir } from '../helpers/tmp.js';

const tmp = useTmpDir('sdtrain-parity-');

const MAKE_FIXTURE = String.raw`
import json, os, struct, sys
import torch
root, cases_json = sys.argv[1], sys.argv[2]
torch.manual_seed(1234)
D = torch.float64
V, C, H, I, L, T = 600, 48, 3, 61, 3, 77
BOS, EOS = 598, 599

def save(path, tensors):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        t = t.contiguous()
        b = t.numpy().tobytes()
        header[k] = {'dtype': {torch.float32: 'F32', torch.int64: 'I64'}[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))

def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=1)

sd = {}
def rnd(name, *shape, scale=0.2, base=0.0):
    sd[name] = base + scale * torch.randn(*shape, dtype=D)
rnd('text_model.embeddings.token_embedding.weight', V, C)
rnd('text_model.embeddings.position_embedding.weight', T, C)
for l in range(L):
    p = f'text_model.encoder.layers.{l}.'
    for n in ['q_proj', 'k_proj', 'v_proj', 'out_proj']:
        rnd(p + f'self_attn.{n}.weight', C, C); rnd(p + f'self_attn.{n}.bias', C, scale=0.1)
    for n in ['layer_norm1', 'layer_norm2']:
        rnd(p + n + '.weight', C, scale=0.1, base=1.0); rnd(p + n + '.bias', C, scale=0.1)
    rnd(p + 'mlp.fc1.weight', I, C); rnd(p + 'mlp.fc1.bias', I, scale=0.1)
    rnd(p + 'mlp.fc2.weight', C, I); rnd(p + 'mlp.fc2.bias', C, scale=0.1)
rnd('text_model.final_layer_norm.weight', C, scale=0.1, base=1.0); rnd('text_model.final_layer_norm.bias', C, scale=0.1)
sd = {k: v.float().double() for k, v in sd.items()}  # both sides use the same float32 weights

te = os.path.join(root, 'sd2ish', 'text_encoder')
dump(os.path.join(te, 'config.json'), {'architectures': ['CLIPTextModel'], 'model_type': 'clip_text_model', 'vocab_size': V,
     'hidden_size': C, 'intermediate_size': I, 'num_hidden_layers': L, 'num_attention_heads': H, 'max_position_embeddings': T,
     'hidden_act': 'gelu', 'layer_norm_eps': 1e-05, 'projection_dim': 32, 'bos_token_id': 0, 'eos_token_id': 2, 'pad_token_id': 1,
     'dropout': 0.0, 'torch_dtype': 'float32'})
weights = {k: v.float() for k, v in sd.items()}
weights['text_model.embeddings.position_ids'] = torch.arange(T).unsqueeze(0)  # old transformers saved this buffer
save(os.path.join(te, 'model.safetensors'), weights)

# reference forward, float64, written from the math (pre-LN, causal finfo.min mask, exact gelu, argmax pooling)
rows = [[BOS, 5, 17, 42, EOS], [BOS, 3, EOS, 4, EOS, 9, 11]]
ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
def ln(x, n):
    return torch.nn.functional.layer_norm(x, (C,), sd[n + '.weight'], sd[n + '.bias'], 1e-5)
def lin(x, n):
    return x @ sd[n + '.weight'].T + sd[n + '.bias']
B, d = ids.shape[0], C // H
x = sd['text_model.embeddings.token_embedding.weight'][ids] + sd['text_model.embeddings.position_embedding.weight'][:T]
mask = torch.full((T, T), torch.finfo(D).min, dtype=D).triu(1)
hs = [x]
for l in range(L):
    p = f'text_model.encoder.layers.{l}.'
    h = ln(x, p + 'layer_norm1')
    split = lambda t: t.view(B, T, H, d).transpose(1, 2)
    q, k, v = split(lin(h, p + 'self_attn.q_proj') * d ** -0.5), split(lin(h, p + 'self_attn.k_proj')), split(lin(h, p + 'self_attn.v_proj'))
    a = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1) @ v
    x = x + lin(a.transpose(1, 2).reshape(B, T, C), p + 'self_attn.out_proj')
    x = x + lin(torch.nn.functional.gelu(lin(ln(x, p + 'layer_norm2'), p + 'mlp.fc1')), p + 'mlp.fc2')
    hs.append(x)
last = ln(x, 'text_model.final_layer_norm')
pooled = last[torch.arange(B), ids.argmax(-1)]
outs = {'last_hidden_state': last, 'pooler_output': pooled, 'penultimate_hidden_state': hs[-2],
        'clip_skip_2_embeds': ln(hs[-2], 'text_model.final_layer_norm')}
case_dir = os.path.join(root, 'parity', 'sd2ish')
tensors = {'inputs/input_ids': ids}
spec = {'case': 'te_sd2ish', 'kind': 'text_encoder', 'model': 'sd2ish', 'model_dir': 'sd2ish',
        'inputs': {'input_ids': {'key': 'inputs/input_ids', 'shape': list(ids.shape), 'dtype': 'int64'}}, 'outputs': {}}
for n, t in outs.items():
    tensors['outputs/' + n] = t.float()
    spec['outputs'][n] = {'key': 'outputs/' + n, 'shape': list(t.shape), 'dtype': 'float32', 'suggested_atol': 2e-05}
save(os.path.join(case_dir, 'te_sd2ish.safetensors'), tensors)
spec['file'] = 'te_sd2ish.safetensors'
dump(os.path.join(case_dir, 'te_sd2ish.json'), spec)

# an SD2-style tokenizer case: pad id 0 ("!"), expectations from the shared tokenizer cases
cases = json.load(open(cases_json))['cases'][:6]
prompts = [c['text'] for c in cases]
exp = torch.tensor([c['sd2_input_ids'] for c in cases])
save(os.path.join(case_dir, 'tok_sd2ish.safetensors'), {'outputs/input_ids': exp})
dump(os.path.join(case_dir, 'tok_sd2ish.json'), {'case': 'tok_sd2ish', 'kind': 'tokenizer', 'model_dir': 'sd2ish',
     'args': {'prompts': prompts}, 'inputs': {}, 'outputs': {'input_ids': {'key': 'outputs/input_ids', 'shape': list(exp.shape), 'dtype': 'int64'}}})

# a kind the runner does not know yet, and a JSON that is not a case
dump(os.path.join(case_dir, 'sched_x.json'), {'case': 'sched_x', 'kind': 'no_such_kind', 'model_dir': 'sd2ish', 'inputs': {}, 'outputs': {}})
dump(os.path.join(case_dir, 'module_table.json'), {'modules': []})
print(json.dumps({'ok': True}))
`;

describe.runIf(hasShared && torchPython)('parity runner on an unseen fixture directory (SD2-style, no index.json)', () => {
  let report: ParityReport;

  beforeAll(async () => {
    const root = tmp();
    await runPythonJson(MAKE_FIXTURE, [root, fixture('tokenizer', 'cases.json')]);
    // the tiny-sd1 BPE files, with SD2's pad token "!" (id 0)
    const tokDir = join(root, 'sd2ish', 'tokenizer');
    mkdirSync(tokDir, { recursive: true });
    for (const f of ['vocab.json', 'merges.txt']) copyFileSync(fixture('tiny-sd1', 'tokenizer', f), join(tokDir, f));
    const config = JSON.parse(readFileSync(fixture('tiny-sd1', 'tokenizer', 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(tokDir, 'tokenizer_config.json'), JSON.stringify({ ...config, pad_token: '!' }));
    writeFileSync(join(tokDir, 'special_tokens_map.json'), JSON.stringify({ bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', pad_token: '!', unk_token: '<|endoftext|>' }));
    const before = tf.memory().numTensors;
    report = await runParity(root);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('finds the cases by walking parity/ (sorted by path) and skips the unknown kind', () => {
    expect(report.cases.map((c) => [c.case, c.status])).toEqual([
      ['sched_x', 'skipped'],
      ['te_sd2ish', 'ran'],
      ['tok_sd2ish', 'ran'],
    ]);
    expect(report.tokenizerCases).toBeUndefined();
  });

  it('the gelu text encoder matches the float64 torch reference; the SD2 tokenizer pads with 0', () => {
    const te = report.cases.find((c) => c.case === 'te_sd2ish')!;
    expect(te.outputs.map((o) => o.output)).toEqual(['last_hidden_state', 'pooler_output', 'penultimate_hidden_state', 'clip_skip_2_embeds']);
    for (const o of te.outputs) expect(o.maxAbsErr, o.output).toBeLessThanOrEqual(o.atol);
    const tok = report.cases.find((c) => c.case === 'tok_sd2ish')!;
    expect(tok.outputs).toEqual([expect.objectContaining({ output: 'input_ids', maxAbsErr: 0, pass: true })]);
    expect(report.pass).toBe(true);
  });
});
