/**
 * Label and field selectors, ported from k8s.io/apimachinery (labels/selector.go,
 * fields/selector.go) and the per-kind field label conversion functions of
 * kube-apiserver (pkg/apis/core/v1/conversion.go and friends).
 *
 * Error messages are copied from upstream byte for byte where we could,
 * because kubectl shows them verbatim ("Error from server (BadRequest): ...")
 * and users and scripts match on them.
 */

/** A selector string or selector object that upstream would reject with 400 BadRequest. */
export class SelectorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SelectorError';
  }
}

export type LabelSelector = (labels: Record<string, string> | undefined) => boolean;

export interface FieldRequirement {
  field: string;
  op: '=' | '!=';
  value: string;
}

// ---------------------------------------------------------------------------
// Go formatting helpers (error texts embed Go's %q and json.Marshal output)
// ---------------------------------------------------------------------------

/** Go's %q for a string (strconv.Quote), close enough for label keys and values. */
function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        break;
      case '\\':
        out += '\\\\';
        break;
      case '\x07':
        out += '\\a';
        break;
      case '\b':
        out += '\\b';
        break;
      case '\f':
        out += '\\f';
        break;
      case '\n':
        out += '\\n';
        break;
      case '\r':
        out += '\\r';
        break;
      case '\t':
        out += '\\t';
        break;
      case '\v':
        out += '\\v';
        break;
      default:
        out += c < 0x20 || c === 0x7f ? '\\x' + c.toString(16).padStart(2, '0') : ch;
    }
  }
  return out + '"';
}

