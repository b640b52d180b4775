// Turn zod issues into one-line, user-facing messages: "key.path: what is wrong (where)".
import type { z } from 'zod';
import { allKeyPaths, enumValues, objectKeys, schemasAt, suggest, type KeySegment } from './fields.js';

/** One problem with a configuration, already worded for the user. */
export interface ConfigIssue {
  /** Key path of the offending value, e.g. ['training', 'learning_rate']; empty for file-level problems. */
  keyPath: KeySegment[];
  /** The key path as written in messages and `--set`: 'training.learning_rate'. */
  key: string;
  /** What is wrong, e.g. 'expected a number, got string "fast"'. */
  message: string;
  /** Where the value came from: 'cat.yaml:12:18', or '--set training.learning_rate=fast; config cat.yaml'. */
  location: string;
  /** 1-based line and column in the file, when the value was written in it. */
  line?: number | undefined;
  col?: number | undefined;
}

/** Where something is: the text for messages, and the file position when there is one. */
export interface Place {
  location: string;
  line?: number | undefined;
  col?: number | undefined;
}

export interface IssueContext {
  schema: z.core.$ZodType;
  /** The data that was validated (to quote the offending value). */
  input: unknown;
  /** Where the key (for unknown keys) or value at a key path came from. */
  locate(keyPath: readonly KeySegment[], at: 'key' | 'value'): Place;
  /** Extra advice for an unknown key, by dotted key path (replaces the did-you-mean suggestion). */
  unknownKeyHints?: Readonly<Record<string, string>> | undefined;
}

/** '1 entry', '3 entries'. */
export const entries = (k: number): string => `${k} entr${k === 1 ? 'y' : 'ies'}`;

/** 'a.b.0.c' for ['a', 'b', 0, 'c']. */
export const dotted = (keyPath: readonly KeySegment[]): string => keyPath.join('.');

/** One line per issue: `key: message (location)`. */
export function issueLine(i: ConfigIssue): string {
  return `${i.key === '' ? '' : `${i.key}: `}${i.message} (${i.location})`;
}

export function valueAt(data: unknown, keyPath: readonly KeySegment[]): unknown {
  let v = data;
  for (const seg of keyPath) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[String(seg)];
  }
  return v;
}

/** 'string "fast"', 'number 1.5', 'a list', ... */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  if (Array.isArray(v)) return `a list of ${v.length} item${v.length === 1 ? '' : 's'}`;
  if (typeof v === 'object') return 'a mapping';
  return typeof v;
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping (key: value)',
  array: 'a list',
  tuple: 'a list',
  null: 'null',
};
const expectedName = (e: string): string => EXPECTED[e] ?? e;
const quoteList = (values: readonly unknown[]): string => values.map((v) => (typeof v === 'string' ? `'${v}'` : String(v))).join(', ');

function didYouMean(value: unknown, candidates: readonly string[]): string {
  if (typeof value !== 'string') return '';
  const s = suggest(value, candidates);
  return s !== undefined && s !== value ? ` — did you mean '${s}'?` : '';
}

function bound(issue: { minimum?: unknown; maximum?: unknown; inclusive?: boolean; origin: string }, value: unknown, small: boolean): string {
  const limit = Number(small ? issue.minimum : issue.maximum);
  if (issue.origin === 'string') {
    if (small && limit === 1) return 'must not be empty';
    return `must be ${small ? 'at least' : 'at most'} ${limit} characters long`;
  }
  if (issue.origin === 'array' || issue.origin === 'set') {
    const n = Array.isArray(value) ? value.length : '?';
    return `needs ${small ? 'at least' : 'at most'} ${entries(limit)}, got ${n}`;
  }
  const words = small ? (issue.inclusive ? 'at least' : 'greater than') : issue.inclusive ? 'at most' : 'less than';
  return `must be ${words} ${limit}, got ${describeValue(value)}`;
}

function multipleHint(value: unknown, divisor: number): string {
  if (typeof value !== 'number') return '';
  const lower = Math.floor(value / divisor) * divisor;
  const options = [lower, lower + divisor].filter((v) => v > 0);
  return options.length ? ` (e.g. ${options.join(' or ')})` : '';
}

