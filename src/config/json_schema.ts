// The JSON Schema for editors (configs/sdtrain.schema.json) and the key reference in docs/config.md, both generated
// from the zod schemas by scripts/gen_schema.ts; tests check the committed files match.
import { z } from 'zod';
import { PATH_META_KEY } from './fields.js';
import { COMMANDS, CONFIG_SCHEMAS, TRAIN_METHODS, type ConfigCommand } from './schema.js';

type Json = Record<string, unknown>;

/** Drop zod's noise (safe-integer bounds) and our private path mark. */
function clean(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(clean);
  if (v === null || typeof v !== 'object') return v;
  const out: Json = {};
  for (const [k, child] of Object.entries(v)) {
    if (k === PATH_META_KEY) continue;
    if (k === 'maximum' && child === Number.MAX_SAFE_INTEGER) continue;
    if (k === 'minimum' && child === Number.MIN_SAFE_INTEGER) continue;
    out[k] = clean(child);
  }
  return out;
}

/** The JSON Schema of one command's config (draft-07, input side: what you may write). */
export function commandJsonSchema(command: ConfigCommand): Json {
  const { $schema: _drop, ...schema } = z.toJSONSchema(CONFIG_SCHEMAS[command], { io: 'input', target: 'draft-7' }) as Json;
  return clean(schema) as Json;
}

/** `key:` / `key: null` means "not set" to the loader, so the editor schema accepts null for every optional key. */
function allowNull(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(allowNull);
  if (v === null || typeof v !== 'object') return v;
  const s = Object.fromEntries(Object.entries(v).map(([k, c]) => [k, allowNull(c)])) as Json;
  if (s.properties === undefined) return s;
  const required = new Set((s.required ?? []) as string[]);
  const properties: Json = {};
  for (const [k, p] of Object.entries(s.properties as Record<string, Json>)) {
    if (required.has(k)) properties[k] = p;
    else if (typeof p.type === 'string' && p.const === undefined) {
      properties[k] = { ...p, type: [p.type, 'null'], ...(Array.isArray(p.enum) ? { enum: [...p.enum, null] } : {}) };
    } else if (Array.isArray(p.anyOf)) properties[k] = { ...p, anyOf: [...p.anyOf, { type: 'null' }] };
    else {
      const { description, default: dflt, ...rest } = p;
      properties[k] = { description, default: dflt, anyOf: [rest, { type: 'null' }] };
    }
  }
  return { ...s, properties };
}

/** One schema that accepts any sdtrain config file: anyOf the per-command schemas (picked by `method:`). */
export function buildJsonSchema(): Json {
  const definitions: Json = {};
  for (const c of COMMANDS) definitions[c] = allowNull(commandJsonSchema(c));
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'sdtrain configuration',
    description:
      'A run config for sdtrain embed / hypernetwork / dreambooth / lora, or a sampling config for sdtrain sample. Put `method: <command>` first so editors know which one. Generated from src/config/schema.ts by `npm run schema` — do not edit.',
    anyOf: COMMANDS.map((c) => ({ $ref: `#/definitions/${c}` })),
    definitions,
  };
}

export function renderJsonSchema(): string {
  return `${JSON.stringify(buildJsonSchema(), null, 2)}\n`;
}

// ---- Markdown key reference ---------------------------------------------------------------------------------------

interface Row {
  key: string;
  type: string;
  default: string;
  description: string;
}

