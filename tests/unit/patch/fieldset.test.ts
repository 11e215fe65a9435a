import { builtinSchema, fieldSetOf, fieldsV1Paths } from '../../../cluster/apiserver/patch';

describe('fieldSetOf', () => {
  it('produces upstream FieldsV1 for a Pod (map-list items keyed, "." for the item itself)', () => {
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p', namespace: 'default', labels: { app: 'web' } },
      spec: { containers: [{ name: 'c', image: 'nginx' }] },
    };
    expect(fieldSetOf(pod)).toEqual({
      'f:metadata': { 'f:labels': { 'f:app': {} } },
      'f:spec': { 'f:containers': { 'k:{"name":"c"}': { '.': {}, 'f:image': {}, 'f:name': {} } } },
    });
    // Serialized like upstream: '.' first, then tokens in order.
    expect(JSON.stringify(fieldSetOf(pod)['f:spec'])).toBe(
      '{"f:containers":{"k:{\\"name\\":\\"c\\"}":{".":{},"f:image":{},"f:name":{}}}}',
    );
  });

  it('ignores apiVersion, kind and server-managed metadata', () => {
    const obj = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: 'c',
        namespace: 'ns',
        uid: 'u',
        resourceVersion: '5',
        generation: 2,
        creationTimestamp: '2026-01-01T00:00:00Z',
        selfLink: '/x',
        managedFields: [{ manager: 'm' }],
      },
      data: { k: 'v' },
    };
    expect(fieldSetOf(obj)).toEqual({ 'f:data': { 'f:k': {} } });
  });

  it('treats finalizers as a set, ownerReferences as a map list by uid, and other lists as atomic', () => {
    const obj = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd', finalizers: ['a/b', 'c'], ownerReferences: [{ uid: 'u1', kind: 'X', name: 'x' }] },
      spec: {
        selector: { matchLabels: { app: 'd' } },
        template: {
          spec: {
            containers: [{ name: 'c', args: ['--a', '--b'], ports: [{ containerPort: 80 }] }],
            tolerations: [{ key: 'k' }],
          },
        },
      },
    };
    expect(fieldSetOf(obj)).toEqual({
      'f:metadata': {
        'f:finalizers': { 'v:"a/b"': {}, 'v:"c"': {} },
        'f:ownerReferences': { 'k:{"uid":"u1"}': { '.': {}, 'f:kind': {}, 'f:name': {}, 'f:uid': {} } },
      },
      'f:spec': {
        // LabelSelector is an atomic struct upstream.
        'f:selector': {},
        'f:template': {
          'f:spec': {
            'f:containers': {
              'k:{"name":"c"}': {
                '.': {},
                'f:args': {},
                'f:name': {},
                'f:ports': { 'k:{"containerPort":80}': { '.': {}, 'f:containerPort': {} } },
              },
            },
            'f:tolerations': {},
          },
        },
      },
    });
  });

  it('records empty maps and nulls as owned leaves', () => {
    const obj = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { securityContext: {}, hostname: null } };
    expect(fieldSetOf(obj)).toEqual({ 'f:spec': { 'f:hostname': {}, 'f:securityContext': {} } });
  });

  it('follows CRD schema list markers; lists without markers are atomic', () => {
    const schema = {
      type: 'object',
      properties: {
        spec: {
          type: 'object',
          properties: {
            disks: {
              type: 'array',
              'x-kubernetes-list-type': 'map',
              'x-kubernetes-list-map-keys': ['bus', 'name'],
              items: { type: 'object', properties: { name: { type: 'string' }, bus: { type: 'string' } } },
            },
            tags: { type: 'array', 'x-kubernetes-list-type': 'set', items: { type: 'string' } },
            cmd: { type: 'array', items: { type: 'string' } },
            limits: { type: 'object', 'x-kubernetes-map-type': 'atomic' },
          },
        },
      },
    };
    const vm = {
      apiVersion: 'kubevm.io/v1',
      kind: 'VirtualMachine',
      metadata: { name: 'vm', finalizers: ['f'] },
      spec: { disks: [{ name: 'root', bus: 'virtio' }], tags: ['x'], cmd: ['a'], limits: { cpu: 1 } },
    };
    expect(fieldSetOf(vm, schema)).toEqual({
      'f:metadata': { 'f:finalizers': { 'v:"f"': {} } },
      'f:spec': {
        'f:cmd': {},
        'f:disks': { 'k:{"bus":"virtio","name":"root"}': { '.': {}, 'f:bus': {}, 'f:name': {} } },
        'f:limits': {},
        'f:tags': { 'v:"x"': {} },
      },
    });
  });

  it('falls back to atomic for map lists whose items repeat a key', () => {
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [{ name: 'a' }, { name: 'a' }] } };
    expect(fieldSetOf(pod)).toEqual({ 'f:spec': { 'f:containers': {} } });
  });

  it('round-trips through fieldsV1Paths', () => {
    const fields = { 'f:spec': { 'f:containers': { 'k:{"name":"c"}': { '.': {}, 'f:image': {} } } } };
    expect(fieldsV1Paths(fields)).toEqual([
      ['f:spec', 'f:containers', 'k:{"name":"c"}'],
      ['f:spec', 'f:containers', 'k:{"name":"c"}', 'f:image'],
    ]);
  });
});

describe('builtinSchema', () => {
  it('marks merge-key lists as map lists and finalizers as a set', () => {
    const s = builtinSchema('apps', 'Deployment');
    const containers = s.properties.spec.properties.template.properties.spec.properties.containers;
    expect(containers['x-kubernetes-list-type']).toBe('map');
    expect(containers['x-kubernetes-list-map-keys']).toEqual(['name']);
    expect(containers['x-kubernetes-patch-merge-key']).toBe('name');
    expect(containers.items.properties.env['x-kubernetes-list-map-keys']).toEqual(['name']);
    expect(s.properties.metadata.properties.finalizers['x-kubernetes-list-type']).toBe('set');
    expect(builtinSchema('', 'Service').properties.spec.properties.ports['x-kubernetes-list-map-keys']).toEqual(['port']);
    expect(
      builtinSchema('', 'Pod').properties.spec.properties.containers.items.properties.ports['x-kubernetes-list-map-keys'],
    ).toEqual(['containerPort']);
  });

  it('gives unknown kinds only the ObjectMeta hints', () => {
    expect(Object.keys(builtinSchema('example.com', 'Widget').properties)).toEqual(['metadata']);
  });
});