/** A key with (nearly) this name somewhere else in the schema, as a full dotted path. */
function suggestElsewhere(key: string, schema: z.core.$ZodType, here: readonly KeySegment[]): string | undefined {
  const depth = here.length;
  const paths = allKeyPaths(schema).filter((p) => p.length !== depth + 1 || p.slice(0, depth).join('.') !== here.map(String).join('.'));
  const names = [...new Set(paths.map((p) => p.at(-1)!))];
  const name = suggest(key, names);
  const match = name === undefined ? undefined : paths.find((p) => p.at(-1) === name);
  return match?.join('.');
}

/** Word the issues of one failed validation; several issues can come out of one (one per unknown key). */
export function describeIssues(issues: readonly z.core.$ZodIssue[], ctx: IssueContext, prefix: readonly KeySegment[] = []): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const push = (keyPath: KeySegment[], message: string, at: 'key' | 'value' = 'value'): void => {
    out.push({ keyPath, key: dotted(keyPath), message, ...ctx.locate(keyPath, at) });
  };
  for (const issue of issues) {
    const keyPath = [...prefix, ...(issue.path as KeySegment[])];
    const value = valueAt(ctx.input, keyPath);
    switch (issue.code) {
      case 'invalid_type':
        if (value === undefined) push(keyPath, `missing required key '${String(keyPath.at(-1) ?? '')}'`);
        else push(keyPath, `expected ${expectedName(issue.expected)}, got ${describeValue(value)}`);
        break;
      case 'unrecognized_keys': {
        const allowed = [...new Set(schemasAt(ctx.schema, keyPath).flatMap(objectKeys))];
        for (const key of issue.keys) {
          const full = [...keyPath, key];
          const hint = ctx.unknownKeyHints?.[dotted(full)];
          const s = suggest(key, allowed);
          const elsewhere = s === undefined ? suggestElsewhere(key, ctx.schema, keyPath) : undefined;
          const advice =
            hint !== undefined
              ? ` — ${hint}`
              : s !== undefined
                ? ` — did you mean '${s}'?`
                : elsewhere !== undefined
                  ? ` — did you mean '${elsewhere}'? (that key is in another section)`
                  : allowed.length
                    ? ` (allowed here: ${allowed.join(', ')})`
                    : '';
          push(full, `unknown key '${key}'${advice}`, 'key');
        }
        break;
      }
      case 'invalid_value': {
        const strings = issue.values.filter((v): v is string => typeof v === 'string');
        const expected = issue.values.length === 1 ? quoteList(issue.values) : `one of ${quoteList(issue.values)}`;
        push(keyPath, `expected ${expected}, got ${describeValue(value)}${didYouMean(value, strings)}`);
        break;
      }
      case 'invalid_union': {
        const simple = issue.errors.every((branch) => branch.length === 1 && branch[0]!.path.length === 0 && ['invalid_type', 'invalid_value'].includes(branch[0]!.code));
        if (simple || issue.errors.length === 0) {
          const alternatives: string[] = [];
          const words: string[] = [];
          for (const [b] of issue.errors) {
            if (b?.code === 'invalid_type') alternatives.push(expectedName(b.expected));
            if (b?.code === 'invalid_value') {
              alternatives.push(b.values.length === 1 ? quoteList(b.values) : `one of ${quoteList(b.values)}`);
              words.push(...b.values.filter((v): v is string => typeof v === 'string'));
            }
          }
          const also = schemasAt(ctx.schema, keyPath).flatMap(enumValues);
          push(keyPath, `expected ${alternatives.join(' or ')}, got ${describeValue(value)}${didYouMean(value, [...words, ...also])}`);
        } else {
          // Several shapes matched partly: report the branch with the fewest problems.
          const best = [...issue.errors].sort((a, b) => a.length - b.length)[0] ?? [];
          out.push(...describeIssues(best, ctx, keyPath));
        }
        break;
      }
      case 'too_small':
        push(keyPath, bound(issue, value, true));
        break;
      case 'too_big':
        push(keyPath, bound(issue, value, false));
        break;
      case 'not_multiple_of':
        push(keyPath, `must be a multiple of ${String(issue.divisor)}, got ${describeValue(value)}${multipleHint(value, Number(issue.divisor))}`);
        break;
      default:
        push(keyPath, issue.message);
    }
  }
  return out;
}