/** Go's len() of a string counts UTF-8 bytes, and the 63/253 limits are in bytes. */
function byteLen(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** Go string ordering (bytewise; equal to UTF-16 order for the ASCII strings valid here). */
function goCompare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * field.Invalid(path, value, detail).Error(). A nil *field.Path prints as
 * "<nil>", which is why kubectl shows "unable to parse requirement: <nil>: ...".
 */
function invalidField(field: string, value: string | string[], detail: string): string {
  // Strings use %q; other values go through json.Marshal, where a nil []string is "null".
  const shown = typeof value === 'string' ? goQuote(value) : value.length === 0 ? 'null' : JSON.stringify(value);
  return `${field}: Invalid value: ${shown}: ${detail}`;
}

/** utilerrors.NewAggregate(...).Error(): one message as is, several de-duplicated in brackets. */
function aggregate(msgs: string[]): string {
  const seen = [...new Set(msgs)];
  return seen.length === 1 ? seen[0] : `[${seen.join(', ')}]`;
}

// ---------------------------------------------------------------------------
// Label key / value validation (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const QUALIFIED_NAME_FMT = '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]';
const QUALIFIED_NAME_RE = new RegExp(`^${QUALIFIED_NAME_FMT}$`);
const QUALIFIED_NAME_ERR =
  "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT = `(${QUALIFIED_NAME_FMT})?`;
const LABEL_VALUE_RE = new RegExp(`^${LABEL_VALUE_FMT}$`);
const LABEL_VALUE_ERR =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const DNS1123_SUBDOMAIN_FMT = `${DNS1123_LABEL_FMT}(\\.${DNS1123_LABEL_FMT})*`;
const DNS1123_SUBDOMAIN_RE = new RegExp(`^${DNS1123_SUBDOMAIN_FMT}$`);
const DNS1123_SUBDOMAIN_ERR =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/** validation.RegexError, including upstream's odd "',  or '" spacing. */
function regexError(msg: string, fmt: string, ...examples: string[]): string {
  if (examples.length === 0) return `${msg} (regex used for validation is '${fmt}')`;
  let out = msg + ' (e.g. ';
  examples.forEach((ex, i) => {
    if (i > 0) out += ' or ';
    out += `'${ex}', `;
  });
  return out + `regex used for validation is '${fmt}')`;
}

const maxLenError = (n: number) => `must be no more than ${n} characters`;

function isDNS1123Subdomain(value: string): string[] {
  const errs: string[] = [];
  if (byteLen(value) > 253) errs.push(maxLenError(253));
  if (!DNS1123_SUBDOMAIN_RE.test(value)) errs.push(regexError(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, 'example.com'));
  return errs;
}

/** validation.IsQualifiedName: label keys are "[prefix/]name". */
function isQualifiedName(value: string): string[] {
  const errs: string[] = [];
  const parts = value.split('/');
  let name: string;
  if (parts.length === 1) {
    name = parts[0];
  } else if (parts.length === 2) {
    const prefix = parts[0];
    name = parts[1];
    if (prefix.length === 0) errs.push('prefix part must be non-empty');
    else errs.push(...isDNS1123Subdomain(prefix).map((m) => 'prefix part ' + m));
  } else {
    return [
      'a qualified name ' +
        regexError(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, 'MyName', 'my.name', '123-abc') +
        " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ];
  }
  if (name.length === 0) errs.push('name part must be non-empty');
  else if (byteLen(name) > 63) errs.push('name part ' + maxLenError(63));
  if (!QUALIFIED_NAME_RE.test(name))
    errs.push('name part ' + regexError(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, 'MyName', 'my.name', '123-abc'));
  return errs;
}

function isValidLabelValue(value: string): string[] {
  const errs: string[] = [];
  if (byteLen(value) > 63) errs.push(maxLenError(63));
  if (!LABEL_VALUE_RE.test(value)) errs.push(regexError(LABEL_VALUE_ERR, LABEL_VALUE_FMT, 'MyValue', 'my_value', '12345'));
  return errs;
}

function validateLabelKey(key: string, field: string): string | undefined {
  const errs = isQualifiedName(key);
  return errs.length ? invalidField(field, key, errs.join('; ')) : undefined;
}

// ---------------------------------------------------------------------------
// Requirements (labels.Requirement)
// ---------------------------------------------------------------------------

type Operator = '=' | '==' | '!=' | 'in' | 'notin' | 'exists' | '!' | 'gt' | 'lt';

interface Requirement {
  key: string;
  op: Operator;
  values: string[];
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** strconv.ParseInt(s, 10, 64); undefined where Go returns an error. */
function parseInt64(s: string): bigint | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = BigInt(s);
  return n < INT64_MIN || n > INT64_MAX ? undefined : n;
}

/**
 * labels.NewRequirement with no field path (as the API server calls it): every
 * problem is collected and reported as one aggregate, like upstream.
 */
function newRequirement(key: string, op: Operator, values: string[]): Requirement {
  const errs: string[] = [];
  const keyErr = validateLabelKey(key, 'key');
  if (keyErr) errs.push(keyErr);
  switch (op) {
    case 'in':
    case 'notin':
      if (values.length === 0)
        errs.push(invalidField('values', values, "for 'in', 'notin' operators, values set can't be empty"));
      break;
    case '=':
    case '==':
    case '!=':
      if (values.length !== 1) errs.push(invalidField('values', values, 'exact-match compatibility requires one single value'));
      break;
    case 'exists':
    case '!':
      if (values.length !== 0)
        errs.push(invalidField('values', values, 'values set must be empty for exists and does not exist'));
      break;
    case 'gt':
    case 'lt':
      if (values.length !== 1)
        errs.push(invalidField('values', values, "for 'Gt', 'Lt' operators, exactly one value is required"));
      values.forEach((v, i) => {
        if (parseInt64(v) === undefined)
          errs.push(invalidField(`values[${i}]`, v, "for 'Gt', 'Lt' operators, the value must be an integer"));
      });
      break;
  }
  values.forEach((v, i) => {
    const vErrs = isValidLabelValue(v);
    if (vErrs.length) errs.push(invalidField(`values[${i}][${key}]`, v, vErrs.join('; ')));
  });
  if (errs.length) throw new SelectorError(aggregate(errs));
  return { key, op, values };
}

function hasOwn(obj: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

/** Requirement.Matches. Note notin / != match when the label is absent. */
function requirementMatches(r: Requirement, labels: Record<string, string>): boolean {
  const has = hasOwn(labels, r.key);
  switch (r.op) {
    case 'in':
    case '=':
    case '==':
      return has && r.values.includes(labels[r.key]);
    case 'notin':
    case '!=':
      return !has || !r.values.includes(labels[r.key]);
    case 'exists':
      return has;
    case '!':
      return !has;
    case 'gt':
    case 'lt': {
      if (!has || r.values.length !== 1) return false;
      const lv = parseInt64(labels[r.key]);
      const rv = parseInt64(r.values[0]);
      if (lv === undefined || rv === undefined) return false;
      return r.op === 'gt' ? lv > rv : lv < rv;
    }
  }
}

/** Requirement.String(); used for the Selector column of workload tables. */
function requirementString(r: Requirement): string {
  let s = (r.op === '!' ? '!' : '') + r.key;
  switch (r.op) {
    case 'exists':
    case '!':
      return s;
    case 'in':
      s += ' in ';
      break;
    case 'notin':
      s += ' notin ';
      break;
    case 'gt':
      s += '>';
      break;
    case 'lt':
      s += '<';
      break;
    default:
      s += r.op;
  }
  const vals = r.values.length === 1 ? r.values[0] : [...r.values].sort(goCompare).join(',');
  return r.op === 'in' || r.op === 'notin' ? `${s}(${vals})` : s + vals;
}

function selectorFromRequirements(reqs: Requirement[]): LabelSelector {
  return (labels) => {
    const ls = labels ?? {};
    return reqs.every((r) => requirementMatches(r, ls));
  };
}

// ---------------------------------------------------------------------------
// Label selector string parser (labels.Parse): lexer + recursive descent
// ---------------------------------------------------------------------------

enum Tok {
  Error,
  End,
  ClosedPar,
  Comma,
  DoesNotExist,
  DoubleEquals,
  Equals,
  GreaterThan,
  Identifier,
  In,
  LessThan,
  NotEquals,
  NotIn,
  OpenPar,
}

// A Map, not an object literal: an identifier like "constructor" must not hit Object.prototype.
const STRING_TO_TOKEN = new Map<string, Tok>(
  Object.entries({
    ')': Tok.ClosedPar,
    ',': Tok.Comma,
    '!': Tok.DoesNotExist,
    '==': Tok.DoubleEquals,
    '=': Tok.Equals,
    '>': Tok.GreaterThan,
    in: Tok.In,
    '<': Tok.LessThan,
    '!=': Tok.NotEquals,
    notin: Tok.NotIn,
    '(': Tok.OpenPar,
  }),
);

const isWhitespace = (ch: string) => ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n';
const isSpecial = (ch: string) => ch.length === 1 && '=!(),><'.includes(ch);

interface Scanned {
  tok: Tok;
  lit: string;
}

function lex(s: string): Scanned[] {
  let pos = 0;
  // Like Go's lexer: past the end read() yields NUL without advancing, and a NUL
  // inside the input ends the scan just the same.
  const read = (): string => (pos < s.length ? s[pos++] : '\0');
  const unread = () => {
    pos--;
  };
  const items: Scanned[] = [];
  for (;;) {
    let ch = read();
    while (isWhitespace(ch)) ch = read();
    let item: Scanned;
    if (ch === '\0') {
      item = { tok: Tok.End, lit: '' };
    } else if (isSpecial(ch)) {
      unread();
      // Longest run of special characters that is still a known token ("!=" rather than "!").
      let buf = '';
      let last: Scanned | undefined;
      for (;;) {
        const c = read();
        if (c === '\0') break;
        if (!isSpecial(c)) {
          unread();
          break;
        }
        buf += c;
        const t = STRING_TO_TOKEN.get(buf);
        if (t !== undefined) last = { tok: t, lit: buf };
        else if (last) {
          unread();
          break;
        }
      }
      item = last ?? { tok: Tok.Error, lit: `error expected: keyword found '${buf}'` };
    } else {
      unread();
      let buf = '';
      for (;;) {
        const c = read();
        if (c === '\0') break;
        if (isSpecial(c) || isWhitespace(c)) {
          unread();
          break;
        }
        buf += c;
      }
      const t = STRING_TO_TOKEN.get(buf);
      item = { tok: t ?? Tok.Identifier, lit: buf };
    }
    items.push(item);
    if (item.tok === Tok.End) return items;
  }
}

class LabelParser {
  private items: Scanned[];
  private pos = 0;

  constructor(s: string) {
    this.items = lex(s);
  }

  // In the Values context, "in" and "notin" are ordinary identifiers ("x in (in)").
  private lookahead(values: boolean): Scanned {
    return this.adjust(this.items[this.pos], values);
  }

  private consume(values: boolean): Scanned {
    return this.adjust(this.items[this.pos++], values);
  }

  private adjust(it: Scanned, values: boolean): Scanned {
    if (values && (it.tok === Tok.In || it.tok === Tok.NotIn)) return { tok: Tok.Identifier, lit: it.lit };
    return it;
  }

  parse(): Requirement[] {
    const reqs: Requirement[] = [];
    for (;;) {
      const { tok, lit } = this.lookahead(true);
      switch (tok) {
        case Tok.Identifier:
        case Tok.DoesNotExist: {
          try {
            reqs.push(this.parseRequirement());
          } catch (e) {
            if (e instanceof SelectorError) throw new SelectorError(`unable to parse requirement: ${e.message}`);
            throw e;
          }
          const t = this.consume(true);
          if (t.tok === Tok.End) return reqs;
          if (t.tok === Tok.Comma) {
            const t2 = this.lookahead(true);
            if (t2.tok !== Tok.Identifier && t2.tok !== Tok.DoesNotExist)
              throw new SelectorError(`found '${t2.lit}', expected: identifier after ','`);
            break;
          }
          throw new SelectorError(`found '${t.lit}', expected: ',' or 'end of string'`);
        }
        case Tok.End:
          return reqs;
        default:
          throw new SelectorError(`found '${lit}', expected: !, identifier, or 'end of string'`);
      }
    }
  }

  private parseRequirement(): Requirement {
    const { key, op: inferred } = this.parseKeyAndInferOperator();
    if (inferred === 'exists' || inferred === '!') return newRequirement(key, inferred, []);
    const op = this.parseOperator();
    const values = op === 'in' || op === 'notin' ? this.parseValues() : this.parseExactValue();
    // sets.String.List(): values come out sorted and de-duplicated.
    return newRequirement(key, op, [...values].sort(goCompare));
  }

  private parseKeyAndInferOperator(): { key: string; op?: Operator } {
    let op: Operator | undefined;
    let t = this.consume(true);
    if (t.tok === Tok.DoesNotExist) {
      op = '!';
      t = this.consume(true);
    }
    if (t.tok !== Tok.Identifier) throw new SelectorError(`found '${t.lit}', expected: identifier`);
    // The parser validates with a nil field path, hence "<nil>" in the message.
    const err = validateLabelKey(t.lit, '<nil>');
    if (err) throw new SelectorError(err);
    const next = this.lookahead(true).tok;
    if ((next === Tok.End || next === Tok.Comma) && op !== '!') op = 'exists';
    return { key: t.lit, op };
  }

  private parseOperator(): Operator {
    const { tok, lit } = this.consume(false);
    switch (tok) {
      case Tok.In:
        return 'in';
      case Tok.Equals:
        return '=';
      case Tok.DoubleEquals:
        return '==';
      case Tok.GreaterThan:
        return 'gt';
      case Tok.LessThan:
        return 'lt';
      case Tok.NotIn:
        return 'notin';
      case Tok.NotEquals:
        return '!=';
      default:
        // Upstream's message really lacks the quote before notin.
        throw new SelectorError(`found '${lit}', expected: '=', '!=', '==', 'in', notin'`);
    }
  }

  private parseValues(): Set<string> {
    let t = this.consume(true);
    if (t.tok !== Tok.OpenPar) throw new SelectorError(`found '${t.lit}' expected: '('`);
    t = this.lookahead(true);
    switch (t.tok) {
      case Tok.Identifier:
      case Tok.Comma: {
        const s = this.parseIdentifiersList();
        if (this.consume(true).tok !== Tok.ClosedPar) throw new SelectorError(`found '${t.lit}', expected: ')'`);
        return s;
      }
      case Tok.ClosedPar: // "()" means the single empty value
        this.consume(true);
        return new Set(['']);
      default:
        throw new SelectorError(`found '${t.lit}', expected: ',', ')' or identifier`);
    }
  }

  private parseIdentifiersList(): Set<string> {
    const s = new Set<string>();
    for (;;) {
      const t = this.consume(true);
      if (t.tok === Tok.Identifier) {
        s.add(t.lit);
        const t2 = this.lookahead(true);
        if (t2.tok === Tok.Comma) continue;
        if (t2.tok === Tok.ClosedPar) return s;
        throw new SelectorError(`found '${t2.lit}', expected: ',' or ')'`);
      }
      if (t.tok === Tok.Comma) {
        // Empty entries ("(,a)", "(a,)", "(a,,b)") stand for the empty value.
        if (s.size === 0) s.add('');
        const t2 = this.lookahead(true);
        if (t2.tok === Tok.ClosedPar) {
          s.add('');
          return s;
        }
        if (t2.tok === Tok.Comma) {
          this.consume(true);
          s.add('');
        }
        continue;
      }
      throw new SelectorError(`found '${t.lit}', expected: ',', or identifier`);
    }
  }

  private parseExactValue(): Set<string> {
    const la = this.lookahead(true).tok;
    if (la === Tok.End || la === Tok.Comma) return new Set(['']); // "a=" selects the empty value
    const t = this.consume(true);
    if (t.tok === Tok.Identifier) return new Set([t.lit]);
    throw new SelectorError(`found '${t.lit}', expected: identifier`);
  }
}

/**
 * Parses a `labelSelector` query parameter. Supports `=`, `==`, `!=`, `in (..)`,
 * `notin (..)`, `key`, `!key` (and upstream's `>`/`<`), comma meaning AND.
 * Undefined or empty matches everything. Throws SelectorError with upstream's text.
 */
export function parseLabelSelector(s: string | undefined): LabelSelector {
  if (!s) return () => true;
  return selectorFromRequirements(new LabelParser(s).parse());
}

export interface LabelSelectorObject {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}

const OBJECT_OPERATORS: Record<string, Operator> = { In: 'in', NotIn: 'notin', Exists: 'exists', DoesNotExist: '!' };

/** metav1.LabelSelectorAsSelector, returning the sorted requirements. */
function requirementsFromObject(sel: LabelSelectorObject): Requirement[] {
  const reqs: Requirement[] = [];
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) reqs.push(newRequirement(k, '=', [v]));
  for (const e of sel.matchExpressions ?? []) {
    const op = hasOwn(OBJECT_OPERATORS, e.operator) ? OBJECT_OPERATORS[e.operator] : undefined;
    if (!op) throw new SelectorError(`${goQuote(String(e.operator))} is not a valid label selector operator`);
    reqs.push(newRequirement(e.key, op, [...(e.values ?? [])]));
  }
  // Selector.Add sorts by key; the order only shows in labelSelectorToString.
  return reqs.sort((a, b) => goCompare(a.key, b.key));
}

/**
 * A selector object (Deployment/DaemonSet `spec.selector`, etc.) as a matcher.
 * As upstream: a missing selector matches nothing, an empty one matches everything.
 */
export function labelSelectorFromObject(sel: LabelSelectorObject | null | undefined): LabelSelector {
  if (sel == null) return () => false;
  return selectorFromRequirements(requirementsFromObject(sel));
}

/**
 * The string form upstream prints for a selector object (`selector.String()`,
 * e.g. "app=web,tier in (a,b)"); "" for a missing or empty selector.
 */
export function labelSelectorToString(sel: LabelSelectorObject | null | undefined): string {
  if (sel == null) return '';
  return requirementsFromObject(sel).map(requirementString).join(',');
}

// ---------------------------------------------------------------------------
// Field selectors (fields.ParseSelector)
// ---------------------------------------------------------------------------

/** Splits on commas that are not backslash-escaped; escapes stay in the terms. */
function splitTerms(s: string): string[] {
  const terms: string[] = [];
  let start = 0;
  let inSlash = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inSlash) inSlash = false;
    else if (c === '\\') inSlash = true;
    else if (c === ',') {
      terms.push(s.slice(start, i));
      start = i + 1;
    }
  }
  terms.push(s.slice(start));
  return terms;
}

