import * as k8s from '@kubernetes/client-node';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';

/**
 * @kubernetes/client-node 2.x against the embedded API server: typed CRUD,
 * KubernetesObjectApi, CustomObjectsApi and an informer, including its
 * recovery from a 410 after the watch history is compacted.
 */
let c: TestCluster;
let kc: k8s.KubeConfig;

beforeAll(async () => {
  // A small history window so the 410 path can be reached quickly.
  c = await startTestCluster({ historySize: 50 });
  kc = new k8s.KubeConfig();
  kc.loadFromFile(c.kubeconfigPath);
  const crd = YAML.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'widgets-crd.yaml'), 'utf8'));
  // Posted raw: the typed ApiextensionsV1Api serialises JSONSchemaProps by its model, which
  // expects `_default` and silently drops a plain `default` taken from YAML.
  expect((await c.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd)).status).toBe(201);
  await eventually(async () => {
    const got = await kc.makeApiClient(k8s.ApiextensionsV1Api).readCustomResourceDefinition({ name: 'widgets.example.com' });
    return got.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True');
  }, 5000, 'CRD established');
}, 30_000);

afterAll(async () => {
  await c?.cleanup();
});

test('CoreV1Api: create, read, list with selectors, replace, delete ConfigMaps', async () => {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const created = await core.createNamespacedConfigMap({
    namespace: 'default',
    body: { metadata: { name: 'cfg', labels: { app: 'x' } }, data: { k: 'v' } },
  });
  expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
  expect(Number(created.metadata?.resourceVersion)).toBeGreaterThan(0);
  const read = await core.readNamespacedConfigMap({ name: 'cfg', namespace: 'default' });
  expect(read.data).toEqual({ k: 'v' });
  const list = await core.listNamespacedConfigMap({ namespace: 'default', labelSelector: 'app=x' });
  expect(list.items.map((i) => i.metadata?.name)).toEqual(['cfg']);
  read.data = { k: 'v2' };
  const replaced = await core.replaceNamespacedConfigMap({ name: 'cfg', namespace: 'default', body: read });
  expect(replaced.data).toEqual({ k: 'v2' });
  // A stale resourceVersion is a 409 Conflict.
  await expect(core.replaceNamespacedConfigMap({ name: 'cfg', namespace: 'default', body: read })).rejects.toMatchObject({ code: 409 });
  await expect(core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'cfg' } } })).rejects.toMatchObject({ code: 409 });
  await core.deleteNamespacedConfigMap({ name: 'cfg', namespace: 'default' });
  const missing = await core.readNamespacedConfigMap({ name: 'cfg', namespace: 'default' }).catch((e) => e);
  expect(missing.code).toBe(404);
  expect(JSON.parse(missing.body).reason).toBe('NotFound');
});

test('KubernetesObjectApi: create, merge patch, read, list and delete a custom object', async () => {
  const api = k8s.KubernetesObjectApi.makeApiClient(kc);
  const obj = { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'kw', namespace: 'default' }, spec: { size: 'small' } };
  const created: any = await api.create(obj);
  expect(created.spec.replicas).toBe(1);
  const patched: any = await api.patch(
    { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'kw', namespace: 'default' }, spec: { size: 'large' } } as any,
    undefined,
    undefined,
    'test',
    undefined,
    k8s.PatchStrategy.MergePatch,
  );
  expect(patched.spec.size).toBe('large');
  expect(patched.metadata.generation).toBe(2);
  // client-node's default patch type for objects is strategic merge: a custom resource refuses it (415), as upstream.
  const smp = await api.patch({ ...obj, spec: { size: 'medium' } } as any).catch((e) => e);
  expect(smp.code).toBe(415);
  const applied: any = await api.patch(
    { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'kw', namespace: 'default' }, spec: { size: 'medium', replicas: 3 } } as any,
    undefined,
    undefined,
    'ssa-test',
    true,
    k8s.PatchStrategy.ServerSideApply,
  );
  expect(applied.spec.replicas).toBe(3);
  const list = await api.list('example.com/v1', 'Widget', 'default');
  expect(list.items.map((i: any) => i.metadata.name)).toContain('kw');
  await api.delete({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'kw', namespace: 'default' } } as any);
  await expect(api.read({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'kw', namespace: 'default' } } as any)).rejects.toMatchObject({ code: 404 });
});

test('CustomObjectsApi: create, status update, get', async () => {
  const co = kc.makeApiClient(k8s.CustomObjectsApi);
  await co.createNamespacedCustomObject({
    group: 'example.com', version: 'v1', namespace: 'default', plural: 'widgets',
    body: { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'co1' }, spec: { size: 'small' }, status: { replicas: 9 } },
  });
  const got: any = await co.getNamespacedCustomObject({ group: 'example.com', version: 'v1', namespace: 'default', plural: 'widgets', name: 'co1' });
  // With the status subresource, status sent on create is dropped.
  expect(got.status).toBeUndefined();
  got.status = { replicas: 2 };
  const st: any = await co.replaceNamespacedCustomObjectStatus({ group: 'example.com', version: 'v1', namespace: 'default', plural: 'widgets', name: 'co1', body: got });
  expect(st.status.replicas).toBe(2);
  expect(st.metadata.generation).toBe(1);
});

test('an informer sees add, update and delete, and relists after a 410', async () => {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  let lists = 0;
  const informer = k8s.makeInformer(kc, '/api/v1/namespaces/default/configmaps', () => {
    lists++;
    return core.listNamespacedConfigMap({ namespace: 'default' });
  });
  const seen: string[] = [];
  const errorsSeen: unknown[] = [];
  informer.on('add', (o) => seen.push(`add:${o.metadata?.name}`));
  informer.on('update', (o) => seen.push(`update:${o.metadata?.name}:${o.data?.v}`));
  informer.on('delete', (o) => seen.push(`delete:${o.metadata?.name}`));
  informer.on('error', (e) => errorsSeen.push(e));
  await informer.start();
  try {
    await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'inf' }, data: { v: '1' } } });
    await eventually(() => seen.includes('add:inf'), 5000, 'add');
    await core.patchNamespacedConfigMap(
      { name: 'inf', namespace: 'default', body: { data: { v: '2' } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    await eventually(() => seen.includes('update:inf:2'), 5000, 'update');
    await core.deleteNamespacedConfigMap({ name: 'inf', namespace: 'default' });
    await eventually(() => seen.includes('delete:inf'), 5000, 'delete');

    // Cut every watch and, in the same tick, push the history window past the
    // informer's resourceVersion: its re-watch gets ERROR 410 and it must list again.
    const t = c.server.registry.find('', 'v1', 'configmaps')!;
    expect(lists).toBe(1);
    c.server.watches.closeAll();
    for (let i = 0; i < 80; i++)
      c.server.objects.create(t, 'default', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `burst-${i}` }, data: { v: String(i) } });
    await eventually(() => informer.list().length === 80, 15_000, 'informer to relist all 80');
    expect(informer.list().map((o) => o.metadata?.name)).toContain('burst-79');
    expect(lists).toBe(2); // the 410 made it list again
    expect(errorsSeen).toEqual([]);
  } finally {
    await informer.stop();
  }
}, 30_000);
