import { ManagedFieldsEntry, updateManagedFields } from '../../../cluster/apiserver/patch';

const T0 = '2026-01-01T00:00:00Z';
const T1 = '2026-01-01T00:01:00Z';
const T2 = '2026-01-01T00:02:00Z';

function cm(data: Record<string, string>, labels: Record<string, string> = {}, managedFields?: ManagedFieldsEntry[]) {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: 'c1',
      namespace: 'default',
      uid: 'u',
      resourceVersion: '1',
      labels,
      ...(managedFields ? { managedFields } : {}),
    },
    data,
  };
}

const entry = (mf: ManagedFieldsEntry[], manager: string) => mf.find((e) => e.manager === manager);

describe('updateManagedFields', () => {
  it('on create gives the manager an Update entry for every field', () => {
    const mf = updateManagedFields({
      oldObj: undefined,
      newObj: cm({ a: '1' }, { app: 'x' }),
      manager: 'kubectl-create',
      apiVersion: 'v1',
      now: T0,
    });
    expect(mf).toEqual([
      {
        manager: 'kubectl-create',
        operation: 'Update',
        apiVersion: 'v1',
        time: T0,
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': { 'f:a': {} }, 'f:metadata': { 'f:labels': { 'f:app': {} } } },
      },
    ]);
  });

  it('on create of an object with no owned fields returns no entries', () => {
    const obj = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns' } };
    expect(updateManagedFields({ oldObj: undefined, newObj: obj, manager: 'm', apiVersion: 'v1', now: T0 })).toEqual([]);
  });

  it('moves changed fields to the updating manager and keeps untouched entries as they were', () => {
    const created = cm({ a: '1', b: '2' }, { app: 'x' });
    const mf0 = updateManagedFields({ oldObj: undefined, newObj: created, manager: 'creator', apiVersion: 'v1', now: T0 });
    const old = { ...created, metadata: { ...created.metadata, managedFields: mf0 } };
    const updated = { ...old, data: { a: '1', b: '3', c: '4' } };

    const mf1 = updateManagedFields({ oldObj: old, newObj: updated, manager: 'editor', apiVersion: 'v1', now: T1 });
    expect(entry(mf1, 'creator')?.fieldsV1).toEqual({ 'f:data': { 'f:a': {} }, 'f:metadata': { 'f:labels': { 'f:app': {} } } });
    expect(entry(mf1, 'creator')?.time).toBe(T0);
    expect(entry(mf1, 'editor')).toMatchObject({
      operation: 'Update',
      time: T1,
      fieldsV1: { 'f:data': { 'f:b': {}, 'f:c': {} } },
    });
    // Sorted by time: the older entry first.
    expect(mf1.map((e) => e.manager)).toEqual(['creator', 'editor']);
  });

  it('removed fields leave every entry, and entries that become empty are dropped', () => {
    const old = cm({ a: '1' }, {}, [
      {
        manager: 'x',
        operation: 'Update',
        apiVersion: 'v1',
        time: T0,
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': { 'f:a': {} } },
      },
    ]);
    const { data: _dropped, ...withoutData } = cm({});
    const mf = updateManagedFields({ oldObj: old, newObj: withoutData, manager: 'y', apiVersion: 'v1', now: T1 });
    expect(mf).toEqual([]);
    // An emptied map, by contrast, is a value the writer now owns.
    const emptied = updateManagedFields({ oldObj: old, newObj: cm({}), manager: 'y', apiVersion: 'v1', now: T1 });
    expect(emptied).toEqual([expect.objectContaining({ manager: 'y', fieldsV1: { 'f:data': {} } })]);
  });

  it('a write that changes nothing leaves managedFields exactly as they were', () => {
    const mf0: ManagedFieldsEntry[] = [
      {
        manager: 'x',
        operation: 'Update',
        apiVersion: 'v1',
        time: T0,
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': { 'f:a': {} } },
      },
    ];
    const old = cm({ a: '1' }, {}, mf0);
    const mf = updateManagedFields({ oldObj: old, newObj: cm({ a: '1' }, {}, mf0), manager: 'y', apiVersion: 'v1', now: T2 });
    expect(mf).toEqual(mf0);
  });

  it('extends the same manager’s entry and refreshes its time', () => {
    const mf0 = updateManagedFields({ oldObj: undefined, newObj: cm({ a: '1' }), manager: 'ctl', apiVersion: 'v1', now: T0 });
    const old = cm({ a: '1' }, {}, mf0);
    const mf = updateManagedFields({ oldObj: old, newObj: cm({ a: '1', b: '2' }), manager: 'ctl', apiVersion: 'v1', now: T1 });
    expect(mf).toHaveLength(1);
    expect(mf[0]).toMatchObject({ time: T1, fieldsV1: { 'f:data': { 'f:a': {}, 'f:b': {} } } });
  });

  it('keeps separate Update entries per apiVersion and per subresource', () => {
    const mf0 = updateManagedFields({ oldObj: undefined, newObj: cm({ a: '1' }), manager: 'ctl', apiVersion: 'v1', now: T0 });
    const old = cm({ a: '1' }, {}, mf0);
    const status = { ...cm({ a: '1' }, {}, mf0), status: { phase: 'Ready' } };
    const mf = updateManagedFields({
      oldObj: old,
      newObj: status,
      manager: 'ctl',
      apiVersion: 'v1',
      now: T1,
      subresource: 'status',
    });
    expect(mf).toHaveLength(2);
    expect(mf[1]).toMatchObject({ manager: 'ctl', subresource: 'status', fieldsV1: { 'f:status': { 'f:phase': {} } } });
    expect(mf[0].subresource).toBeUndefined();
  });

  it('honours managedFields the client set explicitly (kubectl CSA → SSA upgrade)', () => {
    const csa: ManagedFieldsEntry[] = [
      {
        manager: 'kubectl-client-side-apply',
        operation: 'Update',
        apiVersion: 'v1',
        time: T0,
        fieldsType: 'FieldsV1',
        fieldsV1: {
          'f:data': { 'f:a': {} },
          'f:metadata': { 'f:annotations': { 'f:kubectl.kubernetes.io/last-applied-configuration': {} } },
        },
      },
    ];
    const upgraded: ManagedFieldsEntry[] = [
      { manager: 'kubectl', operation: 'Apply', apiVersion: 'v1', time: T0, fieldsType: 'FieldsV1', fieldsV1: csa[0].fieldsV1 },
    ];
    const old = cm({ a: '1' }, {}, csa);
    const mf = updateManagedFields({
      oldObj: old,
      newObj: cm({ a: '1' }, {}, upgraded),
      manager: 'kubectl',
      apiVersion: 'v1',
      now: T1,
    });
    expect(mf).toEqual(upgraded);
  });

  it('[{}] strips all managedFields', () => {
    const old = cm({ a: '1' }, {}, [
      {
        manager: 'x',
        operation: 'Update',
        apiVersion: 'v1',
        time: T0,
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': { 'f:a': {} } },
      },
    ]);
    const newObj = { ...old, metadata: { ...old.metadata, managedFields: [{}] } };
    expect(updateManagedFields({ oldObj: old, newObj, manager: 'kubectl-patch', apiVersion: 'v1', now: T1 })).toEqual([]);
  });

  it('ignores managedFields sent on a subresource write, and invalid ones anywhere', () => {
    const mf0: ManagedFieldsEntry[] = [
      {
        manager: 'x',
        operation: 'Update',
        apiVersion: 'v1',
        time: T0,
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': { 'f:a': {} } },
      },
    ];
    const old = cm({ a: '1' }, {}, mf0);
    const sneaky = cm({ a: '1' }, {}, [{ ...mf0[0], manager: 'y' }]);
    expect(
      updateManagedFields({ oldObj: old, newObj: sneaky, manager: 'z', apiVersion: 'v1', now: T1, subresource: 'status' }),
    ).toEqual(mf0);
    const invalid = { ...old, metadata: { ...old.metadata, managedFields: [{ manager: 'y', operation: 'Bogus' }] } };
    expect(updateManagedFields({ oldObj: old, newObj: invalid, manager: 'z', apiVersion: 'v1', now: T1 })).toEqual(mf0);
  });

  it('tracks containers by name for built-ins and moves a changed image between managers', () => {
    const dep = (image: string) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd' },
      spec: { template: { spec: { containers: [{ name: 'app', image }] } } },
    });
    const mf0 = updateManagedFields({
      oldObj: undefined,
      newObj: dep('a:1'),
      manager: 'creator',
      apiVersion: 'apps/v1',
      now: T0,
    });
    const old = { ...dep('a:1'), metadata: { name: 'd', managedFields: mf0 } };
    const mf = updateManagedFields({ oldObj: old, newObj: dep('a:2'), manager: 'kubectl-set', apiVersion: 'apps/v1', now: T1 });
    const item = 'k:{"name":"app"}';
    expect(entry(mf, 'creator')?.fieldsV1).toEqual({
      'f:spec': { 'f:template': { 'f:spec': { 'f:containers': { [item]: { '.': {}, 'f:name': {} } } } } },
    });
    expect(entry(mf, 'kubectl-set')?.fieldsV1).toEqual({
      'f:spec': { 'f:template': { 'f:spec': { 'f:containers': { [item]: { 'f:image': {} } } } } },
    });
  });

  it('does not mutate its inputs', () => {
    const old = cm({ a: '1' });
    const next = cm({ a: '2' });
    const before = JSON.stringify([old, next]);
    updateManagedFields({ oldObj: old, newObj: next, manager: 'm', apiVersion: 'v1', now: T0 });
    expect(JSON.stringify([old, next])).toBe(before);
  });
});