/** fields.UnescapeValue: `\\`, `\,` and `\=` are the only escapes; bare `,`/`=` are errors. */
function unescapeValue(s: string): string {
  let out = '';
  let inSlash = false;
  for (const c of s) {
    if (inSlash) {
      if (c !== '\\' && c !== ',' && c !== '=')
        throw new SelectorError(`invalid field selector: invalid escape sequence: \\${c}`);
      out += c;
      inSlash = false;
      continue;
    }
    if (c === '\\') inSlash = true;
    // Go formats the rune with %v, so the message carries its code point number.
    else if (c === ',' || c === '=')
      throw new SelectorError(`invalid field selector: unescaped character in value: ${c.codePointAt(0)}`);
    else out += c;
  }
  if (inSlash) throw new SelectorError('invalid field selector: invalid escape sequence: \\');
  return out;
}

/**
 * Parses a `fieldSelector` query parameter: terms `f=v`, `f==v`, `f!=v`,
 * comma meaning AND. Field names are not checked here (see compileFieldSelector).
 */
export function parseFieldSelector(s: string | undefined): FieldRequirement[] {
  if (!s) return [];
  const reqs: FieldRequirement[] = [];
  // Upstream sorts the terms first, which decides which bad term gets reported.
  for (const term of splitTerms(s).sort(goCompare)) {
    if (term === '') continue;
    // The first operator occurrence splits the term; "!=" and "==" win over "=" at the same index.
    let found: FieldRequirement | undefined;
    for (let i = 0; i < term.length && !found; i++) {
      for (const op of ['!=', '==', '='] as const) {
        if (term.startsWith(op, i)) {
          const value = unescapeValue(term.slice(i + op.length));
          found = { field: term.slice(0, i), op: op === '!=' ? '!=' : '=', value };
          break;
        }
      }
    }
    if (!found) throw new SelectorError(`invalid selector: '${s}'; can't understand '${term}'`);
    reqs.push(found);
  }
  return reqs;
}

