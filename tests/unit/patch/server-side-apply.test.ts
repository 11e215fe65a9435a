import { ManagedFieldsEntry, PatchError, serverSideApply, updateManagedFields } from '../../../cluster/apiserver/patch';

const T0 = '2026-01-01T00:00:00Z';
const T1 = '2026-01-01T00:01:00Z';
const T2 = '2026-01-01T00:02:00Z';

function cm(data: Record<string, string>, labels?: Record<string, string>) {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'c1', namespace: 'default', ...(labels ? { labels } : {}) },
    data,
  };
}

function apply(live: any, applied: any, manager: string, opts: { force?: boolean; now?: string; schema?: any } = {}) {
  return serverSideApply({
    live,
    applied,
    manager,
    force: opts.force ?? false,
    apiVersion: applied.apiVersion,
    now: opts.now ?? T1,
    schema: opts.schema,
  });
}

function conflictOf(fn: () => unknown): PatchError {
  try {
    fn();
  } catch (e) {
    if (e instanceof PatchError) return e;
    throw e;
  }
  throw new Error('expected a conflict');
}

const mfOf = (obj: any): ManagedFieldsEntry[] => obj.metadata.managedFields ?? [];
const entryOf = (obj: any, manager: string) => mfOf(obj).find((e) => e.manager === manager);

describe('serverSideApply: create and ownership', () => {
  it('creates the object and records an Apply entry', () => {
    const out = apply(undefined, cm({ a: '1' }, { app: 'x' }), 'kubectl', { now: T0 });
    expect(out.data).toEqual({ a: '1' });
    expect(mfOf(out)).toEqual([
      {
        manager: 'kubectl',
        operation: 'Apply',
        apiVersion: 'v1',
        time: T0,
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': { 'f:a': {} }, 'f:metadata': { 'f:labels': { 'f:app': {} } } },
      },
    ]);
  });

  it('merges with fields set by others and leaves their values alone', () => {
    const live = apply(undefined, cm({ a: '1' }), 'alice', { now: T0 });
    const out = apply(live, cm({ b: '2' }), 'bob');
    expect(out.data).toEqual({ a: '1', b: '2' });
    expect(entryOf(out, 'alice')?.fieldsV1).toEqual({ 'f:data': { 'f:a': {} } });
    expect(entryOf(out, 'bob')?.fieldsV1).toEqual({ 'f:data': { 'f:b': {} } });
  });

  it('never mutates live or applied', () => {
    const live = apply(undefined, cm({ a: '1' }), 'alice', { now: T0 });
    const applied = cm({ a: '1', b: '2' }, { l: 'v' });
    const before = JSON.stringify([live, applied]);
    const out = apply(live, applied, 'bob');
    expect(JSON.stringify([live, applied])).toBe(before);
    out.data.a = 'x';
    expect(live.data.a).toBe('1');
  });

  it('rejects an applied object that carries managedFields', () => {
    const applied = { ...cm({}), metadata: { name: 'c1', managedFields: [{ manager: 'x', operation: 'Apply' }] } };
    const err = conflictOf(() => apply(undefined, applied, 'kubectl'));
    expect(err.code).toBe(400);
    expect(err.message).toBe('metadata.managedFields must be nil');
  });
});

