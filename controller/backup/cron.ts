/**
 * Cron schedules for BackupPolicy: parse a 5-field expression (or a macro) and
 * compute the next run in an IANA time zone. Pure: no I/O, no timers, no npm
 * dependencies; time zones come from the runtime's ICU data (Intl).
 *
 * Semantics follow Vixie cron as shipped by cronie (see docs/backup.md):
 * - fields: minute hour day-of-month month day-of-week; lists, ranges, steps,
 *   names JAN-DEC and SUN-SAT, day-of-week 0 and 7 both Sunday;
 * - a field that begins with `*` is "unrestricted" for the day rule: when both
 *   day-of-month and day-of-week are restricted, a day matches if EITHER does;
 *   otherwise both must (so `0 0 13 * FRI` = every 13th and every Friday);
 * - DST: a job is a "wildcard" job when its minute or hour field begins with
 *   `*` (and for @hourly). In a spring-forward gap, fixed-time jobs whose local
 *   time was skipped run once at the first instant after the gap; wildcard jobs
 *   just skip the missing wall times. In a fall-back overlap, fixed-time jobs
 *   run only in the first pass; wildcard jobs run in both passes (an hourly job
 *   stays hourly in real time).
 */

export class CronError extends Error {
  constructor(
    /** The spec field the expression came from, e.g. "schedule". */
    readonly path: string,
    /** The cron field at fault ("minute", "hour", …), or "" for the expression as a whole. */
    readonly field: string,
    /** The rule that was broken, without the path prefix. */
    readonly rule: string,
  ) {
    super(`${path}: ${field ? `field "${field}" ` : ''}${rule}`);
    this.name = 'CronError';
  }
}

export interface Cron {
  /** The expression as given (trimmed). */
  readonly source: string;
  /** Sorted values of each field; weekdays are 0-6 (7 folds onto 0). */
  readonly minutes: readonly number[];
  readonly hours: readonly number[];
  readonly daysOfMonth: readonly number[];
  readonly months: readonly number[];
  readonly daysOfWeek: readonly number[];
  /** The field did not begin with `*` (Vixie's DOM_STAR/DOW_STAR, inverted). */
  readonly domRestricted: boolean;
  readonly dowRestricted: boolean;
  /** Minute or hour field begins with `*`: the DST rules for interval jobs apply. */
  readonly wildcard: boolean;
}

interface FieldDef {
  name: string;
  min: number;
  max: number;
  names?: string[];
}

const FIELDS: FieldDef[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'] },
  { name: 'day-of-week', min: 0, max: 7, names: ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'] },
];

const MACROS: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};
const MACRO_LIST = '@hourly, @daily, @weekly, @monthly, @yearly';
const FIELD_LIST = 'minute hour day-of-month month day-of-week';
const MONTH_NAMES = FIELDS[3].names!;
// Longest each month can be (February: leap years).
const MONTH_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function parseValue(path: string, f: FieldDef, s: string, item: string): number {
  if (/^[0-9]+$/.test(s)) {
    const v = Number(s);
    if (v < f.min || v > f.max) throw new CronError(path, f.name, `value ${s} is out of range ${f.min}-${f.max}`);
    return v;
  }
  if (f.names) {
    const i = f.names.indexOf(s.toUpperCase());
    if (i >= 0) return f.name === 'month' ? i + 1 : i;
    throw new CronError(path, f.name, `value "${item}" is not a number or a name (${f.names[0]}-${f.names[f.names.length - 1]})`);
  }
  if (s === '?') throw new CronError(path, f.name, 'value "?" is not supported; use *');
  throw new CronError(path, f.name, `value "${item}" is not a number from ${f.min} to ${f.max}`);
}

