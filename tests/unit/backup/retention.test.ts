import { next, parseCron } from '../../../controller/backup/cron';
import {
  RetentionError,
  decideType,
  parseDuration,
  periodOf,
  planRetention,
  type BackupPoint,
  type RetentionPlan,
  type RetentionPolicy,
} from '../../../controller/backup/retention';

const full = (name: string, time: string, phase = 'Succeeded'): BackupPoint => ({ name, time, type: 'Full', phase });
const inc = (name: string, time: string, base: string, phase = 'Succeeded'): BackupPoint => ({
  name,
  time,
  type: 'Incremental',
  base,
  phase,
});
const kept = (p: RetentionPlan) => p.keep.map((k) => k.name);
const why = (p: RetentionPlan) => Object.fromEntries(p.keep.map((k) => [k.name, k.reason]));
const gone = (p: RetentionPlan) => Object.fromEntries(p.delete.map((d) => [d.name, `${d.kind}: ${d.reason}`]));
const retErr = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(RetentionError);
    return (e as Error).message;
  }
  throw new Error('expected a RetentionError');
};

describe('planRetention: hand-checked cases', () => {
  test('keepLast keeps the newest N; the rest expire, newest first', () => {
    const pts = ['01', '02', '03', '04', '05'].map((d) => full(`f${d}`, `2026-11-${d}T03:00:00Z`));
    const plan = planRetention(pts, { keepLast: 3 });
    expect(why(plan)).toEqual({ f05: 'keepLast 3', f04: 'keepLast 3', f03: 'keepLast 3' });
    expect(plan.delete.map((d) => d.name)).toEqual(['f02', 'f01']);
    expect(plan.delete[0]).toEqual({
      name: 'f02',
      kind: 'expired',
      reason: 'selected by no retention rule and needed by no kept point',
    });
    expect(plan.merges).toEqual([]);
  });

  test("days begin at local midnight in the policy's time zone", () => {
    // 23:30Z on the 20th is already the 21st in Berlin (UTC+1).
    const pts = [full('a', '2026-11-20T12:00:00Z'), full('b', '2026-11-20T23:30:00Z'), full('c', '2026-11-21T12:00:00Z')];
    expect(why(planRetention(pts, { daily: 2 }, { timeZone: 'UTC' }))).toEqual({ c: 'daily 2026-11-21', b: 'daily 2026-11-20' });
    expect(why(planRetention(pts, { daily: 2 }, { timeZone: 'Europe/Berlin' }))).toEqual({
      c: 'daily 2026-11-21',
      a: 'daily 2026-11-20',
    });
  });

  test('periods without a point do not count, and rules are independent (restic)', () => {
    const pts = [
      full('oct', '2026-10-10T10:00:00Z'),
      full('nov-early', '2026-11-02T10:00:00Z'),
      full('nov-late', '2026-11-20T10:00:00Z'),
      full('dec', '2026-12-24T10:00:00Z'),
    ];
    // Three months with points, nothing in between counts; the newest of November wins.
    const plan = planRetention(pts, { monthly: 3, keepLast: 1 }, { timeZone: 'UTC' });
    expect(why(plan)).toEqual({ dec: 'keepLast 1; monthly 2026-12', 'nov-late': 'monthly 2026-11', oct: 'monthly 2026-10' });
    expect(gone(plan)).toEqual({ 'nov-early': 'expired: selected by no retention rule and needed by no kept point' });
  });

  test('ISO weeks start on Monday and may belong to the previous year', () => {
    expect(periodOf('weekly', new Date('2026-12-31T12:00:00Z'), 'UTC')).toBe('2026-W53');
    expect(periodOf('weekly', new Date('2027-01-03T12:00:00Z'), 'UTC')).toBe('2026-W53'); // Sunday
    expect(periodOf('weekly', new Date('2027-01-04T12:00:00Z'), 'UTC')).toBe('2027-W01'); // Monday
    expect(periodOf('weekly', new Date('2025-12-29T12:00:00Z'), 'UTC')).toBe('2026-W01');
    // Sunday 23:30 in New York is Monday in UTC.
    expect(periodOf('weekly', new Date('2026-11-23T04:30:00Z'), 'America/New_York')).toBe('2026-W47');
    expect(periodOf('weekly', new Date('2026-11-23T04:30:00Z'), 'UTC')).toBe('2026-W48');
    expect(periodOf('yearly', new Date('2026-12-31T23:30:00Z'), 'Europe/Berlin')).toBe('2027');
  });

  test('both passes of a fall-back hour are separate hours', () => {
    const pts = [full('cest', '2026-10-25T00:30:00Z'), full('cet', '2026-10-25T01:30:00Z'), full('prev', '2026-10-24T23:30:00Z')];
    expect(why(planRetention(pts, { hourly: 3 }, { timeZone: 'Europe/Berlin' }))).toEqual({
      cet: 'hourly 2026-10-25T02:00+01:00',
      cest: 'hourly 2026-10-25T02:00+02:00',
      prev: 'hourly 2026-10-25T01:00+02:00',
    });
  });

  const chain = [
    full('f1', '2026-11-20T00:00:00Z'),
    inc('i1', '2026-11-20T01:00:00Z', 'f1'),
    inc('i2', '2026-11-20T02:00:00Z', 'i1'),
    inc('i3', '2026-11-20T03:00:00Z', 'i2'),
    inc('i4', '2026-11-20T04:00:00Z', 'i3'),
  ];

  test('a kept incremental keeps every point it depends on', () => {
    const plan = planRetention(chain, { keepLast: 1 });
    expect(why(plan)).toEqual({
      i4: 'keepLast 1',
      i3: 'base of kept point "i4"',
      i2: 'base of kept point "i4"',
      i1: 'base of kept point "i4"',
      f1: 'base of kept point "i4"',
    });
    expect(plan.delete).toEqual([]);
  });

  test('mergeIncrementals: the kept point absorbs its chain and becomes Full', () => {
    const plan = planRetention(chain, { keepLast: 1, mergeIncrementals: true });
    expect(kept(plan)).toEqual(['i4']);
    expect(plan.merges).toEqual([
      {
        point: 'i4',
        from: 'i3',
        onto: null,
        merged: ['i3', 'i2', 'i1', 'f1'],
        becomesFull: true,
        description: 'rebase i4 onto nothing (it becomes a Full point), delete i3, i2, i1, f1',
      },
    ]);
    expect(gone(plan)).toEqual({
      i3: 'merged: merged into kept point "i4"',
      i2: 'merged: merged into kept point "i4"',
      i1: 'merged: merged into kept point "i4"',
      f1: 'merged: merged into kept point "i4"',
    });
  });

  test('mergeIncrementals: rebase onto the nearest kept point', () => {
    // A day earlier: f0 and j1 on the 19th; the chain continues through f1 (now an incremental on j1).
    const pts = [
      full('f0', '2026-11-19T20:00:00Z'),
      inc('j1', '2026-11-19T21:00:00Z', 'f0'),
      ...chain.map((p) => (p.name === 'f1' ? inc('f1', p.time as string, 'j1') : p)),
    ];
    const plan = planRetention(pts, { daily: 2, mergeIncrementals: true }, { timeZone: 'UTC' });
    expect(why(plan)).toEqual({ i4: 'daily 2026-11-20', j1: 'daily 2026-11-19' });
    expect(plan.merges.map((m) => m.description)).toEqual([
      'rebase j1 onto nothing (it becomes a Full point), delete f0',
      'rebase i4 onto j1, delete i3, i2, i1, f1',
    ]);
    expect(plan.delete.map((d) => d.name)).toEqual(['i3', 'i2', 'i1', 'f1', 'f0']);
    // Without merging, the same policy keeps the whole chain.
    expect(kept(planRetention(pts, { daily: 2 }, { timeZone: 'UTC' }))).toEqual(['i4', 'i3', 'i2', 'i1', 'f1', 'j1', 'f0']);
  });

  test('failed points never count; old ones go, a newest failure stays for inspection', () => {
    const pts = [
      full('f1', '2026-11-20T00:00:00Z'),
      inc('x1', '2026-11-20T01:00:00Z', 'f1', 'Failed'),
      inc('i2', '2026-11-20T02:00:00Z', 'f1'),
      inc('x3', '2026-11-20T03:00:00Z', 'i2', 'Failed'),
    ];
    const plan = planRetention(pts, { keepLast: 1 });
    expect(why(plan)).toEqual({
      x3: 'Failed and newer than any Succeeded point; kept for inspection until a later run succeeds',
      i2: 'keepLast 1',
      f1: 'base of kept point "i2"',
    });
    expect(gone(plan)).toEqual({ x1: 'failed: Failed and older than the newest Succeeded point "i2"' });
  });

  test('a run in progress and the points it builds on are left alone, also when merging', () => {
    const pts = [...chain, inc('r5', '2026-11-20T05:00:00Z', 'i4', 'Running')];
    for (const mergeIncrementals of [false, true]) {
      const plan = planRetention(pts, { keepLast: 1, mergeIncrementals });
      expect(why(plan)).toMatchObject({ r5: 'in progress (Running)', i4: 'keepLast 1; base of in-progress point "r5"' });
      // Without merging, i4's own need for its bases is said too.
      expect(plan.keep.find((k) => k.name === 'f1')!.reasons).toEqual(
        mergeIncrementals ? ['base of in-progress point "r5"'] : ['base of in-progress point "r5"', 'base of kept point "i4"'],
      );
      expect(kept(plan)).toEqual(['r5', 'i4', 'i3', 'i2', 'i1', 'f1']);
      expect(plan.merges).toEqual([]);
    }
  });

  test('a point whose chain is broken is not counted and is marked broken', () => {
    const pts = [
      full('f1', '2026-11-20T00:00:00Z'),
      inc('i2', '2026-11-20T02:00:00Z', 'gone'),
      inc('i3', '2026-11-20T03:00:00Z', 'i2'),
    ];
    const plan = planRetention(pts, { keepLast: 1 });
    expect(kept(plan)).toEqual(['f1']);
    expect(gone(plan)).toEqual({
      i3: 'broken: cannot be restored: base "gone" is missing (via "i2")',
      i2: 'broken: cannot be restored: base "gone" is missing',
    });
  });

  test('no rule keeps everything that can be restored', () => {
    const plan = planRetention([...chain, inc('x', '2026-11-19T00:00:00Z', 'f1', 'Failed')], undefined);
    expect(kept(plan)).toEqual(['i4', 'i3', 'i2', 'i1', 'f1']);
    expect(plan.keep[0].reasons).toEqual(['no retention rule: keep everything']);
    expect(gone(plan)).toEqual({ x: 'failed: Failed and older than the newest Succeeded point "i4"' });
  });

  test('bad input is refused naming the field and the rule', () => {
    expect(retErr(() => planRetention(chain, { daily: 0 }))).toBe(
      'retention.daily: 0 must be an integer of at least 1 (leave it out to turn the rule off)',
    );
    expect(retErr(() => planRetention(chain, { keepLast: 2.5 }))).toBe(
      'retention.keepLast: 2.5 must be an integer of at least 1 (leave it out to turn the rule off)',
    );
    expect(retErr(() => planRetention(chain, { mergeIncrementals: 'yes' } as any))).toBe(
      'retention.mergeIncrementals: "yes" must be true or false',
    );
    expect(retErr(() => planRetention([...chain, full('f1', '2026-11-21T00:00:00Z')], {}))).toBe(
      'points[5].name: "f1" is used twice; point names must be unique',
    );
    expect(
      retErr(() => planRetention([{ name: 'a', time: '2026-11-21T00:00:00Z', type: 'Incremental', phase: 'Succeeded' }], {})),
    ).toBe('points[0].base: an Incremental point must name its base');
    expect(retErr(() => planRetention([full('a', 'yesterday')], {}))).toBe('points[0].time: "yesterday" is not a date');
    expect(retErr(() => planRetention([{ ...full('a', '2026-11-21T00:00:00Z'), type: 'Diff' as any }], {}))).toBe(
      'points[0].type: "Diff" must be Full or Incremental',
    );
    expect(() => planRetention(chain, {}, { timeZone: 'Moon/Base' })).toThrow(
      'timeZone: "Moon/Base" is not an IANA time zone name',
    );
  });
});

