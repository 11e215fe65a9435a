import { isConflict, isNotFound, type Gvr, type Kube } from './kube';

/** Small helpers for status writing shared by the controller and the agents. */

/** RFC 3339 with second precision, as Kubernetes writes times. */
export function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Sets a condition; keeps lastTransitionTime when the status does not change. */
export function setCondition(status: any, type: string, value: string, reason: string, message: string, now: number): void {
  const list: any[] = status.conditions ?? [];
  const cur = list.find((c) => c.type === type);
  if (cur && cur.status === value && cur.reason === reason && cur.message === message) return;
  const next = { type, status: value, reason, message, lastTransitionTime: cur && cur.status === value ? cur.lastTransitionTime : iso(now) };
  status.conditions = [...list.filter((c) => c.type !== type), next];
}

export function removeCondition(status: any, type: string): void {
  if (status.conditions?.some((c: any) => c.type === type)) status.conditions = status.conditions.filter((c: any) => c.type !== type);
}

/** A status without condition times: two statuses that differ only there need no write. */
export function withoutConditionTimes(s: any): any {
  return { ...s, conditions: (s.conditions ?? []).map((c: any) => ({ ...c, lastTransitionTime: undefined })) };
}

/** For writes that may race with deletion or another writer: those outcomes are fine, others are not. */
export function ignoreGone(e: unknown): void {
  if (!isNotFound(e) && !isConflict(e)) throw e;
}

export function ignoreNotFound(e: unknown): void {
  if (!isNotFound(e)) throw e;
}

/**
 * Merges patch into obj's status (an undefined value removes the key) and writes it, retrying on a
 * conflict with the newest object up to `attempts` times. `giveUp(current)` stops a retry whose write no
 * longer applies (e.g. another writer already finished the object). False when not written.
 */
export async function patchStatus(
  kube: Kube,
  gvr: Gvr,
  obj: any,
  patch: Record<string, unknown>,
  opts: { attempts?: number; giveUp?: (current: any) => boolean } = {},
): Promise<boolean> {
  for (let attempt = 0; attempt < (opts.attempts ?? 5); attempt++) {
    const cur = attempt === 0 ? obj : await kube.tryGet(gvr, obj.metadata.namespace, obj.metadata.name);
    if (!cur || (attempt > 0 && opts.giveUp?.(cur))) return false;
    const status = { ...(cur.status ?? {}), ...patch };
    for (const k of Object.keys(status)) if (status[k] === undefined) delete status[k];
    try {
      await kube.updateStatus(gvr, { ...cur, status });
      return true;
    } catch (e) {
      if (!isConflict(e)) {
        ignoreGone(e);
        return false;
      }
    }
  }
  return false;
}
