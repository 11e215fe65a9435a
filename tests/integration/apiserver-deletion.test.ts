import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { installWidgets, openWatch, cm, widget, expectStatus, makeNamespace, MERGE, JSON_PATCH } from '../helpers/watch';

/**
 * Deletion over real HTTPS: finalizers, ownerReference garbage collection with
 * each propagation policy, preconditions, namespace termination and the
 * protected namespaces (research/k8s-api.md §2.7).
 */
let c: TestCluster;

beforeAll(async () => {
  c = await startTestCluster();
  await installWidgets(c);
}, 30_000);

afterAll(async () => {
  await c?.cleanup();
});

const HOLD = 'example.com/hold';

async function exists(path: string): Promise<boolean> {
  const r = await c.request('GET', path);
  if (r.status !== 200 && r.status !== 404) throw new Error(`GET ${path}: ${r.status} ${r.text}`);
  return r.status === 200;
}

function ownerRef(owner: any, extra: any = {}): any {
  return { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.metadata.name, uid: owner.metadata.uid, ...extra };
}

describe('finalizers', () => {
  test('a finalizer holds the object: DELETE sets deletionTimestamp (MODIFIED); no new finalizers; removing the last one deletes it', async () => {
    const ns = await makeNamespace(c, 'fin');
    const P = `/api/v1/namespaces/${ns}/configmaps`;
    const created = expectStatus(
      await c.request('POST', P, cm('held', { metadata: { finalizers: [HOLD] }, data: { a: '1' } })),
      201,
    ).json;
    const w = await openWatch(c, `${P}?watch=true&resourceVersion=${created.metadata.resourceVersion}`);
    try {
      const del = await c.request('DELETE', `${P}/held`);
      expect(del.status).toBe(200);
      expect(del.json.kind).toBe('ConfigMap');
      expect(del.json.metadata.deletionTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      expect(del.json.metadata.deletionGracePeriodSeconds).toBe(0);
      expect(del.json.metadata.finalizers).toEqual([HOLD]);
      const [mod] = await w.waitFor(() => true);
      expect(mod.type).toBe('MODIFIED');
      expect(mod.object.metadata.deletionTimestamp).toBe(del.json.metadata.deletionTimestamp);
      // Still readable.
      const got = expectStatus(await c.request('GET', `${P}/held`), 200).json;
      expect(got.metadata.deletionTimestamp).toBe(del.json.metadata.deletionTimestamp);
      // A second DELETE changes nothing.
      const again = expectStatus(await c.request('DELETE', `${P}/held`), 200).json;
      expect(again.metadata.resourceVersion).toBe(got.metadata.resourceVersion);
      // Other changes are still allowed; the deletionTimestamp cannot be cleared.
      const upd = expectStatus(
        await c.request('PATCH', `${P}/held`, { data: { a: '2' }, metadata: { deletionTimestamp: null } }, MERGE),
        200,
      ).json;
      expect(upd.data).toEqual({ a: '2' });
      expect(upd.metadata.deletionTimestamp).toBe(del.json.metadata.deletionTimestamp);
      // New finalizers cannot be added while deleting.
      const add = await c.request('PATCH', `${P}/held`, { metadata: { finalizers: [HOLD, 'example.com/other'] } }, MERGE);
      expect(add.status).toBe(422);
      expect(add.json.reason).toBe('Invalid');
      expect(add.json.details.causes).toEqual([
        expect.objectContaining({ reason: 'FieldValueForbidden', field: 'metadata.finalizers' }),
      ]);
      expect(add.json.message).toContain('no new finalizers can be added if the object is being deleted');
      expect((await c.request('GET', `${P}/held`)).json.metadata.finalizers).toEqual([HOLD]);
      // Removing the last finalizer deletes it.
      const rm = expectStatus(
        await c.request('PATCH', `${P}/held`, [{ op: 'remove', path: '/metadata/finalizers' }], JSON_PATCH),
        200,
      );
      expect(rm.status).toBe(200);
      expect(await exists(`${P}/held`)).toBe(false);
      const evs = await w.waitFor((e) => e.type === 'DELETED');
      expect(evs[0].object.metadata.name).toBe('held');
      expect(w.events.map((e) => e.type)).toEqual(['MODIFIED', 'MODIFIED', 'DELETED']);
    } finally {
      w.close();
    }
  });

  test('custom resources with finalizers behave the same', async () => {
    const P = '/apis/example.com/v1/namespaces/default/widgets';
    expectStatus(await c.request('POST', P, widget('wfin', { size: 'small' }, { metadata: { finalizers: [HOLD] } })), 201);
    const del = expectStatus(await c.request('DELETE', `${P}/wfin`), 200).json;
    expect(del.metadata.deletionTimestamp).toBeTruthy();
    expect(await exists(`${P}/wfin`)).toBe(true);
    expectStatus(await c.request('PATCH', `${P}/wfin`, { metadata: { finalizers: null } }, MERGE), 200);
    expect(await exists(`${P}/wfin`)).toBe(false);
  });

  test('delete preconditions: a uid or resourceVersion mismatch → 409 and nothing is deleted', async () => {
    const P = '/api/v1/namespaces/default/configmaps';
    const obj = expectStatus(await c.request('POST', P, cm('pre', { data: { a: '1' } })), 201).json;
    const rvMismatch = await c.request('DELETE', `${P}/pre`, { preconditions: { resourceVersion: '1' } });
    expect(rvMismatch.status).toBe(409);
    expect(rvMismatch.json).toMatchObject({ reason: 'Conflict', code: 409 });
    expect(rvMismatch.json.message).toBe(
      `Operation cannot be fulfilled on configmaps "pre": Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: ${obj.metadata.resourceVersion}`,
    );
    const uidMismatch = await c.request('DELETE', `${P}/pre`, { preconditions: { uid: '00000000-0000-0000-0000-000000000000' } });
    expect(uidMismatch.status).toBe(409);
    expect(uidMismatch.json.message).toBe(
      `Operation cannot be fulfilled on configmaps "pre": Precondition failed: UID in precondition: 00000000-0000-0000-0000-000000000000, UID in object meta: ${obj.metadata.uid}`,
    );
    expect(await exists(`${P}/pre`)).toBe(true);
    // Matching preconditions delete.
    expectStatus(
      await c.request('DELETE', `${P}/pre`, {
        preconditions: { uid: obj.metadata.uid, resourceVersion: obj.metadata.resourceVersion },
      }),
      200,
    );
    expect(await exists(`${P}/pre`)).toBe(false);
    // Deleting what is not there is 404.
    const again = await c.request('DELETE', `${P}/pre`);
    expect(again.status).toBe(404);
    expect(again.json.message).toBe('configmaps "pre" not found');
  });
});

describe('ownerReference garbage collection', () => {
  const P = '/api/v1/namespaces/default/configmaps';

  async function family(prefix: string, depExtra: any = {}) {
    const owner = expectStatus(await c.request('POST', P, cm(`${prefix}-owner`)), 201).json;
    const dep = expectStatus(
      await c.request(
        'POST',
        P,
        cm(`${prefix}-dep`, {
          metadata: { ownerReferences: [ownerRef(owner, depExtra.ref ?? {})], ...(depExtra.metadata ?? {}) },
        }),
      ),
      201,
    ).json;
    // A custom resource owned by the ConfigMap too.
    const wdep = expectStatus(
      await c.request(
        'POST',
        '/apis/example.com/v1/namespaces/default/widgets',
        widget(`${prefix}-wdep`, { size: 'small' }, { metadata: { ownerReferences: [ownerRef(owner)] } }),
      ),
      201,
    ).json;
    return { owner, dep, wdep };
  }

  test('Background: the owner goes at once, its dependents are collected', async () => {
    const { owner } = await family('bg');
    // An object with another, living owner only loses the reference.
    const other = expectStatus(await c.request('POST', P, cm('bg-other')), 201).json;
    expectStatus(
      await c.request('POST', P, cm('bg-shared', { metadata: { ownerReferences: [ownerRef(owner), ownerRef(other)] } })),
      201,
    );
    const del = await c.request('DELETE', `${P}/bg-owner`, { propagationPolicy: 'Background' });
    expect(del.status).toBe(200);
    expect(await exists(`${P}/bg-owner`)).toBe(false);
    await eventually(async () => !(await exists(`${P}/bg-dep`)), 5000, 'dependent collected');
    await eventually(
      async () => !(await exists('/apis/example.com/v1/namespaces/default/widgets/bg-wdep')),
      5000,
      'widget collected',
    );
    const shared = await eventually(
      async () => {
        const s = (await c.request('GET', `${P}/bg-shared`)).json;
        return s.metadata.ownerReferences?.length === 1 ? s : undefined;
      },
      5000,
      'the dead owner reference dropped',
    );
    expect(shared.metadata.ownerReferences[0].uid).toBe(other.metadata.uid);
  });

  test('the default policy (no body) is Background too', async () => {
    await family('def');
    expectStatus(await c.request('DELETE', `${P}/def-owner`), 200);
    await eventually(async () => !(await exists(`${P}/def-dep`)), 5000, 'dependent collected');
  });

  test('Foreground: the owner waits (foregroundDeletion) until its dependents are gone', async () => {
    await family('fg', { ref: { blockOwnerDeletion: true }, metadata: { finalizers: [HOLD] } });
    const del = await c.request('DELETE', `${P}/fg-owner`, { propagationPolicy: 'Foreground' });
    // Upstream answers 202 only for the deprecated orphanDependents=false; a Foreground delete is 200.
    expect(del.status).toBe(200);
    expect(del.json.metadata.deletionTimestamp).toBeTruthy();
    expect(del.json.metadata.finalizers).toContain('foregroundDeletion');
    // The dependents are deleted; the held one waits for its finalizer.
    await eventually(
      async () => !(await exists('/apis/example.com/v1/namespaces/default/widgets/fg-wdep')),
      5000,
      'widget dependent deleted',
    );
    const dep = await eventually(
      async () => {
        const d = (await c.request('GET', `${P}/fg-dep`)).json;
        return d.metadata?.deletionTimestamp ? d : undefined;
      },
      5000,
      'dependent marked for deletion',
    );
    expect(dep.metadata.finalizers).toContain(HOLD);
    // The owner is still there while its blocking dependent exists.
    await new Promise((r) => setTimeout(r, 300));
    const owner = expectStatus(await c.request('GET', `${P}/fg-owner`), 200).json;
    expect(owner.metadata.finalizers).toContain('foregroundDeletion');
    // Release the dependent: then the owner goes.
    expectStatus(
      await c.request(
        'PATCH',
        `${P}/fg-dep`,
        { metadata: { finalizers: (dep.metadata.finalizers as string[]).filter((f) => f !== HOLD) } },
        MERGE,
      ),
      200,
    );
    await eventually(async () => !(await exists(`${P}/fg-dep`)), 5000, 'dependent gone');
    await eventually(async () => !(await exists(`${P}/fg-owner`)), 5000, 'owner gone');
  });

  test('Orphan: the owner goes, dependents keep living without the reference', async () => {
    const { owner } = await family('orph');
    const del = await c.request('DELETE', `${P}/orph-owner`, { propagationPolicy: 'Orphan' });
    expect(del.status).toBe(200);
    await eventually(async () => !(await exists(`${P}/orph-owner`)), 5000, 'owner gone');
    const dep = expectStatus(await c.request('GET', `${P}/orph-dep`), 200).json;
    expect(dep.metadata.ownerReferences).toBeUndefined();
    expect(dep.metadata.deletionTimestamp).toBeUndefined();
    const wdep = expectStatus(await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/orph-wdep'), 200).json;
    expect(wdep.metadata.ownerReferences ?? []).toEqual([]);
    // And they stay.
    await new Promise((r) => setTimeout(r, 300));
    expect(await exists(`${P}/orph-dep`)).toBe(true);
    expect(owner.metadata.uid).toBeTruthy();
  });

  test('a propagationPolicy that does not exist → 422', async () => {
    expectStatus(await c.request('POST', P, cm('badpol')), 201);
    const r = await c.request('DELETE', `${P}/badpol`, { propagationPolicy: 'Sideways' });
    expect(r.status).toBe(422);
    expect(await exists(`${P}/badpol`)).toBe(true);
  });
});

describe('namespaces', () => {
  test('termination: Terminating, creates refused with 403, then everything and the namespace are gone', async () => {
    const ns = await makeNamespace(c, 'doomed');
    await eventually(async () => exists(`/api/v1/namespaces/${ns}/serviceaccounts/default`), 5000, 'default ServiceAccount');
    for (const n of ['c1', 'c2']) expectStatus(await c.request('POST', `/api/v1/namespaces/${ns}/configmaps`, cm(n)), 201);
    const WP = `/apis/example.com/v1/namespaces/${ns}/widgets`;
    expectStatus(await c.request('POST', WP, widget('w1')), 201);
    // This one holds the termination until its finalizer is removed.
    expectStatus(await c.request('POST', WP, widget('w-held', { size: 'small' }, { metadata: { finalizers: [HOLD] } })), 201);

    const del = await c.request('DELETE', `/api/v1/namespaces/${ns}`);
    expect(del.status).toBe(200);
    expect(del.json.status.phase).toBe('Terminating');
    expect(del.json.metadata.deletionTimestamp).toBeTruthy();
    const got = expectStatus(await c.request('GET', `/api/v1/namespaces/${ns}`), 200).json;
    expect(got.status.phase).toBe('Terminating');

    const refused = await c.request('POST', `/api/v1/namespaces/${ns}/configmaps`, cm('late'));
    expect(refused.status).toBe(403);
    expect(refused.json).toMatchObject({ kind: 'Status', reason: 'Forbidden', code: 403 });
    expect(refused.json.message).toBe(
      `configmaps "late" is forbidden: unable to create new content in namespace ${ns} because it is being terminated`,
    );
    const wrefused = await c.request('POST', WP, widget('late'));
    expect(wrefused.status).toBe(403);
    expect(wrefused.json.message).toBe(
      `widgets.example.com "late" is forbidden: unable to create new content in namespace ${ns} because it is being terminated`,
    );

    // The content goes; the held widget waits with a deletionTimestamp, and so does the namespace.
    await eventually(
      async () =>
        !(await exists(`/api/v1/namespaces/${ns}/configmaps/c1`)) && !(await exists(`/api/v1/namespaces/${ns}/configmaps/c2`)),
      5000,
      'configmaps gone',
    );
    await eventually(async () => !(await exists(`${WP}/w1`)), 5000, 'w1 gone');
    const held = expectStatus(await c.request('GET', `${WP}/w-held`), 200).json;
    expect(held.metadata.deletionTimestamp).toBeTruthy();
    expect(await exists(`/api/v1/namespaces/${ns}`)).toBe(true);

    expectStatus(await c.request('PATCH', `${WP}/w-held`, { metadata: { finalizers: null } }, MERGE), 200);
    await eventually(async () => !(await exists(`/api/v1/namespaces/${ns}`)), 5000, 'namespace gone');
    expect((await c.request('GET', `/api/v1/namespaces/${ns}/configmaps`)).json.items).toEqual([]);
    expect((await c.request('GET', `/api/v1/namespaces/${ns}/serviceaccounts`)).json.items).toEqual([]);
    expect((await c.request('GET', WP)).json.items).toEqual([]);
    // Creating in it now: the namespace does not exist.
    const after = await c.request('POST', `/api/v1/namespaces/${ns}/configmaps`, cm('after'));
    expect(after.status).toBe(404);
    expect(after.json.message).toBe(`namespaces "${ns}" not found`);
  });

  test.each(['default', 'kube-system', 'kube-public'])('%s cannot be deleted (403)', async (name) => {
    const r = await c.request('DELETE', `/api/v1/namespaces/${name}`);
    expect(r.status).toBe(403);
    expect(r.json).toMatchObject({ kind: 'Status', reason: 'Forbidden', code: 403 });
    expect(r.json.message).toContain(`namespaces "${name}" is forbidden`);
    const ns = expectStatus(await c.request('GET', `/api/v1/namespaces/${name}`), 200).json;
    expect(ns.metadata.deletionTimestamp).toBeUndefined();
    expect(ns.status.phase).toBe('Active');
  });

  test('every new namespace gets a default ServiceAccount, phase Active and the kubernetes finalizer', async () => {
    const created = expectStatus(
      await c.request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'fresh' } }),
      201,
    ).json;
    expect(created.status.phase).toBe('Active');
    expect(created.spec.finalizers).toEqual(['kubernetes']);
    expect(created.metadata.labels['kubernetes.io/metadata.name']).toBe('fresh');
    const sa = await eventually(
      async () => {
        const r = await c.request('GET', '/api/v1/namespaces/fresh/serviceaccounts/default');
        return r.status === 200 ? r.json : undefined;
      },
      5000,
      'default ServiceAccount',
    );
    expect(sa).toMatchObject({ kind: 'ServiceAccount', metadata: { name: 'default', namespace: 'fresh' } });
    // Status and finalizers are the server's on create: Active, with "kubernetes" added.
    const forged = expectStatus(
      await c.request('POST', '/api/v1/namespaces', {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'forged' },
        spec: { finalizers: ['example.com/extra'] },
        status: { phase: 'Terminating' },
      }),
      201,
    ).json;
    expect(forged.status.phase).toBe('Active');
    expect(forged.spec.finalizers).toEqual(['example.com/extra', 'kubernetes']);
    expectStatus(await c.request('POST', '/api/v1/namespaces/forged/configmaps', cm('ok')), 201);
    // The built-in namespaces have one too.
    for (const n of ['default', 'kube-system', 'kube-public', 'kube-node-lease'])
      expect(await exists(`/api/v1/namespaces/${n}/serviceaccounts/default`)).toBe(true);
  });
});