describe('decideType', () => {
  const now = new Date('2026-11-20T05:00:00Z');
  test('first run, full.every, full.interval, requests and lost bitmaps', () => {
    expect(decideType({ every: 3 }, [], now)).toEqual({
      type: 'Full',
      reason: 'no Succeeded point to build on (first backup of the chain)',
    });
    const c = [
      full('f1', '2026-11-20T00:00:00Z'),
      inc('i1', '2026-11-20T01:00:00Z', 'f1'),
      inc('i2', '2026-11-20T02:00:00Z', 'i1'),
    ];
    expect(decideType({ every: 3 }, c, now)).toEqual({
      type: 'Incremental',
      base: 'i2',
      reason: 'incremental 3 of 3 on "i2" (chain from full point "f1")',
    });
    const c3 = [...c, inc('i3', '2026-11-20T03:00:00Z', 'i2')];
    expect(decideType({ every: 3 }, c3, now)).toEqual({
      type: 'Full',
      reason: '3 incrementals since full point "f1" (full.every 3)',
    });
    expect(decideType({ every: 0 }, [full('f1', '2026-11-20T00:00:00Z')], now).type).toBe('Full');
    expect(decideType({ interval: '5h' }, c, now)).toEqual({
      type: 'Full',
      reason: 'full point "f1" is 5h old (full.interval 5h)',
    });
    expect(decideType({ interval: '5h1m' }, c, now).type).toBe('Incremental');
    expect(decideType({ interval: 3_600_000 }, c, now).reason).toBe('full point "f1" is 5h old (full.interval 1h)');
    expect(decideType(undefined, c, now).type).toBe('Incremental');
    expect(decideType(undefined, c, now, { requested: 'Full' })).toEqual({ type: 'Full', reason: 'a Full backup was requested' });
    expect(decideType(undefined, c, now, { baseUnusable: 'dirty bitmap of disk "root" is missing' })).toEqual({
      type: 'Full',
      reason: 'dirty bitmap of disk "root" is missing',
    });
  });

  test('builds on the newest Succeeded point; failures do not count; broken bases force Full', () => {
    const c = [
      full('f1', '2026-11-20T00:00:00Z'),
      inc('i1', '2026-11-20T01:00:00Z', 'f1'),
      inc('x2', '2026-11-20T02:00:00Z', 'i1', 'Failed'),
    ];
    expect(decideType({ every: 2 }, c, now)).toMatchObject({ type: 'Incremental', base: 'i1' });
    expect(decideType({}, [inc('i1', '2026-11-20T01:00:00Z', 'f1')], now)).toEqual({
      type: 'Full',
      reason: 'the newest Succeeded point "i1" cannot be restored: base "f1" is missing',
    });
  });

  test('durations', () => {
    expect(parseDuration('168h')).toBe(168 * 3_600_000);
    expect(parseDuration('7d')).toBe(7 * 86_400_000);
    expect(parseDuration('1h30m')).toBe(90 * 60_000);
    expect(parseDuration('1.5h')).toBe(90 * 60_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(retErr(() => parseDuration('7 days'))).toBe(
      'full.interval: "7 days" is not a duration like 168h, 7d or 1h30m (units ms, s, m, h, d)',
    );
    expect(retErr(() => parseDuration('0h'))).toBe('full.interval: "0h" must be longer than zero');
    expect(retErr(() => decideType({ every: -1 }, [], now))).toBe('full.every: -1 must be an integer of at least 0');
  });
});

// ---- a simulated month -------------------------------------------------------------

/**
 * The reference: the same rules written another way. Periods come from Intl
 * with a "longOffset" zone name, ISO weeks from the week holding January 4th,
 * buckets by grouping all points per period and ranking the groups, chain
 * closure by iterating to a fixed point.
 */
const refFmt = new Map<string, Intl.DateTimeFormat>();
const refCache = new Map<string, ReturnType<typeof refPeriodsUncached>>();
const refPeriods = (ms: number, tz: string) =>
  refCache.get(`${tz} ${ms}`) ?? refCache.set(`${tz} ${ms}`, refPeriodsUncached(ms, tz)).get(`${tz} ${ms}`)!;
function refPeriodsUncached(ms: number, tz: string) {
  let f = refFmt.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      hourCycle: 'h23',
      timeZoneName: 'longOffset',
    });
    refFmt.set(tz, f);
  }
  const p = Object.fromEntries(f.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  const date = `${p.year}-${p.month}-${p.day}`;
  const dayMs = Date.UTC(+p.year, +p.month - 1, +p.day);
  const isoWeekday = ((new Date(dayMs).getUTCDay() + 6) % 7) + 1; // Mon=1 … Sun=7
  const monday = dayMs - (isoWeekday - 1) * 86_400_000;
  const isoYear = new Date(monday + 3 * 86_400_000).getUTCFullYear();
  const jan4 = Date.UTC(isoYear, 0, 4);
  const week1Monday = jan4 - ((new Date(jan4).getUTCDay() + 6) % 7) * 86_400_000;
  const week = Math.round((monday - week1Monday) / (7 * 86_400_000)) + 1;
  return {
    hourly: `${date} ${p.hour} ${p.timeZoneName}`,
    daily: date,
    weekly: `${isoYear}/${week}`,
    monthly: `${p.year}-${p.month}`,
    yearly: p.year,
  };
}

