import { parseCron, validateTimeZone, next, type Cron } from '../backup/cron';
import { planRetention as plan, decideType, type BackupPoint, type MergeStep, type RetentionPolicy, type FullPolicy, type TypeDecision } from '../backup/retention';

/** The controller's view of the pure schedule and retention logic in controller/backup/. */
export type PointInfo = BackupPoint;

export class BackupSchedule {
  private readonly cron: Cron;
  constructor(
    expr: string,
    private readonly tz: string,
  ) {
    this.cron = parseCron(expr ?? '', 'spec.schedule');
    validateTimeZone(tz, 'spec.timeZone');
  }

  /** The newest run time in (from, now] (if any) and the first run after now. */
  dueBetween(from: number, now: number): { due?: number; next: number } {
    let due: number | undefined;
    let t = next(this.cron, new Date(from), this.tz).getTime();
    // A long-stopped controller catches up with the newest missed run only; skip ahead in big steps.
    for (let i = 0; t <= now; i++) {
      due = t;
      const n = next(this.cron, new Date(i > 1000 ? Math.max(t, now - 60_000) : t), this.tz).getTime();
      t = n;
    }
    return { due, next: t };
  }
}

/**
 * What retention does now: the points to delete (folded points only once their
 * merge ran: until then the kept point still builds on them) and the merges to
 * ask the node agent for.
 */
export function planRetention(
  points: PointInfo[],
  policy: RetentionPolicy,
  _now: number,
  tz: string,
): { remove: string[]; keep: string[]; merges: MergeStep[] } {
  const p = plan(points, { ...policy, mergeIncrementals: policy.mergeIncrementals === true }, { timeZone: tz });
  return { remove: p.delete.filter((d) => d.kind !== 'merged').map((d) => d.name), keep: p.keep.map((k) => k.name), merges: p.merges };
}

export function decideFull(full: FullPolicy, points: PointInfo[], now: number): TypeDecision {
  return decideType(full, points, new Date(now));
}
