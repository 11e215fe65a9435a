import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { openWatch, cm, expectStatus, makeNamespace, MERGE, sleep, WatchEvent } from '../helpers/watch';

/**
 * Watch streams read with node:https directly: header flushing, initial
 * events, resume, 410 as an ERROR event, bookmarks, timeouts, selector
 * transitions, all-namespaces watches and the slow-consumer cut-off
 * (research/k8s-api.md §4).
 *
 * The cluster keeps only 20 events of history (so 410 is reachable), sends
 * bookmarks every 200 ms, and cuts a watcher off at 64 KiB of queued data.
 */
let c: TestCluster;

const BUFFER_LIMIT = 64 * 1024;

beforeAll(async () => {
  c = await startTestCluster({ historySize: 20, watch: { bookmarkIntervalMs: 200, maxBufferedBytes: BUFFER_LIMIT } });
}, 30_000);

afterAll(async () => {
  await c?.cleanup();
});

const names = (evs: WatchEvent[]) => evs.map((e) => `${e.type} ${e.object?.metadata?.name}`);

async function listRv(path: string): Promise<string> {
  return expectStatus(await c.request('GET', path), 200).json.metadata.resourceVersion;
}

test('response headers arrive before any event', async () => {
  const ns = await makeNamespace(c, 'w-headers');
  const rv = await listRv(`/api/v1/namespaces/${ns}/configmaps`);
  // Nothing will happen on this watch for a while: the headers must come anyway.
  const w = await openWatch(c, `/api/v1/namespaces/${ns}/configmaps?watch=true&resourceVersion=${rv}`, {
    headersTimeoutMs: 1000,
  });
  try {
    expect(w.status).toBe(200);
    expect(w.headers['content-type']).toBe('application/json');
    expect(w.headers['transfer-encoding']).toBe('chunked');
    expect(w.events).toEqual([]);
    expect(w.bytes).toBe(0);
    // And the stream then carries events as one JSON object per line.
    expectStatus(await c.request('POST', `/api/v1/namespaces/${ns}/configmaps`, cm('late')), 201);
    const [ev] = await w.waitFor((e) => e.type === 'ADDED');
    expect(ev.object).toMatchObject({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'late', namespace: ns } });
  } finally {
    w.close();
  }
});

test('no resourceVersion: synthetic ADDED for every existing object, then live changes', async () => {
  const ns = await makeNamespace(c, 'w-initial');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  for (const n of ['i1', 'i2', 'i3']) expectStatus(await c.request('POST', P, cm(n)), 201);
  for (const q of ['watch=true', 'watch=1&resourceVersion=', 'watch=true&resourceVersion=0']) {
    const w = await openWatch(c, `${P}?${q}`);
    try {
      const initial = await w.waitFor(() => true, 3);
      expect(names(initial)).toEqual(['ADDED i1', 'ADDED i2', 'ADDED i3']);
      for (const e of initial) expect(e.object.metadata.resourceVersion).toMatch(/^\d+$/);
      await sleep(50);
      expect(w.events).toHaveLength(3);
    } finally {
      w.close();
    }
  }
  const w = await openWatch(c, `${P}?watch=true`);
  try {
    await w.waitFor(() => true, 3);
    expectStatus(await c.request('PATCH', `${P}/i2`, { data: { a: '1' } }, MERGE), 200);
    expectStatus(await c.request('DELETE', `${P}/i3`), 200);
    const evs = await w.waitFor(() => true, 5);
    expect(names(evs.slice(3))).toEqual(['MODIFIED i2', 'DELETED i3']);
    expect(evs[3].object.data).toEqual({ a: '1' });
    // The DELETED object carries the revision of the deletion.
    expect(Number(evs[4].object.metadata.resourceVersion)).toBeGreaterThan(Number(evs[3].object.metadata.resourceVersion));
  } finally {
    w.close();
  }
});

