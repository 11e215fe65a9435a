import * as https from 'node:https';
import { startTestCluster, TestCluster } from '../helpers/cluster';
import { installWidgets, cm, widget, expectStatus, makeNamespace, MERGE, JSON_PATCH } from '../helpers/watch';

/**
 * Object semantics, lists and bad input over real HTTPS, asserted against
 * kube-apiserver's behaviour (see /work/shared/research/k8s-api.md §2).
 */
let c: TestCluster;

beforeAll(async () => {
  c = await startTestCluster();
  await installWidgets(c);
}, 30_000);

afterAll(async () => {
  await c?.cleanup();
});

const CMS = '/api/v1/namespaces/default/configmaps';
const WIDGETS = '/apis/example.com/v1/namespaces/default/widgets';
const DEPLOYS = '/apis/apps/v1/namespaces/default/deployments';

function deployment(name: string, containers: any[] = [{ name: 'app', image: 'app:1' }]): any {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name },
    spec: {
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers } },
    },
  };
}

/** The newest revision, as every list reports it. */
async function currentRv(): Promise<number> {
  return Number((await c.request('GET', '/api/v1/namespaces/kube-system/configmaps')).json.metadata.resourceVersion);
}

describe('object metadata', () => {
  test('generateName, uid, creationTimestamp and resourceVersion are set by the server', async () => {
    const names = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const r = expectStatus(
        await c.request('POST', CMS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { generateName: 'gen-' } }),
        201,
      );
      const m = r.json.metadata;
      expect(m.name).toMatch(/^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
      expect(m.generateName).toBe('gen-');
      expect(m.uid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(m.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      expect(Math.abs(Date.parse(m.creationTimestamp) - Date.now())).toBeLessThan(5000);
      expect(m.resourceVersion).toMatch(/^[1-9]\d*$/);
      expect(m.namespace).toBe('default');
      names.add(m.name);
      // It is really stored under that name.
      expect((await c.request('GET', `${CMS}/${m.name}`)).json.metadata.uid).toBe(m.uid);
    }
    expect(names.size).toBe(5);
    // Client-supplied server fields are replaced.
    const forged = expectStatus(
      await c.request(
        'POST',
        CMS,
        cm('forged', { metadata: { uid: 'abc', resourceVersion: '999999', creationTimestamp: '2001-01-01T00:00:00Z' } }),
      ),
      201,
    ).json.metadata;
    expect(forged.uid).not.toBe('abc');
    expect(forged.creationTimestamp).not.toBe('2001-01-01T00:00:00Z');
    expect(Number(forged.resourceVersion)).toBeLessThan(999999);
    // managedFields: an entry per manager that owns something, never an empty list (omitempty upstream).
    const bare = expectStatus(await c.request('POST', CMS, cm('bare')), 201).json.metadata;
    expect(bare.managedFields === undefined || bare.managedFields.length > 0).toBe(true);
    expect((await c.request('GET', `${CMS}/bare`)).json.metadata.managedFields ?? ['absent']).not.toEqual([]);
    const withData = expectStatus(
      await c.request('POST', `${CMS}?fieldManager=tester`, cm('with-data', { data: { k: 'v' } })),
      201,
    ).json.metadata;
    expect(withData.managedFields).toEqual([
      expect.objectContaining({
        manager: 'tester',
        operation: 'Update',
        apiVersion: 'v1',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': expect.objectContaining({ 'f:k': {} }) },
      }),
    ]);
    // Neither name nor generateName → 422 naming metadata.name.
    const r = await c.request('POST', CMS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: {} });
    expect(r.status).toBe(422);
    expect(r.json.details.causes.map((x: any) => x.field)).toContain('metadata.name');
  });

  // Known gap in cluster/apiserver/patch (managed-fields): kube-apiserver records the map a
  // manager created as "." in its Update entry (`f:data: {".": {}, "f:k": {}}`, as
  // `kubectl get -o yaml --show-managed-fields` shows for any created ConfigMap); we omit it.
  // Marked failing so that the fix flips it: then make this a plain test.
  test.failing('managedFields of a create record "." for the maps the manager created', async () => {
    const r = await c.request('POST', `${CMS}?fieldManager=tester`, cm('dot-map', { data: { k: 'v' } }));
    expect(r.json.metadata.managedFields[0].fieldsV1).toEqual({ 'f:data': { '.': {}, 'f:k': {} } });
  });

  test('resourceVersions rise with every write, across kinds', async () => {
    const a = expectStatus(await c.request('POST', CMS, cm('rv-a')), 201).json;
    const w = expectStatus(await c.request('POST', WIDGETS, widget('rv-w')), 201).json;
    const b = expectStatus(await c.request('PATCH', `${CMS}/rv-a`, { data: { x: '1' } }, MERGE), 200).json;
    expect(Number(w.metadata.resourceVersion)).toBeGreaterThan(Number(a.metadata.resourceVersion));
    expect(Number(b.metadata.resourceVersion)).toBeGreaterThan(Number(w.metadata.resourceVersion));
    expect(await currentRv()).toBeGreaterThanOrEqual(Number(b.metadata.resourceVersion));
  });

  test('generation: 1 on create, bumped by spec changes only', async () => {
    const created = expectStatus(await c.request('POST', WIDGETS, widget('gen', { size: 'small' })), 201).json;
    expect(created.metadata.generation).toBe(1);
    // metadata-only change
    const labelled = expectStatus(
      await c.request('PATCH', `${WIDGETS}/gen`, { metadata: { labels: { a: 'b' } } }, MERGE),
      200,
    ).json;
    expect(labelled.metadata.labels).toEqual({ a: 'b' });
    expect(labelled.metadata.generation).toBe(1);
    expect(Number(labelled.metadata.resourceVersion)).toBeGreaterThan(Number(created.metadata.resourceVersion));
    // status change through /status
    const statused = expectStatus(
      await c.request('PATCH', `${WIDGETS}/gen/status`, { status: { replicas: 3 } }, MERGE),
      200,
    ).json;
    expect(statused.status).toEqual({ replicas: 3 });
    expect(statused.metadata.generation).toBe(1);
    // spec change
    const resized = expectStatus(await c.request('PATCH', `${WIDGETS}/gen`, { spec: { size: 'large' } }, MERGE), 200).json;
    expect(resized.metadata.generation).toBe(2);
    // spec change through PUT
    resized.spec.replicas = 4;
    const put = expectStatus(await c.request('PUT', `${WIDGETS}/gen`, resized), 200).json;
    expect(put.metadata.generation).toBe(3);
    // Deployments too; ConfigMaps have none.
    const d = expectStatus(await c.request('POST', DEPLOYS, deployment('gen-d')), 201).json;
    expect(d.metadata.generation).toBe(1);
    const d2 = expectStatus(
      await c.request('PATCH', `${DEPLOYS}/gen-d`, { metadata: { annotations: { x: 'y' } } }, MERGE),
      200,
    ).json;
    expect(d2.metadata.generation).toBe(1);
    const d3 = expectStatus(await c.request('PATCH', `${DEPLOYS}/gen-d`, { spec: { replicas: 3 } }, MERGE), 200).json;
    expect(d3.metadata.generation).toBe(2);
    const d4 = expectStatus(
      await c.request('PATCH', `${DEPLOYS}/gen-d/status`, { status: { replicas: 3, observedGeneration: 2 } }, MERGE),
      200,
    ).json;
    expect(d4.metadata.generation).toBe(2);
    expect((await c.request('GET', `${CMS}/rv-a`)).json.metadata.generation).toBeUndefined();
  });

  test('a write that changes nothing keeps the resourceVersion and creates no revision', async () => {
    const created = expectStatus(
      await c.request('POST', CMS, cm('same', { data: { a: '1' }, metadata: { labels: { x: 'y' } } })),
      201,
    ).json;
    const rv = created.metadata.resourceVersion;
    const before = await currentRv();
    const put = expectStatus(await c.request('PUT', `${CMS}/same`, created), 200).json;
    expect(put.metadata.resourceVersion).toBe(rv);
    const merge = expectStatus(
      await c.request('PATCH', `${CMS}/same`, { data: { a: '1' }, metadata: { labels: { x: 'y' } } }, MERGE),
      200,
    ).json;
    expect(merge.metadata.resourceVersion).toBe(rv);
    const jp = expectStatus(
      await c.request('PATCH', `${CMS}/same`, [{ op: 'replace', path: '/data/a', value: '1' }], JSON_PATCH),
      200,
    ).json;
    expect(jp.metadata.resourceVersion).toBe(rv);
    const w = expectStatus(await c.request('POST', WIDGETS, widget('same-w')), 201).json;
    const wput = expectStatus(await c.request('PUT', `${WIDGETS}/same-w`, w), 200).json;
    expect(wput.metadata.resourceVersion).toBe(w.metadata.resourceVersion);
    expect(wput.metadata.generation).toBe(1);
    expect(await currentRv()).toBe(before + 1); // only the widget's create
    // A real change does move it.
    const changed = expectStatus(await c.request('PATCH', `${CMS}/same`, { data: { a: '2' } }, MERGE), 200).json;
    expect(Number(changed.metadata.resourceVersion)).toBeGreaterThan(Number(rv));
  });

  test('PUT with a stale resourceVersion → 409 Conflict with upstream message', async () => {
    const v1 = expectStatus(await c.request('POST', CMS, cm('c1', { data: { a: '1' } })), 201).json;
    expectStatus(await c.request('PUT', `${CMS}/c1`, { ...v1, data: { a: '2' } }), 200);
    const stale = await c.request('PUT', `${CMS}/c1`, { ...v1, data: { a: '3' } });
    expect(stale.status).toBe(409);
    expect(stale.json).toMatchObject({
      kind: 'Status',
      status: 'Failure',
      reason: 'Conflict',
      code: 409,
      message:
        'Operation cannot be fulfilled on configmaps "c1": the object has been modified; please apply your changes to the latest version and try again',
      details: { name: 'c1', kind: 'configmaps' },
    });
    expect((await c.request('GET', `${CMS}/c1`)).json.data).toEqual({ a: '2' });
    // Grouped resources are qualified in the message.
    const w = expectStatus(await c.request('POST', WIDGETS, widget('c2')), 201).json;
    expectStatus(await c.request('PATCH', `${WIDGETS}/c2`, { spec: { size: 'medium' } }, MERGE), 200);
    const wstale = await c.request('PUT', `${WIDGETS}/c2`, { ...w, spec: { size: 'large' } });
    expect(wstale.status).toBe(409);
    expect(wstale.json.message).toBe(
      'Operation cannot be fulfilled on widgets.example.com "c2": the object has been modified; please apply your changes to the latest version and try again',
    );
    expect(wstale.json.details).toMatchObject({ name: 'c2', group: 'example.com', kind: 'widgets' });
    // A merge patch that pins a stale resourceVersion is a conflict as well.
    const pinned = await c.request(
      'PATCH',
      `${CMS}/c1`,
      { metadata: { resourceVersion: v1.metadata.resourceVersion }, data: { a: '9' } },
      MERGE,
    );
    expect(pinned.status).toBe(409);
    expect(pinned.json.reason).toBe('Conflict');
  });

  test('PUT without resourceVersion: unconditional for ConfigMaps, 422 for custom resources; PUT to a missing CR → 404', async () => {
    expectStatus(await c.request('POST', CMS, cm('uncond', { data: { a: '1' } })), 201);
    const ok = expectStatus(await c.request('PUT', `${CMS}/uncond`, cm('uncond', { data: { a: '2' } })), 200).json;
    expect(ok.data).toEqual({ a: '2' });

    expectStatus(await c.request('POST', WIDGETS, widget('norv')), 201);
    const r = await c.request('PUT', `${WIDGETS}/norv`, widget('norv', { size: 'large' }));
    expect(r.status).toBe(422);
    expect(r.json.reason).toBe('Invalid');
    expect(r.json.message).toContain('metadata.resourceVersion: Invalid value: 0x0: must be specified for an update');
    expect(r.json.details.causes).toEqual([expect.objectContaining({ field: 'metadata.resourceVersion' })]);
    expect((await c.request('GET', `${WIDGETS}/norv`)).json.spec.size).toBe('small');

    const missing = await c.request('PUT', `${WIDGETS}/absent`, {
      ...widget('absent'),
      metadata: { name: 'absent', resourceVersion: '5' },
    });
    expect(missing.status).toBe(404);
    expect(missing.json.message).toBe('widgets.example.com "absent" not found');
  });

  test('create: missing namespace → 404, namespace mismatch → 400, name taken → 409, invalid name → 422', async () => {
    const nons = await c.request('POST', '/api/v1/namespaces/x/configmaps', cm('a'));
    expect(nons.status).toBe(404);
    expect(nons.json).toMatchObject({
      reason: 'NotFound',
      message: 'namespaces "x" not found',
      details: { name: 'x', kind: 'namespaces' },
    });
    expect((await c.request('POST', '/apis/example.com/v1/namespaces/x/widgets', widget('a'))).json.message).toBe(
      'namespaces "x" not found',
    );

    const mismatch = await c.request('POST', CMS, cm('a', { metadata: { namespace: 'kube-system' } }));
    expect(mismatch.status).toBe(400);
    expect(mismatch.json.reason).toBe('BadRequest');
    expect(mismatch.json.message).toBe('the namespace of the provided object does not match the namespace sent on the request');
    expect((await c.request('GET', '/api/v1/namespaces/kube-system/configmaps/a')).status).toBe(404);
    // An empty namespace in the body is filled in from the URL.
    expect(expectStatus(await c.request('POST', CMS, cm('nsfill')), 201).json.metadata.namespace).toBe('default');

    expectStatus(await c.request('POST', CMS, cm('taken')), 201);
    const dup = await c.request('POST', CMS, cm('taken'));
    expect(dup.status).toBe(409);
    expect(dup.json).toMatchObject({ reason: 'AlreadyExists', message: 'configmaps "taken" already exists' });

    for (const bad of ['Bad_Name', 'UPPER', '-dash', 'a'.repeat(254)]) {
      const r = await c.request('POST', CMS, cm(bad));
      expect([bad, r.status]).toEqual([bad, 422]);
      expect(r.json.reason).toBe('Invalid');
      expect(r.json.message).toMatch(new RegExp(`^ConfigMap "${bad}" is invalid: metadata\\.name: Invalid value`));
      expect(r.json.details.causes).toEqual([expect.objectContaining({ reason: 'FieldValueInvalid', field: 'metadata.name' })]);
    }
    // Namespaces are DNS labels: dots are not allowed.
    const nsBad = await c.request('POST', '/api/v1/namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'a.b' },
    });
    expect(nsBad.status).toBe(422);
    expect(nsBad.json.details.causes[0].field).toBe('metadata.name');
    // Missing objects: the qualified resource in the message.
    const nf = await c.request('GET', `${DEPLOYS}/nope`);
    expect(nf.status).toBe(404);
    expect(nf.json).toMatchObject({
      reason: 'NotFound',
      message: 'deployments.apps "nope" not found',
      details: { name: 'nope', group: 'apps', kind: 'deployments' },
    });
  });

  test('dryRun=All create, update, patch and delete store nothing', async () => {
    const before = await currentRv();
    const created = await c.request('POST', `${CMS}?dryRun=All`, cm('dry', { data: { a: '1' } }));
    expect(created.status).toBe(201);
    expect(created.json.metadata.uid).toBeTruthy();
    expect(created.json.data).toEqual({ a: '1' });
    expect((await c.request('GET', `${CMS}/dry`)).status).toBe(404);
    // Widgets get defaults in a dry run, as they would for real.
    const wdry = expectStatus(await c.request('POST', `${WIDGETS}?dryRun=All`, widget('dry-w')), 201).json;
    expect(wdry.spec).toEqual({ size: 'small', replicas: 1, color: 'blue' });
    expect((await c.request('GET', `${WIDGETS}/dry-w`)).status).toBe(404);
    expect(await currentRv()).toBe(before);

    const real = expectStatus(await c.request('POST', CMS, cm('dry', { data: { a: '1' } })), 201).json;
    const patched = expectStatus(await c.request('PATCH', `${CMS}/dry?dryRun=All`, { data: { a: '2' } }, MERGE), 200).json;
    expect(patched.data).toEqual({ a: '2' });
    const put = expectStatus(await c.request('PUT', `${CMS}/dry?dryRun=All`, { ...real, data: { a: '3' } }), 200).json;
    expect(put.data).toEqual({ a: '3' });
    const del = expectStatus(await c.request('DELETE', `${CMS}/dry?dryRun=All`), 200);
    expect(del.json.metadata?.name ?? del.json.details?.name).toBe('dry');
    const delBody = expectStatus(await c.request('DELETE', `${CMS}/dry`, { dryRun: ['All'] }), 200);
    expect(delBody.status).toBe(200);
    const after = expectStatus(await c.request('GET', `${CMS}/dry`), 200).json;
    expect(after.data).toEqual({ a: '1' });
    expect(after.metadata.resourceVersion).toBe(real.metadata.resourceVersion);
    expect(after.metadata.deletionTimestamp).toBeUndefined();
    expect(await currentRv()).toBe(Number(real.metadata.resourceVersion));
    // An unknown dryRun value is a 400.
    expect((await c.request('POST', `${CMS}?dryRun=Some`, cm('dry2'))).status).toBe(400);
  });

  test('status subresource: dropped on create and on main-endpoint updates; /status ignores spec and metadata', async () => {
    const created = expectStatus(
      await c.request('POST', WIDGETS, widget('st', { size: 'small' }, { status: { replicas: 7 } })),
      201,
    ).json;
    expect(created.status).toBeUndefined();

    const withStatus = expectStatus(
      await c.request('PUT', `${WIDGETS}/st/status`, {
        ...created,
        spec: { size: 'large' },
        metadata: { ...created.metadata, labels: { sneaky: 'yes' } },
        status: { replicas: 2 },
      }),
      200,
    ).json;
    expect(withStatus.status).toEqual({ replicas: 2 });
    expect(withStatus.spec.size).toBe('small');
    expect(withStatus.metadata.labels).toBeUndefined();
    expect(withStatus.metadata.generation).toBe(1);

    // Main endpoint: a status change is ignored, the spec change is applied.
    const main = expectStatus(
      await c.request('PUT', `${WIDGETS}/st`, {
        ...withStatus,
        spec: { ...withStatus.spec, size: 'medium' },
        status: { replicas: 9 },
      }),
      200,
    ).json;
    expect(main.status).toEqual({ replicas: 2 });
    expect(main.spec.size).toBe('medium');
    expect(main.metadata.generation).toBe(2);
    // A status-only change on the main endpoint is a no-op.
    const noop = expectStatus(await c.request('PATCH', `${WIDGETS}/st`, { status: { replicas: 5 } }, MERGE), 200).json;
    expect(noop.status).toEqual({ replicas: 2 });
    expect(noop.metadata.resourceVersion).toBe(main.metadata.resourceVersion);
    // Stored state agrees.
    const got = (await c.request('GET', `${WIDGETS}/st`)).json;
    expect(got.status).toEqual({ replicas: 2 });
    expect(got.spec.size).toBe('medium');
    // Built-ins: a Deployment's status is dropped on create too.
    const d = expectStatus(await c.request('POST', DEPLOYS, { ...deployment('st-d'), status: { replicas: 4 } }), 201).json;
    expect(d.status).toBeUndefined();
    // A subresource the type does not have is 404.
    expect((await c.request('GET', `${CMS}/same/status`)).status).toBe(404);
  });

  test('the scale subresource reads and writes spec.replicas', async () => {
    expectStatus(await c.request('POST', WIDGETS, widget('sc', { size: 'small', replicas: 2 })), 201);
    const s = expectStatus(await c.request('GET', `${WIDGETS}/sc/scale`), 200).json;
    expect(s).toMatchObject({
      kind: 'Scale',
      apiVersion: 'autoscaling/v1',
      metadata: { name: 'sc', namespace: 'default' },
      spec: { replicas: 2 },
      status: { replicas: 0 },
    });
    const s2 = expectStatus(await c.request('PATCH', `${WIDGETS}/sc/scale`, { spec: { replicas: 5 } }, MERGE), 200).json;
    expect(s2.spec.replicas).toBe(5);
    const w = (await c.request('GET', `${WIDGETS}/sc`)).json;
    expect(w.spec.replicas).toBe(5);
    expect(w.metadata.generation).toBe(2);
  });
});