const parsed = new Map<string, number>();
const t = (p: BackupPoint) =>
  parsed.get(p.time as string) ?? parsed.set(p.time as string, Date.parse(p.time as string)).get(p.time as string)!;

function refSelect(points: BackupPoint[], policy: RetentionPolicy, tz: string): string[] {
  const byName = new Map(points.map((p) => [p.name, p]));
  const restorable = (p: BackupPoint) => {
    const seen = new Set<string>();
    for (let cur: BackupPoint | undefined = p; cur; cur = cur.base ? byName.get(cur.base) : undefined) {
      if (cur.phase !== 'Succeeded' || seen.has(cur.name)) return false;
      seen.add(cur.name);
      if (cur.type === 'Full') return true;
    }
    return false;
  };
  const ok = points.filter(restorable).sort((a, b) => t(b) - t(a) || (a.name < b.name ? 1 : -1));
  const rules = (['keepLast', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const).filter((r) => policy[r] !== undefined);
  if (rules.length === 0) return ok.map((p) => p.name);
  const out = new Set<string>();
  for (const r of rules) {
    const n = policy[r]!;
    if (r === 'keepLast') {
      ok.slice(0, n).forEach((p) => out.add(p.name));
      continue;
    }
    const groups = new Map<string, BackupPoint[]>();
    for (const p of ok) {
      const k = refPeriods(t(p), tz)[r];
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k)!.push(p);
    }
    const newestOf = [...groups.values()].map((g) =>
      g.reduce((a, b) => (t(b) > t(a) || (t(b) === t(a) && b.name > a.name) ? b : a)),
    );
    newestOf
      .sort((a, b) => t(b) - t(a))
      .slice(0, n)
      .forEach((p) => out.add(p.name));
  }
  return [...out];
}

