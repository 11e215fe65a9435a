import { compileVersion, formatCauses } from '../../../cluster/apiserver/crd';
import { makeCrd, specSchema, widget } from './fixtures';

const validate = (schema: any, spec: any, name = 'w1') => compileVersion(makeCrd(schema), 'v1').validate(widget(spec, name));
const lines = (causes: { field: string; message: string }[]) => causes.map((c) => `${c.field}: ${c.message}`);

describe('validate: value rules', () => {
  it('reports maximum and minimum like upstream', () => {
    const schema = specSchema({ replicas: { type: 'integer', minimum: 1, maximum: 10 } });
    expect(validate(schema, { replicas: 20 })).toEqual([
      {
        field: 'spec.replicas',
        reason: 'FieldValueInvalid',
        message: 'Invalid value: 20: spec.replicas in body should be less than or equal to 10',
      },
    ]);
    expect(lines(validate(schema, { replicas: 0 }))).toEqual(['spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1']);
    expect(validate(schema, { replicas: 10 })).toEqual([]);
  });

  it('reports exclusive bounds', () => {
    const schema = specSchema({ ratio: { type: 'number', minimum: 0, exclusiveMinimum: true, maximum: 1, exclusiveMaximum: true } });
    expect(lines(validate(schema, { ratio: 1 }))).toEqual(['spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1']);
    expect(lines(validate(schema, { ratio: 0 }))).toEqual(['spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0']);
    expect(validate(schema, { ratio: 0.5 })).toEqual([]);
  });

  it('prints non-integer numbers like Go floats', () => {
    const schema = specSchema({ cpu: { type: 'number', maximum: 1000000 } });
    expect(lines(validate(schema, { cpu: 1234567.5 }))).toEqual([
      'spec.cpu: Invalid value: 1.2345675e+06: spec.cpu in body should be less than or equal to 1e+06',
    ]);
  });

  it('reports missing required fields with their full path', () => {
    const schema = specSchema({ size: { type: 'string' }, disk: { type: 'object', required: ['gb'], properties: { gb: { type: 'integer' } } } }, { required: ['size'] });
    expect(validate(schema, { disk: {} })).toEqual([
      { field: 'spec.size', reason: 'FieldValueRequired', message: 'Required value' },
      { field: 'spec.disk.gb', reason: 'FieldValueRequired', message: 'Required value' },
    ]);
  });

  it('reports a missing required top-level field', () => {
    const schema = { type: 'object', required: ['spec'], properties: { spec: { type: 'object' } } };
    const w = widget({});
    delete w.spec;
    expect(compileVersion(makeCrd(schema), 'v1').validate(w)).toEqual([{ field: 'spec', reason: 'FieldValueRequired', message: 'Required value' }]);
  });

  it('reports enum violations as NotSupported with quoted values', () => {
    const schema = specSchema({ size: { type: 'string', enum: ['a', 'b'] }, level: { type: 'integer', enum: [1, 2] } });
    expect(validate(schema, { size: 'x', level: 3 })).toEqual([
      { field: 'spec.size', reason: 'FieldValueNotSupported', message: 'Unsupported value: "x": supported values: "a", "b"' },
      { field: 'spec.level', reason: 'FieldValueNotSupported', message: 'Unsupported value: 3: supported values: "1", "2"' },
    ]);
  });

  it('reports type mismatches with the actual type', () => {
    const schema = specSchema({ replicas: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' } }, on: { type: 'boolean' } });
    expect(validate(schema, { replicas: 'three', tags: ['a', 2], on: {} })).toEqual([
      {
        field: 'spec.replicas',
        reason: 'FieldValueTypeInvalid',
        message: 'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
      },
      { field: 'spec.tags[1]', reason: 'FieldValueTypeInvalid', message: 'Invalid value: "integer": spec.tags[1] in body must be of type string: "integer"' },
      { field: 'spec.on', reason: 'FieldValueTypeInvalid', message: 'Invalid value: "object": spec.on in body must be of type boolean: "object"' },
    ]);
    expect(lines(validate(schema, { replicas: 1.5 }))).toEqual([
      'spec.replicas: Invalid value: "number": spec.replicas in body must be of type integer: "number"',
    ]);
  });

  it('checks pattern, minLength and maxLength', () => {
    const schema = specSchema({ name: { type: 'string', pattern: '^[a-z]+$', minLength: 3, maxLength: 5 } });
    expect(validate(schema, { name: 'A1' })).toEqual([
      { field: 'spec.name', reason: 'FieldValueInvalid', message: 'Invalid value: "A1": spec.name in body should be at least 3 chars long' },
      { field: 'spec.name', reason: 'FieldValueInvalid', message: `Invalid value: "A1": spec.name in body should match '^[a-z]+$'` },
    ]);
    expect(validate(schema, { name: 'abcdefg' })).toEqual([{ field: 'spec.name', reason: 'FieldValueTooLong', message: 'Too long: may not be longer than 5' }]);
  });

  it('honours a (?i) flag group in patterns', () => {
    const schema = specSchema({ name: { type: 'string', pattern: '(?i)^abc$' } });
    expect(validate(schema, { name: 'ABC' })).toEqual([]);
    expect(validate(schema, { name: 'abd' })).toHaveLength(1);
  });

  it('checks minItems and maxItems', () => {
    const schema = specSchema({ tags: { type: 'array', items: { type: 'string' }, minItems: 2, maxItems: 3 } });
    expect(lines(validate(schema, { tags: ['a'] }))).toEqual(['spec.tags: Invalid value: 1: spec.tags in body should have at least 2 items']);
    expect(lines(validate(schema, { tags: ['a', 'b', 'c', 'd'] }))).toEqual(['spec.tags: Invalid value: 4: spec.tags in body should have at most 3 items']);
  });

  it('checks multipleOf and min/maxProperties', () => {
    const schema = specSchema({
      mem: { type: 'integer', multipleOf: 512 },
      labels: { type: 'object', additionalProperties: { type: 'string' }, maxProperties: 1 },
    });
    expect(lines(validate(schema, { mem: 1000, labels: { a: 'x', b: 'y' } }))).toEqual([
      'spec.mem: Invalid value: 1000: spec.mem in body should be a multiple of 512',
      'spec.labels: Invalid value: 2: spec.labels in body should have at most 1 properties',
    ]);
  });

  it('uses dotted paths for map values and indexes for list items', () => {
    const schema = specSchema({
      disks: { type: 'object', additionalProperties: { type: 'object', properties: { gb: { type: 'integer', minimum: 1 } } } },
      ports: { type: 'array', items: { type: 'object', required: ['port'], properties: { port: { type: 'integer' } } } },
    });
    expect(lines(validate(schema, { disks: { root: { gb: 0 } }, ports: [{ port: 1 }, {}] }))).toEqual([
      'spec.disks.root.gb: Invalid value: 0: spec.disks.root.gb in body should be greater than or equal to 1',
      'spec.ports[1].port: Required value',
    ]);
  });

  it('validates string formats upstream supports and ignores the rest', () => {
    const schema = specSchema({
      at: { type: 'string', format: 'date-time' },
      day: { type: 'string', format: 'date' },
      data: { type: 'string', format: 'byte' },
      id: { type: 'string', format: 'uuid' },
      n: { type: 'integer', format: 'int32' },
      x: { type: 'string', format: 'no-such-format' },
    });
    const good = { at: '2024-01-02T03:04:05Z', day: '2024-02-29', data: 'aGVsbG8=', id: '123e4567-e89b-12d3-a456-426614174000', n: 2 ** 40, x: 'y' };
    expect(validate(schema, good)).toEqual([]);
    expect(validate(schema, { at: '2024-01-02 03:04', day: '2023-02-29', data: 'not base64!' })).toEqual([
      { field: 'spec.at', reason: 'FieldValueTypeInvalid', message: 'Invalid value: "2024-01-02 03:04": spec.at in body must be of type date-time: "2024-01-02 03:04"' },
      { field: 'spec.day', reason: 'FieldValueTypeInvalid', message: 'Invalid value: "2023-02-29": spec.day in body must be of type date: "2023-02-29"' },
      { field: 'spec.data', reason: 'FieldValueTypeInvalid', message: 'Invalid value: "not base64!": spec.data in body must be of type byte: "not base64!"' },
    ]);
  });

  it('accepts integers and strings for x-kubernetes-int-or-string', () => {
    const schema = specSchema({ port: { 'x-kubernetes-int-or-string': true } });
    expect(validate(schema, { port: 8080 })).toEqual([]);
    expect(validate(schema, { port: 'http' })).toEqual([]);
    expect(validate(schema, { port: 1.5 })).toEqual([
      { field: 'spec.port', reason: 'FieldValueTypeInvalid', message: 'Invalid value: "number": spec.port in body must be of type integer,string: "number"' },
    ]);
  });

  it('reports the int-or-string anyOf idiom once, with its junctor message', () => {
    const schema = specSchema({ q: { 'x-kubernetes-int-or-string': true, anyOf: [{ type: 'integer' }, { type: 'string' }] } });
    expect(lines(validate(schema, { q: true }))).toEqual([
      'spec.q: Invalid value: "boolean": spec.q in body must be of type integer,string: "boolean"',
      'spec.q: Invalid value: "": "spec.q" must validate at least one schema (anyOf)',
    ]);
  });

  it('reports oneOf and not failures', () => {
    const schema = specSchema(
      { a: { type: 'string' }, b: { type: 'string' } },
      { oneOf: [{ required: ['a'] }, { required: ['b'] }], not: { required: ['c'] }, properties: { a: { type: 'string' }, b: { type: 'string' }, c: { type: 'string' } } },
    );
    expect(lines(validate(schema, { a: 'x', b: 'y' }))).toEqual(['spec: Invalid value: "": "spec" must validate one and only one schema (oneOf). Found 2 valid alternatives']);
    expect(lines(validate(schema, {}))).toEqual(['spec: Invalid value: "": "spec" must validate one and only one schema (oneOf). Found none valid']);
    expect(lines(validate(schema, { a: 'x', c: 'z' }))).toEqual(['spec: Invalid value: "": "spec" must not validate the schema (not)']);
  });

  it('allows null only for nullable fields', () => {
    const schema = specSchema({ note: { type: 'string', nullable: true }, mode: { type: 'string', nullable: true, enum: ['a'] }, tags: { type: 'array', items: { type: 'string' } } });
    expect(validate(schema, { note: null, mode: null })).toEqual([]);
    expect(validate(schema, { tags: [null] })).toEqual([
      { field: 'spec.tags[0]', reason: 'FieldValueTypeInvalid', message: 'Invalid value: "null": spec.tags[0] in body must be of type string: "null"' },
    ]);
    expect(validate(schema, { mode: 'b' })).toEqual([
      { field: 'spec.mode', reason: 'FieldValueNotSupported', message: 'Unsupported value: "b": supported values: "a"' },
    ]);
  });

  it('validates metadata.name constraints from the schema', () => {
    const schema = { type: 'object', properties: { metadata: { type: 'object', properties: { name: { type: 'string', maxLength: 4 } } } } };
    expect(compileVersion(makeCrd(schema), 'v1').validate(widget({}, 'toolong'))).toEqual([
      { field: 'metadata.name', reason: 'FieldValueTooLong', message: 'Too long: may not be longer than 4' },
    ]);
  });
});

describe('validate: object meta and embedded resources', () => {
  it('requires metadata.name to be a DNS-1123 subdomain', () => {
    expect(validate(specSchema({}), {}, 'Bad_Name')).toEqual([
      {
        field: 'metadata.name',
        reason: 'FieldValueInvalid',
        message:
          "Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
      },
    ]);
  });

  it('requires a name or generateName', () => {
    const compiled = compileVersion(makeCrd(specSchema({})), 'v1');
    expect(compiled.validate({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: {}, spec: {} })).toEqual([
      { field: 'metadata.name', reason: 'FieldValueRequired', message: 'Required value: name or generateName is required' },
    ]);
    expect(compiled.validate({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { generateName: 'w-' }, spec: {} })).toEqual([]);
  });

  it('requires apiVersion and kind in embedded resources', () => {
    const schema = specSchema({
      template: { type: 'object', 'x-kubernetes-embedded-resource': true, 'x-kubernetes-preserve-unknown-fields': true },
    });
    expect(validate(schema, { template: { metadata: { name: 'x' } } })).toEqual([
      { field: 'spec.template.apiVersion', reason: 'FieldValueRequired', message: 'Required value' },
      { field: 'spec.template.kind', reason: 'FieldValueRequired', message: 'Required value' },
    ]);
    expect(validate(schema, { template: { apiVersion: 'a/b/c', kind: 'Pod' } })).toEqual([
      { field: 'spec.template.apiVersion', reason: 'FieldValueInvalid', message: 'Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c' },
    ]);
  });
});

describe('compileVersion', () => {
  it('returns the cached compilation for the same uid, resourceVersion and version', () => {
    const crd = makeCrd(specSchema({ a: { type: 'string' } }));
    const first = compileVersion(crd, 'v1');
    expect(compileVersion(JSON.parse(JSON.stringify(crd)), 'v1')).toBe(first);
  });

  it('recompiles when the resourceVersion changes', () => {
    const crd = makeCrd(specSchema({ a: { type: 'string' } }));
    const first = compileVersion(crd, 'v1');
    const updated = JSON.parse(JSON.stringify(crd));
    updated.metadata.resourceVersion = '2';
    updated.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.a = { type: 'integer' };
    const second = compileVersion(updated, 'v1');
    expect(second).not.toBe(first);
    expect(second.validate(widget({ a: 'x' }))).toHaveLength(1);
    expect(first.validate(widget({ a: 'x' }))).toEqual([]);
  });

  it('reuses the compilation when only the resourceVersion changes (e.g. a status update)', () => {
    const crd = makeCrd(specSchema({ a: { type: 'string' } }));
    const first = compileVersion(crd, 'v1');
    const updated = { ...crd, metadata: { ...crd.metadata, resourceVersion: '7' }, status: { acceptedNames: crd.spec.names } };
    expect(compileVersion(updated, 'v1')).toBe(first);
  });

  it('compiles each version separately', () => {
    const crd = makeCrd(specSchema({ a: { type: 'string' } }));
    crd.spec.versions.push({ name: 'v2', served: true, storage: false, schema: { openAPIV3Schema: specSchema({ a: { type: 'integer' } }) } });
    expect(compileVersion(crd, 'v2')).not.toBe(compileVersion(crd, 'v1'));
    expect(compileVersion(crd, 'v2').validate(widget({ a: 'x' }))).toHaveLength(1);
  });

  it('keys CRDs without a uid by schema content', () => {
    const a = makeCrd(specSchema({ a: { type: 'string' } }));
    const b = makeCrd(specSchema({ a: { type: 'string' } }));
    delete a.metadata.uid;
    delete b.metadata.uid;
    expect(compileVersion(a, 'v1')).toBe(compileVersion(b, 'v1'));
    b.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.a.type = 'integer';
    expect(compileVersion(b, 'v1')).not.toBe(compileVersion(a, 'v1'));
  });

  it('is not affected by later mutation of the CRD object', () => {
    const crd = makeCrd(specSchema({ a: { type: 'string' } }));
    const compiled = compileVersion(crd, 'v1');
    crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.a.type = 'integer';
    expect(compiled.validate(widget({ a: 'x' }))).toEqual([]);
    expect(compiled.schema.properties.spec.properties.a.type).toBe('string');
  });

  it('throws for an unknown version', () => {
    expect(() => compileVersion(makeCrd(specSchema({})), 'v9')).toThrow(/no version v9/);
  });

  it('is cheap on a cache hit', () => {
    const crd = makeCrd(specSchema({ a: { type: 'string', pattern: '^[a-z]+$' } }));
    compileVersion(crd, 'v1');
    const start = process.hrtime.bigint();
    for (let i = 0; i < 10000; i++) compileVersion(crd, 'v1');
    expect(Number(process.hrtime.bigint() - start) / 1e6).toBeLessThan(200);
  });
});

describe('formatCauses', () => {
  it('brackets several causes like apierrors.NewInvalid', () => {
    const causes = validate(specSchema({ replicas: { type: 'integer', maximum: 10 }, size: { type: 'string' } }, { required: ['size'] }), { replicas: 20 });
    expect(formatCauses('Widget.example.com', 'w1', causes)).toBe(
      'Widget.example.com "w1" is invalid: [spec.size: Required value, spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10]',
    );
  });

  it('prints a single cause without brackets', () => {
    expect(formatCauses('Widget.example.com', 'w1', [{ field: 'spec.size', reason: 'FieldValueRequired', message: 'Required value' }])).toBe(
      'Widget.example.com "w1" is invalid: spec.size: Required value',
    );
  });

  it('drops repeated messages', () => {
    const c = { field: 'spec.size', reason: 'FieldValueRequired' as const, message: 'Required value' };
    expect(formatCauses('Widget.example.com', 'w1', [c, { ...c }])).toBe('Widget.example.com "w1" is invalid: spec.size: Required value');
  });
});
