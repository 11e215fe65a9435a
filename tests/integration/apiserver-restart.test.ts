import * as fs from 'node:fs';
import { startTestCluster, TestCluster, tempDir, eventually } from '../helpers/cluster';
import { installWidgets, openWatch, cm, widget, expectStatus, MERGE } from '../helpers/watch';

/**
 * Stop the server and start a new one on the same data directory: objects,
 * uids, resourceVersions, CRDs and the watch window survive, and new writes
 * get higher resourceVersions (docs/apiserver.md, "Storage and durability").
 */
let dataDir: string;
let first: TestCluster | undefined;
let second: TestCluster | undefined;

beforeAll(() => {
  dataDir = tempDir();
});

afterAll(async () => {
  await first?.stop();
  await second?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test('objects, resourceVersions, CRDs and the watch window persist across a restart', async () => {
  first = await startTestCluster({ dataDir });
  await installWidgets(first);
  const CMS = '/api/v1/namespaces/default/configmaps';
  const WIDGETS = '/apis/example.com/v1/namespaces/default/widgets';
  const a = expectStatus(await first.request('POST', CMS, cm('keep-a', { data: { v: '1' } })), 201).json;
  const b = expectStatus(await first.request('POST', CMS, cm('keep-b')), 201).json;
  const gone = expectStatus(await first.request('POST', CMS, cm('gone')), 201).json;
  expectStatus(await first.request('DELETE', `${CMS}/gone`), 200);
  const w = expectStatus(await first.request('POST', WIDGETS, widget('keep-w', { size: 'medium' })), 201).json;
  const a2 = expectStatus(await first.request('PATCH', `${CMS}/keep-a`, { data: { v: '2' } }, MERGE), 200).json;
  const resumeFrom = b.metadata.resourceVersion;
  const listBefore = expectStatus(await first.request('GET', CMS), 200).json;
  const rvBefore = Number(listBefore.metadata.resourceVersion);
  const token = first.token;
  await first.stop();
  first = undefined;

  second = await startTestCluster({ dataDir });
  expect(second.token).toBe(token);
  const listAfter = expectStatus(await second.request('GET', CMS), 200).json;
  expect(Number(listAfter.metadata.resourceVersion)).toBe(rvBefore);
  const gotA = expectStatus(await second.request('GET', `${CMS}/keep-a`), 200).json;
  expect(gotA.metadata.uid).toBe(a.metadata.uid);
  expect(gotA.metadata.resourceVersion).toBe(a2.metadata.resourceVersion);
  expect(gotA.metadata.creationTimestamp).toBe(a.metadata.creationTimestamp);
  expect(gotA.data).toEqual({ v: '2' });
  expect((await second.request('GET', `${CMS}/keep-b`)).json.metadata.resourceVersion).toBe(b.metadata.resourceVersion);
  expect((await second.request('GET', `${CMS}/gone`)).status).toBe(404);
  expect(gone.metadata.uid).toBeTruthy();
  // The CRD is served again at once, with its objects.
  const gotW = expectStatus(await second.request('GET', `${WIDGETS}/keep-w`), 200).json;
  expect(gotW.metadata.resourceVersion).toBe(w.metadata.resourceVersion);
  expect(gotW.spec).toEqual({ size: 'medium', replicas: 1, color: 'blue' });
  expect((await second.request('GET', '/apis/example.com/v1')).status).toBe(200);

  // A watch from before the restart resumes with the events after its revision.
  const watch = await openWatch(second, `${CMS}?watch=true&resourceVersion=${resumeFrom}`);
  try {
    const evs = await watch.waitFor(() => true, 3);
    expect(evs.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['ADDED gone', 'DELETED gone', 'MODIFIED keep-a']);
    // New writes get higher resourceVersions, and reach the watch.
    const c2 = expectStatus(await second.request('POST', CMS, cm('after-restart')), 201).json;
    expect(Number(c2.metadata.resourceVersion)).toBeGreaterThan(rvBefore);
    await watch.waitFor((e) => e.object.metadata.name === 'after-restart');
    const w2 = expectStatus(await second.request('PATCH', `${WIDGETS}/keep-w`, { spec: { size: 'large' } }, MERGE), 200).json;
    expect(Number(w2.metadata.resourceVersion)).toBeGreaterThan(Number(c2.metadata.resourceVersion));
    expect(w2.metadata.generation).toBe(2);
    // Updates against the pre-restart resourceVersion are conflicts; the current one works.
    expect((await second.request('PUT', `${CMS}/keep-a`, a)).status).toBe(409);
    expectStatus(await second.request('PUT', `${CMS}/keep-a`, { ...gotA, data: { v: '3' } }), 200);
  } finally {
    watch.close();
  }
  // The default ServiceAccount is not duplicated, the system namespaces are intact.
  const sas = (await second.request('GET', '/api/v1/namespaces/default/serviceaccounts')).json.items;
  expect(sas.map((s: any) => s.metadata.name)).toEqual(['default']);
  await eventually(
    async () => (await second!.request('GET', '/api/v1/namespaces/kube-system')).status === 200,
    2000,
    'kube-system',
  );
});