function refPlan(points: BackupPoint[], policy: RetentionPolicy, tz: string): { keep: string[]; del: string[] } {
  const byName = new Map(points.map((p) => [p.name, p]));
  const selected = refSelect(points, policy, tz);
  const keep = new Set(selected);
  points.filter((p) => p.phase === 'Pending' || p.phase === 'Running').forEach((p) => keep.add(p.name));
  if (!policy.mergeIncrementals || points.some((p) => p.phase === 'Running' || p.phase === 'Pending')) {
    for (let changed = true; changed;) {
      changed = false;
      for (const name of [...keep]) {
        const b = byName.get(name)!.base;
        if (b && byName.has(b) && !keep.has(b)) {
          keep.add(b);
          changed = true;
        }
      }
    }
  }
  const newestOk = Math.max(...selected.map((n) => t(byName.get(n)!)));
  for (const p of points)
    if (p.phase !== 'Succeeded' && p.phase !== 'Running' && p.phase !== 'Pending' && !(t(p) < newestOk)) keep.add(p.name);
  return {
    keep: [...keep].sort(),
    del: points
      .map((p) => p.name)
      .filter((n) => !keep.has(n))
      .sort(),
  };
}

/** A disk of 16 blocks; a point stores the blocks it holds, restore folds its chain (as qemu reads a backing chain). */
type Delta = Map<number, number>;
const BLOCKS = 16;
function restore(
  name: string,
  store: Map<string, { p: BackupPoint; delta: Delta }>,
  memo = new Map<string, number[]>(),
): number[] {
  const done = memo.get(name);
  if (done) return [...done];
  const e = store.get(name);
  if (!e) throw new Error(`point ${name} is missing`);
  const below = e.p.type === 'Incremental' ? restore(e.p.base!, store, memo) : new Array(BLOCKS).fill(0);
  for (const [b, v] of e.delta) below[b] = v;
  memo.set(name, below);
  return [...below];
}

