import { hasOwn, isObject } from './util';

/**
 * The JSONPath subset printer columns and the scale subresource use (kubectl's syntax without
 * the template parts): `.spec.replicas`, `.items[0]`, `.items[*].name`, `.metadata.labels.app`,
 * `.metadata.annotations['a.b/c']`, `.metadata.labels.app\.kubernetes\.io/name` and filters like
 * `.status.conditions[?(@.type=="Ready")].status`. Surrounding `{}` are accepted.
 *
 * Like upstream's table convertor, which shows `results[0][0]`, evaluation yields the first match.
 */

type Segment =
  | { kind: 'field'; name: string }
  | { kind: 'index'; index: number }
  | { kind: 'wildcard' }
  | { kind: 'filter'; test: (x: unknown) => boolean };

type Literal = string | number | boolean | null;

/** Reads a dotted field name, where `\.` is a literal dot. */
function readName(p: string, i: number): [name: string, next: number] {
  let name = '';
  while (i < p.length && p[i] !== '.' && p[i] !== '[') {
    if (p[i] === '\\' && i + 1 < p.length) i++;
    name += p[i++];
  }
  return [name, i];
}

function parseLiteral(s: string): Literal | undefined {
  const t = s.trim();
  if (/^(['"]).*\1$/.test(t)) return t.slice(1, -1);
  if (t === 'true' || t === 'false') return t === 'true';
  if (t === 'null') return null;
  if (t !== '' && !Number.isNaN(Number(t))) return Number(t);
  return undefined;
}

const COMPARE: Record<string, (a: any, b: any) => boolean> = {
  '==': (a, b) => a === b,
  '!=': (a, b) => a !== b,
  '<=': (a, b) => a <= b,
  '>=': (a, b) => a >= b,
  '<': (a, b) => a < b,
  '>': (a, b) => a > b,
};

/** `?(@.a.b == "x")` or `?(@.a)` (existence). */
function parseFilter(body: string): ((x: unknown) => boolean) | undefined {
  const m = /^\?\(\s*@((?:\.[^\s=!<>]+)*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)$/.exec(body.trim());
  if (!m) return undefined;
  const sub = m[1] ? parse(m[1]) : [];
  if (!sub) return undefined;
  if (!m[2]) return (x) => evaluate(x, sub) !== undefined;
  const want = parseLiteral(m[3]);
  if (want === undefined) return undefined;
  const cmp = COMPARE[m[2]];
  return (x) => {
    const got = evaluate(x, sub);
    return got !== undefined && cmp(got, want);
  };
}

/** `[...]` contents: an index, `*`, a quoted key or a filter. */
function parseBracket(body: string): Segment | undefined {
  const b = body.trim();
  if (b === '*') return { kind: 'wildcard' };
  if (/^-?\d+$/.test(b)) return { kind: 'index', index: Number(b) };
  if (/^(['"]).*\1$/.test(b)) return { kind: 'field', name: b.slice(1, -1) };
  if (b.startsWith('?')) {
    const test = parseFilter(b);
    return test ? { kind: 'filter', test } : undefined;
  }
  return undefined;
}

/** Finds the `]` closing the bracket at `i`, skipping quoted strings (which may contain `]`). */
function closingBracket(p: string, i: number): number {
  let quote = '';
  for (let j = i + 1; j < p.length; j++) {
    const c = p[j];
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === ']') return j;
  }
  return -1;
}

function parse(p: string): Segment[] | undefined {
  const segs: Segment[] = [];
  let i = 0;
  while (i < p.length) {
    if (p[i] === '.') {
      i++;
      if (p[i] === '*') {
        segs.push({ kind: 'wildcard' });
        i++;
        continue;
      }
      const [name, next] = readName(p, i);
      if (name) segs.push({ kind: 'field', name });
      i = next;
    } else if (p[i] === '[') {
      const end = closingBracket(p, i);
      if (end < 0) return undefined;
      const seg = parseBracket(p.slice(i + 1, end));
      if (!seg) return undefined;
      segs.push(seg);
      i = end + 1;
    } else {
      // a leading name without a dot, e.g. "spec.replicas"
      const [name, next] = readName(p, i);
      segs.push({ kind: 'field', name });
      i = next;
    }
  }
  return segs;
}

function step(values: unknown[], seg: Segment): unknown[] {
  const out: unknown[] = [];
  for (const v of values) {
    if (seg.kind === 'field') {
      if (isObject(v) && hasOwn(v, seg.name)) out.push(v[seg.name]);
    } else if (seg.kind === 'index') {
      if (Array.isArray(v)) {
        const i = seg.index < 0 ? v.length + seg.index : seg.index;
        if (i >= 0 && i < v.length) out.push(v[i]);
      }
    } else if (seg.kind === 'wildcard') {
      if (Array.isArray(v)) out.push(...v);
      else if (isObject(v)) out.push(...Object.values(v));
    } else {
      const items = Array.isArray(v) ? v : isObject(v) ? Object.values(v) : [];
      out.push(...items.filter(seg.test));
    }
  }
  return out;
}

function evaluate(obj: unknown, segs: Segment[]): unknown {
  let values: unknown[] = [obj];
  for (const seg of segs) {
    values = step(values, seg);
    if (!values.length) return undefined;
  }
  return values[0];
}

const parsed = new Map<string, Segment[] | undefined>();

/** The first value `path` selects in `obj`, or undefined when nothing matches or it cannot be parsed. */
export function evalJsonPath(obj: any, jsonPath: string): any {
  let p = jsonPath.trim();
  if (p.startsWith('{') && p.endsWith('}')) p = p.slice(1, -1).trim();
  if (!parsed.has(p)) {
    if (parsed.size > 1000) parsed.clear(); // paths come from CRDs; a bound keeps a bad client harmless
    parsed.set(p, parse(p));
  }
  const segs = parsed.get(p);
  return segs ? evaluate(obj, segs) : undefined;
}
