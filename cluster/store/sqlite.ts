import Database from 'better-sqlite3';
import { Backend, StoreError, StoreEvent, StoredObject } from './backend';

/**
 * A log-structured store on SQLite, after kine: one append-only table where
 * each row is one revision of one key (create, update or delete). The row id
 * is the revision. The current state and a window of recent events are kept
 * in memory so reads and watch resumes never touch the disk; SQLite is the
 * durable log (WAL, each write its own committed transaction before it is
 * acknowledged, which survives kill -9 of the process).
 */
export interface SqliteBackendOptions {
  /** Path of the database file, or ':memory:'. */
  path: string;
  /** How many recent events stay resumable for watches (kine keeps 1000 revisions; we keep more). */
  historySize?: number;
}

interface Row {
  id: number;
  name: string;
  deleted: number;
  prev_revision: number | null;
  value: string;
}

export class SqliteBackend implements Backend {
  private readonly db: Database.Database;
  private readonly current = new Map<string, StoredObject>();
  /** Sorted list of keys, built on first list and kept sorted by binary insertion. */
  private sortedKeys: string[] | null = null;
  private history: StoreEvent[] = [];
  private historyStart = 0; // index of the oldest live entry in `history`
  private readonly historySize: number;
  private rev = 0;
  private compactRev = 0;
  private readonly listeners = new Set<(ev: StoreEvent) => void>();
  private readonly insert: Database.Statement;

