import { startTestCluster, TestCluster, httpsRequest, eventually } from '../helpers/cluster';
import { CRD_PATH, widgetsCrd, widget, expectStatus, JSON_PATCH, sleep } from '../helpers/watch';

/**
 * HTTP-level behaviour of the embedded API server: authentication, the public
 * endpoints, discovery negotiation, CRD serving and /openapi/v3, asserted
 * against what kube-apiserver does (see /work/shared/research/k8s-api.md).
 */
let c: TestCluster;

beforeAll(async () => {
  c = await startTestCluster();
}, 30_000);

afterAll(async () => {
  await c?.cleanup();
});

const V2 = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';
const V2BETA1 = 'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList';
/** What kubectl 1.32 sends to /api and /apis. */
const KUBECTL_132_ACCEPT = `${V2},${V2BETA1},application/json`;

function anonymous(method: string, p: string, headers: Record<string, string> = {}) {
  return httpsRequest(c.url, undefined, c.caCert, method, p, undefined, headers);
}

function expectUnauthorized(r: { status: number; json: any; headers: any }) {
  expect(r.status).toBe(401);
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  expect(r.json).toEqual({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'Unauthorized',
    reason: 'Unauthorized',
    code: 401,
  });
}

describe('authentication and public endpoints', () => {
  test('no token → 401 Status on every API path', async () => {
    for (const p of ['/api', '/apis', '/api/v1/namespaces', '/api/v1/namespaces/default/configmaps', '/openapi/v3'])
      expectUnauthorized(await anonymous('GET', p));
    expectUnauthorized(
      await httpsRequest(c.url, undefined, c.caCert, 'POST', '/api/v1/namespaces/default/configmaps', {
        metadata: { name: 'x' },
      }),
    );
  });

  test('a wrong token (or a non-Bearer scheme) → 401, never a fallback to anonymous', async () => {
    expectUnauthorized(await httpsRequest(c.url, 'not-the-token', c.caCert, 'GET', '/api/v1/namespaces'));
    // Same length as the real token but different.
    const sameLength = c.token.replace(/./g, 'A') === c.token ? c.token.replace(/./g, 'B') : c.token.replace(/./g, 'A');
    expectUnauthorized(await httpsRequest(c.url, sameLength, c.caCert, 'GET', '/api/v1/namespaces'));
    expectUnauthorized(
      await anonymous('GET', '/api/v1/namespaces', {
        Authorization: `Basic ${Buffer.from('admin:' + c.token).toString('base64')}`,
      }),
    );
    // Nothing was created by the unauthenticated POST above.
    expect((await c.request('GET', '/api/v1/namespaces/default/configmaps/x')).status).toBe(404);
  });

  test('/version is public and reports v1.32', async () => {
    const r = await anonymous('GET', '/version?timeout=5s');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ major: '1', minor: '32', compiler: 'gc', platform: 'linux/amd64' });
    expect(r.json.gitVersion).toMatch(/^v1\.32\.\d+/);
  });

  test.each(['/healthz', '/readyz', '/livez'])('%s is public and answers ok', async (p) => {
    const r = await anonymous('GET', p);
    expect(r.status).toBe(200);
    expect(r.text).toBe('ok');
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
  });
});