describe('lists', () => {
  const NS = 'lists';
  const L = `/api/v1/namespaces/${NS}/configmaps`;
  const labels: Record<string, Record<string, string>> = {
    a: { env: 'prod', tier: 'web' },
    b: { env: 'prod', tier: 'db' },
    c: { env: 'dev', tier: 'web' },
    d: { env: 'test' },
    e: { tier: 'cache' },
    f: {},
  };

  beforeAll(async () => {
    await makeNamespace(c, NS);
    for (const [name, l] of Object.entries(labels))
      expectStatus(await c.request('POST', L, cm(name, { metadata: { labels: l } })), 201);
  });

  async function names(query: string, base = L): Promise<string[]> {
    const r = expectStatus(await c.request('GET', `${base}?${query}`), 200);
    return r.json.items.map((i: any) => i.metadata.name).sort();
  }

  test('a list carries kind, apiVersion, the current resourceVersion, and items with apiVersion/kind', async () => {
    const r = expectStatus(await c.request('GET', L), 200).json;
    expect(r).toMatchObject({ kind: 'ConfigMapList', apiVersion: 'v1' });
    expect(Number(r.metadata.resourceVersion)).toBeGreaterThanOrEqual(
      Math.max(...r.items.map((i: any) => Number(i.metadata.resourceVersion))),
    );
    expect(r.items.every((i: any) => i.apiVersion === 'v1' && i.kind === 'ConfigMap')).toBe(true);
    expect(r.metadata.continue).toBeUndefined();
    // An empty list still has a resourceVersion.
    const empty = expectStatus(await c.request('GET', `${L}?labelSelector=nothing%3Dhere`), 200).json;
    expect(empty.items).toEqual([]);
    expect(empty.metadata.resourceVersion).toMatch(/^\d+$/);
  });

  test.each([
    ['env=prod', ['a', 'b']],
    ['env==prod', ['a', 'b']],
    ['env!=prod', ['c', 'd', 'e', 'f']],
    ['env in (dev,test)', ['c', 'd']],
    ['env notin (prod,dev)', ['d', 'e', 'f']],
    ['tier', ['a', 'b', 'c', 'e']],
    ['!tier', ['d', 'f']],
    ['env=prod,tier=web', ['a']],
    ['env,!tier', ['d']],
    ['tier in (web),env notin (dev)', ['a']],
  ])('labelSelector %s', async (sel, expected) => {
    expect(await names(`labelSelector=${encodeURIComponent(sel)}`)).toEqual(expected);
  });

  test('a malformed label selector → 400', async () => {
    const r = await c.request('GET', `${L}?labelSelector=${encodeURIComponent('env in (a')}`);
    expect(r.status).toBe(400);
    expect(r.json.reason).toBe('BadRequest');
  });

  test('field selectors: metadata.name and metadata.namespace; an unknown field → 400 naming the allowed ones', async () => {
    expect(await names('fieldSelector=metadata.name%3Db')).toEqual(['b']);
    expect(await names('fieldSelector=metadata.name%3D%3Db')).toEqual(['b']);
    expect(await names('fieldSelector=metadata.name!%3Db')).toEqual(['a', 'c', 'd', 'e', 'f']);
    expect(await names('fieldSelector=metadata.name%3Da,metadata.namespace%3Dlists')).toEqual(['a']);
    expect(await names(`fieldSelector=metadata.name%3Db&labelSelector=env%3Ddev`)).toEqual([]);
    // Across namespaces.
    expect(await names('fieldSelector=metadata.namespace%3Dlists', '/api/v1/configmaps')).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    const bad = await c.request('GET', `${L}?fieldSelector=spec.foo%3Dbar`);
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({
      kind: 'Status',
      reason: 'BadRequest',
      code: 400,
      message: '"spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace"',
    });
    // Custom resources too; the check happens even when nothing matches.
    expect((await c.request('GET', `/apis/example.com/v1/namespaces/${NS}/widgets?fieldSelector=spec.size%3Dsmall`)).status).toBe(
      400,
    );
    // Per-kind fields: pods know spec.nodeName.
    expect((await c.request('GET', `/api/v1/namespaces/${NS}/pods?fieldSelector=spec.nodeName%3Dn1`)).status).toBe(200);
  });

  test('limit/continue pages through 25 objects with remainingItemCount, no duplicates or misses', async () => {
    const ns = await makeNamespace(c, 'paging');
    const P = `/api/v1/namespaces/${ns}/configmaps`;
    const all: string[] = [];
    for (let i = 0; i < 25; i++) {
      const name = `p-${String(i).padStart(2, '0')}`;
      all.push(name);
      expectStatus(await c.request('POST', P, cm(name)), 201);
    }
    const seen: string[] = [];
    const remaining: (number | undefined)[] = [];
    const sizes: number[] = [];
    let token: string | undefined;
    let listRv: string | undefined;
    for (let page = 0; page < 10; page++) {
      const r = expectStatus(
        await c.request('GET', `${P}?limit=7${token ? `&continue=${encodeURIComponent(token)}` : ''}`),
        200,
      ).json;
      sizes.push(r.items.length);
      seen.push(...r.items.map((i: any) => i.metadata.name));
      remaining.push(r.metadata.remainingItemCount);
      if (listRv === undefined) listRv = r.metadata.resourceVersion;
      else expect(r.metadata.resourceVersion).toBe(listRv); // every page reports the first page's revision
      token = r.metadata.continue;
      if (!token) break;
    }
    expect(sizes).toEqual([7, 7, 7, 4]);
    expect(remaining).toEqual([18, 11, 4, undefined]);
    expect(seen).toEqual(all);
    expect(new Set(seen).size).toBe(25);

    // A label selector with paging counts only matches.
    const sel = expectStatus(await c.request('GET', `${L}?limit=1&labelSelector=env%3Dprod`), 200).json;
    expect(sel.items.map((i: any) => i.metadata.name)).toEqual(['a']);
    expect(sel.metadata.remainingItemCount).toBe(1);
    const sel2 = expectStatus(
      await c.request('GET', `${L}?limit=1&labelSelector=env%3Dprod&continue=${encodeURIComponent(sel.metadata.continue)}`),
      200,
    ).json;
    expect(sel2.items.map((i: any) => i.metadata.name)).toEqual(['b']);
    expect(sel2.metadata.continue).toBeUndefined();
  });

  test('continue with resourceVersion=5 → 400; a garbage continue token → 400', async () => {
    const first = expectStatus(await c.request('GET', `${L}?limit=2`), 200).json;
    expect(first.metadata.continue).toBeTruthy();
    const r = await c.request('GET', `${L}?limit=2&resourceVersion=5&continue=${encodeURIComponent(first.metadata.continue)}`);
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ kind: 'Status', reason: 'BadRequest', code: 400 });
    expect(r.json.message).toBe('specifying resource version is not allowed when using continue');
    const garbage = await c.request('GET', `${L}?limit=2&continue=not-a-token`);
    expect(garbage.status).toBe(400);
  });

  test('all-namespaces list returns objects of every namespace; a namespaced list only its own', async () => {
    const allCms = expectStatus(await c.request('GET', '/api/v1/configmaps'), 200).json;
    expect(allCms.kind).toBe('ConfigMapList');
    const namespaces = new Set(allCms.items.map((i: any) => i.metadata.namespace));
    expect(namespaces.has('default')).toBe(true);
    expect(namespaces.has('lists')).toBe(true);
    expect(namespaces.has('paging')).toBe(true);
    const own = expectStatus(await c.request('GET', L), 200).json;
    expect(own.items.every((i: any) => i.metadata.namespace === 'lists')).toBe(true);
    const allWidgets = expectStatus(await c.request('GET', '/apis/example.com/v1/widgets'), 200).json;
    expect(allWidgets.kind).toBe('WidgetList');
    expect(allWidgets.items.length).toBeGreaterThan(0);
    // POST to the all-namespaces collection of a namespaced type is not allowed.
    expect((await c.request('POST', '/api/v1/configmaps', cm('nowhere'))).status).toBe(405);
  });
});