function simulateMonth(policy: RetentionPolicy) {
  const TZ = 'Europe/Berlin';
  const cron = parseCron('@hourly');
  const end = Date.UTC(2026, 9, 31, 23); // 2026-11-01 00:00 CET
  let t = new Date(Date.UTC(2026, 8, 30, 22) - 1); // just before 2026-10-01 00:00 CEST
  const store = new Map<string, { p: BackupPoint; delta: Delta }>();
  const expected = new Map<string, number[]>();
  const disk = new Array(BLOCKS).fill(0);
  const types: string[] = [];
  let i = 0;
  let merges = 0;
  for (t = next(cron, t, TZ); t.getTime() < end; t = next(cron, t, TZ), i++) {
    // The guest writes, then the backup runs.
    disk[i % BLOCKS] = i + 1;
    disk[(i * 5 + 3) % BLOCKS] = i + 1;
    const alive = [...store.values()].map((e) => e.p);
    const d = decideType(
      { every: 23 },
      alive,
      t,
      i === 400 ? { baseUnusable: 'dirty bitmap lost (QEMU stopped uncleanly)' } : {},
    );
    const p: BackupPoint = {
      name: `b${String(i).padStart(3, '0')}`,
      time: t.toISOString(),
      type: d.type,
      phase: i === 100 || i === 101 ? 'Failed' : 'Succeeded',
    };
    if (d.base) p.base = d.base;
    types.push(d.type[0]);
    let delta: Delta = new Map(disk.map((v, b) => [b, v]));
    if (d.type === 'Incremental') {
      const baseView = restore(d.base!, store);
      delta = new Map([...delta].filter(([b, v]) => baseView[b] !== v));
    }
    store.set(p.name, { p, delta });
    if (p.phase === 'Succeeded') expected.set(p.name, [...disk]);

    const points = [...store.values()].map((e) => e.p);
    const plan = planRetention(points, policy, { timeZone: TZ });
    const ref = refPlan(points, policy, TZ);
    expect({ run: i, keep: kept(plan).sort(), del: plan.delete.map((x) => x.name).sort() }).toEqual({
      run: i,
      keep: ref.keep,
      del: ref.del,
    });

    // Carry the plan out: merges (qemu-img rebase, safe mode) first, then deletes.
    for (const m of plan.merges) {
      const e = store.get(m.point)!;
      const oldView = restore(e.p.base!, store);
      const newView = m.onto ? restore(m.onto, store) : new Array(BLOCKS).fill(0);
      for (let b = 0; b < BLOCKS; b++) if (!e.delta.has(b) && oldView[b] !== newView[b]) e.delta.set(b, oldView[b]);
      e.p = m.onto ? { ...e.p, base: m.onto } : { name: e.p.name, time: e.p.time, type: 'Full', phase: e.p.phase };
      merges++;
    }
    for (const x of plan.delete) store.delete(x.name);

    // Every kept point's chain is complete and restores to the disk as it was.
    const problems: string[] = [];
    const memo = new Map<string, number[]>();
    for (const e of store.values()) {
      if (e.p.base && !store.has(e.p.base)) problems.push(`${e.p.name}: base ${e.p.base} is gone`);
      else if (e.p.phase === 'Succeeded' && restore(e.p.name, store, memo).join() !== expected.get(e.p.name)!.join())
        problems.push(
          `${e.p.name}: restores to ${restore(e.p.name, store, memo).join()}, taken as ${expected.get(e.p.name)!.join()}`,
        );
    }
    expect({ run: i, problems }).toEqual({ run: i, problems: [] });
  }
  return { runs: i, kept: [...store.keys()].sort(), types: types.join(''), merges, store };
}