// ---------------------------------------------------------------------------
// Per-kind selectable fields
// ---------------------------------------------------------------------------

type Getter = (obj: any) => unknown;

interface FieldSpec {
  /** Selectable field -> how to read it from the stored (external) object. */
  fields: Record<string, Getter>;
  /** Legacy aliases accepted by the conversion function (label -> canonical label). */
  aliases?: Record<string, string>;
  /**
   * Kinds with their own field label conversion function answer unknown fields with
   * "field label not supported: X"; the others fall back to
   * runtime.DefaultMetaV1FieldSelectorConversion and its "is not a known field selector" text.
   */
  style: 'default' | 'notSupported';
}

const metaName: Getter = (o) => o?.metadata?.name;
const metaNamespace: Getter = (o) => o?.metadata?.namespace;
// Go's zero value for a bool is false, and the selectable field set always carries it.
const boolOrFalse = (v: unknown) => (v === undefined || v === null ? false : v);

// Core events and events.k8s.io events are one storage upstream; read either shape.
const involved = (o: any) => o?.involvedObject ?? o?.regarding ?? {};
const eventFields: Record<string, Getter> = {
  'involvedObject.kind': (o) => involved(o).kind,
  'involvedObject.namespace': (o) => involved(o).namespace,
  'involvedObject.name': (o) => involved(o).name,
  'involvedObject.uid': (o) => involved(o).uid,
  'involvedObject.apiVersion': (o) => involved(o).apiVersion,
  'involvedObject.resourceVersion': (o) => involved(o).resourceVersion,
  'involvedObject.fieldPath': (o) => involved(o).fieldPath,
  reason: (o) => o?.reason,
  reportingComponent: (o) => o?.reportingComponent ?? o?.reportingController,
  source: (o) => o?.source?.component ?? o?.deprecatedSource?.component,
  type: (o) => o?.type,
  'metadata.namespace': metaNamespace,
  'metadata.name': metaName,
};

