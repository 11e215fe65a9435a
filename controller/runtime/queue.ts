/**
 * A work queue in the manner of controller-runtime: keys are deduplicated, a
 * key is never reconciled by two workers at once, failures retry with
 * exponential back-off, and a reconcile can ask to be called again later.
 */
export interface Result {
  requeueAfterMs?: number;
}

export type ReconcileFn = (key: string) => Promise<Result | void>;

export class WorkQueue {
  private readonly pending = new Set<string>();
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private running = 0;
  private stopped = false;

  constructor(
    private readonly name: string,
    private readonly reconcile: ReconcileFn,
    private readonly workers = 4,
    private readonly log: (line: string) => void = () => {},
  ) {}

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key); // run again when the current pass ends
      return;
    }
    this.pending.add(key);
    this.pump();
  }

  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    const existing = this.timers.get(key);
    if (existing) clearTimeout(existing);
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    t.unref();
    this.timers.set(key, t);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.pending.clear();
  }

  /** Resolves when nothing is queued or running (tests and benchmarks). */
  async idle(): Promise<void> {
    while (this.pending.size || this.running) await new Promise((r) => setTimeout(r, 10));
  }

  private pump(): void {
    while (this.running < this.workers && this.pending.size) {
      const key = this.pending.values().next().value as string;
      this.pending.delete(key);
      this.active.add(key);
      this.running++;
      void this.run(key);
    }
  }

  private async run(key: string): Promise<void> {
    try {
      const res = await this.reconcile(key);
      this.failures.delete(key);
      if (res?.requeueAfterMs !== undefined) this.addAfter(key, res.requeueAfterMs);
    } catch (e) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = Math.min(50 * 2 ** n, 30_000);
      this.log(`[${this.name}] ${key}: ${(e as Error)?.message ?? e} (retry ${n} in ${delay} ms)`);
      this.addAfter(key, delay);
    } finally {
      this.active.delete(key);
      this.running--;
      if (this.dirty.delete(key)) this.pending.add(key);
      this.pump();
    }
  }
}