const code = (s: string): string => (s === '' ? '`""`' : `\`${s}\``);
const flow = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v).replace(/,/g, ', ').replace(/"/g, ''));

function typeOf(s: Json): string {
  if (s.const !== undefined) return code(flow(s.const));
  if (Array.isArray(s.enum)) return s.enum.map((e) => code(flow(e))).join(' \\| ');
  if (Array.isArray(s.anyOf)) return (s.anyOf as Json[]).map(typeOf).join(' or ');
  if (s.type === 'array') {
    if (Array.isArray(s.items)) return `[${(s.items as Json[]).map(typeOf).join(', ')}]`;
    return `list of ${typeOf((s.items ?? {}) as Json)}`;
  }
  if (s.type === 'object') return 'mapping';
  if (s.type === 'integer') return 'integer';
  return typeof s.type === 'string' ? s.type : 'any';
}

function rows(schema: Json, prefix: string): Row[] {
  const props = (schema.properties ?? {}) as Record<string, Json>;
  const required = new Set((schema.required ?? []) as string[]);
  const out: Row[] = [];
  for (const [k, s] of Object.entries(props)) {
    const key = `${prefix}${k}`;
    const dflt = 'default' in s ? code(flow(s.default)) : required.has(k) ? '**required**' : '—';
    const isSection = s.type === 'object' && s.properties !== undefined;
    const items = s.items as Json | undefined;
    const isList = s.type === 'array' && items?.type === 'object' && items.properties !== undefined;
    out.push({ key: code(key), type: isSection ? 'section' : typeOf(s), default: isSection ? '' : dflt, description: String(s.description ?? '') });
    if (isSection) out.push(...rows(s, `${key}.`));
    if (isList && items) out.push(...rows(items, `${key}[].`));
  }
  return out;
}

function table(rs: readonly Row[]): string {
  const cell = (s: string): string => s.replace(/\|/g, (m, i: number, all: string) => (all[i - 1] === '\\' ? m : '\\|')).replace(/\n/g, ' ');
  const text = (s: string): string => cell(s).replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return ['| key | type | default | description |', '| --- | --- | --- | --- |', ...rs.map((r) => `| ${r.key} | ${cell(r.type)} | ${cell(r.default)} | ${text(r.description)} |`)].join('\n');
}

/** The "Key reference" part of docs/config.md. */
export function renderConfigReference(): string {
  const per = Object.fromEntries(TRAIN_METHODS.map((m) => [m, rows(commandJsonSchema(m), '')])) as Record<string, Row[]>;
  const sectionKeys = new Set<string>(TRAIN_METHODS);
  const isMethodRow = (r: Row): boolean => sectionKeys.has(r.key.slice(1, -1).split(/[.[]/)[0]!);
  // Shared keys: one row, with per-method defaults where they differ.
  const shared = per.embed!.filter((r) => !isMethodRow(r) && r.key !== code('method')).map((r) => {
    const defaults = TRAIN_METHODS.map((m) => per[m]!.find((x) => x.key === r.key)?.default ?? '');
    if (defaults.every((d) => d === defaults[0])) return r;
    return { ...r, default: TRAIN_METHODS.map((m, i) => `${m}: ${defaults[i]}`).join('<br>') };
  });
  const parts = [
    '### Keys in every training config',
    '',
    'Used by `sdtrain embed`, `sdtrain hypernetwork`, `sdtrain dreambooth` and `sdtrain lora`.',
    '',
    table([{ key: code('method'), type: TRAIN_METHODS.map((m) => code(m)).join(' \\| '), default: 'the command', description: 'Which command this file is for. Optional; when present it must match the command (a mismatch is an error). Write it first so editors pick the right schema.' }, ...shared]),
  ];
  for (const m of TRAIN_METHODS) {
    parts.push('', `### \`${m}\` section (sdtrain ${m})`, '', table(per[m]!.filter(isMethodRow)));
  }
  parts.push('', '### Sampling config (sdtrain sample)', '', table(rows(commandJsonSchema('sample'), '')));
  return `${parts.join('\n')}\n`;
}

export const REFERENCE_BEGIN = '<!-- BEGIN GENERATED KEY REFERENCE: `npm run build && npm run schema` rewrites this part -->';
export const REFERENCE_END = '<!-- END GENERATED KEY REFERENCE -->';

/** `doc` with the text between the reference markers replaced by `reference`. */
export function replaceReference(doc: string, reference: string): string {
  const begin = doc.indexOf(REFERENCE_BEGIN);
  const end = doc.indexOf(REFERENCE_END);
  if (begin < 0 || end < begin) throw new Error(`the generated-reference markers are missing (${REFERENCE_BEGIN} ... ${REFERENCE_END})`);
  return `${doc.slice(0, begin + REFERENCE_BEGIN.length)}\n\n${reference}\n${doc.slice(end)}`;
}