const FIELD_SPECS: Record<string, FieldSpec> = {
  '/pods': {
    style: 'notSupported',
    fields: {
      'metadata.name': metaName,
      'metadata.namespace': metaNamespace,
      'spec.nodeName': (o) => o?.spec?.nodeName,
      'spec.restartPolicy': (o) => o?.spec?.restartPolicy,
      'spec.schedulerName': (o) => o?.spec?.schedulerName,
      'spec.serviceAccountName': (o) => o?.spec?.serviceAccountName,
      'spec.hostNetwork': (o) => boolOrFalse(o?.spec?.hostNetwork),
      'status.phase': (o) => o?.status?.phase,
      // Upstream reads PodIPs[0], which conversion fills from podIP.
      'status.podIP': (o) => o?.status?.podIP ?? o?.status?.podIPs?.[0]?.ip,
      // Accepted by the conversion function but absent from the selectable set, so always "".
      'status.podIPs': () => undefined,
      'status.nominatedNodeName': (o) => o?.status?.nominatedNodeName,
    },
    aliases: { 'spec.host': 'spec.nodeName' },
  },
  '/nodes': {
    style: 'notSupported',
    fields: { 'metadata.name': metaName, 'spec.unschedulable': (o) => boolOrFalse(o?.spec?.unschedulable) },
  },
  '/namespaces': {
    style: 'notSupported',
    fields: { 'status.phase': (o) => o?.status?.phase, 'metadata.name': metaName },
  },
  '/secrets': {
    style: 'notSupported',
    fields: { type: (o) => o?.type, 'metadata.namespace': metaNamespace, 'metadata.name': metaName },
  },
  '/services': {
    style: 'notSupported',
    fields: {
      'metadata.namespace': metaNamespace,
      'metadata.name': metaName,
      'spec.clusterIP': (o) => o?.spec?.clusterIP,
      'spec.type': (o) => o?.spec?.type,
    },
  },
  '/replicationcontrollers': {
    style: 'notSupported',
    fields: {
      'metadata.name': metaName,
      'metadata.namespace': metaNamespace,
      'status.replicas': (o) => o?.status?.replicas ?? 0,
    },
  },
  '/events': { style: 'notSupported', fields: eventFields },
  // events.k8s.io/v1 maps its own names onto the core event fields.
  'events.k8s.io/events': {
    style: 'notSupported',
    fields: {
      reason: eventFields.reason,
      'regarding.kind': eventFields['involvedObject.kind'],
      'regarding.namespace': eventFields['involvedObject.namespace'],
      'regarding.name': eventFields['involvedObject.name'],
      'regarding.uid': eventFields['involvedObject.uid'],
      'regarding.apiVersion': eventFields['involvedObject.apiVersion'],
      'regarding.resourceVersion': eventFields['involvedObject.resourceVersion'],
      'regarding.fieldPath': eventFields['involvedObject.fieldPath'],
      reportingController: eventFields.reportingComponent,
      type: eventFields.type,
      'metadata.namespace': metaNamespace,
      'metadata.name': metaName,
    },
  },
};

