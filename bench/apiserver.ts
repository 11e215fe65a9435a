import * as https from 'node:https';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { startCluster } from '../cluster/embedded';

/**
 * Embedded API server figures over real HTTPS with the admin token:
 * creates/s and updates/s (32 concurrent clients), list latency at 10,000
 * objects, watch delivery latency to 50 watchers, and heap bytes per stored
 * object. Baselines measured in the same process: raw SQLite inserts/s and
 * JSON.stringify of the same 10,000 objects.
 */
const N = Number(process.env.BENCH_OBJECTS ?? 10_000);
const CONCURRENCY = 32;
const WATCHERS = 50;
const WATCH_EVENTS = 200;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function gc(): void {
  (global as any).gc?.();
  (global as any).gc?.();
}

async function main(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubevm-bench-'));
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const c = await startCluster({ dataDir, port: 0, historySize: 1000, compactIntervalMs: 0 });
  const agent = new https.Agent({ keepAlive: true, maxSockets: CONCURRENCY + WATCHERS + 4, ca: c.caCert });
  const req = (method: string, p: string, body?: any, ct = 'application/json'): Promise<{ status: number; text: string }> =>
    new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const r = https.request(new URL(p, c.url), { method, agent, headers: { Authorization: `Bearer ${c.token}`, 'Content-Type': ct } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d) => chunks.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      });
      r.on('error', reject);
      if (data) r.write(data);
      r.end();
    });
  const base = '/api/v1/namespaces/default/configmaps';
  const cm = (i: number) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: `cm-${i}`, labels: { app: 'bench', shard: String(i % 10) } },
    data: { index: String(i), payload: 'x'.repeat(200) },
  });

  async function pool(count: number, fn: (i: number) => Promise<void>): Promise<number> {
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < count) await fn(next++);
      }),
    );
    return performance.now() - t0;
  }

  // Baseline: raw SQLite inserts of the same rows, one transaction each, same pragmas.
  const db = new Database(path.join(dataDir, 'baseline.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value TEXT)');
  const ins = db.prepare('INSERT INTO t (name, value) VALUES (?, ?)');
  const tb = performance.now();
  for (let i = 0; i < N; i++) ins.run(`cm-${i}`, JSON.stringify(cm(i)));
  const sqlitePerS = N / ((performance.now() - tb) / 1000);
  db.close();

  // Creates.
  const createMs = await pool(N, async (i) => {
    const r = await req('POST', base, cm(i));
    if (r.status !== 201) throw new Error(`create ${i}: ${r.status} ${r.text}`);
  });
  const createsPerS = N / (createMs / 1000);
  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  const bytesPerObject = Math.round((heapAfter - heapBefore) / N);

  // Updates (merge patches), half the objects.
  const U = Math.floor(N / 2);
  const updateMs = await pool(U, async (i) => {
    const r = await req('PATCH', `${base}/cm-${i}`, { data: { index: `u${i}` } }, 'application/merge-patch+json');
    if (r.status !== 200) throw new Error(`update ${i}: ${r.status} ${r.text}`);
  });
  const updatesPerS = U / (updateMs / 1000);

  // List latency at N objects (full list over HTTPS), and the baseline of serialising them.
  const listTimes: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    const r = await req('GET', base);
    listTimes.push(performance.now() - t0);
    if (i === 0 && JSON.parse(r.text).items.length !== N) throw new Error('list size');
  }
  const objs = c.backend.list('/core/configmaps/default/').map((s) => s.obj);
  const st: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    JSON.stringify({ items: objs });
    st.push(performance.now() - t0);
  }
  const list10k = pct(listTimes, 50);
  const stringifyMs = pct(st, 50);
  const pageTimes: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    await req('GET', `${base}?limit=500`);
    pageTimes.push(performance.now() - t0);
  }

  // Watch delivery latency: 50 watchers, 200 updates; time from the write's send to each watcher's receipt.
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  const rv = JSON.parse((await req('GET', `${base}?limit=1`)).text).metadata.resourceVersion;
  const streams = await Promise.all(
    Array.from(
      { length: WATCHERS },
      () =>
        new Promise<import("node:http").ClientRequest>((resolve) => {
          const r = https.request(
            new URL(`${base}?watch=true&resourceVersion=${rv}&fieldSelector=metadata.name=cm-0`, c.url),
            { agent: new https.Agent({ ca: c.caCert }), headers: { Authorization: `Bearer ${c.token}` } },
            (res) => {
              let buf = '';
              res.on('data', (d) => {
                buf += d;
                let nl;
                while ((nl = buf.indexOf('\n')) >= 0) {
                  const line = buf.slice(0, nl);
                  buf = buf.slice(nl + 1);
                  const ev = JSON.parse(line);
                  const mark = ev.object?.data?.mark;
                  const t = sentAt.get(mark);
                  if (t !== undefined) latencies.push(performance.now() - t);
                }
              });
              resolve(r);
            },
          );
          r.end();
        }),
    ),
  );
  for (let i = 0; i < WATCH_EVENTS; i++) {
    const mark = `m${i}`;
    sentAt.set(mark, performance.now());
    await req('PATCH', `${base}/cm-0`, { data: { mark } }, 'application/merge-patch+json');
    await new Promise((r) => setTimeout(r, 5));
  }
  const deadline = Date.now() + 10_000;
  while (latencies.length < WATCHERS * WATCH_EVENTS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  for (const s of streams) s.destroy();
  const delivered = latencies.length;

  console.log(`objects: ${N} ConfigMaps (~${JSON.stringify(cm(1)).length} bytes of JSON each), ${CONCURRENCY} concurrent HTTPS clients in-process`);
  console.log(`creates/s:            ${createsPerS.toFixed(0)}   (baseline raw SQLite inserts/s ${sqlitePerS.toFixed(0)}; ratio ${(createsPerS / sqlitePerS).toFixed(3)})`);
  console.log(`updates/s:            ${updatesPerS.toFixed(0)}   (merge patch, read-modify-write)`);
  console.log(`list ${N} (p50):     ${list10k.toFixed(1)} ms   (baseline JSON.stringify of the same objects ${stringifyMs.toFixed(1)} ms; ratio ${(list10k / stringifyMs).toFixed(1)})`);
  console.log(`list limit=500 (p50): ${pct(pageTimes, 50).toFixed(1)} ms`);
  console.log(`watch delivery:       p50 ${pct(latencies, 50).toFixed(2)} ms, p99 ${pct(latencies, 99).toFixed(2)} ms, ${delivered}/${WATCHERS * WATCH_EVENTS} events delivered to ${WATCHERS} watchers`);
  console.log(`heap per object:      ${bytesPerObject} bytes (includes the 1000-event watch window)`);
  console.log(
    `apiserver: creates_per_s=${createsPerS.toFixed(0)} updates_per_s=${updatesPerS.toFixed(0)} list10k_ms=${list10k.toFixed(1)} watch_p99_ms=${pct(latencies, 99).toFixed(2)} bytes_per_object=${bytesPerObject}`,
  );
  agent.destroy();
  await c.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
