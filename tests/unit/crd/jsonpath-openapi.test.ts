import { evalJsonPath, openApiSchemaFor } from '../../../cluster/apiserver/crd';
import { makeCrd, specSchema } from './fixtures';

describe('evalJsonPath', () => {
  const obj = {
    metadata: { name: 'w', labels: { app: 'web', 'app.kubernetes.io/name': 'kv' }, annotations: { 'a.b/c': 'd' } },
    spec: { replicas: 3, zero: 0, off: false, none: null, ports: [{ name: 'http', port: 80 }, { name: 'dns', port: 53 }] },
    status: {
      conditions: [
        { type: 'Available', status: 'False' },
        { type: 'Ready', status: 'True', count: 2 },
      ],
    },
  };

  it.each([
    ['.spec.replicas', 3],
    ['spec.replicas', 3],
    ['{.spec.replicas}', 3],
    ['.metadata.labels.app', 'web'],
    ['.metadata.labels.app\\.kubernetes\\.io/name', 'kv'],
    [".metadata.annotations['a.b/c']", 'd'],
    ['.spec.ports[1].port', 53],
    ['.spec.ports[-1].name', 'dns'],
    ['.spec.ports[*].name', 'http'],
    ['.status.conditions[?(@.type=="Ready")].status', 'True'],
    [".status.conditions[?(@.type=='Available')].status", 'False'],
    ['.status.conditions[?(@.status!="False")].type', 'Ready'],
    ['.status.conditions[?(@.count>1)].type', 'Ready'],
    ['.status.conditions[?(@.count)].type', 'Ready'],
    ['.spec.zero', 0],
    ['.spec.off', false],
    ['.spec.none', null],
    ['.', obj],
  ])('%s', (p, want) => {
    expect(evalJsonPath(obj, p)).toEqual(want);
  });

  it.each(['.spec.missing', '.spec.replicas.deeper', '.spec.ports[5]', '.status.conditions[?(@.type=="Gone")].status', '.spec[', '.spec.ports[x]'])(
    '%s is undefined',
    (p) => {
      expect(evalJsonPath(obj, p)).toBeUndefined();
    },
  );

  it('handles missing intermediate objects and non-objects', () => {
    expect(evalJsonPath({}, '.status.replicas')).toBeUndefined();
    expect(evalJsonPath(null, '.a')).toBeUndefined();
    expect(evalJsonPath({ a: 'str' }, '.a.length')).toBeUndefined();
  });
});

describe('openApiSchemaFor', () => {
  const crd = makeCrd(
    {
      type: 'object',
      description: 'A widget.',
      properties: {
        metadata: { type: 'object' },
        spec: { type: 'object', properties: { replicas: { type: 'integer', 'x-kubernetes-list-type': undefined } } },
      },
    },
    {},
  );

  it('adds TypeMeta, ObjectMeta and the group-version-kind', () => {
    const s = openApiSchemaFor(crd, 'v1');
    expect(s['x-kubernetes-group-version-kind']).toEqual([{ group: 'example.com', version: 'v1', kind: 'Widget' }]);
    expect(s.type).toBe('object');
    expect(s.description).toBe('A widget.');
    expect(Object.keys(s.properties)).toEqual(['apiVersion', 'kind', 'metadata', 'spec']);
    expect(s.properties.apiVersion.type).toBe('string');
    expect(s.properties.kind.description).toMatch(/^Kind is a string value/);
    expect(s.properties.metadata.properties.labels).toEqual(expect.objectContaining({ type: 'object', additionalProperties: { type: 'string' } }));
    expect(s.properties.spec.properties.replicas.type).toBe('integer');
  });

  it('does not modify the CRD', () => {
    const before = JSON.stringify(crd);
    const s = openApiSchemaFor(crd, 'v1');
    s.properties.spec.type = 'changed';
    expect(JSON.stringify(crd)).toBe(before);
  });

  it('is per version', () => {
    const two = makeCrd(specSchema({ a: { type: 'string' } }));
    two.spec.versions.push({ name: 'v2', served: true, storage: false, schema: { openAPIV3Schema: specSchema({ b: { type: 'string' } }) } });
    expect(Object.keys(openApiSchemaFor(two, 'v2').properties.spec.properties)).toEqual(['b']);
    expect(openApiSchemaFor(two, 'v2')['x-kubernetes-group-version-kind'][0].version).toBe('v2');
  });
});

describe('evalJsonPath and inherited properties', () => {
  it('does not see Object.prototype members', () => {
    expect(evalJsonPath({ spec: {} }, '.spec.constructor')).toBeUndefined();
    expect(evalJsonPath({ spec: {} }, '.spec.toString')).toBeUndefined();
  });
});