describe('serverSideApply: conflicts', () => {
  it('conflicts with another applier on a differing value, in upstream message form', () => {
    const live = apply(undefined, cm({ a: '1' }), 'alice', { now: T0 });
    const err = conflictOf(() => apply(live, cm({ a: '2' }), 'bob'));
    expect(err.code).toBe(409);
    expect(err.reason).toBe('Conflict');
    expect(err.message).toBe('Apply failed with 1 conflict: conflict with "alice": .data.a');
    expect(err.causes).toEqual([{ reason: 'FieldManagerConflict', message: 'conflict with "alice"', field: '.data.a' }]);
  });

  it('names Update managers with their apiVersion', () => {
    const created = cm({ a: '1' });
    const live = {
      ...created,
      metadata: {
        ...created.metadata,
        managedFields: updateManagedFields({
          oldObj: undefined,
          newObj: created,
          manager: 'kubectl-client-side-apply',
          apiVersion: 'v1',
          now: T0,
        }),
      },
    };
    const err = conflictOf(() => apply(live, cm({ a: '2' }), 'kubectl'));
    expect(err.message).toBe('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.a');
    expect(err.causes?.[0]).toEqual({
      reason: 'FieldManagerConflict',
      message: 'conflict with "kubectl-client-side-apply" using v1',
      field: '.data.a',
    });
  });

  it('lists several conflicts grouped by manager', () => {
    let live = apply(undefined, cm({ a: '1', b: '1' }), 'alice', { now: T0 });
    live = apply(live, cm({ c: '1' }), 'carol', { now: T1 });
    const err = conflictOf(() => apply(live, cm({ a: '2', b: '2', c: '2' }), 'bob', { now: T2 }));
    expect(err.message).toBe(
      'Apply failed with 3 conflicts: conflict with "alice":\n- .data.a\n- .data.b\nconflict with "carol":\n- .data.c',
    );
    expect(err.causes?.map((c) => c.field)).toEqual(['.data.a', '.data.b', '.data.c']);
  });

  it('does not conflict when the applied value equals the live one; ownership is shared', () => {
    const live = apply(undefined, cm({ a: '1' }), 'alice', { now: T0 });
    const out = apply(live, cm({ a: '1' }), 'bob');
    expect(entryOf(out, 'alice')?.fieldsV1).toEqual({ 'f:data': { 'f:a': {} } });
    expect(entryOf(out, 'bob')?.fieldsV1).toEqual({ 'f:data': { 'f:a': {} } });
  });

  it('with force, takes over conflicting fields (and drops emptied entries)', () => {
    let live = apply(undefined, cm({ a: '1', b: '1' }), 'alice', { now: T0 });
    let out = apply(live, cm({ a: '2' }), 'bob', { force: true });
    expect(out.data).toEqual({ a: '2', b: '1' });
    expect(entryOf(out, 'alice')?.fieldsV1).toEqual({ 'f:data': { 'f:b': {} } });
    expect(entryOf(out, 'bob')?.fieldsV1).toEqual({ 'f:data': { 'f:a': {} } });

    live = apply(undefined, cm({ a: '1' }), 'alice', { now: T0 });
    out = apply(live, cm({ a: '2' }), 'bob', { force: true });
    expect(entryOf(out, 'alice')).toBeUndefined();
  });

  it('after losing a field, the previous owner re-applying the old value conflicts', () => {
    const live = apply(undefined, cm({ a: '1' }), 'alice', { now: T0 });
    const taken = apply(live, cm({ a: '2' }), 'bob', { force: true });
    const err = conflictOf(() => apply(taken, cm({ a: '1' }), 'alice', { now: T2 }));
    expect(err.message).toBe('Apply failed with 1 conflict: conflict with "bob": .data.a');
  });

  it('formats keyed list paths like upstream', () => {
    const dep = (image: string) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd' },
      spec: { template: { spec: { containers: [{ name: 'app', image }] } } },
    });
    const live = apply(undefined, dep('a:1'), 'alice', { now: T0 });
    const err = conflictOf(() => apply(live, dep('a:2'), 'bob'));
    expect(err.message).toBe(
      'Apply failed with 1 conflict: conflict with "alice": .spec.template.spec.containers[name="app"].image',
    );
  });

  it('conflicts on an atomic selector as a whole', () => {
    const dep = (sel: object) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd' },
      spec: { selector: { matchLabels: sel } },
    });
    const live = apply(undefined, dep({ app: 'a' }), 'kubectl-client-side-apply', { now: T0 });
    const err = conflictOf(() => apply(live, dep({ app: 'b' }), 'kubectl'));
    expect(err.causes?.[0].field).toBe('.spec.selector');
  });

  it('attributes pre-existing fields of an object without managedFields to "before-first-apply"', () => {
    const live = { ...cm({ a: '1' }), metadata: { name: 'c1', namespace: 'default', resourceVersion: '3' } };
    const err = conflictOf(() => apply(live, cm({ a: '2' }), 'kubectl'));
    expect(err.message).toBe('Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .data.a');
    const out = apply(live, cm({ b: '2' }), 'kubectl');
    expect(entryOf(out, 'before-first-apply')).toMatchObject({ operation: 'Update', fieldsV1: { 'f:data': { 'f:a': {} } } });
  });
});

