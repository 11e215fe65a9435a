import { startTestCluster, TestCluster } from '../helpers/cluster';
import { installWidgets, cm, widget, expectStatus, MERGE, JSON_PATCH, SMP, APPLY } from '../helpers/watch';

/**
 * PATCH over real HTTPS: JSON merge patch, JSON patch, strategic merge patch,
 * server-side apply, and the media-type rules (research/k8s-api.md §3).
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

describe('merge patch and JSON patch', () => {
  test('merge patch: maps merge, null deletes, arrays are replaced', async () => {
    expectStatus(await c.request('POST', CMS, cm('mp', { data: { a: '1', b: '2' }, metadata: { labels: { x: '1' } } })), 201);
    const r = expectStatus(
      await c.request('PATCH', `${CMS}/mp`, { data: { b: null, c: '3' }, metadata: { labels: { y: '2' } } }, MERGE),
      200,
    ).json;
    expect(r.data).toEqual({ a: '1', c: '3' });
    expect(r.metadata.labels).toEqual({ x: '1', y: '2' });
    expectStatus(await c.request('POST', WIDGETS, widget('mpw', { size: 'small', tags: ['a', 'b', 'c'] })), 201);
    const w = expectStatus(await c.request('PATCH', `${WIDGETS}/mpw`, { spec: { tags: ['z'] } }, MERGE), 200).json;
    expect(w.spec.tags).toEqual(['z']);
    expect(w.spec.size).toBe('small');
    // A patch to a missing object is 404.
    const missing = await c.request('PATCH', `${CMS}/nope`, { data: { a: '1' } }, MERGE);
    expect(missing.status).toBe(404);
    expect(missing.json.message).toBe('configmaps "nope" not found');
  });

  test('JSON patch: add, replace, remove, test', async () => {
    expectStatus(await c.request('POST', CMS, cm('jp', { data: { a: '1', b: '2' } })), 201);
    const r = expectStatus(
      await c.request(
        'PATCH',
        `${CMS}/jp`,
        [
          { op: 'test', path: '/data/a', value: '1' },
          { op: 'replace', path: '/data/a', value: 'one' },
          { op: 'remove', path: '/data/b' },
          { op: 'add', path: '/metadata/labels', value: { k: 'v' } },
        ],
        JSON_PATCH,
      ),
      200,
    ).json;
    expect(r.data).toEqual({ a: 'one' });
    expect(r.metadata.labels).toEqual({ k: 'v' });
    // A failed test on some other path is 422 and changes nothing.
    const failed = await c.request(
      'PATCH',
      `${CMS}/jp`,
      [
        { op: 'test', path: '/data/a', value: 'nope' },
        { op: 'remove', path: '/data/a' },
      ],
      JSON_PATCH,
    );
    expect(failed.status).toBe(422);
    expect((await c.request('GET', `${CMS}/jp`)).json.data).toEqual({ a: 'one' });
  });

  test('JSON patch with a non-array body → 400 (client-node sends this by default)', async () => {
    expectStatus(await c.request('POST', CMS, cm('jp-obj', { data: { a: '1' } })), 201);
    const r = await c.request('PATCH', `${CMS}/jp-obj`, { data: { a: '2' } }, JSON_PATCH);
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'BadRequest', code: 400 });
    const w = expectStatus(await c.request('POST', WIDGETS, widget('jp-w')), 201);
    expect(w.status).toBe(201);
    expect((await c.request('PATCH', `${WIDGETS}/jp-w`, { spec: { size: 'large' } }, JSON_PATCH)).status).toBe(400);
    expect((await c.request('GET', `${CMS}/jp-obj`)).json.data).toEqual({ a: '1' });
    // Not JSON at all.
    expect((await c.request('PATCH', `${CMS}/jp-obj`, '[{"op":', JSON_PATCH)).status).toBe(400);
  });

  test('a failed test of /metadata/resourceVersion → 409 Conflict (kubectl uses it as a precondition)', async () => {
    const v1 = expectStatus(await c.request('POST', CMS, cm('jp-rv', { data: { a: '1' } })), 201).json;
    expectStatus(await c.request('PATCH', `${CMS}/jp-rv`, { data: { a: '2' } }, MERGE), 200);
    const r = await c.request(
      'PATCH',
      `${CMS}/jp-rv`,
      [
        { op: 'test', path: '/metadata/resourceVersion', value: v1.metadata.resourceVersion },
        { op: 'replace', path: '/data/a', value: '3' },
      ],
      JSON_PATCH,
    );
    expect(r.status).toBe(409);
    expect(r.json).toMatchObject({
      reason: 'Conflict',
      code: 409,
      message:
        'Operation cannot be fulfilled on configmaps "jp-rv": the object has been modified; please apply your changes to the latest version and try again',
    });
    expect((await c.request('GET', `${CMS}/jp-rv`)).json.data).toEqual({ a: '2' });
    // With the current resourceVersion it goes through.
    const cur = (await c.request('GET', `${CMS}/jp-rv`)).json.metadata.resourceVersion;
    const ok = await c.request(
      'PATCH',
      `${CMS}/jp-rv`,
      [
        { op: 'test', path: '/metadata/resourceVersion', value: cur },
        { op: 'replace', path: '/data/a', value: '3' },
      ],
      JSON_PATCH,
    );
    expect(ok.status).toBe(200);
    expect(ok.json.data).toEqual({ a: '3' });
  });
});

describe('strategic merge patch and media types', () => {
  test('SMP on a Deployment merges containers by name and env by name', async () => {
    const d = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'smp' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'smp' } },
        template: {
          metadata: { labels: { app: 'smp' } },
          spec: {
            containers: [
              { name: 'a', image: 'a:1', env: [{ name: 'X', value: '1' }], args: ['--one', '--two'] },
              { name: 'b', image: 'b:1' },
            ],
          },
        },
      },
    };
    expectStatus(await c.request('POST', DEPLOYS, d), 201);
    const patch = {
      spec: {
        template: {
          spec: {
            containers: [
              { name: 'b', image: 'b:2' },
              { name: 'a', env: [{ name: 'Y', value: '2' }], args: ['--three'] },
            ],
          },
        },
      },
    };
    const r = expectStatus(await c.request('PATCH', `${DEPLOYS}/smp`, patch, SMP), 200).json;
    const containers = r.spec.template.spec.containers;
    expect(containers.map((x: any) => x.name).sort()).toEqual(['a', 'b']);
    const a = containers.find((x: any) => x.name === 'a');
    const b = containers.find((x: any) => x.name === 'b');
    expect(a.image).toBe('a:1');
    expect(a.env).toEqual(
      expect.arrayContaining([
        { name: 'X', value: '1' },
        { name: 'Y', value: '2' },
      ]),
    );
    expect(a.env).toHaveLength(2);
    expect(a.args).toEqual(['--three']); // not a merge list: replaced
    expect(b.image).toBe('b:2');
    expect(r.metadata.generation).toBe(2);
    // $patch: delete removes one container by its key; directives are never stored.
    const del = expectStatus(
      await c.request(
        'PATCH',
        `${DEPLOYS}/smp`,
        { spec: { template: { spec: { containers: [{ name: 'b', $patch: 'delete' }] } } } },
        SMP,
      ),
      200,
    ).json;
    expect(del.spec.template.spec.containers.map((x: any) => x.name)).toEqual(['a']);
    expect(JSON.stringify(del)).not.toContain('$patch');
    // SMP on a ConfigMap works as a merge.
    expectStatus(await c.request('POST', CMS, cm('smp-cm', { data: { a: '1' } })), 201);
    expect(expectStatus(await c.request('PATCH', `${CMS}/smp-cm`, { data: { b: '2' } }, SMP), 200).json.data).toEqual({
      a: '1',
      b: '2',
    });
  });

  test('SMP on a custom resource → 415 with the upstream message', async () => {
    expectStatus(await c.request('POST', WIDGETS, widget('smp-w')), 201);
    const r = await c.request('PATCH', `${WIDGETS}/smp-w`, { spec: { size: 'large' } }, SMP);
    expect(r.status).toBe(415);
    expect(r.json).toMatchObject({
      kind: 'Status',
      status: 'Failure',
      reason: 'UnsupportedMediaType',
      code: 415,
      message:
        'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml',
    });
    expect((await c.request('GET', `${WIDGETS}/smp-w`)).json.spec.size).toBe('small');
  });

  test('unsupported Content-Types → 415: protobuf on POST, text/plain on PATCH', async () => {
    const proto = await c.request('POST', CMS, Buffer.from([0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f]), {
      'Content-Type': 'application/vnd.kubernetes.protobuf',
    });
    expect(proto.status).toBe(415);
    expect(proto.json).toMatchObject({ kind: 'Status', reason: 'UnsupportedMediaType', code: 415 });
    expect(proto.json.message).toMatch(/^the body of the request was in an unknown format - accepted media types include: /);
    expect(proto.json.message).toContain('application/json');
    const text = await c.request('PATCH', `${CMS}/smp-cm`, 'data: {}', { 'Content-Type': 'text/plain' });
    expect(text.status).toBe(415);
    expect(text.json.reason).toBe('UnsupportedMediaType');
    // force is only for apply.
    const force = await c.request('PATCH', `${CMS}/smp-cm?force=true`, { data: { z: '1' } }, MERGE);
    expect(force.status).toBe(422);
    // YAML bodies are accepted on POST.
    const yaml = await c.request('POST', CMS, 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n', {
      'Content-Type': 'application/yaml',
    });
    expect(yaml.status).toBe(201);
    expect(yaml.json.data).toEqual({ k: 'v' });
  });
});

describe('server-side apply', () => {
  const applied = (data: Record<string, string>, labels?: Record<string, string>) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'ssa', ...(labels ? { labels } : {}) },
    data,
  });

  test('create with 201 and an Apply managedFields entry; re-applying the same config changes nothing', async () => {
    const r = await c.request('PATCH', `${CMS}/ssa?fieldManager=alice`, applied({ a: '1', b: '2' }), APPLY);
    expect(r.status).toBe(201);
    expect(r.json.data).toEqual({ a: '1', b: '2' });
    const entry = r.json.metadata.managedFields.find((m: any) => m.manager === 'alice');
    expect(entry).toMatchObject({ manager: 'alice', operation: 'Apply', apiVersion: 'v1', fieldsType: 'FieldsV1' });
    expect(entry.fieldsV1).toMatchObject({ 'f:data': { 'f:a': {}, 'f:b': {} } });
    const again = expectStatus(
      await c.request('PATCH', `${CMS}/ssa?fieldManager=alice`, applied({ a: '1', b: '2' }), APPLY),
      200,
    ).json;
    expect(again.metadata.resourceVersion).toBe(r.json.metadata.resourceVersion);
  });

  test("a second manager's conflicting apply → 409 naming the field; the object is unchanged", async () => {
    const r = await c.request('PATCH', `${CMS}/ssa?fieldManager=bob`, applied({ a: 'bob' }), APPLY);
    expect(r.status).toBe(409);
    expect(r.json).toMatchObject({ kind: 'Status', reason: 'Conflict', code: 409 });
    expect(r.json.message).toBe('Apply failed with 1 conflict: conflict with "alice": .data.a');
    expect(r.json.details.causes).toEqual([
      { reason: 'FieldManagerConflict', message: 'conflict with "alice"', field: '.data.a' },
    ]);
    expect((await c.request('GET', `${CMS}/ssa`)).json.data).toEqual({ a: '1', b: '2' });
    // Applying the same value as the owner is not a conflict (shared ownership).
    const shared = await c.request('PATCH', `${CMS}/ssa?fieldManager=carol`, applied({ b: '2' }), APPLY);
    expect(shared.status).toBe(200);
    expect(shared.json.metadata.managedFields.map((m: any) => m.manager).sort()).toEqual(['alice', 'carol']);
  });

  test('force=true takes the field over', async () => {
    const r = expectStatus(
      await c.request('PATCH', `${CMS}/ssa?fieldManager=bob&force=true`, applied({ a: 'bob' }), APPLY),
      200,
    ).json;
    expect(r.data).toEqual({ a: 'bob', b: '2' });
    const alice = r.metadata.managedFields.find((m: any) => m.manager === 'alice');
    const bob = r.metadata.managedFields.find((m: any) => m.manager === 'bob');
    expect(bob.fieldsV1['f:data']).toEqual({ 'f:a': {} });
    expect(alice.fieldsV1['f:data']['f:a']).toBeUndefined();
    expect(alice.fieldsV1['f:data']['f:b']).toEqual({});
  });

  test("a field dropped from a manager's next apply is removed (unless another manager owns it)", async () => {
    // alice stops applying b, but carol co-owns it: it stays.
    const r1 = expectStatus(await c.request('PATCH', `${CMS}/ssa?fieldManager=alice`, applied({ c: '3' }), APPLY), 200).json;
    expect(r1.data).toEqual({ a: 'bob', b: '2', c: '3' });
    // carol stops applying b too: now it goes.
    const r2 = expectStatus(
      await c.request('PATCH', `${CMS}/ssa?fieldManager=carol`, applied({}, { team: 'c' }), APPLY),
      200,
    ).json;
    expect(r2.data).toEqual({ a: 'bob', c: '3' });
    expect(r2.metadata.labels).toEqual({ team: 'c' });
    // alice drops c: removed.
    const r3 = expectStatus(await c.request('PATCH', `${CMS}/ssa?fieldManager=alice`, applied({ d: '4' }), APPLY), 200).json;
    expect(r3.data).toEqual({ a: 'bob', d: '4' });
    expect((await c.request('GET', `${CMS}/ssa`)).json.data).toEqual({ a: 'bob', d: '4' });
  });

  test('a non-apply update takes ownership; a later apply of that field conflicts with the updater', async () => {
    expectStatus(await c.request('PATCH', `${CMS}/ssa?fieldManager=editor`, { data: { d: 'edited' } }, MERGE), 200);
    const r = await c.request('PATCH', `${CMS}/ssa?fieldManager=alice`, applied({ d: '5' }), APPLY);
    expect(r.status).toBe(409);
    expect(r.json.details.causes).toEqual([
      expect.objectContaining({ field: '.data.d', message: 'conflict with "editor" using v1' }),
    ]);
  });

  test('apply rules: fieldManager required (422), apiVersion/kind must match (400), custom resources too', async () => {
    const noManager = await c.request('PATCH', `${CMS}/ssa2`, applied({ a: '1' }), APPLY);
    expect(noManager.status).toBe(422);
    expect(noManager.json.reason).toBe('Invalid');
    expect(noManager.json.details.causes).toEqual([expect.objectContaining({ field: 'fieldManager' })]);
    expect((await c.request('GET', `${CMS}/ssa2`)).status).toBe(404);
    const wrongKind = await c.request('PATCH', `${CMS}/ssa2?fieldManager=x`, { ...applied({ a: '1' }), kind: 'Secret' }, APPLY);
    expect(wrongKind.status).toBe(400);
    // On a custom resource, with schema defaults.
    const w = await c.request('PATCH', `${WIDGETS}/ssa-w?fieldManager=alice`, widget('ssa-w', { size: 'medium' }), APPLY);
    expect(w.status).toBe(201);
    expect(w.json.spec).toEqual({ size: 'medium', replicas: 1, color: 'blue' });
    const w2 = await c.request('PATCH', `${WIDGETS}/ssa-w?fieldManager=bob`, widget('ssa-w', { size: 'large' }), APPLY);
    expect(w2.status).toBe(409);
    expect(w2.json.details.causes.map((x: any) => x.field)).toEqual(['.spec.size']);
    // Schema violations still apply to apply.
    const bad = await c.request('PATCH', `${WIDGETS}/ssa-w?fieldManager=alice`, widget('ssa-w', { size: 'gigantic' }), APPLY);
    expect(bad.status).toBe(422);
  });
});