describe('discovery', () => {
  test("kubectl 1.32's Accept on /apis and /api → aggregated v2, Content-Type echoed", async () => {
    const apis = expectStatus(await c.request('GET', '/apis?timeout=32s', undefined, { Accept: KUBECTL_132_ACCEPT }), 200);
    expect(apis.headers['content-type']).toBe(V2);
    expect(apis.json).toMatchObject({ kind: 'APIGroupDiscoveryList', apiVersion: 'apidiscovery.k8s.io/v2' });
    const apps = apis.json.items.find((g: any) => g.metadata.name === 'apps');
    expect(apps.versions[0].version).toBe('v1');
    expect(apps.versions[0].freshness).toBe('Current');
    const deploy = apps.versions[0].resources.find((r: any) => r.resource === 'deployments');
    expect(deploy).toMatchObject({
      resource: 'deployments',
      singularResource: 'deployment',
      scope: 'Namespaced',
      responseKind: { group: 'apps', version: 'v1', kind: 'Deployment' },
      shortNames: ['deploy'],
      categories: ['all'],
    });
    expect(deploy.subresources).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ subresource: 'status', verbs: expect.arrayContaining(['get', 'patch', 'update']) }),
        expect.objectContaining({ subresource: 'scale', responseKind: { group: 'autoscaling', version: 'v1', kind: 'Scale' } }),
      ]),
    );
    // No core group in /apis.
    expect(apis.json.items.some((g: any) => g.metadata.name === '')).toBe(false);

    const api = expectStatus(await c.request('GET', '/api', undefined, { Accept: KUBECTL_132_ACCEPT }), 200);
    expect(api.headers['content-type']).toBe(V2);
    expect(api.json.kind).toBe('APIGroupDiscoveryList');
    expect(api.json.items).toHaveLength(1);
    expect(api.json.items[0].metadata.name ?? '').toBe('');
    const core = api.json.items[0].versions[0];
    expect(core.version).toBe('v1');
    const cms = core.resources.find((r: any) => r.resource === 'configmaps');
    expect(cms).toMatchObject({
      scope: 'Namespaced',
      shortNames: ['cm'],
      responseKind: { group: '', version: 'v1', kind: 'ConfigMap' },
    });
    expect(cms.verbs).toEqual(
      expect.arrayContaining(['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']),
    );
    const ns = core.resources.find((r: any) => r.resource === 'namespaces');
    expect(ns.scope).toBe('Cluster');
  });

  test('an Accept listing only v2beta1 (kubectl 1.29) → v2beta1, never v2', async () => {
    for (const p of ['/api', '/apis']) {
      const r = expectStatus(await c.request('GET', p, undefined, { Accept: `${V2BETA1},application/json` }), 200);
      expect(r.headers['content-type']).toBe(V2BETA1);
      expect(r.json).toMatchObject({ kind: 'APIGroupDiscoveryList', apiVersion: 'apidiscovery.k8s.io/v2beta1' });
    }
  });

  test('plain application/json → legacy APIVersions and APIGroupList', async () => {
    const api = expectStatus(await c.request('GET', '/api', undefined, { Accept: 'application/json' }), 200);
    expect(api.headers['content-type']).toMatch(/^application\/json$/);
    expect(api.json.kind).toBe('APIVersions');
    expect(api.json.versions).toEqual(['v1']);
    expect(api.json.serverAddressByClientCIDRs[0].clientCIDR).toBe('0.0.0.0/0');

    const apis = expectStatus(await c.request('GET', '/apis', undefined, { Accept: 'application/json' }), 200);
    expect(apis.json).toMatchObject({ kind: 'APIGroupList', apiVersion: 'v1' });
    const names = apis.json.groups.map((g: any) => g.name);
    expect(names).toEqual(expect.arrayContaining(['apps', 'coordination.k8s.io', 'apiextensions.k8s.io']));
    const apps = apis.json.groups.find((g: any) => g.name === 'apps');
    expect(apps.versions).toEqual([{ groupVersion: 'apps/v1', version: 'v1' }]);
    expect(apps.preferredVersion).toEqual({ groupVersion: 'apps/v1', version: 'v1' });

    // No Accept at all is legacy too.
    expect((await c.request('GET', '/apis')).json.kind).toBe('APIGroupList');
  });

  test('unknown media types next to application/json never give 406', async () => {
    const accepts = [
      'application/vnd.kubernetes.protobuf,application/json',
      'application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json',
      'application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json',
      'text/html, application/json;q=0.9',
      'application/json, */*',
    ];
    for (const accept of accepts) {
      const api = await c.request('GET', '/api', undefined, { Accept: accept });
      expect([accept, api.status, api.json?.kind]).toEqual([accept, 200, 'APIVersions']);
      const apis = await c.request('GET', '/apis', undefined, { Accept: accept });
      expect([accept, apis.status, apis.json?.kind]).toEqual([accept, 200, 'APIGroupList']);
      const gv = await c.request('GET', '/api/v1', undefined, { Accept: accept });
      expect([accept, gv.status, gv.json?.kind]).toEqual([accept, 200, 'APIResourceList']);
      const list = await c.request('GET', '/api/v1/namespaces', undefined, { Accept: accept });
      expect([accept, list.status, list.json?.kind]).toEqual([accept, 200, 'NamespaceList']);
    }
    // client-node's informer sends */*; typed clients send protobuf first.
    expect((await c.request('GET', '/api/v1/namespaces/default', undefined, { Accept: '*/*' })).status).toBe(200);
  });

  test('/api/v1 and /apis/apps/v1 list subresources, shortNames and categories', async () => {
    const core = expectStatus(await c.request('GET', '/api/v1'), 200).json;
    expect(core).toMatchObject({ kind: 'APIResourceList', groupVersion: 'v1' });
    const byName = new Map(core.resources.map((r: any) => [r.name, r]));
    expect(byName.get('pods')).toMatchObject({
      namespaced: true,
      kind: 'Pod',
      shortNames: ['po'],
      categories: ['all'],
      singularName: 'pod',
    });
    expect(byName.get('pods/status')).toMatchObject({ kind: 'Pod', singularName: '', verbs: ['get', 'patch', 'update'] });
    expect(byName.get('namespaces')).toMatchObject({ namespaced: false, shortNames: ['ns'] });
    expect(byName.has('namespaces/status')).toBe(true);
    expect(byName.has('namespaces/finalize')).toBe(true);
    const apps = expectStatus(await c.request('GET', '/apis/apps/v1'), 200).json;
    const appsByName = new Map(apps.resources.map((r: any) => [r.name, r]));
    expect(appsByName.get('deployments/scale')).toMatchObject({ group: 'autoscaling', version: 'v1', kind: 'Scale' });
    expect(appsByName.get('daemonsets')).toMatchObject({ shortNames: ['ds'], categories: ['all'] });
    // Unknown groups and versions are 404 with the generic message.
    const missing = await c.request('GET', '/apis/nope.example.com/v1');
    expect(missing.status).toBe(404);
    expect(missing.json).toMatchObject({
      kind: 'Status',
      reason: 'NotFound',
      message: 'the server could not find the requested resource',
    });
    expect((await c.request('GET', '/apis/apps/v7')).status).toBe(404);
  });
});