function parseField(path: string, f: FieldDef, text: string): Set<number> {
  const out = new Set<number>();
  for (const item of text.split(',')) {
    if (item === '') throw new CronError(path, f.name, `"${text}" has an empty list item`);
    const slash = item.split('/');
    if (slash.length > 2) throw new CronError(path, f.name, `item "${item}" has more than one "/"`);
    const [rangeText, stepText] = slash;
    let step = 1;
    if (stepText !== undefined) {
      const span = f.max - f.min + 1;
      if (!/^[0-9]+$/.test(stepText)) throw new CronError(path, f.name, `step "${stepText}" in "${item}" is not a number`);
      step = Number(stepText);
      if (step < 1 || step > span) throw new CronError(path, f.name, `step ${stepText} in "${item}" must be from 1 to ${span}`);
    }
    let lo: number;
    let hi: number;
    if (rangeText === '*') {
      lo = f.min;
      hi = f.max;
    } else {
      const dash = rangeText.split('-');
      if (dash.length > 2 || dash.some((p) => p === ''))
        throw new CronError(path, f.name, `item "${item}" is not a value, a range a-b, or * (negative numbers are not allowed)`);
      lo = parseValue(path, f, dash[0], item);
      hi = dash.length === 2 ? parseValue(path, f, dash[1], item) : lo;
      if (dash.length === 1 && stepText !== undefined)
        // cronie reads "5/15" as just 5, other crons as 5-59/15: refuse rather than guess.
        throw new CronError(
          path,
          f.name,
          `item "${item}": a step needs a range or * (write ${dash[0]}-${f.max}/${stepText} or */${stepText})`,
        );
      if (hi < lo) {
        const hint =
          f.name === 'day-of-week' && hi === 0
            ? `${dash[0]}-7`
            : `${dash[0]}-${f.names ? f.names[f.names.length - 1] : f.max},${f.names ? f.names[0] : f.min}-${dash[1]}`;
        throw new CronError(
          path,
          f.name,
          `range ${rangeText} runs backwards; wrap-around ranges are not supported (write ${hint})`,
        );
      }
    }
    for (let v = lo; v <= hi; v += step) out.add(f.name === 'day-of-week' && v === 7 ? 0 : v);
  }
  return out;
}

/** Parse a cron expression; throws CronError naming the field and the rule. `path` prefixes messages. */
export function parseCron(expr: string, path = 'schedule'): Cron {
  if (typeof expr !== 'string') throw new CronError(path, '', `must be a string, got ${expr === null ? 'null' : typeof expr}`);
  const source = expr.trim();
  if (source === '') throw new CronError(path, '', `is empty; expected 5 fields (${FIELD_LIST}) or one of ${MACRO_LIST}`);
  let text = source;
  if (source.startsWith('@')) {
    const macro = MACROS[source.toLowerCase()];
    if (!macro) {
      const why =
        source.toLowerCase() === '@reboot' ? 'is not supported (a backup schedule needs times)' : 'is not a known macro';
      throw new CronError(path, '', `"${source}" ${why}; use one of ${MACRO_LIST} or 5 fields`);
    }
    text = macro;
  }
  const parts = text.split(/\s+/);
  if (parts.length !== 5) {
    const extra = parts.length === 6 ? ' (a seconds or year field is not supported)' : '';
    throw new CronError(
      path,
      '',
      `has ${parts.length} field${parts.length === 1 ? '' : 's'}; expected 5 (${FIELD_LIST})${extra}`,
    );
  }
  const sets = parts.map((p, i) => parseField(path, FIELDS[i], p));
  const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
  const cron: Cron = {
    source,
    minutes: sorted(sets[0]),
    hours: sorted(sets[1]),
    daysOfMonth: sorted(sets[2]),
    months: sorted(sets[3]),
    daysOfWeek: sorted(sets[4]),
    domRestricted: !parts[2].startsWith('*'),
    dowRestricted: !parts[4].startsWith('*'),
    // cronie sets HR_STAR for @hourly, which "0 * * * *" gives us anyway.
    wildcard: parts[0].startsWith('*') || parts[1].startsWith('*'),
  };
  // With day-of-week unrestricted, only day-of-month decides: refuse dates no month has.
  if (cron.domRestricted && !cron.dowRestricted && !cron.months.some((m) => cron.daysOfMonth[0] <= MONTH_DAYS[m - 1])) {
    const months = cron.months.map((m) => MONTH_NAMES[m - 1]).join(',');
    throw new CronError(path, 'day-of-month', `value ${parts[2]} never occurs in month ${months}; the schedule would never run`);
  }
  return cron;
}

// ---- time zones ------------------------------------------------------------------

interface Transition {
  /** First instant (ms) with the new offset. */
  at: number;
  /** UTC offsets (ms, local minus UTC) before and from `at`. */
  before: number;
  after: number;
}

const DAY = 86_400_000;
const MINUTE = 60_000;
const yearStart = (y: number) => Date.UTC(y, 0, 1);

class Zone {
  private readonly fmt: Intl.DateTimeFormat;
  private readonly years = new Map<number, Transition[]>();
  /** Offset at the start of each UTC year whose transitions are known. */
  private readonly yearOffsets = new Map<number, number>();