describe('serverSideApply: removal of dropped fields', () => {
  it('removes a field the applier owned alone and no longer applies', () => {
    const live = apply(undefined, cm({ a: '1', b: '2' }, { keep: 'y', drop: 'z' }), 'kubectl', { now: T0 });
    const out = apply(live, cm({ a: '1' }, { keep: 'y' }), 'kubectl');
    expect(out.data).toEqual({ a: '1' });
    expect(out.metadata.labels).toEqual({ keep: 'y' });
    expect(entryOf(out, 'kubectl')?.fieldsV1).toEqual({
      'f:data': { 'f:a': {} },
      'f:metadata': { 'f:labels': { 'f:keep': {} } },
    });
  });

  it('removes containers that emptied out (named fields no longer applied)', () => {
    const live = apply(undefined, cm({ a: '1' }, { x: '1' }), 'kubectl', { now: T0 });
    const out = apply(live, { ...cm({ a: '1' }) }, 'kubectl');
    expect(out.metadata.labels).toBeUndefined();
    expect(out.metadata.name).toBe('c1');
  });

  it('keeps a dropped field that another manager also owns', () => {
    let live = apply(undefined, cm({ a: '1', b: '2' }), 'alice', { now: T0 });
    live = apply(live, cm({ b: '2' }), 'bob'); // shared ownership of b
    const out = apply(live, cm({ a: '1' }), 'alice', { now: T2 });
    expect(out.data).toEqual({ a: '1', b: '2' });
    expect(entryOf(out, 'bob')?.fieldsV1).toEqual({ 'f:data': { 'f:b': {} } });
  });

  it('keeps a dropped field that an Update manager took over', () => {
    const live = apply(undefined, cm({ a: '1', b: '2' }), 'kubectl', { now: T0 });
    const edited = { ...live, data: { a: '1', b: '3' } };
    const withEdit = {
      ...edited,
      metadata: {
        ...edited.metadata,
        managedFields: updateManagedFields({ oldObj: live, newObj: edited, manager: 'kubectl-edit', apiVersion: 'v1', now: T1 }),
      },
    };
    const out = apply(withEdit, cm({ a: '1' }), 'kubectl', { now: T2 });
    expect(out.data).toEqual({ a: '1', b: '3' });
  });

  it('never removes fields the applier did not own', () => {
    const live = apply(undefined, cm({ a: '1', b: '2' }), 'alice', { now: T0 });
    const out = apply(live, cm({ c: '3' }), 'bob');
    expect(out.data).toEqual({ a: '1', b: '2', c: '3' });
  });

  it('null in the applied config drops ownership and removes the field', () => {
    const live = apply(undefined, cm({ a: '1', b: '2' }), 'kubectl', { now: T0 });
    const out = apply(live, { ...cm({ a: '1' }), data: { a: '1', b: null } }, 'kubectl');
    expect(out.data).toEqual({ a: '1' });
  });
});

