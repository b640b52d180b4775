// A small draft-07 validator (the keywords configs/sdtrain.schema.json uses), so tests can check that what an editor
// is told matches what sdtrain accepts. Returns a list of problems ("path: reason"); empty = valid.
type S = Record<string, unknown>;

export function validateJsonSchema(root: S, value: unknown): string[] {
  const problems: string[] = [];
  const typeOk = (t: string, v: unknown): boolean =>
    t === 'null' ? v === null
    : t === 'array' ? Array.isArray(v)
    : t === 'object' ? v !== null && typeof v === 'object' && !Array.isArray(v)
    : t === 'integer' ? Number.isInteger(v)
    : typeof v === t;
  const check = (s: S, v: unknown, at: string): string[] => {
    const out: string[] = [];
    if (typeof s.$ref === 'string') {
      const name = s.$ref.replace('#/definitions/', '');
      return check((root.definitions as Record<string, S>)[name]!, v, at);
    }
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
      if (!types.some((t) => typeOk(t, v))) return [`${at}: expected ${types.join('|')}`];
    }
    if (Array.isArray(s.enum) && !s.enum.includes(v)) out.push(`${at}: not in enum`);
    if ('const' in s && s.const !== v) out.push(`${at}: not the const ${String(s.const)}`);
    if (Array.isArray(s.anyOf) && !(s.anyOf as S[]).some((alt) => check(alt, v, at).length === 0)) out.push(`${at}: matches no anyOf alternative`);
    if (typeof v === 'number') {
      if (typeof s.minimum === 'number' && v < s.minimum) out.push(`${at}: below minimum`);
      if (typeof s.maximum === 'number' && v > s.maximum) out.push(`${at}: above maximum`);
      if (typeof s.exclusiveMinimum === 'number' && v <= s.exclusiveMinimum) out.push(`${at}: not above exclusiveMinimum`);
      if (typeof s.exclusiveMaximum === 'number' && v >= s.exclusiveMaximum) out.push(`${at}: not below exclusiveMaximum`);
      if (typeof s.multipleOf === 'number' && v % s.multipleOf !== 0) out.push(`${at}: not a multiple`);
    }
    if (typeof v === 'string') {
      if (typeof s.minLength === 'number' && v.length < s.minLength) out.push(`${at}: too short`);
      if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(v)) out.push(`${at}: does not match pattern`);
    }
    if (Array.isArray(v)) {
      if (typeof s.minItems === 'number' && v.length < s.minItems) out.push(`${at}: too few items`);
      if (typeof s.maxItems === 'number' && v.length > s.maxItems) out.push(`${at}: too many items`);
      if (Array.isArray(s.items)) (s.items as S[]).forEach((item, i) => i < v.length && out.push(...check(item, v[i], `${at}.${i}`)));
      else if (s.items) v.forEach((item, i) => out.push(...check(s.items as S, item, `${at}.${i}`)));
    }
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const props = (s.properties ?? {}) as Record<string, S>;
      for (const r of (s.required ?? []) as string[]) if (!(r in v)) out.push(`${at}.${r}: required`);
      for (const [k, child] of Object.entries(v)) {
        if (props[k]) out.push(...check(props[k], child, `${at}.${k}`));
        else if (s.additionalProperties === false) out.push(`${at}.${k}: not allowed`);
      }
    }
    return out;
  };
  problems.push(...check(root, value, '$'));
  return problems;
}