  constructor(readonly name: string) {
    this.fmt = new Intl.DateTimeFormat('en-US', {
      timeZone: name,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  }

  /** Local time minus UTC at instant ms, from the cached transitions (Intl is slow: ~4 µs a call). */
  offset(ms: number): number {
    const y = new Date(ms).getUTCFullYear();
    const list = this.transitions(y);
    let off = this.yearOffsets.get(y)!;
    for (const tr of list) if (tr.at <= ms) off = tr.after;
    return off;
  }

  /** Local time minus UTC at instant ms, in ms (whole seconds; LMT offsets have seconds), asked from Intl. */
  private offsetAt(ms: number): number {
    const p: Record<string, number> = {};
    for (const part of this.fmt.formatToParts(new Date(ms))) if (part.type !== 'literal') p[part.type] = Number(part.value);
    const d = new Date(0);
    d.setUTCFullYear(p.year, p.month - 1, p.day);
    d.setUTCHours(p.hour, p.minute, p.second, 0);
    return d.getTime() - Math.floor(ms / 1000) * 1000;
  }

  /**
   * Offset changes in (start of UTC year y, start of y+1], found by sampling weekly
   * and bisecting to the second. Real zones never change twice within a week.
   */
  transitions(y: number): Transition[] {
    let list = this.years.get(y);
    if (list) return list;
    list = [];
    const end = yearStart(y + 1);
    let prevAt = yearStart(y);
    let prevOff = this.offsetAt(prevAt);
    this.yearOffsets.set(y, prevOff);
    while (prevAt < end) {
      const at = Math.min(prevAt + 7 * DAY, end);
      const off = this.offsetAt(at);
      let lo = prevAt;
      let loOff = prevOff;
      while (loOff !== off) {
        let hi = at;
        while (hi - lo > 1000) {
          const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
          if (this.offsetAt(mid) === loOff) lo = mid;
          else hi = mid;
        }
        const after = this.offsetAt(hi);
        list.push({ at: hi, before: loOff, after });
        lo = hi;
        loOff = after;
      }
      prevAt = at;
      prevOff = off;
    }
    this.years.set(y, list);
    return list;
  }

  /** The first transition strictly after t within two years, if any. */
  nextTransition(t: number): Transition | undefined {
    const y = new Date(t).getUTCFullYear();
    for (const yy of [y, y + 1]) for (const tr of this.transitions(yy)) if (tr.at > t) return tr;
    return undefined;
  }

  /** The last transition at or before t within the past year, if any. */
  lastTransition(t: number): Transition | undefined {
    const y = new Date(t).getUTCFullYear();
    for (const yy of [y, y - 1]) {
      const list = this.transitions(yy);
      for (let i = list.length - 1; i >= 0; i--) if (list[i].at <= t) return list[i];
    }
    return undefined;
  }
}

const zones = new Map<string, Zone>();

function zoneOf(tz: string, path: string): Zone {
  let z = zones.get(tz);
  if (!z) {
    validateTimeZone(tz, path);
    z = new Zone(tz);
    zones.set(tz, z);
  }
  return z;
}

const validZones = new Set<string>();

/** Check that tz is an IANA zone name this runtime knows; returns it unchanged. */
export function validateTimeZone(tz: string, path = 'timeZone'): string {
  if (validZones.has(tz)) return tz;
  const known = 'an IANA time zone name known to this runtime (e.g. "UTC", "Europe/Berlin", "America/New_York")';
  // Intl also takes offsets like "+01:00" on newer runtimes; those have no DST rules and are refused here.
  if (typeof tz !== 'string' || !/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(tz))
    throw new CronError(path, '', `${JSON.stringify(tz)} is not ${known}`);
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    throw new CronError(path, '', `${JSON.stringify(tz)} is not ${known}`);
  }
  validZones.add(tz);
  return tz;
}

export interface LocalTime {
  year: number;
  /** 1-12 */
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  /** 0 = Sunday */
  weekday: number;
  /** Local minus UTC, in minutes. */
  offsetMinutes: number;
}

/** Wall-clock fields of an instant in a time zone. */
export function localTime(at: Date, tz: string): LocalTime {
  const ms = at.getTime();
  const off = zoneOf(tz, 'timeZone').offset(ms);
  const w = new Date(ms + off);
  return {
    year: w.getUTCFullYear(),
    month: w.getUTCMonth() + 1,
    day: w.getUTCDate(),
    hour: w.getUTCHours(),
    minute: w.getUTCMinutes(),
    second: w.getUTCSeconds(),
    weekday: w.getUTCDay(),
    offsetMinutes: off / MINUTE,
  };
}

// ---- next run --------------------------------------------------------------------

/** Sets stored as lookup tables next to the sorted lists, built once per Cron. */
interface Tables {
  minute: Uint8Array;
  hour: Uint8Array;
  dom: Uint8Array;
  month: Uint8Array;
  dow: Uint8Array;
}
const tables = new WeakMap<Cron, Tables>();
function tablesOf(c: Cron): Tables {
  let t = tables.get(c);
  if (!t) {
    const mk = (vals: readonly number[], n: number) => {
      const a = new Uint8Array(n);
      for (const v of vals) a[v] = 1;
      return a;
    };
    t = {
      minute: mk(c.minutes, 60),
      hour: mk(c.hours, 24),
      dom: mk(c.daysOfMonth, 32),
      month: mk(c.months, 13),
      dow: mk(c.daysOfWeek, 7),
    };
    tables.set(c, t);
  }
  return t;
}

const after = (sorted: readonly number[], x: number) => sorted.find((v) => v > x);
const wallMs = (y: number, mo: number, d: number, h = 0, mi = 0) => Date.UTC(y, mo - 1, d, h, mi);

function dayMatches(c: Cron, t: Tables, dom: number, dow: number): boolean {
  const a = t.dom[dom] === 1;
  const b = t.dow[dow] === 1;
  return c.domRestricted && c.dowRestricted ? a || b : a && b;
}

/**
 * The first wall-clock minute in [from, to) matching c. Wall times are encoded as
 * the UTC instant with the same fields (a calendar with no DST). Skips by field:
 * a non-matching month jumps to the next matching month, an hour to the next hour.
 */
function firstMatchWall(c: Cron, from: number, to: number): number | undefined {
  const t = tablesOf(c);
  let w = from;
  while (w < to) {
    const d = new Date(w);
    const y = d.getUTCFullYear();
    const mo = d.getUTCMonth() + 1;
    const day = d.getUTCDate();
    const h = d.getUTCHours();
    const mi = d.getUTCMinutes();
    if (!t.month[mo]) {
      const nm = after(c.months, mo);
      w = nm !== undefined ? wallMs(y, nm, 1) : wallMs(y + 1, c.months[0], 1);
    } else if (!dayMatches(c, t, day, d.getUTCDay())) {
      w = wallMs(y, mo, day + 1);
    } else if (!t.hour[h]) {
      const nh = after(c.hours, h);
      w = nh !== undefined ? wallMs(y, mo, day, nh) : wallMs(y, mo, day + 1);
    } else if (!t.minute[mi]) {
      const nmi = after(c.minutes, mi);
      w = nmi !== undefined ? wallMs(y, mo, day, h, nmi) : wallMs(y, mo, day, h + 1);
    } else {
      return w;
    }
  }
  return undefined;
}

const floorMinute = (ms: number) => Math.floor(ms / MINUTE) * MINUTE;
const ceilMinute = (ms: number) => Math.ceil(ms / MINUTE) * MINUTE;
/** Far enough for any valid expression: Feb 29 on a given weekday recurs within 40 years. */
const HORIZON_YEARS = 100;

/**
 * The first run of cron strictly after `after`, evaluated in time zone tz.
 *
 * Walks the timeline in stretches of constant UTC offset (between DST
 * transitions). Within a stretch local time is instant + offset, so the search
 * runs on wall-clock fields and skips by field; at each transition the gap and
 * overlap rules decide (see the module comment).
 */
export function next(cron: Cron, afterDate: Date, tz = 'UTC'): Date {
  const zone = zoneOf(tz, 'timeZone');
  const start = afterDate instanceof Date ? afterDate.getTime() : NaN;
  if (!Number.isFinite(start)) throw new CronError('after', '', `${String(afterDate)} is not a valid Date`);
  const limit = Date.UTC(new Date(start).getUTCFullYear() + HORIZON_YEARS, 0, 1);
  // Wall times below overlapEnd already happened in the first pass of a fall-back overlap.
  const prev = zone.lastTransition(start);
  let overlapEnd = prev && prev.before > prev.after ? prev.at + prev.before : -Infinity;
  let t = start;
  let first = true;
  while (t < limit) {
    const off = zone.offset(t);
    const tr = zone.nextTransition(t);
    const end = tr ? tr.at : yearStart(new Date(t).getUTCFullYear() + 2);
    let from = first ? floorMinute(t + off) + MINUTE : ceilMinute(t + off);
    if (!cron.wildcard && overlapEnd > from) from = ceilMinute(overlapEnd);
    const wall = firstMatchWall(cron, from, end + off);
    if (wall !== undefined) return new Date(wall - off);
    if (tr && tr.after > tr.before) {
      // Spring forward: wall times [at+before, at+after) do not exist.
      if (!cron.wildcard && firstMatchWall(cron, ceilMinute(tr.at + tr.before), tr.at + tr.after) !== undefined)
        return new Date(tr.at);
      overlapEnd = -Infinity;
    } else if (tr && tr.after < tr.before) {
      overlapEnd = tr.at + tr.before;
    }
    t = end;
    first = false;
  }
  throw new CronError(
    'schedule',
    '',
    `"${cron.source}" has no run within ${HORIZON_YEARS} years after ${afterDate.toISOString()}`,
  );
}
