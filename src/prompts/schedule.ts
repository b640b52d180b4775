// A1111 prompt editing `[from:to:when]`, `[to:when]`, `[from::when]` and alternation `[a|b|c]`, nested: a port of
// `get_learned_conditioning_prompt_schedules` (modules/prompt_parser.py @ 28bd8e14) with a recursive-descent parser
// in place of its lark grammar:
//
//   start:       (prompt | /[][():]/+)*
//   prompt:      (emphasized | scheduled | alternate | plain | WHITESPACE)*
//   emphasized:  "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"     (kept verbatim)
//   scheduled:   "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
//   alternate:   "[" prompt ("|" [prompt])+ "]"
//   plain:       /([^\\\[\]():|]|\\.)+/
//
// Where lark's Earley parser has a choice between a bracket construct and stray bracket characters at the top level,
// the construct wins (as in every case of prompts/schedules.json). A prompt the grammar rejects (a `|` outside any
// alternation, a backslash at the end or before a newline) is used literally for all steps, as A1111 does.
import { PY_S } from './py_regex.js';

type Node =
  | string
  | { kind: 'emphasized'; open: '(' | '['; parts: Node[][] }
  | { kind: 'scheduled'; before: Node[] | null; after: Node[]; when: string }
  | { kind: 'alternate'; options: Node[][] };

class Reject extends Error {}

// lark's common.SIGNED_NUMBER (ASCII digits), between optional WHITESPACE, then the closing bracket
const WHEN_RE = new RegExp(
  `${PY_S}*([+-]?(?:\\d+[eE][+-]?\\d+|(?:\\d+\\.\\d*|\\.\\d+)(?:[eE][+-]?\\d+)?|\\d+))${PY_S}*\\]`,
  'uy',
);
const STOP = new Set(['\\', '[', ']', '(', ')', ':', '|']);

class Parser {
  pos = 0;
  constructor(readonly s: string) {}

  /** `start`: stray brackets and colons are text here; a `|` is not. */
  parseStart(): Node[] {
    const out: Node[] = [];
    while (this.pos < this.s.length) {
      const c = this.s[this.pos]!;
      if (c === '|') throw new Reject();
      if (c === '(' || c === '[') {
        const at = this.pos;
        try {
          out.push(this.parseBracket());
          continue;
        } catch (e) {
          if (!(e instanceof Reject)) throw e;
          this.pos = at;
        }
      }
      if (STOP.has(c) && c !== '\\') {
        out.push(c);
        this.pos++;
      } else {
        out.push(this.parsePlain());
      }
    }
    return out;
  }

  /** `prompt`: stops before `]`, `)`, `:` or `|`; a bracket here must open a construct. */
  parsePrompt(): Node[] {
    const out: Node[] = [];
    while (this.pos < this.s.length) {
      const c = this.s[this.pos]!;
      if (c === '(' || c === '[') out.push(this.parseBracket());
      else if (STOP.has(c) && c !== '\\') break;
      else out.push(this.parsePlain());
    }
    return out;
  }

  parsePlain(): string {
    const start = this.pos;
    while (this.pos < this.s.length) {
      const c = this.s[this.pos]!;
      if (c === '\\') {
        if (this.pos + 1 >= this.s.length || this.s[this.pos + 1] === '\n') throw new Reject(); // `\\.` needs a char
        this.pos += 2;
      } else if (STOP.has(c)) {
        break;
      } else {
        this.pos++;
      }
    }
    return this.s.slice(start, this.pos);
  }