describe('CRD lifecycle and OpenAPI', () => {
  // One sequence: the CRD appears, its OpenAPI changes, then it is deleted.
  let openapiHashBefore = '';

  test('a new CRD is served in /apis and /apis/example.com/v1 within 1 s, and gets Established', async () => {
    expect((await c.request('GET', '/apis/example.com/v1')).status).toBe(404);
    const started = Date.now();
    expectStatus(await c.request('POST', CRD_PATH, widgetsCrd()), 201);
    await eventually(
      async () => {
        const apis = await c.request('GET', '/apis', undefined, { Accept: 'application/json' });
        const gv = await c.request('GET', '/apis/example.com/v1');
        return apis.json.groups.some((g: any) => g.name === 'example.com') && gv.status === 200;
      },
      1000,
      'example.com/v1 in discovery',
    );
    expect(Date.now() - started).toBeLessThan(1000);

    const gv = (await c.request('GET', '/apis/example.com/v1')).json;
    expect(gv.groupVersion).toBe('example.com/v1');
    const byName = new Map(gv.resources.map((r: any) => [r.name, r]));
    expect(byName.get('widgets')).toMatchObject({
      name: 'widgets',
      singularName: 'widget',
      namespaced: true,
      kind: 'Widget',
      shortNames: ['wg'],
      categories: ['all'],
    });
    expect((byName.get('widgets') as any).verbs).toEqual(
      expect.arrayContaining(['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']),
    );
    expect(byName.get('widgets/status')).toMatchObject({ kind: 'Widget', verbs: ['get', 'patch', 'update'] });
    expect(byName.get('widgets/scale')).toMatchObject({
      group: 'autoscaling',
      version: 'v1',
      kind: 'Scale',
      verbs: ['get', 'patch', 'update'],
    });

    // Aggregated discovery has it too, with its subresources.
    const agg = (await c.request('GET', '/apis', undefined, { Accept: KUBECTL_132_ACCEPT })).json;
    const g = agg.items.find((x: any) => x.metadata.name === 'example.com');
    const res = g.versions[0].resources.find((r: any) => r.resource === 'widgets');
    expect(res).toMatchObject({ scope: 'Namespaced', shortNames: ['wg'], categories: ['all'] });
    expect(res.subresources.map((s: any) => s.subresource).sort()).toEqual(['scale', 'status']);

    const crd = await eventually(
      async () => {
        const r = await c.request('GET', `${CRD_PATH}/widgets.example.com`);
        return r.json?.status?.conditions?.some((x: any) => x.type === 'Established' && x.status === 'True') ? r.json : undefined;
      },
      5000,
      'Established',
    );
    expect(crd.status.conditions).toEqual(
      expect.arrayContaining([expect.objectContaining({ type: 'NamesAccepted', status: 'True' })]),
    );
    expect(crd.status.acceptedNames).toMatchObject({ plural: 'widgets', kind: 'Widget' });
    expect(crd.status.storedVersions).toEqual(['v1']);
  });

  test('/openapi/v3 lists apis/example.com/v1; the GV document has PATCH with fieldValidation and a GVK schema', async () => {
    const index = expectStatus(await c.request('GET', '/openapi/v3'), 200).json;
    for (const p of ['api/v1', 'apis/apps/v1', 'apis/example.com/v1'])
      expect(index.paths[p]?.serverRelativeURL).toMatch(new RegExp(`^/openapi/v3/${p}\\?hash=[0-9A-F]+$`));
    openapiHashBefore = index.paths['apis/example.com/v1'].serverRelativeURL;

    const doc = expectStatus(await c.request('GET', index.paths['apis/example.com/v1'].serverRelativeURL), 200).json;
    expect(doc.openapi).toMatch(/^3\./);
    const item = doc.paths['/apis/example.com/v1/namespaces/{namespace}/widgets/{name}'];
    expect(item?.patch).toBeDefined();
    expect(item.patch['x-kubernetes-group-version-kind']).toEqual({ group: 'example.com', version: 'v1', kind: 'Widget' });
    expect(item.patch.parameters.map((p: any) => [p.name, p.in])).toEqual(expect.arrayContaining([['fieldValidation', 'query']]));
    const schemas = Object.values(doc.components.schemas) as any[];
    const widgetSchema = schemas.find((s) =>
      (s['x-kubernetes-group-version-kind'] ?? []).some(
        (g: any) => g.group === 'example.com' && g.version === 'v1' && g.kind === 'Widget',
      ),
    );
    expect(widgetSchema).toBeDefined();
    expect(widgetSchema.properties.spec.properties.size.enum).toEqual(['small', 'medium', 'large']);

    // The core document declares fieldValidation on PATCH for every built-in kind kubectl applies.
    const core = (await c.request('GET', index.paths['api/v1'].serverRelativeURL)).json;
    const cmPatch = core.paths['/api/v1/namespaces/{namespace}/configmaps/{name}'].patch;
    expect(cmPatch['x-kubernetes-group-version-kind']).toEqual({ group: '', version: 'v1', kind: 'ConfigMap' });
    expect(cmPatch.parameters.some((p: any) => p.name === 'fieldValidation')).toBe(true);
    expect(core.components).toBeDefined();
    // Unknown documents are 404; /openapi/v2 is 404 (kubectl falls back to v3).
    expect((await c.request('GET', '/openapi/v3/apis/nope.example.com/v1')).status).toBe(404);
    expect((await c.request('GET', '/openapi/v2')).status).toBe(404);
  });

  test("the GV hash changes when the CRD's schema changes, and the document follows", async () => {
    const op = {
      op: 'add',
      path: '/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/note',
      value: { type: 'string', description: 'added later' },
    };
    expectStatus(await c.request('PATCH', `${CRD_PATH}/widgets.example.com`, [op], JSON_PATCH), 200);
    const url = await eventually(
      async () => {
        const u = (await c.request('GET', '/openapi/v3')).json.paths['apis/example.com/v1'].serverRelativeURL;
        return u !== openapiHashBefore ? u : undefined;
      },
      2000,
      'a new hash',
    );
    const doc = (await c.request('GET', url)).json;
    const widgetSchema = (Object.values(doc.components.schemas) as any[]).find((s) =>
      (s['x-kubernetes-group-version-kind'] ?? []).some((g: any) => g.kind === 'Widget'),
    );
    expect(widgetSchema.properties.spec.properties.note).toMatchObject({ type: 'string' });
    // Other documents keep their hash.
    const again = (await c.request('GET', '/openapi/v3')).json.paths['apis/example.com/v1'].serverRelativeURL;
    expect(again).toBe(url);
    // The new field is now kept (not pruned) on writes.
    const w = expectStatus(
      await c.request('POST', '/apis/example.com/v1/namespaces/default/widgets', widget('noted', { size: 'small', note: 'hi' })),
      201,
    );
    expect(w.json.spec.note).toBe('hi');
  });

  test('deleting the CRD deletes its objects and removes its endpoints', async () => {
    expectStatus(await c.request('POST', '/apis/example.com/v1/namespaces/default/widgets', widget('doomed')), 201);
    expectStatus(await c.request('POST', '/apis/example.com/v1/namespaces/kube-public/widgets', widget('doomed-too')), 201);
    expect((await c.request('GET', '/apis/example.com/v1/widgets')).json.items.length).toBe(3);
    const del = await c.request('DELETE', `${CRD_PATH}/widgets.example.com`);
    expect(del.status).toBe(200);
    await eventually(async () => (await c.request('GET', `${CRD_PATH}/widgets.example.com`)).status === 404, 5000, 'CRD gone');
    expect(c.backend.count('/example.com/widgets/')).toBe(0);
    const gone = await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/doomed');
    expect(gone.status).toBe(404);
    expect(gone.json.message).toBe('the server could not find the requested resource');
    expect((await c.request('GET', '/apis/example.com/v1')).status).toBe(404);
    const apis = (await c.request('GET', '/apis', undefined, { Accept: 'application/json' })).json;
    expect(apis.groups.some((g: any) => g.name === 'example.com')).toBe(false);
    expect((await c.request('GET', '/openapi/v3')).json.paths['apis/example.com/v1']).toBeUndefined();

    // Recreated, it starts empty: the old objects did not survive.
    expectStatus(await c.request('POST', CRD_PATH, widgetsCrd()), 201);
    await eventually(async () => (await c.request('GET', '/apis/example.com/v1/widgets')).status === 200, 2000, 'served again');
    await sleep(50);
    expect((await c.request('GET', '/apis/example.com/v1/widgets')).json.items).toEqual([]);
  });
});
