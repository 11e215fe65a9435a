import { compileVersion } from '../../../cluster/apiserver/crd';
import { makeCrd, specSchema, widget } from './fixtures';

const defaults = (schema: any, obj: any) => compileVersion(makeCrd(schema), 'v1').applyDefaults(obj);

describe('applyDefaults', () => {
  it('fills missing properties and leaves present ones alone', () => {
    const schema = specSchema({
      replicas: { type: 'integer', default: 1 },
      mode: { type: 'string', default: 'auto' },
    });
    expect(defaults(schema, widget({ mode: 'manual' })).spec).toEqual({ replicas: 1, mode: 'manual' });
  });

  it('applies nested defaults only when the parent exists', () => {
    const schema = specSchema({
      disk: { type: 'object', properties: { size: { type: 'string', default: '10Gi' } } },
    });
    expect(defaults(schema, widget({})).spec).toEqual({});
    expect(defaults(schema, widget({ disk: {} })).spec).toEqual({ disk: { size: '10Gi' } });
    expect(defaults(schema, { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } })).toEqual({
      apiVersion: 'example.com/v1',
      kind: 'Widget',
      metadata: { name: 'w' },
    });
  });

  it('applies defaults inside a defaulted object', () => {
    const schema = specSchema({
      disk: { type: 'object', default: {}, properties: { size: { type: 'string', default: '10Gi' }, bus: { type: 'string' } } },
    });
    expect(defaults(schema, widget({})).spec).toEqual({ disk: { size: '10Gi' } });
  });

  it('applies defaults to every array item', () => {
    const schema = specSchema({
      ports: {
        type: 'array',
        items: { type: 'object', properties: { port: { type: 'integer' }, protocol: { type: 'string', default: 'TCP' } } },
      },
    });
    expect(defaults(schema, widget({ ports: [{ port: 80 }, { port: 53, protocol: 'UDP' }] })).spec.ports).toEqual([
      { port: 80, protocol: 'TCP' },
      { port: 53, protocol: 'UDP' },
    ]);
  });

  it('applies defaults to map values (additionalProperties)', () => {
    const schema = specSchema({
      disks: {
        type: 'object',
        additionalProperties: { type: 'object', properties: { readOnly: { type: 'boolean', default: false } } },
      },
    });
    expect(defaults(schema, widget({ disks: { root: {}, data: { readOnly: true } } })).spec.disks).toEqual({
      root: { readOnly: false },
      data: { readOnly: true },
    });
  });

  it('replaces null with the default when the field is not nullable', () => {
    const schema = specSchema({ mode: { type: 'string', default: 'auto' } });
    expect(defaults(schema, widget({ mode: null })).spec).toEqual({ mode: 'auto' });
  });

  it('drops nulls of non-nullable fields without a default', () => {
    const schema = specSchema({ name: { type: 'string' }, tags: { type: 'object', additionalProperties: { type: 'string' } } });
    expect(defaults(schema, widget({ name: null, tags: { a: null, b: 'x' } })).spec).toEqual({ tags: { b: 'x' } });
  });

  it('keeps nulls of nullable fields, even with a default', () => {
    const schema = specSchema({ name: { type: 'string', nullable: true }, mode: { type: 'string', nullable: true, default: 'auto' } });
    expect(defaults(schema, widget({ name: null, mode: null })).spec).toEqual({ name: null, mode: null });
  });

  it('defaults null array items and map values that have a default', () => {
    const schema = specSchema({
      list: { type: 'array', items: { type: 'string', default: 'x' } },
      map: { type: 'object', additionalProperties: { type: 'integer', default: 7 } },
    });
    expect(defaults(schema, widget({ list: ['a', null], map: { k: null } })).spec).toEqual({ list: ['a', 'x'], map: { k: 7 } });
  });

  it('applies defaults under preserve-unknown-fields to listed properties and keeps the rest', () => {
    const schema = specSchema({}, { 'x-kubernetes-preserve-unknown-fields': true, properties: { mode: { type: 'string', default: 'auto' } } });
    expect(defaults(schema, widget({ other: 1 })).spec).toEqual({ other: 1, mode: 'auto' });
  });

  it('copies defaults so objects never share them', () => {
    const schema = specSchema({ tags: { type: 'array', items: { type: 'string' }, default: ['a'] } });
    const compiled = compileVersion(makeCrd(schema), 'v1');
    const a = compiled.applyDefaults(widget({}));
    a.spec.tags.push('mutated');
    expect(compiled.applyDefaults(widget({})).spec.tags).toEqual(['a']);
  });

  it('does not mutate its input', () => {
    const schema = specSchema({ replicas: { type: 'integer', default: 1 }, name: { type: 'string' } });
    const input = widget({ name: null });
    const before = JSON.stringify(input);
    const out = defaults(schema, input);
    expect(JSON.stringify(input)).toBe(before);
    expect(out).not.toBe(input);
    expect(out.spec).toEqual({ replicas: 1 });
  });
});

describe('applyDefaults with property names found on Object.prototype', () => {
  it('still defaults a missing "constructor" or "toString" property', () => {
    const schema = specSchema({ constructor: { type: 'string', default: 'c' }, toString: { type: 'string', default: 't' } });
    expect(defaults(schema, widget({})).spec).toEqual({ constructor: 'c', toString: 't' });
  });
});