  parseBracket(): Node {
    const open = this.s[this.pos++] as '(' | '[';
    const first = this.parsePrompt();
    const c = this.s[this.pos];
    if (open === '(') {
      if (c === ')') return this.close({ kind: 'emphasized', open, parts: [first] });
      if (c !== ':') throw new Reject();
      this.pos++;
      const second = this.parsePrompt();
      if (this.s[this.pos] !== ')') throw new Reject();
      return this.close({ kind: 'emphasized', open, parts: [first, second] });
    }
    if (c === ']') return this.close({ kind: 'emphasized', open, parts: [first] });
    if (c === '|') {
      const options = [first];
      while (this.s[this.pos] === '|') {
        this.pos++;
        options.push(this.parsePrompt());
      }
      if (this.s[this.pos] !== ']') throw new Reject();
      return this.close({ kind: 'alternate', options });
    }
    if (c !== ':') throw new Reject();
    this.pos++;
    // [to:when]
    const when = this.matchWhen();
    if (when !== undefined) return { kind: 'scheduled', before: null, after: first, when };
    // [from:to:when]
    const after = this.parsePrompt();
    if (this.s[this.pos] !== ':') throw new Reject();
    this.pos++;
    const when2 = this.matchWhen();
    if (when2 === undefined) throw new Reject();
    return { kind: 'scheduled', before: first, after, when: when2 };
  }

  private close(node: Node): Node {
    this.pos++;
    return node;
  }

  /** `[WHITESPACE] NUMBER [WHITESPACE] "]"` at the cursor: the number's text, past the bracket; else undefined. */
  private matchWhen(): string | undefined {
    WHEN_RE.lastIndex = this.pos;
    const m = WHEN_RE.exec(this.s);
    if (m === null) return undefined;
    this.pos = WHEN_RE.lastIndex;
    return m[1]!;
  }
}

export interface ScheduleOptions {
  /** Steps of a hires pass: `when` is then resolved against it (integers offset by `steps`, fractions by 1.0). */
  hiresSteps?: number | null;
  /** A1111's "use old prompt editing timelines": values below 1 are fractions, others absolute steps. */
  useOldScheduling?: boolean;
}

/**
 * The prompt texts over the steps: `[endAtStep, text]` pairs in step order, where a text is used while
 * `currentStep <= endAtStep` (steps are 1-based). A `when` containing "." is a fraction of the steps (truncated),
 * one without is an absolute step; switch points are clamped to the steps, and those below 1 never happen.
 * Alternation switches at every step. Emphasis syntax is kept in the texts, for `parseEmphasis`.
 */
export function promptSchedules(prompt: string, steps: number, opts: ScheduleOptions = {}): Array<[number, string]> {
  const hires = opts.hiresSteps !== undefined && opts.hiresSteps !== null && !opts.useOldScheduling;
  const total = hires ? opts.hiresSteps! : steps;
  const intOffset = hires ? steps : 0;
  const floatOffset = hires ? 1.0 : 0;

  let tree: Node[];
  try {
    tree = new Parser(prompt).parseStart();
  } catch (e) {
    if (e instanceof Reject) return [[total, prompt]];
    throw e;
  }

  // CollectSteps: resolve every `when` to an integer step and gather the switch points
  const whenOf = new Map<Node, number>();
  const points = new Set<number>([total]);
  const visit = (nodes: Node[]) => {
    for (const node of nodes) {
      if (typeof node === 'string') continue;
      if (node.kind === 'emphasized') node.parts.forEach(visit);
      else if (node.kind === 'alternate') {
        for (let i = 1; i <= total; i++) points.add(i);
        node.options.forEach(visit);
      } else {
        if (node.before) visit(node.before);
        visit(node.after);
        let v = Number(node.when);
        if (opts.useOldScheduling) v = v < 1 ? v * total : v;
        else v = node.when.includes('.') ? (v - floatOffset) * total : v - intOffset;
        const when = Math.min(total, Math.trunc(v));
        whenOf.set(node, when);
        if (when >= 1) points.add(when);
      }
    }
  };
  visit(tree);

  const textAt = (step: number, nodes: Node[]): string => {
    let out = '';
    for (const node of nodes) {
      if (typeof node === 'string') out += node;
      else if (node.kind === 'emphasized') {
        const inner = node.parts.map((p) => textAt(step, p)).join(':');
        out += node.open === '(' ? `(${inner})` : `[${inner}]`;
      } else if (node.kind === 'alternate') out += textAt(step, node.options[(step - 1) % node.options.length]!);
      else if (step <= whenOf.get(node)!) out += node.before ? textAt(step, node.before) : '';
      else out += textAt(step, node.after);
    }
    return out;
  };
  return [...points].sort((a, b) => a - b).map((step): [number, string] => [step, textAt(step, tree)]);
}