test('a resourceVersion resumes: only later events, no synthetic ADDED; a no-op write sends nothing', async () => {
  const ns = await makeNamespace(c, 'w-resume');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  const a = expectStatus(await c.request('POST', P, cm('a', { data: { v: '1' } })), 201).json;
  const rv = a.metadata.resourceVersion;
  expectStatus(await c.request('POST', P, cm('b')), 201);
  expectStatus(await c.request('PATCH', `${P}/a`, { data: { v: '2' } }, MERGE), 200);
  const w = await openWatch(c, `${P}?watch=true&resourceVersion=${rv}`);
  try {
    const evs = await w.waitFor(() => true, 2);
    expect(names(evs)).toEqual(['ADDED b', 'MODIFIED a']);
    expect(evs[1].object.data).toEqual({ v: '2' });
    // Writes that change nothing produce no event; a real change does.
    expectStatus(await c.request('PATCH', `${P}/a`, { data: { v: '2' } }, MERGE), 200);
    expectStatus(await c.request('PATCH', `${P}/b`, { data: { v: 'x' } }, MERGE), 200);
    const more = await w.waitFor(() => true, 3);
    expect(names(more)).toEqual(['ADDED b', 'MODIFIED a', 'MODIFIED b']);
    await sleep(50);
    expect(w.events).toHaveLength(3);
  } finally {
    w.close();
  }
});

test('a resourceVersion older than the window → HTTP 200 and one ERROR event with 410 Expired, then the end', async () => {
  const ns = await makeNamespace(c, 'w-expired');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  const first = expectStatus(await c.request('POST', P, cm('old')), 201).json;
  const oldRv = first.metadata.resourceVersion;
  for (let i = 0; i < 25; i++) expectStatus(await c.request('PATCH', `${P}/old`, { data: { i: String(i) } }, MERGE), 200);
  const w = await openWatch(c, `${P}?watch=true&resourceVersion=${oldRv}`);
  expect(w.status).toBe(200);
  const end = await w.ended;
  expect(end.complete).toBe(true);
  expect(w.events).toHaveLength(1);
  const [ev] = w.events;
  expect(ev.type).toBe('ERROR');
  expect(ev.object).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410 });
  expect(ev.object.message).toMatch(new RegExp(`^too old resource version: ${oldRv} \\(\\d+\\)$`));
  // A recent one still resumes.
  const recent = await listRv(P);
  const ok = await openWatch(c, `${P}?watch=true&resourceVersion=${recent}`);
  try {
    expectStatus(await c.request('PATCH', `${P}/old`, { data: { i: 'last' } }, MERGE), 200);
    const [m] = await ok.waitFor(() => true);
    expect(m.type).toBe('MODIFIED');
  } finally {
    ok.close();
  }
});

test('a continue token older than the window → 410 Expired (clients list again)', async () => {
  const ns = await makeNamespace(c, 'w-continue');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  for (const n of ['k1', 'k2', 'k3']) expectStatus(await c.request('POST', P, cm(n)), 201);
  const page = expectStatus(await c.request('GET', `${P}?limit=1`), 200).json;
  expect(page.metadata.continue).toBeTruthy();
  // Still fresh: the next page comes.
  expect(
    expectStatus(await c.request('GET', `${P}?limit=1&continue=${encodeURIComponent(page.metadata.continue)}`), 200).json.items[0]
      .metadata.name,
  ).toBe('k2');
  for (let i = 0; i < 25; i++) expectStatus(await c.request('PATCH', `${P}/k3`, { data: { i: String(i) } }, MERGE), 200);
  const r = await c.request('GET', `${P}?limit=1&continue=${encodeURIComponent(page.metadata.continue)}`);
  expect(r.status).toBe(410);
  expect(r.json).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 });
});

test('allowWatchBookmarks=true gets BOOKMARK events with only a resourceVersion; others get none', async () => {
  const ns = await makeNamespace(c, 'w-bookmark');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  const rv = await listRv(P);
  const withBm = await openWatch(c, `${P}?watch=true&allowWatchBookmarks=true&resourceVersion=${rv}`);
  const without = await openWatch(c, `${P}?watch=true&resourceVersion=${rv}`);
  try {
    const bms = await withBm.waitFor((e) => e.type === 'BOOKMARK', 2, 3000);
    for (const b of bms) {
      expect(b.object).toMatchObject({ kind: 'ConfigMap', apiVersion: 'v1' });
      expect(b.object.metadata.resourceVersion).toMatch(/^\d+$/);
      expect(Number(b.object.metadata.resourceVersion)).toBeGreaterThanOrEqual(Number(rv));
      expect(Object.keys(b.object.metadata)).toEqual(['resourceVersion']);
    }
    expect(without.events).toEqual([]);
  } finally {
    withBm.close();
    without.close();
  }
});

