import { ServerResponse } from 'node:http';
import { Backend, StoreError, StoreEvent } from '../store/backend';
import { ResourceType, keyPrefix } from './registry';
import { toExternal } from './convert';
import { errors } from './errors';

/**
 * One watch stream: newline-delimited JSON events, headers flushed at once,
 * initial ADDED events or a resume from a resourceVersion, ERROR 410 when the
 * history is gone, selector transitions as ADDED/DELETED, bookmarks, timeouts,
 * and a cut-off for a client that does not read (bounded buffer).
 */
export interface WatchSpec {
  type: ResourceType;
  namespace?: string;
  resourceVersion?: string;
  allowBookmarks: boolean;
  timeoutSeconds?: number;
  sendInitialEvents?: boolean;
  match: (obj: any) => boolean;
  /** Turns an event into its wire object (plain object or one-row Table). */
  encode: (type: string, obj: any) => any;
  /** Identifies the encoding so several watchers can share one serialisation per event. */
  formatKey: string;
}

export interface WatchLimits {
  bookmarkIntervalMs: number;
  /** Bytes queued for one client before it is cut off. */
  maxBufferedBytes: number;
  /** Default timeout when the client sends none (upstream: 30-60 min). */
  defaultTimeoutSeconds: number;
}

type EncodedEvent = StoreEvent & { wire?: Map<string, string> };

export class WatchHub {
  private readonly active = new Map<ServerResponse, () => void>();

  constructor(
    private readonly backend: Backend,
    private readonly limits: WatchLimits,
  ) {}

  get count(): number {
    return this.active.size;
  }

  /** Ends every stream now (clients re-watch from their last resourceVersion). */
  closeAll(): void {
    for (const close of [...this.active.values()]) close();
  }

  serve(spec: WatchSpec, res: ServerResponse): void {
    const t = spec.type;
    const backend = this.backend;
    const prefix = keyPrefix(t, spec.namespace);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    let closed = false;
    const timers: NodeJS.Timeout[] = [];
    let unsubscribe = () => {};
    const close = () => {
      if (closed) return;
      closed = true;
      unsubscribe();
      for (const tm of timers) clearInterval(tm);
      this.active.delete(res);
      if (!res.writableEnded && !res.destroyed) res.end();
    };
    res.on('close', close);
    this.active.set(res, close);

    // The initial events (or the replay of a resume) are written in one go, before the client
    // can read any of them; they are bounded by the state or the history, so they do not count
    // against the limit. What queues beyond what is left of them does.
    let replaying = true;
    let backlog = 0;
    const write = (line: string): void => {
      if (closed || res.writableEnded || res.destroyed) return;
      if (!replaying) backlog = Math.min(backlog, res.writableLength);
      res.write(line);
      // A client that does not read would make us queue without bound: cut it off.
      if (!replaying && res.writableLength > backlog + this.limits.maxBufferedBytes) {
        // Destroy first (no clean end for a client that fell behind), then release the
        // subscription and the bookmark/timeout timers like any other end.
        res.destroy();
        close();
      }
    };
    const send = (type: string, ev: EncodedEvent | undefined, obj: any): void => {
      const key = `${spec.formatKey}|${type}`;
      let line = ev?.wire?.get(key);
      if (line === undefined) {
        line = JSON.stringify({ type, object: spec.encode(type, toExternal(t, obj)) }) + '\n';
        if (ev) (ev.wire ??= new Map()).set(key, line);
      }
      write(line);
    };
    const deliver = (ev: EncodedEvent): void => {
      if (!ev.key.startsWith(prefix)) return;
      const now = ev.type !== 'DELETED' && spec.match(ev.obj);
      const before = ev.prev !== undefined && spec.match(ev.prev);
      if (ev.type === 'DELETED') {
        if (before) send('DELETED', ev, ev.obj);
      } else if (now && before) send('MODIFIED', ev, ev.obj);
      else if (now) send('ADDED', ev, ev.obj);
      else if (before) send('DELETED', ev, ev.obj); // stopped matching the selector
    };

    const rvParam = spec.resourceVersion;
    const fromScratch = rvParam === undefined || rvParam === '' || rvParam === '0';
    if (fromScratch || spec.sendInitialEvents) {
      for (const so of this.backend.list(prefix)) if (spec.match(so.obj)) send('ADDED', undefined, so.obj);
      if (spec.sendInitialEvents) sendBookmark(true);
    } else {
      const rv = Number(rvParam);
      if (!Number.isInteger(rv) || rv < 0) {
        write(JSON.stringify({ type: 'ERROR', object: errors.badRequest(`invalid resource version: ${rvParam}`).toStatus() }) + '\n');
        return close();
      }
      try {
        for (const ev of this.backend.since(rv)) deliver(ev);
      } catch (e) {
        if (e instanceof StoreError && e.code === 'Compacted') {
          write(JSON.stringify({ type: 'ERROR', object: errors.expired(e.message).toStatus() }) + '\n');
          return close();
        }
        throw e;
      }
    }
    // Same tick as the replay above, so no write can fall between them.
    unsubscribe = this.backend.subscribe(deliver);
    replaying = false;
    backlog = res.writableLength;

    function sendBookmark(initialEnd = false): void {
      const obj: any = { kind: t.kind, apiVersion: t.group ? `${t.group}/${t.version}` : t.version, metadata: { resourceVersion: String(backend.currentRevision()) } };
      if (initialEnd) obj.metadata.annotations = { 'k8s.io/initial-events-end': 'true' };
      write(JSON.stringify({ type: 'BOOKMARK', object: obj }) + '\n');
    }
    if (spec.allowBookmarks) timers.push(setInterval(() => sendBookmark(), this.limits.bookmarkIntervalMs));
    const timeout = spec.timeoutSeconds ?? this.limits.defaultTimeoutSeconds;
    timers.push(setTimeout(close, timeout * 1000));
  }
}
