import { PatchError, applyJsonPatch, applyMergePatch } from '../../../cluster/apiserver/patch';

function thrown(fn: () => unknown): PatchError {
  try {
    fn();
  } catch (e) {
    if (e instanceof PatchError) return e;
    throw e;
  }
  throw new Error('expected a PatchError');
}

describe('applyMergePatch (RFC 7386)', () => {
  const cm = () => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'c1', labels: { app: 'web', tier: 'fe' } },
    data: { a: '1', b: '2' },
  });

  it('deletes keys set to null and merges nested maps', () => {
    const out = applyMergePatch(cm(), { metadata: { labels: { tier: null, env: 'prod' } }, data: { b: null } });
    expect(out.metadata.labels).toEqual({ app: 'web', env: 'prod' });
    expect(out.data).toEqual({ a: '1' });
    expect(out.metadata.name).toBe('c1');
  });

  it('replaces arrays whole', () => {
    const out = applyMergePatch({ spec: { args: ['a', 'b', 'c'] } }, { spec: { args: ['z'] } });
    expect(out.spec.args).toEqual(['z']);
  });

  it('replaces a scalar with a map and drops nulls inside new maps', () => {
    const out = applyMergePatch({ spec: 'x' }, { spec: { a: 1, b: null } });
    expect(out).toEqual({ spec: { a: 1 } });
  });

  it('a non-object patch replaces the target', () => {
    expect(applyMergePatch({ a: 1 }, ['x'])).toEqual(['x']);
    expect(applyMergePatch({ a: 1 }, 'str')).toBe('str');
  });

  it('never mutates or aliases its inputs', () => {
    const target = cm();
    const patch = { metadata: { labels: { app: null } }, data: { c: { deep: true } } };
    const before = JSON.stringify([target, patch]);
    const out = applyMergePatch(target, patch);
    expect(JSON.stringify([target, patch])).toBe(before);
    out.data.a = 'changed';
    out.data.c.deep = false;
    expect(target.data.a).toBe('1');
    expect(patch.data.c.deep).toBe(true);
  });
});

describe('applyJsonPatch (RFC 6902)', () => {
  const obj = () => ({
    metadata: { name: 'c1', resourceVersion: '7', labels: { a: 'x' } },
    data: { k: 'v' },
    list: [1, 2],
  });

  it('applies add, replace, remove, move, copy and test in order', () => {
    const out = applyJsonPatch(obj(), [
      { op: 'test', path: '/data/k', value: 'v' },
      { op: 'add', path: '/data/n', value: 'new' },
      { op: 'replace', path: '/metadata/labels/a', value: 'y' },
      { op: 'remove', path: '/list/0' },
      { op: 'add', path: '/list/-', value: 3 },
      { op: 'copy', from: '/data/k', path: '/data/k2' },
      { op: 'move', from: '/data/n', path: '/data/moved' },
    ]);
    expect(out.data).toEqual({ k: 'v', k2: 'v', moved: 'new' });
    expect(out.metadata.labels.a).toBe('y');
    expect(out.list).toEqual([2, 3]);
  });

  it('rejects a body that is not an array with 400 BadRequest', () => {
    const err = thrown(() => applyJsonPatch(obj(), { metadata: { labels: { a: 'b' } } }));
    expect(err.code).toBe(400);
    expect(err.reason).toBe('BadRequest');
    expect(err.message).toBe('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  });

  it('rejects non-object operations with 400', () => {
    expect(thrown(() => applyJsonPatch(obj(), ['nope'])).code).toBe(400);
  });

  it('a failed test op gives 422 Invalid with the detail in causes', () => {
    const err = thrown(() => applyJsonPatch(obj(), [{ op: 'test', path: '/data/k', value: 'other' }]));
    expect(err.code).toBe(422);
    expect(err.reason).toBe('Invalid');
    expect(err.message).toBe('the server rejected our request due to an error in our request');
    expect(err.causes?.[0].message).toBe('testing value /data/k failed: test failed');
  });

  it('a failed test on /metadata/resourceVersion gives 409 Conflict', () => {
    const err = thrown(() =>
      applyJsonPatch(obj(), [
        { op: 'test', path: '/metadata/resourceVersion', value: '6' },
        { op: 'replace', path: '/metadata/managedFields', value: [] },
      ]),
    );
    expect(err.code).toBe(409);
    expect(err.reason).toBe('Conflict');
    expect(err.message).toMatch(/the object has been modified; please apply your changes to the latest version/);
  });

  it('a passing resourceVersion test lets the rest apply (kubectl managedFields upgrade)', () => {
    const mf = [{ manager: 'kubectl', operation: 'Apply', apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: {} }];
    const out = applyJsonPatch(obj(), [
      { op: 'test', path: '/metadata/resourceVersion', value: '7' },
      { op: 'add', path: '/metadata/managedFields', value: mf },
    ]);
    expect(out.metadata.managedFields).toEqual(mf);
  });

  it('operations on missing paths and unknown ops give 422', () => {
    expect(thrown(() => applyJsonPatch(obj(), [{ op: 'remove', path: '/data/missing' }])).code).toBe(422);
    expect(thrown(() => applyJsonPatch(obj(), [{ op: 'replace', path: '/nope/x', value: 1 }])).code).toBe(422);
    expect(thrown(() => applyJsonPatch(obj(), [{ op: 'frobnicate', path: '/data' }])).code).toBe(422);
  });

  it('never mutates the target, even when an operation fails halfway', () => {
    const target = obj();
    const ops = [
      { op: 'add', path: '/data/z', value: { nested: 1 } },
      { op: 'test', path: '/data/k', value: 'wrong' },
    ];
    const before = JSON.stringify([target, ops]);
    expect(() => applyJsonPatch(target, ops)).toThrow(PatchError);
    expect(JSON.stringify([target, ops])).toBe(before);

    const out = applyJsonPatch(target, [ops[0]]);
    out.data.z.nested = 2;
    expect(ops[0].value).toEqual({ nested: 1 });
    expect(target.data).toEqual({ k: 'v' });
  });
});
