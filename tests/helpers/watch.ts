import * as fs from 'node:fs';
import * as path from 'node:path';
import * as https from 'node:https';
import { IncomingMessage, ClientRequest } from 'node:http';
import YAML from 'yaml';
import type { TestCluster, HttpReply } from './cluster';

/**
 * Helpers for the HTTP-level API server suites: a raw watch-stream reader on
 * node:https (no client library in between), the widgets CRD fixture, and a
 * few request shorthands.
 */

export interface WatchEvent {
  type: string;
  object: any;
}

export interface WatchStream {
  status: number;
  headers: IncomingMessage['headers'];
  /** Every event parsed so far, in order. */
  events: WatchEvent[];
  /** Raw bytes received so far. */
  bytes: number;
  /** Resolves when the response body ends cleanly (complete) or is cut off. */
  ended: Promise<{ complete: boolean; error?: Error }>;
  /** Waits until `count` events satisfy `pred` (counting from the start of the stream) and returns them. */
  waitFor(pred: (e: WatchEvent) => boolean, count?: number, timeoutMs?: number): Promise<WatchEvent[]>;
  /** Waits for the next event after those already seen by previous calls to next(). */
  next(timeoutMs?: number): Promise<WatchEvent>;
  res: IncomingMessage;
  req: ClientRequest;
  close(): void;
}

/**
 * Opens `GET path` (which should carry `watch=true`) and resolves as soon as the
 * response headers arrive; it rejects if they do not arrive within `headersTimeoutMs`.
 * With `paused`, the body is never read (a slow consumer).
 */
export function openWatch(
  c: TestCluster,
  p: string,
  opts: { headers?: Record<string, string>; paused?: boolean; headersTimeoutMs?: number } = {},
): Promise<WatchStream> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(p, c.url), {
      method: 'GET',
      headers: { Authorization: `Bearer ${c.token}`, ...(opts.headers ?? {}) },
      ca: c.caCert,
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no response headers for ${p} within ${opts.headersTimeoutMs ?? 2000} ms`));
    }, opts.headersTimeoutMs ?? 2000);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.on('response', (res) => {
      clearTimeout(timer);
      const events: WatchEvent[] = [];
      const waiters = new Set<() => void>();
      let buf = '';
      let cursor = 0;
      const stream: WatchStream = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        bytes: 0,
        res,
        req,
        ended: new Promise((done) => {
          let settled = false;
          const finish = (r: { complete: boolean; error?: Error }) => {
            if (settled) return;
            settled = true;
            for (const w of waiters) w();
            done(r);
          };
          res.on('end', () => finish({ complete: res.complete }));
          res.on('aborted', () => finish({ complete: false, error: new Error('aborted') }));
          res.on('error', (e) => finish({ complete: false, error: e }));
          res.on('close', () => finish({ complete: res.complete }));
          req.on('error', (e) => finish({ complete: false, error: e }));
        }),
        waitFor(pred, count = 1, timeoutMs = 5000) {
          return new Promise((ok, fail) => {
            const check = (): boolean => {
              const hits = events.filter(pred);
              if (hits.length >= count) {
                ok(hits.slice(0, count));
                return true;
              }
              return false;
            };
            if (check()) return;
            const t = setTimeout(() => {
              waiters.delete(w);
              fail(
                new Error(
                  `timed out waiting for ${count} matching watch event(s); got: ${JSON.stringify(events.map((e) => [e.type, e.object?.metadata?.name ?? e.object?.code]))}`,
                ),
              );
            }, timeoutMs);
            const w = () => {
              if (check()) {
                clearTimeout(t);
                waiters.delete(w);
              }
            };
            waiters.add(w);
          });
        },
        async next(timeoutMs = 5000) {
          const idx = cursor++;
          const [e] = await stream.waitFor(() => true, idx + 1, timeoutMs).then((all) => all.slice(idx));
          return e;
        },
        close() {
          req.destroy();
        },
      };
      if (!opts.paused) {
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          stream.bytes += Buffer.byteLength(chunk);
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line) events.push(JSON.parse(line));
          }
          for (const w of [...waiters]) w();
        });
      } else res.pause();
      resolve(stream);
    });
    req.end();
  });
}

export function widgetsCrd(): any {
  return YAML.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'widgets-crd.yaml'), 'utf8'));
}

export const CRD_PATH = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

/** Creates the widgets CRD and waits until it is Established and served. */
export async function installWidgets(c: TestCluster): Promise<void> {
  const r = await c.request('POST', CRD_PATH, widgetsCrd());
  if (r.status !== 201) throw new Error(`CRD create: ${r.status} ${r.text}`);
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const got = await c.request('GET', `${CRD_PATH}/widgets.example.com`);
    const established = got.json?.status?.conditions?.some((x: any) => x.type === 'Established' && x.status === 'True');
    if (established && (await c.request('GET', '/apis/example.com/v1')).status === 200) return;
    await sleep(25);
  }
  throw new Error('widgets CRD not established');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function cm(name: string, extra: any = {}): any {
  const { metadata, ...rest } = extra;
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, ...(metadata ?? {}) }, ...rest };
}

export function widget(name: string, spec: any = { size: 'small' }, extra: any = {}): any {
  const { metadata, ...rest } = extra;
  return { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name, ...(metadata ?? {}) }, spec, ...rest };
}

/** Asserts an HTTP status and returns the reply (with the body in the failure message). */
export function expectStatus(r: HttpReply, code: number): HttpReply {
  if (r.status !== code) throw new Error(`expected HTTP ${code}, got ${r.status}: ${r.text.slice(0, 2000)}`);
  return r;
}

/** Creates a namespace and returns its name. */
export async function makeNamespace(c: TestCluster, name: string): Promise<string> {
  expectStatus(await c.request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } }), 201);
  return name;
}

export const MERGE = { 'Content-Type': 'application/merge-patch+json' };
export const JSON_PATCH = { 'Content-Type': 'application/json-patch+json' };
export const SMP = { 'Content-Type': 'application/strategic-merge-patch+json' };
export const APPLY = { 'Content-Type': 'application/apply-patch+yaml' };