const DEFAULT_SPEC: FieldSpec = {
  style: 'default',
  fields: { 'metadata.name': metaName, 'metadata.namespace': metaNamespace },
};

/** API groups served by kube-apiserver itself; anything else is a custom resource. */
function isBuiltinGroup(group: string): boolean {
  return group === '' || ['apps', 'batch', 'policy', 'autoscaling', 'extensions'].includes(group) || group.endsWith('.k8s.io');
}

/** Reads a simple JSONPath (".spec.color", ".spec['a.b']") as allowed for CRD selectableFields. */
function readSimplePath(obj: any, jsonPath: string): unknown {
  const segs: string[] = [];
  const re = /\.([^.[\]]+)|\[['"]([^'"]*)['"]\]/gy;
  let m: RegExpExecArray | null;
  let last = 0;
  while ((m = re.exec(jsonPath)) !== null) {
    segs.push(m[1] ?? m[2]);
    last = re.lastIndex;
  }
  if (last !== jsonPath.length) return undefined;
  let cur = obj;
  for (const s of segs) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[s];
  }
  return cur;
}

/**
 * The field spec for a resource. `extra` (CRD `selectableFields[].jsonPath`,
 * possibly empty) marks a custom resource, as does a non-built-in group.
 */
function fieldSpec(group: string, resource: string, extra?: string[]): FieldSpec {
  if (extra === undefined && isBuiltinGroup(group)) return FIELD_SPECS[`${group}/${resource}`] ?? DEFAULT_SPEC;
  // Custom resources: metadata fields plus selectableFields (labels drop the leading dot).
  // Upstream also refuses metadata.namespace for cluster-scoped CRDs; we cannot see the scope here.
  const fields: Record<string, Getter> = { 'metadata.name': metaName, 'metadata.namespace': metaNamespace };
  for (const p of extra ?? []) {
    const label = p.replace(/^\./, '');
    fields[label] = (o) => {
      const v = readSimplePath(o, p.startsWith('.') || p.startsWith('[') ? p : '.' + p);
      // Selectable fields must be strings, integers or booleans; anything else selects as "".
      return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : undefined;
    };
  }
  return { style: 'notSupported', fields };
}

