import { CronError, next, parseCron, validateTimeZone, type Cron } from '../../../controller/backup/cron';

const runs = (expr: string, from: string, tz: string, n: number): string[] => {
  const c = parseCron(expr);
  const out: string[] = [];
  let t = new Date(from);
  for (let i = 0; i < n; i++) {
    t = next(c, t, tz);
    out.push(t.toISOString());
  }
  return out;
};
const err = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CronError);
    return (e as Error).message;
  }
  throw new Error('expected a CronError');
};

describe('parseCron', () => {
  test('lists, ranges, steps, names and day-of-week 7', () => {
    const c = parseCron('0,15-17,*/20 9-17/4 1,15 jan-mar,Dec MON-FRI,7');
    expect(c.minutes).toEqual([0, 15, 16, 17, 20, 40]);
    expect(c.hours).toEqual([9, 13, 17]);
    expect(c.daysOfMonth).toEqual([1, 15]);
    expect(c.months).toEqual([1, 2, 3, 12]);
    expect(c.daysOfWeek).toEqual([0, 1, 2, 3, 4, 5]);
    expect(c).toMatchObject({ domRestricted: true, dowRestricted: true, wildcard: false });
    expect(parseCron('*/15 * * * *')).toMatchObject({ wildcard: true, domRestricted: false, dowRestricted: false });
    expect(parseCron('5 */2 * * *').wildcard).toBe(true);
    expect(parseCron('  30   2 * *  SUN ').source).toBe('30   2 * *  SUN');
    expect(parseCron('0 0 * * */2').daysOfWeek).toEqual([0, 2, 4, 6]);
  });

  test('macros', () => {
    const fields = (c: Cron) => [c.minutes, c.hours, c.daysOfMonth, c.months, c.daysOfWeek].map((a) => a.join(',')).join(' ');
    const all = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i).join(',');
    expect(fields(parseCron('@hourly'))).toBe(`0 ${all(0, 23)} ${all(1, 31)} ${all(1, 12)} ${all(0, 6)}`);
    expect(parseCron('@hourly').wildcard).toBe(true);
    expect(fields(parseCron('@daily'))).toBe(fields(parseCron('0 0 * * *')));
    expect(fields(parseCron('@weekly'))).toBe(fields(parseCron('0 0 * * 0')));
    expect(fields(parseCron('@monthly'))).toBe(fields(parseCron('0 0 1 * *')));
    expect(fields(parseCron('@yearly'))).toBe(fields(parseCron('0 0 1 1 *')));
    expect(fields(parseCron('@ANNUALLY'))).toBe(fields(parseCron('@yearly')));
    expect(runs('@weekly', '2026-11-20T10:00:00Z', 'UTC', 2)).toEqual(['2026-11-22T00:00:00.000Z', '2026-11-29T00:00:00.000Z']);
  });

  test.each([
    ['0 25 * * *', 'schedule: field "hour" value 25 is out of range 0-23'],
    ['60 * * * *', 'schedule: field "minute" value 60 is out of range 0-59'],
    ['0 0 0 * *', 'schedule: field "day-of-month" value 0 is out of range 1-31'],
    ['0 0 * 13 *', 'schedule: field "month" value 13 is out of range 1-12'],
    ['0 0 * * 8', 'schedule: field "day-of-week" value 8 is out of range 0-7'],
    ['0 22-2 * * *', 'schedule: field "hour" range 22-2 runs backwards; wrap-around ranges are not supported (write 22-23,0-2)'],
    [
      '0 0 * * FRI-MON',
      'schedule: field "day-of-week" range FRI-MON runs backwards; wrap-around ranges are not supported (write FRI-SAT,SUN-MON)',
    ],
    ['0 0 * * 6-0', 'schedule: field "day-of-week" range 6-0 runs backwards; wrap-around ranges are not supported (write 6-7)'],
    [
      '0 0 * NOV-FEB *',
      'schedule: field "month" range NOV-FEB runs backwards; wrap-around ranges are not supported (write NOV-DEC,JAN-FEB)',
    ],
    ['*/0 * * * *', 'schedule: field "minute" step 0 in "*/0" must be from 1 to 60'],
    ['0 */25 * * *', 'schedule: field "hour" step 25 in "*/25" must be from 1 to 24'],
    ['5/15 * * * *', 'schedule: field "minute" item "5/15": a step needs a range or * (write 5-59/15 or */15)'],
    ['*/x * * * *', 'schedule: field "minute" step "x" in "*/x" is not a number'],
    ['1/2/3 * * * *', 'schedule: field "minute" item "1/2/3" has more than one "/"'],
    ['1,,2 * * * *', 'schedule: field "minute" "1,,2" has an empty list item'],
    ['-5 * * * *', 'schedule: field "minute" item "-5" is not a value, a range a-b, or * (negative numbers are not allowed)'],
    ['1.5 * * * *', 'schedule: field "minute" value "1.5" is not a number from 0 to 59'],
    ['0 0 * FOO *', 'schedule: field "month" value "FOO" is not a number or a name (JAN-DEC)'],
    ['0 0 * * MONDAY', 'schedule: field "day-of-week" value "MONDAY" is not a number or a name (SUN-SAT)'],
    ['0 0 * JAN MAR', 'schedule: field "day-of-week" value "MAR" is not a number or a name (SUN-SAT)'],
    ['0 0 ? * MON', 'schedule: field "day-of-month" value "?" is not supported; use *'],
    ['0 0 30 2 *', 'schedule: field "day-of-month" value 30 never occurs in month FEB; the schedule would never run'],
    [
      '0 0 31 APR,JUN,SEP,NOV *',
      'schedule: field "day-of-month" value 31 never occurs in month APR,JUN,SEP,NOV; the schedule would never run',
    ],
    ['0 0 * *', 'schedule: has 4 fields; expected 5 (minute hour day-of-month month day-of-week)'],
    [
      '0 0 0 * * *',
      'schedule: has 6 fields; expected 5 (minute hour day-of-month month day-of-week) (a seconds or year field is not supported)',
    ],
    [
      '',
      'schedule: is empty; expected 5 fields (minute hour day-of-month month day-of-week) or one of @hourly, @daily, @weekly, @monthly, @yearly',
    ],
    [
      '@reboot',
      'schedule: "@reboot" is not supported (a backup schedule needs times); use one of @hourly, @daily, @weekly, @monthly, @yearly or 5 fields',
    ],
    [
      '@fortnightly',
      'schedule: "@fortnightly" is not a known macro; use one of @hourly, @daily, @weekly, @monthly, @yearly or 5 fields',
    ],
  ])('%j is refused: %s', (expr, message) => {
    expect(err(() => parseCron(expr))).toBe(message);
  });

  test("errors carry the field and the rule, and the path prefix is the caller's", () => {
    try {
      parseCron('0 25 * * *', 'spec.schedule');
      throw new Error('not refused');
    } catch (e) {
      expect(e).toMatchObject({ path: 'spec.schedule', field: 'hour', rule: 'value 25 is out of range 0-23' });
      expect((e as Error).message).toBe('spec.schedule: field "hour" value 25 is out of range 0-23');
    }
    expect(err(() => parseCron(42 as any))).toBe('schedule: must be a string, got number');
  });

  test('dates that exist in some month, or are saved by day-of-week, are accepted', () => {
    expect(() => parseCron('0 0 29 2 *')).not.toThrow();
    expect(() => parseCron('0 0 30,31 2,3 *')).not.toThrow(); // 30 March exists
    expect(() => parseCron('0 0 31 2 MON')).not.toThrow(); // OR rule: Mondays in February
  });
});