describe('serverSideApply: lists', () => {
  const deployment = (containers: object[], args?: string[]) => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web' },
    spec: { template: { spec: { containers: containers.map((c) => ({ ...c, ...(args ? { args } : {}) })) } } },
  });

  it('merges containers by name between managers and removes only the applier’s own item', () => {
    let live = apply(undefined, deployment([{ name: 'app', image: 'app:1' }]), 'team-a', { now: T0 });
    live = apply(live, deployment([{ name: 'sidecar', image: 'sc:1' }]), 'team-b');
    expect(live.spec.template.spec.containers.map((c: any) => c.name)).toEqual(['app', 'sidecar']);

    const out = apply(live, { ...deployment([]), spec: { template: { spec: { containers: [] } } } }, 'team-a', { now: T2 });
    expect(out.spec.template.spec.containers).toEqual([{ name: 'sidecar', image: 'sc:1' }]);
  });

  it('keeps a container item another manager owns fields of, removing only the dropped fields', () => {
    let live = apply(undefined, deployment([{ name: 'app', image: 'app:1', imagePullPolicy: 'Always' }]), 'team-a', { now: T0 });
    live = apply(live, deployment([{ name: 'app', resources: { limits: { cpu: '1' } } }]), 'team-b');
    const out = apply(live, { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web' } }, 'team-a', { now: T2 });
    expect(out.spec.template.spec.containers).toEqual([{ name: 'app', resources: { limits: { cpu: '1' } } }]);
  });

  it('keeps an item (with its key) when an Update manager owns one of its fields', () => {
    const live = apply(undefined, deployment([{ name: 'app', image: 'app:1', imagePullPolicy: 'Always' }]), 'team-a', {
      now: T0,
    });
    const edited = JSON.parse(JSON.stringify(live));
    edited.spec.template.spec.containers[0].image = 'app:2';
    edited.metadata.managedFields = updateManagedFields({
      oldObj: live,
      newObj: edited,
      manager: 'kubectl-set',
      apiVersion: 'apps/v1',
      now: T1,
    });
    const out = apply(edited, { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web' } }, 'team-a', { now: T2 });
    expect(out.spec.template.spec.containers).toEqual([{ name: 'app', image: 'app:2' }]);
    expect(entryOf(out, 'team-a')).toBeUndefined();
  });

  it('removes now-empty parents up to the top-level field', () => {
    const live = apply(undefined, deployment([{ name: 'app', image: 'app:1' }]), 'team-a', { now: T0 });
    const out = apply(
      live,
      { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web', labels: { a: 'b' } } },
      'team-a',
      { now: T2 },
    );
    expect(out.spec).toBeUndefined();
    expect(out.metadata.labels).toEqual({ a: 'b' });
  });

  it('replaces atomic lists whole and owns them as a leaf', () => {
    const live = apply(undefined, deployment([{ name: 'app' }], ['--a', '--b']), 'team-a', { now: T0 });
    const out = apply(live, deployment([{ name: 'app' }], ['--c']), 'team-a');
    expect(out.spec.template.spec.containers[0].args).toEqual(['--c']);
    expect(entryOf(out, 'team-a')?.fieldsV1['f:spec']['f:template']['f:spec']['f:containers']['k:{"name":"app"}']).toEqual({
      '.': {},
      'f:args': {},
      'f:name': {},
    });
  });

  it('uses a CRD schema: map lists merge by key, sets union, unmarked lists are atomic', () => {
    const schema = {
      type: 'object',
      properties: {
        spec: {
          type: 'object',
          properties: {
            disks: {
              type: 'array',
              'x-kubernetes-list-type': 'map',
              'x-kubernetes-list-map-keys': ['name'],
              items: { type: 'object' },
            },
            tags: { type: 'array', 'x-kubernetes-list-type': 'set', items: { type: 'string' } },
            cmd: { type: 'array', items: { type: 'string' } },
          },
        },
      },
    };
    const vm = (spec: object) => ({ apiVersion: 'kubevm.io/v1', kind: 'VirtualMachine', metadata: { name: 'vm' }, spec });
    let live = apply(undefined, vm({ disks: [{ name: 'root', size: 10 }], tags: ['a'], cmd: ['x'] }), 'alice', {
      now: T0,
      schema,
    });
    live = apply(live, vm({ disks: [{ name: 'data', size: 5 }], tags: ['b'] }), 'bob', { schema });
    expect(live.spec.disks).toEqual([
      { name: 'root', size: 10 },
      { name: 'data', size: 5 },
    ]);
    expect(live.spec.tags).toEqual(['a', 'b']);

    const err = conflictOf(() => apply(live, vm({ cmd: ['y'] }), 'bob', { schema, now: T2 }));
    expect(err.message).toBe('Apply failed with 1 conflict: conflict with "alice": .spec.cmd');

    const out = apply(live, vm({ disks: [{ name: 'root', size: 20 }], tags: ['a'], cmd: ['x'] }), 'alice', { schema, now: T2 });
    expect(out.spec.disks).toEqual([
      { name: 'root', size: 20 },
      { name: 'data', size: 5 },
    ]);
    expect(entryOf(out, 'bob')?.fieldsV1).toEqual({
      'f:spec': { 'f:disks': { 'k:{"name":"data"}': { '.': {}, 'f:name': {}, 'f:size': {} } }, 'f:tags': { 'v:"b"': {} } },
    });
  });

  it('keeps live-only items in place and shared items in applied order', () => {
    const schema = {
      type: 'object',
      properties: {
        spec: {
          type: 'object',
          properties: { items: { type: 'array', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['k'] } },
        },
      },
    };
    const obj = (items: object[]) => ({ apiVersion: 'x.io/v1', kind: 'X', metadata: { name: 'x' }, spec: { items } });
    let live = apply(undefined, obj([{ k: 'a' }, { k: 'b' }, { k: 'c' }]), 'one', { now: T0, schema });
    live = apply(live, obj([{ k: 'c' }, { k: 'a' }]), 'two', { schema });
    expect(live.spec.items.map((i: any) => i.k)).toEqual(['b', 'c', 'a']);
  });
});

describe('serverSideApply: managedFields bookkeeping', () => {
  it('re-applying the same config is a no-op: the live object comes back unchanged', () => {
    const live = apply(undefined, cm({ a: '1' }), 'kubectl', { now: T0 });
    const out = apply(live, cm({ a: '1' }), 'kubectl', { now: T2 });
    expect(out).toEqual(live);
    expect(mfOf(out)[0].time).toBe(T0);
  });

  it('re-applying with a changed value updates the value and the entry time', () => {
    const live = apply(undefined, cm({ a: '1' }), 'kubectl', { now: T0 });
    const out = apply(live, cm({ a: '2' }), 'kubectl', { now: T2 });
    expect(out.data).toEqual({ a: '2' });
    expect(mfOf(out)).toHaveLength(1);
    expect(mfOf(out)[0]).toMatchObject({ manager: 'kubectl', operation: 'Apply', time: T2 });
  });

  it('sorts Apply entries before Update entries', () => {
    const created = cm({ a: '1' });
    const live = {
      ...created,
      metadata: {
        ...created.metadata,
        managedFields: updateManagedFields({ oldObj: undefined, newObj: created, manager: 'creator', apiVersion: 'v1', now: T0 }),
      },
    };
    const out = apply(live, cm({ b: '1' }), 'kubectl', { now: T2 });
    expect(mfOf(out).map((e) => `${e.operation}:${e.manager}`)).toEqual(['Apply:kubectl', 'Update:creator']);
  });

  it('keeps a separate entry for a status subresource apply', () => {
    const live = apply(undefined, cm({ a: '1' }), 'ctl', { now: T0 });
    const out = serverSideApply({
      live,
      applied: { ...cm({}), status: { ready: true } },
      manager: 'ctl',
      force: false,
      apiVersion: 'v1',
      now: T1,
      subresource: 'status',
    });
    expect(mfOf(out)).toHaveLength(2);
    expect(mfOf(out).find((e) => e.subresource === 'status')?.fieldsV1).toEqual({ 'f:data': {}, 'f:status': { 'f:ready': {} } });
  });
});