  constructor(opts: SqliteBackendOptions) {
    this.historySize = opts.historySize ?? 10000;
    this.db = new Database(opts.path);
    this.db.pragma('journal_mode = WAL');
    // NORMAL: a committed transaction is in the WAL before we answer, so it survives
    // the process being killed; only an OS crash could lose the last few.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 30000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS kine (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        prev_revision INTEGER,
        value TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS kine_name_id ON kine(name, id);
      CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev ON kine(name, prev_revision);
      CREATE TABLE IF NOT EXISTS kine_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
    `);
    this.insert = this.db.prepare(
      'INSERT INTO kine (id, name, created, deleted, prev_revision, value) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.load();
  }

  private load(): void {
    const meta = this.db.prepare("SELECT v FROM kine_meta WHERE k = 'compact_rev'").get() as
      | { v: number }
      | undefined;
    this.compactRev = meta?.v ?? 0;
    const max = this.db.prepare('SELECT MAX(id) AS m FROM kine').get() as { m: number | null };
    this.rev = Math.max(max.m ?? 0, this.compactRev);
    const rows = this.db
      .prepare(
        `SELECT k.id, k.name, k.deleted, k.value FROM kine k
         JOIN (SELECT name, MAX(id) AS id FROM kine GROUP BY name) m ON k.id = m.id
         WHERE k.deleted = 0`,
      )
      .all() as Row[];
    for (const r of rows) this.current.set(r.name, { key: r.name, rev: r.id, obj: JSON.parse(r.value) });
    // Refill the resumable window from the tail of the log, so a watch that was
    // interrupted by a restart can resume instead of relisting.
    const tail = this.db
      .prepare(
        `SELECT k.id, k.name, k.deleted, k.prev_revision, k.value, p.value AS prev
         FROM kine k LEFT JOIN kine p ON p.id = k.prev_revision
         WHERE k.id > ? ORDER BY k.id DESC LIMIT ?`,
      )
      .all(this.compactRev, this.historySize) as (Row & { prev: string | null })[];
    tail.reverse();
    // The window is only usable if it has no gaps down to its first entry.
    for (const r of tail) {
      this.history.push({
        type: r.deleted ? 'DELETED' : r.prev_revision ? 'MODIFIED' : 'ADDED',
        key: r.name,
        rev: r.id,
        obj: JSON.parse(r.value),
        prev: r.prev ? JSON.parse(r.prev) : undefined,
      });
    }
  }

  currentRevision(): number {
    return this.rev;
  }

  compactedRevision(): number {
    const oldest = this.history.length > this.historyStart ? this.history[this.historyStart].rev - 1 : this.rev;
    return Math.max(this.compactRev, oldest);
  }

  get(key: string): StoredObject | undefined {
    return this.current.get(key);
  }

  list(prefix: string): StoredObject[] {
    const keys = this.keys();
    const out: StoredObject[] = [];
    let i = lowerBound(keys, prefix);
    for (; i < keys.length && keys[i].startsWith(prefix); i++) out.push(this.current.get(keys[i])!);
    return out;
  }

  count(prefix: string): number {
    const keys = this.keys();
    let i = lowerBound(keys, prefix);
    const start = i;
    while (i < keys.length && keys[i].startsWith(prefix)) i++;
    return i - start;
  }

  private keys(): string[] {
    if (!this.sortedKeys) this.sortedKeys = [...this.current.keys()].sort();
    return this.sortedKeys;
  }

  create(key: string, obj: any): StoredObject {
    const existing = this.current.get(key);
    if (existing) throw new StoreError('KeyExists', `key exists: ${key}`, existing);
    return this.write('ADDED', key, obj, undefined);
  }

  update(key: string, obj: any, expectedRev: number): StoredObject {
    const existing = this.current.get(key);
    if (!existing) throw new StoreError('NotFound', `not found: ${key}`);
    if (existing.rev !== expectedRev) throw new StoreError('Conflict', `conflict on ${key}`, existing);
    return this.write('MODIFIED', key, obj, existing);
  }

  delete(key: string, expectedRev: number): StoredObject {
    const existing = this.current.get(key);
    if (!existing) throw new StoreError('NotFound', `not found: ${key}`);
    if (existing.rev !== expectedRev) throw new StoreError('Conflict', `conflict on ${key}`, existing);
    return this.write('DELETED', key, existing.obj, existing);
  }

  private write(type: StoreEvent['type'], key: string, obj: any, prev: StoredObject | undefined): StoredObject {
    const rev = this.rev + 1;
    // The deleted object is reported with the revision of the deletion, as kube-apiserver does.
    const json = JSON.stringify(obj_withRv(obj, rev));
    this.insert.run(rev, key, type === 'ADDED' ? 1 : 0, type === 'DELETED' ? 1 : 0, prev?.rev ?? null, json);
    // Keep exactly what a reload would read: plain JSON values, no shared references
    // with the caller, no undefined, no special prototypes.
    const stored = JSON.parse(json);
    this.rev = rev;
    const so: StoredObject = { key, rev, obj: stored };
    if (type === 'DELETED') {
      this.current.delete(key);
      if (this.sortedKeys) this.sortedKeys.splice(lowerBound(this.sortedKeys, key), 1);
    } else {
      if (!prev && this.sortedKeys) this.sortedKeys.splice(lowerBound(this.sortedKeys, key), 0, key);
      this.current.set(key, so);
    }
    const ev: StoreEvent = { type, key, rev, obj: stored, prev: prev?.obj };
    this.remember(ev);
    // The write is committed: a failing listener must not turn it into an error for the writer.
    for (const l of this.listeners) {
      try {
        l(ev);
      } catch (e) {
        console.error(`store listener failed on ${type} ${key}: ${(e as Error)?.stack ?? e}`);
      }
    }
    return so;
  }

  private remember(ev: StoreEvent): void {
    this.history.push(ev);
    if (this.history.length - this.historyStart > this.historySize) this.historyStart++;
    // Shift the array now and then instead of on every write.
    if (this.historyStart > this.historySize) {
      this.history = this.history.slice(this.historyStart);
      this.historyStart = 0;
    }
  }

  since(after: number): StoreEvent[] {
    const compacted = this.compactedRevision();
    if (after < compacted) throw new StoreError('Compacted', `too old resource version: ${after} (${compacted + 1})`, compacted);
    // Binary search the window: revisions are dense and increasing.
    let lo = this.historyStart;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.history[mid].rev <= after) lo = mid + 1;
      else hi = mid;
    }
    return this.history.slice(lo);
  }

  subscribe(listener: (ev: StoreEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Drops superseded rows and deletion markers older than the resumable window,
   * as kine's compactor does, and records the compacted revision.
   */
  compact(): number {
    const target = Math.max(this.compactRev, this.rev - this.historySize);
    if (target <= this.compactRev) return 0;
    const res = this.db.transaction(() => {
      const r1 = this.db
        .prepare(
          `DELETE FROM kine WHERE id IN (
             SELECT prev_revision FROM kine WHERE id <= ? AND prev_revision IS NOT NULL)`,
        )
        .run(target);
      const r2 = this.db.prepare('DELETE FROM kine WHERE id <= ? AND deleted = 1').run(target);
      this.db.prepare("INSERT OR REPLACE INTO kine_meta (k, v) VALUES ('compact_rev', ?)").run(target);
      return r1.changes + r2.changes;
    })();
    this.compactRev = target;
    return res;
  }

  /** Rows in the log table; for tests and benchmarks. */
  logRows(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM kine').get() as { n: number }).n;
  }

  close(): void {
    this.listeners.clear();
    this.db.close();
  }
}

function obj_withRv(obj: any, rev: number): any {
  return { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rev) } };
}

function lowerBound(arr: string[], x: string): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