test('timeoutSeconds=1 ends the stream cleanly after about a second', async () => {
  const started = Date.now();
  const w = await openWatch(c, '/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion=0');
  const end = await w.ended;
  const took = Date.now() - started;
  expect(end.complete).toBe(true);
  expect(end.error).toBeUndefined();
  expect(took).toBeGreaterThanOrEqual(900);
  expect(took).toBeLessThan(3000);
});

test('a label-selector watch sees DELETED when an object stops matching and ADDED when it starts', async () => {
  const ns = await makeNamespace(c, 'w-selector');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  expectStatus(await c.request('POST', P, cm('m', { metadata: { labels: { app: 'x' } } })), 201);
  expectStatus(await c.request('POST', P, cm('n', { metadata: { labels: { app: 'y' } } })), 201);
  const w = await openWatch(c, `${P}?watch=true&labelSelector=app%3Dx`);
  try {
    await w.waitFor(() => true, 1);
    expectStatus(await c.request('PATCH', `${P}/m`, { data: { k: '1' } }, MERGE), 200); // still matches
    expectStatus(await c.request('PATCH', `${P}/m`, { metadata: { labels: { app: 'z' } } }, MERGE), 200); // stops
    expectStatus(await c.request('PATCH', `${P}/m`, { data: { k: '2' } }, MERGE), 200); // not matching: nothing
    expectStatus(await c.request('PATCH', `${P}/n`, { metadata: { labels: { app: 'x' } } }, MERGE), 200); // starts
    expectStatus(await c.request('DELETE', `${P}/n`), 200);
    const evs = await w.waitFor(() => true, 5);
    expect(names(evs)).toEqual(['ADDED m', 'MODIFIED m', 'DELETED m', 'ADDED n', 'DELETED n']);
    // The DELETED for "stopped matching" carries the new state of the object.
    expect(evs[2].object.metadata.labels).toEqual({ app: 'z' });
    await sleep(50);
    expect(w.events).toHaveLength(5);
  } finally {
    w.close();
  }
  // Field selectors on one object, as kubectl wait does.
  const fw = await openWatch(c, `${P}?watch=true&fieldSelector=metadata.name%3Dm&allowWatchBookmarks=false`);
  try {
    const [first] = await fw.waitFor(() => true);
    expect(names([first])).toEqual(['ADDED m']);
    expectStatus(await c.request('DELETE', `${P}/m`), 200);
    await fw.waitFor((e) => e.type === 'DELETED');
  } finally {
    fw.close();
  }
  // A bad selector fails the watch request itself.
  const bad = await c.request('GET', `${P}?watch=true&fieldSelector=spec.x%3D1`);
  expect(bad.status).toBe(400);
});