describe('bad input', () => {
  test('malformed JSON → 400', async () => {
    for (const body of ['{"apiVersion": "v1", "kind": ', 'not json at all', '[1,2,3]', '"a string"', 'null']) {
      const r = await c.request('POST', CMS, body);
      expect([body, r.status]).toEqual([body, 400]);
      expect(r.json).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'BadRequest', code: 400 });
    }
    const put = await c.request('PUT', `${CMS}/whatever`, '{oops');
    expect(put.status).toBe(400);
    const mp = await c.request('PATCH', `${CMS}/whatever`, '{oops', MERGE);
    expect([400, 404]).toContain(mp.status);
  });

  test('wrong apiVersion or kind → 400', async () => {
    const av = await c.request('POST', CMS, { apiVersion: 'apps/v1', kind: 'ConfigMap', metadata: { name: 'wrong-av' } });
    expect(av.status).toBe(400);
    expect(av.json.reason).toBe('BadRequest');
    const kind = await c.request('POST', CMS, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'wrong-kind' } });
    expect(kind.status).toBe(400);
    expect(kind.json.reason).toBe('BadRequest');
    const wv = await c.request('POST', WIDGETS, { ...widget('wrong-v'), apiVersion: 'example.com/v2' });
    expect(wv.status).toBe(400);
    // Custom resources must carry apiVersion and kind.
    const bare = await c.request('POST', WIDGETS, { metadata: { name: 'bare' }, spec: { size: 'small' } });
    expect(bare.status).toBe(400);
    for (const n of ['wrong-av', 'wrong-kind']) expect((await c.request('GET', `${CMS}/${n}`)).status).toBe(404);
    expect((await c.request('GET', `${WIDGETS}/wrong-v`)).status).toBe(404);
  });

  test('schema violations → 422 with details.causes field paths', async () => {
    const r = await c.request('POST', WIDGETS, widget('invalid', { size: 'huge', replicas: 11, tags: 'not-a-list' }));
    expect(r.status).toBe(422);
    expect(r.json).toMatchObject({
      kind: 'Status',
      reason: 'Invalid',
      code: 422,
      details: { name: 'invalid', group: 'example.com', kind: 'Widget' },
    });
    expect(r.json.message).toMatch(/^Widget\.example\.com "invalid" is invalid: /);
    const fields = r.json.details.causes.map((x: any) => x.field).sort();
    expect(fields).toEqual(['spec.replicas', 'spec.size', 'spec.tags']);
    for (const cause of r.json.details.causes) expect(r.json.message).toContain(cause.field);
    const size = r.json.details.causes.find((x: any) => x.field === 'spec.size');
    expect(size.reason).toBe('FieldValueNotSupported');
    expect(size.message).toContain('"huge"');
    // A required field.
    const req = await c.request('POST', WIDGETS, widget('noreq', { replicas: 1 }));
    expect(req.status).toBe(422);
    expect(req.json.details.causes).toEqual([expect.objectContaining({ reason: 'FieldValueRequired', field: 'spec.size' })]);
    // The same rules on update.
    expectStatus(await c.request('POST', WIDGETS, widget('valid')), 201);
    const upd = await c.request('PATCH', `${WIDGETS}/valid`, { spec: { replicas: -1 } }, MERGE);
    expect(upd.status).toBe(422);
    expect(upd.json.details.causes.map((x: any) => x.field)).toEqual(['spec.replicas']);
    expect((await c.request('GET', `${WIDGETS}/valid`)).json.spec.replicas).toBe(1);
    expect((await c.request('GET', `${WIDGETS}/invalid`)).status).toBe(404);
    // Invalid labels are 422 on built-ins.
    const lbl = await c.request('POST', CMS, cm('badlabel', { metadata: { labels: { 'bad key!': 'v' } } }));
    expect(lbl.status).toBe(422);
    expect(lbl.json.details.causes[0].field).toBe('metadata.labels');
  });

  test('fieldValidation=Strict rejects unknown fields with 400; Warn answers with a Warning header', async () => {
    const strict = await c.request('POST', `${WIDGETS}?fieldValidation=Strict`, widget('strict', { size: 'small', bogus: 1 }));
    expect(strict.status).toBe(400);
    expect(strict.json.message).toContain('unknown field "spec.bogus"');
    const warn = expectStatus(
      await c.request('POST', `${WIDGETS}?fieldValidation=Warn`, widget('warn', { size: 'small', bogus: 1 })),
      201,
    );
    expect(String(warn.headers.warning)).toContain('unknown field \\"spec.bogus\\"');
    expect(warn.json.spec.bogus).toBeUndefined();
    const ignore = expectStatus(await c.request('POST', WIDGETS, widget('ignore', { size: 'small', bogus: 1 })), 201);
    expect(ignore.json.spec.bogus).toBeUndefined();
    expect(ignore.headers.warning).toBeUndefined();
  });

  test('bodies over 3 MiB → 413, with and without Content-Length', async () => {
    const big = JSON.stringify(cm('huge', { data: { a: 'x'.repeat(3 * 1024 * 1024 + 10) } }));
    const r = await c.request('POST', CMS, big);
    expect(r.status).toBe(413);
    expect(r.json).toMatchObject({ kind: 'Status', reason: 'RequestEntityTooLarge', code: 413 });
    // Chunked, so the size is only known while reading.
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(
        new URL(CMS, c.url),
        {
          method: 'POST',
          ca: c.caCert,
          headers: { Authorization: `Bearer ${c.token}`, 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
        },
        (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      const piece = 'x'.repeat(256 * 1024);
      req.write('{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"huge2"},"data":{"a":"');
      let i = 0;
      const pump = () => {
        while (i < 14) {
          i++;
          if (!req.write(piece)) return void req.once('drain', pump);
        }
        req.end('"}}');
      };
      pump();
    });
    expect(chunked.status).toBe(413);
    expect(JSON.parse(chunked.body).reason).toBe('RequestEntityTooLarge');
    for (const n of ['huge', 'huge2']) expect((await c.request('GET', `${CMS}/${n}`)).status).toBe(404);
    // Just under the limit is fine.
    const ok = await c.request('POST', CMS, cm('big-ok', { data: { a: 'y'.repeat(2 * 1024 * 1024) } }));
    expect(ok.status).toBe(201);
  });

  test('unknown paths → 404, wrong methods → 405, and the server still answers normally afterwards', async () => {
    expect((await c.request('GET', '/api/v1/namespaces/default/frobs')).status).toBe(404);
    expect((await c.request('GET', '/nothing/here')).status).toBe(404);
    expect((await c.request('PUT', CMS, cm('x'))).status).toBe(405);
    expect((await c.request('POST', `${CMS}/x`, cm('x'))).status).toBe(405);
    // After all the bad input above: normal service.
    const ns = expectStatus(await c.request('GET', '/api/v1/namespaces/default'), 200).json;
    expect(ns.status.phase).toBe('Active');
    expectStatus(await c.request('POST', CMS, cm('after-bad-input', { data: { ok: 'yes' } })), 201);
    expect((await c.request('GET', `${CMS}/after-bad-input`)).json.data).toEqual({ ok: 'yes' });
    expect((await c.request('GET', '/healthz')).text).toBe('ok');
  });
});

test('a new pod is Pending whatever status the client sent', async () => {
  const r = await c.request('POST', '/api/v1/namespaces/default/pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'pending-pod' },
    spec: { containers: [{ name: 'c', image: 'busybox' }] },
    status: { phase: 'Running' },
  });
  expect(r.status).toBe(201);
  expect(r.json.status.phase).toBe('Pending');
});
