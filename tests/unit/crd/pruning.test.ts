import { compileVersion } from '../../../cluster/apiserver/crd';
import { makeCrd, specSchema, widget } from './fixtures';

const prune = (schema: any, obj: any) => compileVersion(makeCrd(schema), 'v1').prune(obj);

describe('prune', () => {
  it('drops unknown fields and reports their paths', () => {
    const schema = specSchema({ size: { type: 'string' }, disk: { type: 'object', properties: { gb: { type: 'integer' } } } });
    const { object, unknownFields } = prune(schema, { ...widget({ size: 'L', foo: 1, disk: { gb: 1, bus: 'x' } }), extra: true });
    expect(object).toEqual(widget({ size: 'L', disk: { gb: 1 } }));
    expect(unknownFields).toEqual(['spec.foo', 'spec.disk.bus', 'extra']);
  });

  it('reports array items by index', () => {
    const schema = specSchema({ ports: { type: 'array', items: { type: 'object', properties: { port: { type: 'integer' } } } } });
    const { object, unknownFields } = prune(schema, widget({ ports: [{ port: 1 }, { port: 2, name: 'x' }] }));
    expect(object.spec.ports).toEqual([{ port: 1 }, { port: 2 }]);
    expect(unknownFields).toEqual(['spec.ports[1].name']);
  });

  it('never prunes apiVersion, kind or metadata at the top level, but cuts metadata to ObjectMeta', () => {
    const schema = { type: 'object', properties: { spec: { type: 'object' } } };
    const obj = {
      apiVersion: 'example.com/v1',
      kind: 'Widget',
      metadata: { name: 'w', labels: { a: 'b' }, finalizers: ['f'], bogus: 1, ownerReferences: [{ kind: 'X', name: 'o', uid: 'u', apiVersion: 'v1', junk: 2 }] },
      spec: {},
    };
    const { object, unknownFields } = prune(schema, obj);
    expect(object.apiVersion).toBe('example.com/v1');
    expect(object.kind).toBe('Widget');
    expect(object.metadata).toEqual({
      name: 'w',
      labels: { a: 'b' },
      finalizers: ['f'],
      ownerReferences: [{ kind: 'X', name: 'o', uid: 'u', apiVersion: 'v1' }],
    });
    expect(unknownFields).toEqual(['metadata.bogus', 'metadata.ownerReferences[0].junk']);
  });

  it('keeps unknown fields under x-kubernetes-preserve-unknown-fields and prunes again below known properties', () => {
    const schema = specSchema(
      { known: { type: 'object', properties: { a: { type: 'string' } } } },
      { 'x-kubernetes-preserve-unknown-fields': true },
    );
    const { object, unknownFields } = prune(schema, widget({ anything: { deep: [1, 2] }, known: { a: 'x', b: 'y' } }));
    expect(object.spec).toEqual({ anything: { deep: [1, 2] }, known: { a: 'x' } });
    expect(unknownFields).toEqual(['spec.known.b']);
  });

  it('keeps whole documents under a type-less preserve-unknown-fields node', () => {
    const schema = specSchema({ raw: { 'x-kubernetes-preserve-unknown-fields': true } });
    const { object, unknownFields } = prune(schema, widget({ raw: { a: { b: [{ c: 1 }] } } }));
    expect(object.spec.raw).toEqual({ a: { b: [{ c: 1 }] } });
    expect(unknownFields).toEqual([]);
  });

  it('keeps apiVersion, kind and ObjectMeta of embedded resources, pruning the rest by schema', () => {
    const schema = specSchema({
      template: {
        type: 'object',
        'x-kubernetes-embedded-resource': true,
        properties: { spec: { type: 'object', properties: { image: { type: 'string' } } } },
      },
    });
    const { object, unknownFields } = prune(
      schema,
      widget({
        template: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', labels: { x: 'y' }, nope: 1 }, spec: { image: 'i', extra: 1 }, status: {} },
      }),
    );
    expect(object.spec.template).toEqual({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', labels: { x: 'y' } }, spec: { image: 'i' } });
    expect(unknownFields).toEqual(['spec.template.metadata.nope', 'spec.template.spec.extra', 'spec.template.status']);
  });

  it('keeps embedded resources whole with preserve-unknown-fields', () => {
    const schema = specSchema({
      manifest: { type: 'object', 'x-kubernetes-embedded-resource': true, 'x-kubernetes-preserve-unknown-fields': true },
    });
    const manifest = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' }, spec: { replicas: 2 } };
    expect(prune(schema, widget({ manifest })).object.spec.manifest).toEqual(manifest);
  });

  it('keeps map keys (additionalProperties) and prunes inside their values', () => {
    const schema = specSchema({
      disks: { type: 'object', additionalProperties: { type: 'object', properties: { gb: { type: 'integer' } } } },
    });
    const { object, unknownFields } = prune(schema, widget({ disks: { root: { gb: 1, x: 1 }, data: { gb: 2 } } }));
    expect(object.spec.disks).toEqual({ root: { gb: 1 }, data: { gb: 2 } });
    expect(unknownFields).toEqual(['spec.disks.root.x']);
  });

  it('keeps everything when the root preserves unknown fields', () => {
    const schema = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
    const obj = { ...widget({ a: 1 }), status: { b: 2 } };
    expect(prune(schema, obj)).toEqual({ object: obj, unknownFields: [] });
  });

  it('does not mutate its input', () => {
    const schema = specSchema({});
    const input = widget({ foo: 1 });
    const out = prune(schema, input);
    expect(input.spec).toEqual({ foo: 1 });
    expect(out.object.spec).toEqual({});
  });
});
