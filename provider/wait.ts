import { GVR, Kube, type Gvr } from '../controller/runtime/kube';

/**
 * Waiting for an object to reach a state, the way a user would watch it: poll
 * the object, report progress through the engine log when the summary changes,
 * honour the operation timeout (customTimeouts) and cancellation, and fail with
 * the last observed state — printable status or phase, conditions, and the
 * object's most recent Events.
 */
export interface WaitContext {
  kube: Kube;
  /** Progress for the user (engine log, info severity). Never give it input values. */
  progress(message: string): void;
  cancelled(): boolean;
}

export type Verdict = { done: true } | { done: false; failed?: string };

export class WaitError extends Error {}

export interface WaitSpec {
  gvr: Gvr;
  namespace: string;
  name: string;
  /** What we are waiting for, for messages: "VirtualMachine default/a to be ready". */
  what: string;
  timeoutMs: number;
  /** Decides on a fresh object (undefined = gone). */
  check(obj: any | undefined): Verdict;
  intervalMs?: number;
  /** Appended to a timeout message: what usually causes this wait never to end. */
  timeoutHint?: string;
}

/** A one-line summary of an object's state for progress and error messages. */
export function summarize(obj: any | undefined): string {
  if (!obj) return 'not found';
  const s = obj.status ?? {};
  const head = s.printableStatus ? `printableStatus=${s.printableStatus}` : s.phase ? `phase=${s.phase}` : 'no status yet';
  const conds = (s.conditions ?? []).map((c: any) => `${c.type}=${c.status}${c.reason ? ` (${c.reason}${c.message ? `: ${c.message}` : ''})` : ''}`);
  const msg = s.message ? `; message: ${s.message}` : '';
  return `${head}${conds.length ? `; conditions: ${conds.join(', ')}` : ''}${msg}`;
}

export async function recentEvents(kube: Kube, namespace: string, name: string, max = 5): Promise<string[]> {
  try {
    const list = await kube.request('GET', `/api/v1/namespaces/${namespace}/events?fieldSelector=${encodeURIComponent(`involvedObject.name=${name}`)}`);
    const items = (list?.items ?? []) as any[];
    items.sort((a, b) => String(a.lastTimestamp ?? a.metadata?.creationTimestamp).localeCompare(String(b.lastTimestamp ?? b.metadata?.creationTimestamp)));
    return items.slice(-max).map((e) => `${e.type ?? 'Normal'} ${e.reason}: ${e.message}`);
  } catch {
    return [];
  }
}

export async function waitFor(ctx: WaitContext, w: WaitSpec): Promise<any> {
  const deadline = Date.now() + w.timeoutMs;
  let last: any;
  let lastSummary = '';
  let interval = w.intervalMs ?? 250;
  let polledSummary: string | undefined;
  for (;;) {
    last = await ctx.kube.tryGet(w.gvr, w.namespace, w.name);
    const v = w.check(last);
    if (v.done) return last;
    const summary = summarize(last);
    if (summary !== lastSummary) {
      ctx.progress(`waiting for ${w.what}: ${summary}`);
      lastSummary = summary;
    }
    const failed = !v.done ? v.failed : undefined;
    const timedOut = Date.now() >= deadline;
    if (failed || timedOut || ctx.cancelled()) {
      const events = await recentEvents(ctx.kube, w.namespace, w.name);
      const why = failed ? `failed: ${failed}` : timedOut ? `timed out after ${Math.round(w.timeoutMs / 1000)}s` : 'cancelled';
      const hint = timedOut && !failed && w.timeoutHint ? ` ${w.timeoutHint}` : '';
      throw new WaitError(
        `${w.what} ${why}. Last observed: ${summary}.${events.length ? ` Recent events: ${events.join(' | ')}` : ' No events.'}${hint}`,
      );
    }
    // Poll fast while things change, then back off (to 2 s): a thousand waits must not flood the API server.
    interval = summary !== polledSummary ? (w.intervalMs ?? 250) : Math.min(interval * 1.5, Math.max(w.intervalMs ?? 250, 2000));
    polledSummary = summary;
    await new Promise((r) => setTimeout(r, interval));
  }
}

export { GVR };