test('an all-namespaces watch sees every namespace', async () => {
  const ns1 = await makeNamespace(c, 'w-all-1');
  const ns2 = await makeNamespace(c, 'w-all-2');
  const rv = await listRv('/api/v1/configmaps');
  const w = await openWatch(c, `/api/v1/configmaps?watch=true&resourceVersion=${rv}`);
  try {
    expectStatus(await c.request('POST', `/api/v1/namespaces/${ns1}/configmaps`, cm('x1')), 201);
    expectStatus(await c.request('POST', `/api/v1/namespaces/${ns2}/configmaps`, cm('x2')), 201);
    // Other kinds do not leak in.
    expectStatus(
      await c.request('POST', `/api/v1/namespaces/${ns1}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 's' } }),
      201,
    );
    const evs = await w.waitFor((e) => e.type === 'ADDED', 2);
    expect(evs.map((e) => `${e.object.metadata.namespace}/${e.object.metadata.name}`)).toEqual([`${ns1}/x1`, `${ns2}/x2`]);
    await sleep(50);
    expect(w.events.every((e) => e.object.kind === 'ConfigMap')).toBe(true);
  } finally {
    w.close();
  }
  // A namespaced watch does not see the other namespace.
  const one = await openWatch(c, `/api/v1/namespaces/${ns1}/configmaps?watch=true&resourceVersion=${rv}`);
  try {
    const evs = await one.waitFor(() => true, 1);
    expect(names(evs)).toEqual(['ADDED x1']);
    await sleep(50);
    expect(one.events).toHaveLength(1);
  } finally {
    one.close();
  }
});

test('a watcher that never reads is cut off past its buffer limit; the server keeps serving others', async () => {
  const ns = await makeNamespace(c, 'w-slow');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  const rv = await listRv(P);
  const watchesBefore = c.server.watches.count;
  const slow = await openWatch(c, `${P}?watch=true&resourceVersion=${rv}`, { paused: true });
  const fast = await openWatch(c, `${P}?watch=true&resourceVersion=${rv}`);
  expect(c.server.watches.count).toBe(watchesBefore + 2);
  // Each event is half the allowance, so a client that reads is never behind by more than it.
  const big = 'x'.repeat(32 * 1024);
  let written = 0;
  try {
    // Enough data to fill the kernel's socket buffers and then the 64 KiB allowance.
    for (let i = 0; i < 600 && c.server.watches.count > watchesBefore + 1; i++) {
      expectStatus(await c.request('POST', P, cm(`big-${i}`, { data: { blob: big } })), 201);
      written++;
    }
    await eventually(() => c.server.watches.count === watchesBefore + 1, 5000, 'the slow watcher to be cut off');
    // The reading watcher got every event.
    await fast.waitFor((e) => e.type === 'ADDED', written, 10_000);
    // The cut-off client sees its stream end without the rest of the events.
    slow.res.resume();
    const end = await slow.ended;
    expect(end.complete).toBe(false);
    // Others are still served: the fast watch keeps going, new requests work.
    expectStatus(await c.request('POST', P, cm('after')), 201);
    await fast.waitFor((e) => e.object?.metadata?.name === 'after');
    expect((await c.request('GET', '/api/v1/namespaces/default')).status).toBe(200);
    const again = await openWatch(c, `${P}?watch=true&fieldSelector=metadata.name%3Dafter`);
    try {
      expect(names(await again.waitFor(() => true))).toEqual(['ADDED after']);
    } finally {
      again.close();
    }
  } finally {
    slow.close();
    fast.close();
  }
  expect(written).toBeGreaterThan(0);
}, 30_000);

test('a reading watcher is not cut off by an initial burst larger than the limit', async () => {
  const ns = await makeNamespace(c, 'w-burst');
  const P = `/api/v1/namespaces/${ns}/configmaps`;
  // 10 × 16 KiB of initial ADDED events are queued at once: well over the 64 KiB allowance.
  for (let i = 0; i < 10; i++)
    expectStatus(await c.request('POST', P, cm(`r-${i}`, { data: { blob: 'y'.repeat(16 * 1024) } })), 201);
  const w = await openWatch(c, `${P}?watch=true`);
  try {
    const initial = await w.waitFor((e) => e.type === 'ADDED', 10);
    expect(initial.map((e) => e.object.metadata.name)).toEqual(Array.from({ length: 10 }, (_, i) => `r-${i}`));
    // Still open and live.
    expectStatus(await c.request('POST', P, cm('r-live')), 201);
    await w.waitFor((e) => e.object?.metadata?.name === 'r-live');
  } finally {
    w.close();
  }
});

test('closing a watch from the client side releases it on the server', async () => {
  // Earlier tests' closed watches are released asynchronously: let the count settle.
  await sleep(200);
  const before = c.server.watches.count;
  const w = await openWatch(c, '/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0');
  expect(c.server.watches.count).toBe(before + 1);
  w.close();
  await eventually(() => c.server.watches.count === before, 2000, 'the server to notice');
});
