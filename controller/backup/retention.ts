/**
 * Retention and full-vs-incremental decisions for backup chains. Pure: the
 * caller passes the points it knows (one VM disk chain, or one VM's Backups)
 * and gets back what to keep, what to delete and, optionally, which merges
 * (qemu-img rebase) to run first. See docs/backup.md "Retention".
 */
import { localTime, validateTimeZone, type LocalTime } from './cron';

export type PointType = 'Full' | 'Incremental';

export interface BackupPoint {
  name: string;
  /** When the point was taken (the backup's start: that is the moment it restores to). */
  time: Date | string;
  type: PointType;
  /** The point an Incremental builds on (its qcow2 backing file). */
  base?: string;
  /** Backup phase: Succeeded counts; Pending/Running are in flight; anything else failed. */
  phase: string;
}

export const BUCKETS = ['hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
export type Bucket = (typeof BUCKETS)[number];

export interface RetentionPolicy {
  keepLast?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /**
   * Instead of keeping the unselected points a kept incremental depends on,
   * fold them into it: the plan's merges say "rebase X onto Y" and the folded
   * points are deleted afterwards.
   */
  mergeIncrementals?: boolean;
}

export interface RetentionOptions {
  /** IANA zone that decides where hours, days, weeks, months and years begin. Default UTC. */
  timeZone?: string;
}

export interface KeptPoint {
  name: string;
  /** Every rule that keeps it, e.g. ["keepLast 3", "daily 2026-11-20"]. */
  reasons: string[];
  /** reasons joined with "; ". */
  reason: string;
}

export type DeleteKind =
  /** Succeeded, selected by no rule and needed by no kept point. */
  | 'expired'
  /** Folded into a kept point by a merge step; delete only after the merges ran. */
  | 'merged'
  /** Not Succeeded and older than the newest Succeeded point. */
  | 'failed'
  /** Succeeded but unrestorable: a point it depends on is missing or not Succeeded. */
  | 'broken';

export interface DeletedPoint {
  name: string;
  kind: DeleteKind;
  reason: string;
}

export interface MergeStep {
  /** The kept point whose backing chain is shortened. */
  point: string;
  /** Its current base. */
  from: string;
  /** Its new base, or null: it becomes self-contained (a Full point). */
  onto: string | null;
  /** The points whose data is copied into `point`, nearest first. */
  merged: string[];
  /** `qemu-img rebase` in safe mode onto `onto` (or `-b ""`) gives this; the type becomes Full when onto is null. */
  becomesFull: boolean;
  /** e.g. `rebase b-07 onto b-03, delete b-06, b-05, b-04` */
  description: string;
}

export interface RetentionPlan {
  /** Newest first. */
  keep: KeptPoint[];
  /** Run merges first (in order), then deletes in order: newest first, so a crash midway never strands a dependent. */
  merges: MergeStep[];
  delete: DeletedPoint[];
}

export class RetentionError extends Error {
  constructor(
    readonly field: string,
    readonly rule: string,
  ) {
    super(`${field}: ${rule}`);
    this.name = 'RetentionError';
  }
}

const IN_FLIGHT = new Set(['Pending', 'Running']);

interface Node {
  p: BackupPoint;
  ms: number;
  index: number;
}

function validatePolicy(policy: RetentionPolicy | undefined, path: string): void {
  if (policy === undefined || policy === null) return;
  if (typeof policy !== 'object') throw new RetentionError(path, 'must be an object');
  for (const k of ['keepLast', ...BUCKETS] as const) {
    const v = policy[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      throw new RetentionError(
        `${path}.${k}`,
        `${JSON.stringify(v)} must be an integer of at least 1 (leave it out to turn the rule off)`,
      );
  }
  if (policy.mergeIncrementals !== undefined && typeof policy.mergeIncrementals !== 'boolean')
    throw new RetentionError(`${path}.mergeIncrementals`, `${JSON.stringify(policy.mergeIncrementals)} must be true or false`);
}

function toMs(t: Date | string, field: string): number {
  const ms = t instanceof Date ? t.getTime() : typeof t === 'string' ? Date.parse(t) : NaN;
  if (!Number.isFinite(ms)) throw new RetentionError(field, `${JSON.stringify(t)} is not a date`);
  return ms;
}

/** Index points by name after checking their shape. */
function indexPoints(points: BackupPoint[]): Map<string, Node> {
  if (!Array.isArray(points)) throw new RetentionError('points', 'must be a list');
  const byName = new Map<string, Node>();
  points.forEach((p, i) => {
    const f = `points[${i}]`;
    if (!p || typeof p.name !== 'string' || p.name === '') throw new RetentionError(`${f}.name`, 'must be a non-empty string');
    if (byName.has(p.name)) throw new RetentionError(`${f}.name`, `"${p.name}" is used twice; point names must be unique`);
    if (p.type !== 'Full' && p.type !== 'Incremental')
      throw new RetentionError(`${f}.type`, `${JSON.stringify(p.type)} must be Full or Incremental`);
    if (p.type === 'Incremental' && (typeof p.base !== 'string' || p.base === ''))
      throw new RetentionError(`${f}.base`, 'an Incremental point must name its base');
    if (p.type === 'Full' && p.base !== undefined && p.base !== '')
      throw new RetentionError(`${f}.base`, `a Full point has no base (got "${p.base}")`);
    if (typeof p.phase !== 'string') throw new RetentionError(`${f}.phase`, 'must be a string');
    byName.set(p.name, { p, ms: toMs(p.time, `${f}.time`), index: i });
  });
  return byName;
}

/** Newest first; ties broken by name (descending) so the order never depends on input order. */
const newestFirst = (a: Node, b: Node) => b.ms - a.ms || (a.p.name < b.p.name ? 1 : a.p.name > b.p.name ? -1 : 0);

/** Why a Succeeded point cannot be restored, or undefined when its whole chain is there. */
function brokenReason(byName: Map<string, Node>, name: string, memo: Map<string, string | undefined>): string | undefined {
  if (memo.has(name)) return memo.get(name);
  memo.set(name, 'its chain of bases loops back on itself'); // provisional: a cycle ends here
  const n = byName.get(name)!;
  let why: string | undefined;
  if (n.p.type === 'Incremental') {
    const base = byName.get(n.p.base!);
    if (!base) why = `base "${n.p.base}" is missing`;
    else if (base.p.phase !== 'Succeeded') why = `base "${n.p.base}" is ${base.p.phase || 'not Succeeded'}`;
    else {
      const up = brokenReason(byName, base.p.name, memo);
      if (up) why = up.startsWith('base') ? `${up} (via "${base.p.name}")` : up;
    }
  }
  memo.set(name, why);
  return why;
}

function ancestors(byName: Map<string, Node>, name: string): Node[] {
  const out: Node[] = [];
  const seen = new Set([name]);
  let n = byName.get(name);
  while (n && n.p.type === 'Incremental') {
    const b = byName.get(n.p.base!);
    if (!b || seen.has(b.p.name)) break;
    seen.add(b.p.name);
    out.push(b);
    n = b;
  }
  return out;
}

/** Period label of a point for a bucket, in the policy's zone. Hours carry the offset so both passes of a fall-back hour count. */
export function periodOf(bucket: Bucket, at: Date, timeZone: string): string {
  return periodKey(bucket, localTime(at, timeZone));
}

function periodKey(bucket: Bucket, l: LocalTime): string {
  const p2 = (n: number) => String(n).padStart(2, '0');
  switch (bucket) {
    case 'hourly': {
      const o = Math.abs(l.offsetMinutes);
      return `${l.year}-${p2(l.month)}-${p2(l.day)}T${p2(l.hour)}:00${l.offsetMinutes < 0 ? '-' : '+'}${p2(Math.floor(o / 60))}:${p2(o % 60)}`;
    }
    case 'daily':
      return `${l.year}-${p2(l.month)}-${p2(l.day)}`;
    case 'weekly': {
      // ISO 8601: weeks start on Monday; week 1 holds the year's first Thursday.
      const day = Date.UTC(l.year, l.month - 1, l.day);
      const thursday = new Date(day + (3 - ((l.weekday + 6) % 7)) * 86_400_000);
      const isoYear = thursday.getUTCFullYear();
      const week = 1 + Math.floor((thursday.getTime() - Date.UTC(isoYear, 0, 1)) / (7 * 86_400_000));
      return `${isoYear}-W${p2(week)}`;
    }
    case 'monthly':
      return `${l.year}-${p2(l.month)}`;
    case 'yearly':
      return `${l.year}`;
  }
}

/**
 * Decide which points of a chain to keep.
 *
 * Buckets follow restic: each rule looks at the Succeeded, restorable points
 * newest first and keeps the newest point of each of the last N periods that
 * have one; rules are independent and a point may be kept by several. Then no
 * kept point may lose a point it depends on: the bases are kept too, or with
 * mergeIncrementals folded into it by a merge step.
 */
export function planRetention(
  points: BackupPoint[],
  policy: RetentionPolicy | undefined,
  opts: RetentionOptions = {},
): RetentionPlan {
  validatePolicy(policy, 'retention');
  const tz = validateTimeZone(opts.timeZone ?? 'UTC');
  const byName = indexPoints(points);
  const all = [...byName.values()].sort(newestFirst);

  const reasons = new Map<string, string[]>();
  const keep = (name: string, why: string) => {
    const r = reasons.get(name);
    if (r) {
      if (!r.includes(why)) r.push(why);
    } else reasons.set(name, [why]);
  };
  const deletes = new Map<string, DeletedPoint>();

  // 1. Sort points into what they are.
  const memo = new Map<string, string | undefined>();
  const eligible: Node[] = [];
  const inFlight: Node[] = [];
  const failed: Node[] = [];
  for (const n of all) {
    if (n.p.phase === 'Succeeded') {
      const why = brokenReason(byName, n.p.name, memo);
      if (why) deletes.set(n.p.name, { name: n.p.name, kind: 'broken', reason: `cannot be restored: ${why}` });
      else eligible.push(n);
    } else if (IN_FLIGHT.has(n.p.phase)) inFlight.push(n);
    else failed.push(n);
  }
  const newestOk = eligible[0];
  for (const n of failed) {
    const phase = n.p.phase || 'no phase';
    if (newestOk && n.ms < newestOk.ms)
      deletes.set(n.p.name, {
        name: n.p.name,
        kind: 'failed',
        reason: `${phase} and older than the newest Succeeded point "${newestOk.p.name}"`,
      });
    else keep(n.p.name, `${phase} and newer than any Succeeded point; kept for inspection until a later run succeeds`);
  }
  for (const n of inFlight) keep(n.p.name, `in progress (${n.p.phase})`);

  // 2. Rules select among the eligible points.
  const selected = new Set<string>();
  const rules = (['keepLast', ...BUCKETS] as const).filter((k) => policy?.[k] !== undefined);
  if (rules.length === 0) {
    for (const n of eligible) {
      keep(n.p.name, 'no retention rule: keep everything');
      selected.add(n.p.name);
    }
  }
  if (policy?.keepLast !== undefined)
    for (const n of eligible.slice(0, policy.keepLast)) {
      keep(n.p.name, `keepLast ${policy.keepLast}`);
      selected.add(n.p.name);
    }
  const locals = new Map<Node, LocalTime>(); // Intl is the slow part: once per point
  const local = (n: Node) => locals.get(n) ?? locals.set(n, localTime(new Date(n.ms), tz)).get(n)!;
  for (const b of BUCKETS) {
    const count = policy?.[b];
    if (count === undefined) continue;
    const seen = new Set<string>();
    for (const n of eligible) {
      if (seen.size === count) break;
      const period = periodKey(b, local(n));
      if (seen.has(period)) continue;
      seen.add(period);
      keep(n.p.name, `${b} ${period}`);
      selected.add(n.p.name);
    }
  }

  // 3. Points in-flight runs build on stay as they are: nothing rebases a file a running backup reads.
  const pinned = new Set<string>();
  for (const n of inFlight)
    for (const a of ancestors(byName, n.p.name)) {
      pinned.add(a.p.name);
      keep(a.p.name, `base of in-progress point "${n.p.name}"`);
    }

  // 4. Never break a chain.
  const merges: MergeStep[] = [];
  const mergedInto = new Map<string, string>();
  const byNewest = eligible.filter((n) => selected.has(n.p.name));
  if (!policy?.mergeIncrementals) {
    for (const k of byNewest)
      for (const a of ancestors(byName, k.p.name)) {
        if (selected.has(a.p.name)) break; // its own bases are handled when it comes up
        keep(a.p.name, `base of kept point "${k.p.name}"`);
      }
  } else {
    const anchor = (name: string) => selected.has(name) || pinned.has(name);
    for (const k of [...byNewest].reverse()) {
      if (k.p.type !== 'Incremental' || pinned.has(k.p.name) || anchor(k.p.base!)) continue;
      const folded: string[] = [];
      let onto: string | null = null;
      for (const a of ancestors(byName, k.p.name)) {
        if (anchor(a.p.name)) {
          onto = a.p.name;
          break;
        }
        folded.push(a.p.name);
      }
      for (const f of folded) if (!mergedInto.has(f)) mergedInto.set(f, k.p.name);
      merges.push({
        point: k.p.name,
        from: k.p.base!,
        onto,
        merged: folded,
        becomesFull: onto === null,
        description: `rebase ${k.p.name} onto ${onto ?? 'nothing (it becomes a Full point)'}, delete ${folded.join(', ')}`,
      });
    }
  }

  // 5. Everything else goes, newest first.
  for (const n of eligible) {
    if (reasons.has(n.p.name)) continue;
    const into = mergedInto.get(n.p.name);
    deletes.set(
      n.p.name,
      into
        ? { name: n.p.name, kind: 'merged', reason: `merged into kept point "${into}"` }
        : { name: n.p.name, kind: 'expired', reason: 'selected by no retention rule and needed by no kept point' },
    );
  }
  // A point something still needs is never deleted, even when it is broken or failed.
  for (const name of reasons.keys()) deletes.delete(name);
  const order = (name: string) => byName.get(name)!;
  return {
    keep: [...reasons.keys()]
      .map(order)
      .sort(newestFirst)
      .map((n) => ({ name: n.p.name, reasons: reasons.get(n.p.name)!, reason: reasons.get(n.p.name)!.join('; ') })),
    merges,
    delete: [...deletes.values()].sort((a, b) => newestFirst(order(a.name), order(b.name))),
  };
}

// ---- full or incremental ------------------------------------------------------------

export interface FullPolicy {
  /** A full backup after every N incrementals (0: every run is full). */
  every?: number;
  /** A full backup when the chain's full point is at least this old: "168h", "7d", "1h30m", or ms. */
  interval?: string | number;
}

export interface TypeDecision {
  type: PointType;
  reason: string;
  /** The point an Incremental builds on. */
  base?: string;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parse the schema's duration format `^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$` into ms. */
export function parseDuration(s: string, field = 'full.interval'): number {
  if (typeof s !== 'string' || !/^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$/.test(s))
    throw new RetentionError(field, `${JSON.stringify(s)} is not a duration like 168h, 7d or 1h30m (units ms, s, m, h, d)`);
  let ms = 0;
  for (const m of s.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g)) ms += Number(m[1]) * UNIT_MS[m[2]];
  if (ms <= 0) throw new RetentionError(field, `${JSON.stringify(s)} must be longer than zero`);
  return ms;
}

function formatDuration(ms: number): string {
  const parts: string[] = [];
  let rest = Math.floor(ms / 60_000);
  for (const [unit, size] of [
    ['d', 1440],
    ['h', 60],
    ['m', 1],
  ] as const) {
    const v = Math.floor(rest / size);
    rest -= v * size;
    if (v) parts.push(`${v}${unit}`);
  }
  return parts.join('') || `${Math.round(ms / 1000)}s`;
}

/**
 * Full or Incremental for the next run of a chain. An Incremental builds on the
 * newest Succeeded point; it must be restorable, and the policy's full.every and
 * full.interval decide when a new chain starts. `opts.requested` is an
 * on-demand Backup's spec.type; `opts.baseUnusable` says why the agent cannot
 * do an incremental (dirty bitmap lost or inconsistent).
 */
export function decideType(
  policy: FullPolicy | undefined,
  chain: BackupPoint[],
  now: Date,
  opts: { requested?: PointType; baseUnusable?: string } = {},
): TypeDecision {
  if (policy?.every !== undefined && (typeof policy.every !== 'number' || !Number.isInteger(policy.every) || policy.every < 0))
    throw new RetentionError('full.every', `${JSON.stringify(policy.every)} must be an integer of at least 0`);
  const interval =
    policy?.interval === undefined
      ? undefined
      : typeof policy.interval === 'number'
        ? policy.interval > 0
          ? policy.interval
          : parseDuration(String(policy.interval))
        : parseDuration(policy.interval);
  const nowMs = now.getTime();
  if (opts.requested === 'Full') return { type: 'Full', reason: 'a Full backup was requested' };
  if (opts.baseUnusable) return { type: 'Full', reason: opts.baseUnusable };

  const byName = indexPoints(chain);
  const ok = [...byName.values()].filter((n) => n.p.phase === 'Succeeded').sort(newestFirst);
  const base = ok[0];
  if (!base) return { type: 'Full', reason: 'no Succeeded point to build on (first backup of the chain)' };
  const broken = brokenReason(byName, base.p.name, new Map());
  if (broken) return { type: 'Full', reason: `the newest Succeeded point "${base.p.name}" cannot be restored: ${broken}` };

  const chainUp = [base, ...ancestors(byName, base.p.name)];
  const full = chainUp[chainUp.length - 1];
  const incrementals = chainUp.length - 1;
  if (policy?.every !== undefined && incrementals >= policy.every)
    return {
      type: 'Full',
      reason: `${incrementals} incremental${incrementals === 1 ? '' : 's'} since full point "${full.p.name}" (full.every ${policy.every})`,
    };
  if (interval !== undefined && nowMs - full.ms >= interval)
    return {
      type: 'Full',
      reason: `full point "${full.p.name}" is ${formatDuration(nowMs - full.ms)} old (full.interval ${typeof policy!.interval === 'number' ? formatDuration(interval) : policy!.interval})`,
    };
  const of = policy?.every !== undefined ? ` of ${policy.every}` : '';
  return {
    type: 'Incremental',
    base: base.p.name,
    reason: `incremental ${incrementals + 1}${of} on "${base.p.name}" (chain from full point "${full.p.name}")`,
  };
}