function unknownField(spec: FieldSpec, field: string): SelectorError {
  if (spec.style === 'default')
    return new SelectorError(`${goQuote(field)} is not a known field selector: only "metadata.name", "metadata.namespace"`);
  return new SelectorError(`field label not supported: ${field}`);
}

function stringify(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return undefined;
}

/**
 * Returns a reader for the selectable fields of a resource. The reader throws
 * SelectorError (upstream's text) for a field the kind does not support, and
 * returns undefined for a supported field the object lacks. Booleans and
 * numbers come back as strings ("true", "3").
 */
export function fieldGetter(group: string, resource: string, extra?: string[]): (obj: any, field: string) => string | undefined {
  const spec = fieldSpec(group, resource, extra);
  return (obj, field) => {
    const canonical = spec.aliases && hasOwn(spec.aliases, field) ? spec.aliases[field] : field;
    const get = hasOwn(spec.fields, canonical) ? spec.fields[canonical] : undefined;
    if (!get) throw unknownField(spec, field);
    return stringify(get(obj));
  };
}

/**
 * Validates the requirements against the kind (throwing SelectorError for an
 * unknown field, like the apiserver's field label conversion) and returns a
 * matcher. A missing field compares as "".
 */
export function compileFieldSelector(
  reqs: FieldRequirement[],
  group: string,
  resource: string,
  extra?: string[],
): (obj: any) => boolean {
  if (reqs.length === 0) return () => true;
  const get = fieldGetter(group, resource, extra);
  // Validate up front so a bad selector fails even when there is nothing to list.
  for (const r of reqs) get({}, r.field);
  return (obj) =>
    reqs.every((r) => {
      const v = get(obj, r.field) ?? '';
      return r.op === '=' ? v === r.value : v !== r.value;
    });
}