describe('a simulated month: hourly backups, a full every 24 runs, retention after every run', () => {
  // October 2026 in Berlin has 745 hours (the clocks go back on the 25th).
  const policy: RetentionPolicy = { keepLast: 3, hourly: 6, daily: 7, weekly: 4, monthly: 3 };
  const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, k) => `b${String(a + k).padStart(3, '0')}`);

  test('keeping bases: exactly the expected points remain, each restorable', () => {
    const sim = simulateMonth(policy);
    expect(sim.runs).toBe(745);
    // Fulls: 0, 24, …, 96; runs 100 and 101 fail (not counted), so 122, 146, …, 386;
    // 400 is forced by the lost bitmap, then 424, 448, …, 736.
    const fulls = [...sim.types].flatMap((c, k) => (c === 'F' ? [k] : []));
    expect(fulls).toEqual([
      0,
      24,
      48,
      72,
      96,
      ...Array.from({ length: 12 }, (_, k) => 122 + 24 * k),
      ...Array.from({ length: 15 }, (_, k) => 400 + 24 * k),
    ]);
    // Selected at the end (run 744 = Oct 31 23:00 CET): keepLast/hourly 739-744; daily = 23:00 of
    // Oct 25-30 (600, 624, …, 720); weekly W43 = 600, W42 = Oct 18 23:00 CEST = 431, W41 = Oct 11 = 263;
    // monthly = 744. Each keeps its chain back to its full point.
    expect(sim.kept).toEqual([
      ...range(242, 263),
      ...range(424, 431),
      ...range(592, 600),
      ...range(616, 624),
      ...range(640, 648),
      ...range(664, 672),
      ...range(688, 696),
      ...range(712, 720),
      ...range(736, 744),
    ]);
  });

  test('merging: exactly the selected points remain, each restorable on its own shortened chain', () => {
    const sim = simulateMonth({ ...policy, mergeIncrementals: true });
    expect(sim.runs).toBe(745);
    expect(sim.merges).toBeGreaterThan(0);
    expect(sim.kept).toEqual([
      'b263',
      'b431',
      'b600',
      'b624',
      'b648',
      'b672',
      'b696',
      'b720',
      'b739',
      'b740',
      'b741',
      'b742',
      'b743',
      'b744',
    ]);
    // The older selections were folded into self-contained points; the newest hours still chain.
    const shape = Object.fromEntries(
      [...sim.store.values()].map((e) => [e.p.name, e.p.type === 'Full' ? 'Full' : `on ${e.p.base}`]),
    );
    expect(shape).toMatchObject({ b263: 'Full', b431: 'Full', b740: 'on b739', b744: 'on b743' });
  });
});