describe('validateTimeZone', () => {
  test('accepts IANA names, refuses the rest with a clear message', () => {
    expect(validateTimeZone('Europe/Berlin')).toBe('Europe/Berlin');
    expect(validateTimeZone('UTC')).toBe('UTC');
    expect(validateTimeZone('Etc/GMT+5')).toBe('Etc/GMT+5');
    const known = 'an IANA time zone name known to this runtime (e.g. "UTC", "Europe/Berlin", "America/New_York")';
    expect(err(() => validateTimeZone('Mars/Olympus_Mons'))).toBe(`timeZone: "Mars/Olympus_Mons" is not ${known}`);
    expect(err(() => validateTimeZone('+01:00', 'spec.timeZone'))).toBe(`spec.timeZone: "+01:00" is not ${known}`);
    expect(err(() => validateTimeZone(''))).toBe(`timeZone: "" is not ${known}`);
    expect(err(() => next(parseCron('@daily'), new Date(), 'Nowhere/Town'))).toBe(`timeZone: "Nowhere/Town" is not ${known}`);
    expect(err(() => next(parseCron('@daily'), new Date('bogus'), 'UTC'))).toBe('after: Invalid Date is not a valid Date');
  });
});

describe('next', () => {
  test('strictly after, at whole minutes', () => {
    expect(runs('*/15 * * * *', '2026-11-20T10:15:00Z', 'UTC', 1)).toEqual(['2026-11-20T10:30:00.000Z']);
    expect(runs('*/15 * * * *', '2026-11-20T10:14:59.999Z', 'UTC', 1)).toEqual(['2026-11-20T10:15:00.000Z']);
    expect(runs('0 9-17/4 * * *', '2026-11-20T10:00:00Z', 'UTC', 4)).toEqual([
      '2026-11-20T13:00:00.000Z',
      '2026-11-20T17:00:00.000Z',
      '2026-11-21T09:00:00.000Z',
      '2026-11-21T13:00:00.000Z',
    ]);
    // Year and month roll-over with names.
    expect(runs('30 6 31 DEC,JAN *', '2026-12-31T07:00:00Z', 'UTC', 2)).toEqual([
      '2027-01-31T06:30:00.000Z',
      '2027-12-31T06:30:00.000Z',
    ]);
  });

  test('day-of-month OR day-of-week when both are restricted (Vixie)', () => {
    // Every 13th and every Friday: Nov 2026 has Friday the 13th.
    expect(runs('0 0 13 * FRI', '2026-11-01T00:00:00Z', 'UTC', 6).map((s) => s.slice(0, 10))).toEqual([
      '2026-11-06',
      '2026-11-13',
      '2026-11-20',
      '2026-11-27',
      '2026-12-04',
      '2026-12-11',
    ]);
    expect(runs('0 0 13 * FRI', '2026-12-11T00:00:00Z', 'UTC', 2).map((s) => s.slice(0, 10))).toEqual([
      '2026-12-13',
      '2026-12-18',
    ]);
    // Only one restricted: that one decides.
    expect(runs('0 0 13 * *', '2026-11-01T00:00:00Z', 'UTC', 2).map((s) => s.slice(0, 10))).toEqual(['2026-11-13', '2026-12-13']);
    expect(runs('0 0 * * FRI', '2026-11-01T00:00:00Z', 'UTC', 2).map((s) => s.slice(0, 10))).toEqual([
      '2026-11-06',
      '2026-11-13',
    ]);
    // A field beginning with * is unrestricted even with a step: odd days that are Mondays (AND).
    expect(runs('0 0 */2 * MON', '2026-11-01T00:00:00Z', 'UTC', 3).map((s) => s.slice(0, 10))).toEqual([
      '2026-11-09',
      '2026-11-23',
      '2026-12-07',
    ]);
    expect(runs('0 0 1-7 * */7', '2026-10-31T00:00:00Z', 'UTC', 2).map((s) => s.slice(0, 10))).toEqual([
      '2026-11-01',
      '2026-12-06',
    ]);
  });

  test('Feb 29 skips non-leap years, including 2100', () => {
    expect(runs('0 12 29 2 *', '2025-01-01T00:00:00Z', 'UTC', 2)).toEqual([
      '2028-02-29T12:00:00.000Z',
      '2032-02-29T12:00:00.000Z',
    ]);
    expect(runs('0 0 29 FEB *', '2096-03-01T00:00:00Z', 'UTC', 1)).toEqual(['2104-02-29T00:00:00.000Z']);
    // Feb 29 that is a Sunday (both restricted would be OR; DOW starting with * makes it AND).
    expect(runs('0 0 29 2 */7', '2026-01-01T00:00:00Z', 'UTC', 2)).toEqual([
      '2032-02-29T00:00:00.000Z',
      '2060-02-29T00:00:00.000Z',
    ]);
  });

  test('time zones without DST', () => {
    expect(runs('30 9 * * *', '2026-11-20T00:00:00Z', 'Asia/Kolkata', 2)).toEqual([
      '2026-11-20T04:00:00.000Z',
      '2026-11-21T04:00:00.000Z',
    ]);
    expect(runs('0 0 * * *', '2026-11-20T00:00:00Z', 'Etc/GMT+5', 1)).toEqual(['2026-11-20T05:00:00.000Z']);
  });

  describe('DST: gap (spring forward)', () => {
    test('Europe/Berlin 2026-03-29 02:00 CET → 03:00 CEST: a fixed-time job runs once at 03:00, then at its time again', () => {
      expect(runs('30 2 * * *', '2026-03-28T12:00:00Z', 'Europe/Berlin', 3)).toEqual([
        '2026-03-29T01:00:00.000Z', // 03:00 CEST, the first instant after the gap
        '2026-03-30T00:30:00.000Z', // 02:30 CEST
        '2026-03-31T00:30:00.000Z',
      ]);
      // Several matches inside one gap still make one run.
      expect(runs('0,30 2 * * *', '2026-03-28T12:00:00Z', 'Europe/Berlin', 2)).toEqual([
        '2026-03-29T01:00:00.000Z',
        '2026-03-30T00:00:00.000Z',
      ]);
      // 03:00 is both the shifted 02:00 and its own match: one run.
      expect(runs('0 2,3 * * *', '2026-03-28T12:00:00Z', 'Europe/Berlin', 3)).toEqual([
        '2026-03-29T01:00:00.000Z',
        '2026-03-30T00:00:00.000Z',
        '2026-03-30T01:00:00.000Z',
      ]);
    });

    test('Europe/Berlin: wildcard jobs skip the missing hour and stay on their real-time rhythm', () => {
      expect(runs('0 * * * *', '2026-03-28T23:30:00Z', 'Europe/Berlin', 3)).toEqual([
        '2026-03-29T00:00:00.000Z', // 01:00 CET
        '2026-03-29T01:00:00.000Z', // 03:00 CEST: one hour later
        '2026-03-29T02:00:00.000Z',
      ]);
      expect(runs('*/30 * * * *', '2026-03-29T00:00:00Z', 'Europe/Berlin', 3)).toEqual([
        '2026-03-29T00:30:00.000Z',
        '2026-03-29T01:00:00.000Z',
        '2026-03-29T01:30:00.000Z',
      ]);
      // Minute field wildcard, hour fixed in the gap: no run that day.
      expect(runs('*/20 2 * * *', '2026-03-28T12:00:00Z', 'Europe/Berlin', 1)).toEqual(['2026-03-30T00:00:00.000Z']);
    });

    test('America/New_York 2026-03-08 02:00 EST → 03:00 EDT', () => {
      expect(runs('30 2 * * *', '2026-03-07T00:00:00Z', 'America/New_York', 3)).toEqual([
        '2026-03-07T07:30:00.000Z', // 02:30 EST
        '2026-03-08T07:00:00.000Z', // 03:00 EDT, right after the gap
        '2026-03-09T06:30:00.000Z', // 02:30 EDT
      ]);
    });

    test('a missing midnight (America/Havana) and a 30-minute shift (Australia/Lord_Howe)', () => {
      expect(runs('0 0 * * *', '2026-03-07T12:00:00Z', 'America/Havana', 2)).toEqual([
        '2026-03-08T05:00:00.000Z',
        '2026-03-09T04:00:00.000Z',
      ]);
      // Lord Howe 2026-10-04 02:00 → 02:30: 02:15 runs at 02:30 local.
      expect(runs('15 2 * * *', '2026-10-03T12:00:00Z', 'Australia/Lord_Howe', 2)).toEqual([
        '2026-10-03T15:30:00.000Z',
        '2026-10-04T15:15:00.000Z',
      ]);
    });
  });

  describe('DST: overlap (fall back)', () => {
    test('Europe/Berlin 2026-10-25 03:00 CEST → 02:00 CET: a fixed-time job in the repeated hour runs once', () => {
      expect(runs('30 2 * * *', '2026-10-24T12:00:00Z', 'Europe/Berlin', 3)).toEqual([
        '2026-10-25T00:30:00.000Z', // 02:30 CEST, the first pass
        '2026-10-26T01:30:00.000Z', // 02:30 CET the next day
        '2026-10-27T01:30:00.000Z',
      ]);
      // Asked from inside the second pass: still not again.
      expect(runs('30 2 * * *', '2026-10-25T01:10:00Z', 'Europe/Berlin', 1)).toEqual(['2026-10-26T01:30:00.000Z']);
      expect(runs('0,30 1-3 * * *', '2026-10-24T23:10:00Z', 'Europe/Berlin', 6)).toEqual([
        '2026-10-24T23:30:00.000Z', // 01:30 CEST
        '2026-10-25T00:00:00.000Z', // 02:00 CEST
        '2026-10-25T00:30:00.000Z', // 02:30 CEST
        '2026-10-25T02:00:00.000Z', // 03:00 CET (second-pass 02:xx skipped)
        '2026-10-25T02:30:00.000Z',
        '2026-10-26T00:00:00.000Z', // 01:00 CET
      ]);
    });

    test('Europe/Berlin: wildcard jobs run in both passes (an hourly job stays hourly)', () => {
      expect(runs('@hourly', '2026-10-24T23:30:00Z', 'Europe/Berlin', 4)).toEqual([
        '2026-10-25T00:00:00.000Z', // 02:00 CEST
        '2026-10-25T01:00:00.000Z', // 02:00 CET
        '2026-10-25T02:00:00.000Z', // 03:00 CET
        '2026-10-25T03:00:00.000Z',
      ]);
      expect(runs('*/20 2 * * *', '2026-10-24T23:30:00Z', 'Europe/Berlin', 7)).toEqual([
        '2026-10-25T00:00:00.000Z',
        '2026-10-25T00:20:00.000Z',
        '2026-10-25T00:40:00.000Z',
        '2026-10-25T01:00:00.000Z',
        '2026-10-25T01:20:00.000Z',
        '2026-10-25T01:40:00.000Z',
        '2026-10-26T01:00:00.000Z',
      ]);
    });

    test('America/New_York 2026-11-01 02:00 EDT → 01:00 EST', () => {
      expect(runs('30 1 * * *', '2026-10-31T12:00:00Z', 'America/New_York', 2)).toEqual([
        '2026-11-01T05:30:00.000Z', // 01:30 EDT
        '2026-11-02T06:30:00.000Z', // 01:30 EST
      ]);
      expect(runs('45 * * * *', '2026-11-01T05:00:00Z', 'America/New_York', 3)).toEqual([
        '2026-11-01T05:45:00.000Z', // 01:45 EDT
        '2026-11-01T06:45:00.000Z', // 01:45 EST
        '2026-11-01T07:45:00.000Z', // 02:45 EST
      ]);
    });
  });

  /**
   * A reference written the slow way: step through real time minute by minute,
   * read the wall clock with Intl, and apply the rules literally (a forward jump
   * runs a fixed-time job when any skipped wall minute matched; a wall time not
   * later than one already seen is a second pass, where only wildcard jobs run).
   * next() must produce exactly the same runs around every 2026 transition.
   */
  describe('agrees with a minute-by-minute reference around real transitions', () => {
    const wallFmt = new Map<string, Intl.DateTimeFormat>();
    const wallOf = (ms: number, tz: string) => {
      let f = wallFmt.get(tz);
      if (!f) {
        f = new Intl.DateTimeFormat('en-GB', {
          timeZone: tz,
          weekday: 'short',
          year: 'numeric',
          month: '2-digit',
          day: '2-digit',
          hour: '2-digit',
          minute: '2-digit',
          hourCycle: 'h23',
        });
        wallFmt.set(tz, f);
      }
      const p = Object.fromEntries(f.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
      const fields = {
        y: +p.year,
        mo: +p.month,
        d: +p.day,
        h: +p.hour,
        mi: +p.minute,
        dow: ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'].indexOf(p.weekday),
      };
      return { ...fields, key: Date.UTC(fields.y, fields.mo - 1, fields.d, fields.h, fields.mi) };
    };
    const matches = (c: Cron, w: { mo: number; d: number; h: number; mi: number; dow: number }) => {
      if (!c.minutes.includes(w.mi) || !c.hours.includes(w.h) || !c.months.includes(w.mo)) return false;
      const dom = c.daysOfMonth.includes(w.d);
      const dow = c.daysOfWeek.includes(w.dow);
      return c.domRestricted && c.dowRestricted ? dom || dow : dom && dow;
    };
    const reference = (expr: string, c: Cron, from: number, to: number, walls: Map<number, ReturnType<typeof wallOf>>) => {
      // cronie's MIN_STAR/HR_STAR, read off the text (macros as the fields they stand for).
      const [minute, hour] =
        ({ '@hourly': '0 * * * *', '@daily': '0 0 * * *' } as Record<string, string>)[expr]?.split(' ') ?? expr.split(' ');
      const wildcard = minute.startsWith('*') || hour.startsWith('*');
      const out: number[] = [];
      let maxSeen = -Infinity;
      for (let u = from - 6 * 3_600_000; u <= to; u += 60_000) {
        const w = walls.get(u)!;
        const prev = walls.get(u - 60_000)!;
        let run: boolean;
        if (w.key <= maxSeen) run = wildcard && matches(c, w);
        else if (prev && w.key - prev.key > 60_000 && !wildcard) {
          run = matches(c, w);
          for (let k = prev.key + 60_000; k < w.key && !run; k += 60_000) {
            const d = new Date(k);
            run = matches(c, {
              mo: d.getUTCMonth() + 1,
              d: d.getUTCDate(),
              h: d.getUTCHours(),
              mi: d.getUTCMinutes(),
              dow: d.getUTCDay(),
            });
          }
        } else run = matches(c, w);
        maxSeen = Math.max(maxSeen, w.key);
        if (run && u > from) out.push(u);
      }
      return out;
    };
    const transitions2026 = (tz: string) => {
      const fmt = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' });
      const off = (ms: number) => fmt.format(new Date(ms)).split(' ').pop();
      const out: number[] = [];
      for (let ms = Date.UTC(2026, 0, 1); ms < Date.UTC(2027, 0, 1); ms += 3_600_000)
        if (off(ms) !== off(ms + 3_600_000)) out.push(ms);
      return out;
    };
    const exprs = [
      '30 2 * * *',
      '@hourly',
      '*/20 * * * *',
      '*/15 2 * * *',
      '0,30 1-3 * * *',
      '15 2,3 * * *',
      '@daily',
      '45 0 * * SUN',
      '*/7 * * * *',
      '30 3 * * *',
      '0 1 * * *',
      '10 2 25,26 * *',
    ];
    test.each([
      'Europe/Berlin',
      'America/New_York',
      'Australia/Lord_Howe',
      'America/Havana',
      'Antarctica/Troll',
      'America/Santiago',
    ])('%s', (tz) => {
      const trs = transitions2026(tz);
      expect(trs.length).toBeGreaterThanOrEqual(2);
      for (const tr of trs) {
        const from = tr - 36 * 3_600_000;
        const to = tr + 36 * 3_600_000;
        const walls = new Map<number, ReturnType<typeof wallOf>>();
        for (let u = from - 6 * 3_600_000 - 60_000; u <= to; u += 60_000) walls.set(u, wallOf(u, tz));
        for (const expr of exprs) {
          const c = parseCron(expr);
          const want = reference(expr, c, from, to, walls);
          const got: number[] = [];
          for (let t = next(c, new Date(from), tz).getTime(); t <= to; t = next(c, new Date(t), tz).getTime()) got.push(t);
          expect({ tz, expr, runs: got.map((x) => new Date(x).toISOString()) }).toEqual({
            tz,
            expr,
            runs: want.map((x) => new Date(x).toISOString()),
          });
        }
      }
    });
  });
});
