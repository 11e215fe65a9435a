import { defaultCrd, validateCrd } from '../../../cluster/apiserver/crd';
import { makeCrd, ROOT_PATH, SPEC_PATH, specSchema } from './fixtures';

const fields = (causes: { field: string }[]): string[] => causes.map((c) => c.field);
const find = (causes: any[], field: string): any => causes.find((c) => c.field === field);

describe('validateCrd: object-level rules', () => {
  it('accepts a well-formed CRD', () => {
    const crd = makeCrd(specSchema({ replicas: { type: 'integer', minimum: 0, default: 1 } }), {
      subresources: { status: {}, scale: { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas' } },
      additionalPrinterColumns: [{ name: 'Replicas', type: 'integer', jsonPath: '.spec.replicas' }],
    });
    expect(validateCrd(defaultCrd(crd))).toEqual([]);
  });

  it('requires metadata.name to be <plural>.<group>', () => {
    const crd = makeCrd(specSchema({}));
    crd.metadata.name = 'gadgets.example.com';
    expect(validateCrd(crd)).toEqual([
      {
        field: 'metadata.name',
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group',
      },
    ]);
  });

  it('requires a group with at least one dot', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.group = 'example';
    crd.metadata.name = 'widgets.example';
    expect(validateCrd(crd)).toEqual([
      { field: 'spec.group', reason: 'FieldValueInvalid', message: 'Invalid value: "example": should be a domain with at least one dot' },
    ]);
  });

  it('rejects a group that is not a DNS subdomain', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.group = 'Example.com';
    crd.metadata.name = 'widgets.Example.com';
    const c = find(validateCrd(crd), 'spec.group');
    expect(c.message).toMatch(/^Invalid value: "Example.com": a lowercase RFC 1123 subdomain/);
  });

  it('requires scope and limits it to Cluster or Namespaced', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.scope = 'Global';
    expect(find(validateCrd(crd), 'spec.scope')).toEqual({
      field: 'spec.scope',
      reason: 'FieldValueNotSupported',
      message: 'Unsupported value: "Global": supported values: "Cluster", "Namespaced"',
    });
    delete crd.spec.scope;
    expect(find(validateCrd(crd), 'spec.scope')).toEqual({ field: 'spec.scope', reason: 'FieldValueRequired', message: 'Required value' });
  });

  it('requires all four names and checks their format', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.names = { plural: 'Widgets', kind: 'Wid_get' };
    crd.metadata.name = 'Widgets.example.com';
    const causes = validateCrd(crd);
    expect(fields(causes)).toEqual(
      expect.arrayContaining(['spec.names.singular', 'spec.names.listKind', 'spec.names.plural', 'spec.names.kind']),
    );
    expect(find(causes, 'spec.names.singular').reason).toBe('FieldValueRequired');
    expect(find(causes, 'spec.names.plural').message).toMatch(/^Invalid value: "Widgets": a DNS-1035 label/);
    expect(find(causes, 'spec.names.kind').message).toMatch(/^Invalid value: "Wid_get": may have mixed case, but should otherwise match: a DNS-1035 label/);
  });

  it('allows mixed-case kinds but not kind == listKind', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.names.kind = 'WidgetList';
    expect(validateCrd(crd)).toEqual([
      { field: 'spec.names.listKind', reason: 'FieldValueInvalid', message: 'Invalid value: "WidgetList": kind and listKind may not be the same' },
    ]);
  });

  it('checks shortNames and categories', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.names.shortNames = ['wd', 'W!'];
    crd.spec.names.categories = ['all', '9lives'];
    expect(fields(validateCrd(crd))).toEqual(['spec.names.shortNames[1]', 'spec.names.categories[1]']);
  });

  it('requires versions', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.versions = [];
    expect(find(validateCrd(crd), 'spec.versions')).toEqual({ field: 'spec.versions', reason: 'FieldValueRequired', message: 'Required value' });
  });

  it('requires exactly one storage version and unique names', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.versions.push({ ...crd.spec.versions[0] });
    const messages = validateCrd(crd).map((c) => `${c.field}: ${c.message}`);
    expect(messages).toEqual([
      'spec.versions: Invalid value: ["v1","v1"]: must contain unique version names',
      'spec.versions: Invalid value: ["v1","v1"]: must have exactly one version marked as storage version',
    ]);
    crd.spec.versions[1] = { ...crd.spec.versions[0], name: 'v2', storage: false };
    crd.spec.versions[0].storage = false;
    expect(fields(validateCrd(crd))).toEqual(['spec.versions']);
  });

  it('requires DNS-1035 version names', () => {
    const crd = makeCrd(specSchema({}), { name: '1beta' });
    expect(find(validateCrd(crd), 'spec.versions[0].name').message).toMatch(/^Invalid value: "1beta": a DNS-1035 label/);
  });

  it('requires a schema for every version', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.versions.push({ name: 'v2', served: true, storage: false });
    expect(validateCrd(crd)).toEqual([
      { field: 'spec.versions[1].schema.openAPIV3Schema', reason: 'FieldValueRequired', message: 'Required value: schemas are required' },
    ]);
  });

  it('rejects preserveUnknownFields: true and unknown conversion strategies', () => {
    const crd = makeCrd(specSchema({}), {}, { preserveUnknownFields: true, conversion: { strategy: 'Magic' } });
    expect(fields(validateCrd(crd))).toEqual(['spec.preserveUnknownFields', 'spec.conversion.strategy']);
  });

  it('requires a webhook client config for Webhook conversion', () => {
    const crd = makeCrd(specSchema({}), {}, { conversion: { strategy: 'Webhook' } });
    expect(find(validateCrd(crd), 'spec.conversion.webhook')).toEqual({
      field: 'spec.conversion.webhook',
      reason: 'FieldValueRequired',
      message: 'Required value: required when strategy is set to Webhook',
    });
  });

  it('checks that stored versions still exist', () => {
    const crd = defaultCrd(makeCrd(specSchema({})));
    crd.status.storedVersions = ['v0', 'v1'];
    expect(validateCrd(crd)).toEqual([
      { field: 'status.storedVersions[0]', reason: 'FieldValueInvalid', message: 'Invalid value: "v0": must appear in spec.versions' },
    ]);
  });
});

describe('validateCrd: printer columns and scale', () => {
  it('validates printer column name, type, format and jsonPath', () => {
    const crd = makeCrd(specSchema({}), {
      additionalPrinterColumns: [
        { name: 'A', type: 'int', jsonPath: 'spec.a' },
        { type: 'string', format: 'ipv4' },
      ],
    });
    expect(validateCrd(crd).map((c) => `${c.field}: ${c.message}`)).toEqual([
      'spec.versions[0].additionalPrinterColumns[0].type: Invalid value: "int": must be one of boolean,date,integer,number,string',
      'spec.versions[0].additionalPrinterColumns[0].JSONPath: Invalid value: "spec.a": must be a simple json path starting with .',
      'spec.versions[0].additionalPrinterColumns[1].name: Required value',
      'spec.versions[0].additionalPrinterColumns[1].format: Invalid value: "ipv4": must be one of byte,date,date-time,double,float,int32,int64,password',
      'spec.versions[0].additionalPrinterColumns[1].JSONPath: Required value',
    ]);
  });

  it('requires scale paths under .spec and .status', () => {
    const crd = makeCrd(specSchema({}), {
      subresources: { scale: { specReplicasPath: '.status.replicas', statusReplicasPath: 'status.replicas', labelSelectorPath: '.metadata.labels' } },
    });
    expect(validateCrd(crd).map((c) => `${c.field}: ${c.message}`)).toEqual([
      'spec.versions[0].subresources.scale.specReplicasPath: Invalid value: ".status.replicas": should be a json path under .spec',
      'spec.versions[0].subresources.scale.statusReplicasPath: Invalid value: "status.replicas": must be a simple json path starting with .',
      'spec.versions[0].subresources.scale.labelSelectorPath: Invalid value: ".metadata.labels": should be a json path under either .spec or .status',
    ]);
  });

  it('requires both replica paths', () => {
    const crd = makeCrd(specSchema({}), { subresources: { scale: {} } });
    expect(fields(validateCrd(crd))).toEqual([
      'spec.versions[0].subresources.scale.specReplicasPath',
      'spec.versions[0].subresources.scale.statusReplicasPath',
    ]);
  });
});

describe('validateCrd: structural schema rules', () => {
  const causesFor = (schema: any, version: Record<string, any> = {}) =>
    validateCrd(makeCrd(schema, version)).map((c) => `${c.field}: ${c.message}`);

  it('requires type on fields, items and the root', () => {
    expect(causesFor(specSchema({ size: {}, tags: { type: 'array', items: {} } }))).toEqual([
      `${SPEC_PATH}.properties[size].type: Required value: must not be empty for specified object fields`,
      `${SPEC_PATH}.properties[tags].items.type: Required value: must not be empty for specified array items`,
    ]);
    expect(causesFor({ properties: { spec: { type: 'object' } } })).toEqual([`${ROOT_PATH}.type: Required value: must not be empty at the root`]);
  });

  it('requires the root to be an object', () => {
    expect(causesFor({ type: 'string' })).toEqual([`${ROOT_PATH}.type: Invalid value: "string": must be object at the root`]);
  });

  it('exempts int-or-string and preserve-unknown-fields nodes from needing a type', () => {
    const schema = specSchema({
      port: { 'x-kubernetes-int-or-string': true, anyOf: [{ type: 'integer' }, { type: 'string' }] },
      blob: { 'x-kubernetes-preserve-unknown-fields': true },
      quantity: { 'x-kubernetes-int-or-string': true, allOf: [{ anyOf: [{ type: 'integer' }, { type: 'string' }] }, { pattern: '^[0-9]+$' }] },
    });
    expect(causesFor(schema)).toEqual([]);
  });

  it('requires items for arrays', () => {
    expect(causesFor(specSchema({ tags: { type: 'array' } }))).toEqual([`${SPEC_PATH}.properties[tags].items: Required value: must be specified`]);
  });

  it('forbids type, default, description, nullable and additionalProperties inside junctors', () => {
    const schema = specSchema({
      a: { type: 'string', anyOf: [{ type: 'string' }] },
      b: { type: 'string', allOf: [{ default: 'x' }] },
      c: { type: 'string', oneOf: [{ description: 'doc' }] },
      d: { type: 'string', not: { nullable: true } },
      e: { type: 'object', additionalProperties: { type: 'string' }, anyOf: [{ additionalProperties: { type: 'string' } }] },
    });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[a].anyOf[0].type: Forbidden: must be empty to be structural`,
      `${SPEC_PATH}.properties[b].allOf[0].default: Forbidden: must be undefined to be structural`,
      `${SPEC_PATH}.properties[c].oneOf[0].description: Forbidden: must be empty to be structural`,
      `${SPEC_PATH}.properties[d].not.nullable: Forbidden: must be false to be structural`,
      `${SPEC_PATH}.properties[e].anyOf[0].additionalProperties: Forbidden: must be undefined to be structural`,
    ]);
  });

  it('forbids x-kubernetes extensions and metadata inside junctors', () => {
    const schema = specSchema({
      a: { type: 'object', properties: { metadata: { type: 'object' } }, anyOf: [{ 'x-kubernetes-preserve-unknown-fields': true }, { properties: { metadata: {} } }] },
    });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[a].anyOf[0].x-kubernetes-preserve-unknown-fields: Forbidden: must be false to be structural`,
      `${SPEC_PATH}.properties[a].anyOf[1].properties[metadata]: Forbidden: must not be specified in a nested context`,
    ]);
  });

  it('forbids additionalProperties together with properties', () => {
    const schema = specSchema({ m: { type: 'object', properties: { a: { type: 'string' } }, additionalProperties: { type: 'string' } } });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[m].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive`,
    ]);
  });

  it('forbids additionalProperties at the root', () => {
    expect(causesFor({ type: 'object', additionalProperties: { type: 'string' } })).toEqual([
      `${ROOT_PATH}.additionalProperties: Forbidden: must not be used at the root`,
    ]);
  });

  it('lets root metadata constrain only name and generateName', () => {
    const ok = { type: 'object', properties: { metadata: { type: 'object', properties: { name: { type: 'string', maxLength: 10 } } } } };
    expect(causesFor(ok)).toEqual([]);
    const bad = { type: 'object', properties: { metadata: { type: 'object', properties: { labels: { type: 'object' } } } } };
    expect(causesFor(bad)).toEqual([
      `${ROOT_PATH}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified`,
    ]);
    expect(causesFor({ type: 'object', properties: { metadata: { type: 'string' } } })).toEqual([
      `${ROOT_PATH}.properties[metadata].type: Invalid value: "string": must be object`,
    ]);
  });

  it('forbids defaults in top-level metadata', () => {
    const schema = { type: 'object', properties: { metadata: { type: 'object', properties: { name: { type: 'string', default: 'x' } } } } };
    expect(causesFor(schema)).toEqual([
      `${ROOT_PATH}.properties[metadata].properties[name].default: Forbidden: must not be set in top-level metadata`,
    ]);
  });

  it('requires embedded resources to be objects with properties or preserve-unknown-fields', () => {
    const schema = specSchema({
      a: { 'x-kubernetes-embedded-resource': true, 'x-kubernetes-preserve-unknown-fields': true },
      b: { type: 'object', 'x-kubernetes-embedded-resource': true },
    });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[a].type: Required value: must be object if x-kubernetes-embedded-resource is true`,
      `${SPEC_PATH}.properties[b].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields`,
    ]);
  });

  it('rejects int-or-string combined with preserve-unknown-fields', () => {
    const schema = specSchema({ p: { 'x-kubernetes-int-or-string': true, 'x-kubernetes-preserve-unknown-fields': true } });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[p].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if x-kubernetes-int-or-string is true`,
    ]);
  });

  it('requires fields named in root junctors to exist in the structural schema', () => {
    const schema = { type: 'object', properties: { spec: { type: 'object' } }, anyOf: [{ required: ['spec'] }, { properties: { status: { required: ['x'] } } }] };
    expect(causesFor(schema)).toEqual([
      `${ROOT_PATH}.properties[status]: Required value: because it is defined in ${ROOT_PATH}.anyOf[1].properties[status]`,
    ]);
  });

  it('rejects unsupported keywords and types', () => {
    const schema = specSchema({
      a: { type: 'null' },
      b: { type: 'string', $ref: '#/x' },
      c: { type: 'array', items: { type: 'string' }, uniqueItems: true },
      d: { type: 'string', pattern: '(' },
    });
    const causes = causesFor(schema);
    expect(causes).toEqual(
      expect.arrayContaining([
        `${SPEC_PATH}.properties[a].type: Unsupported value: "null": supported values: "array", "boolean", "integer", "number", "object", "string"`,
        `${SPEC_PATH}.properties[a].type: Forbidden: type cannot be set to null, use nullable as an alternative`,
        `${SPEC_PATH}.properties[b].$ref: Forbidden: $ref is not supported`,
        `${SPEC_PATH}.properties[c].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic`,
      ]),
    );
    expect(causes.find((c) => c.startsWith(`${SPEC_PATH}.properties[d].pattern: Invalid value: "(": must be a valid regular expression`))).toBeDefined();
  });

  it('rejects keyword values of the wrong JSON type', () => {
    const schema = specSchema({
      a: { type: 'integer', maximum: '10' },
      b: { type: 'string', enum: 'x' },
      c: { type: 'object', required: 'x' },
      d: { type: 'string', maxLength: -1 },
    });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[a].maximum: Invalid value: "10": must be a number`,
      `${SPEC_PATH}.properties[b].enum: Invalid value: "x": must be an array`,
      `${SPEC_PATH}.properties[c].required: Invalid value: "x": must be an array of strings`,
      `${SPEC_PATH}.properties[d].maxLength: Invalid value: -1: must be a non-negative integer`,
    ]);
  });

  it('accepts Go-style patterns JS can only read without the unicode flag', () => {
    expect(causesFor(specSchema({ a: { type: 'string', pattern: '^[a-z\\-]+\\_x$' }, b: { type: 'string', pattern: '(?i)^abc$' } }))).toEqual([]);
  });

  it('checks list-type and map-type markers', () => {
    const schema = specSchema({
      a: { type: 'object', 'x-kubernetes-list-type': 'set' },
      b: { type: 'array', items: { type: 'object', properties: { k: { type: 'string' } } }, 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['k'] },
      c: { type: 'array', items: { type: 'string' }, 'x-kubernetes-list-type': 'bag' },
    });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[a].type: Invalid value: "object": must be array if x-kubernetes-list-type is specified`,
      `${SPEC_PATH}.properties[b].items.properties[k].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property`,
      `${SPEC_PATH}.properties[c].x-kubernetes-list-type: Unsupported value: "bag": supported values: "atomic", "set", "map"`,
    ]);
  });

  it('only allows certain root keywords when the status subresource is enabled', () => {
    const schema = { type: 'object', properties: { spec: { type: 'object' } }, nullable: true };
    const causes = causesFor(schema, { subresources: { status: {} } });
    expect(causes[0]).toMatch(new RegExp(`^${ROOT_PATH.replace(/[[\]]/g, '\\$&')}: Invalid value: "nullable": only \\[description type`));
    expect(causes).toContain(`${ROOT_PATH}.nullable: Forbidden: nullable cannot be true at the root`);
  });
});

describe('validateCrd: defaults', () => {
  const causesFor = (schema: any) => validateCrd(makeCrd(schema)).map((c) => `${c.field}: ${c.message}`);

  it('requires defaults to validate against their schema', () => {
    expect(
      causesFor(
        specSchema({
          replicas: { type: 'integer', maximum: 10, default: 20 },
          mode: { type: 'string', enum: ['a', 'b'], default: 'c' },
          size: { type: 'integer', default: 'big' },
        }),
      ),
    ).toEqual([
      `${SPEC_PATH}.properties[replicas].default: Invalid value: 20: ${SPEC_PATH}.properties[replicas].default in body should be less than or equal to 10`,
      `${SPEC_PATH}.properties[mode].default: Unsupported value: "c": supported values: "a", "b"`,
      `${SPEC_PATH}.properties[size].default: Invalid value: "string": ${SPEC_PATH}.properties[size].default in body must be of type integer: "string"`,
    ]);
  });

  it('checks object defaults deeply, including required fields', () => {
    const schema = specSchema({
      tpl: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, n: { type: 'integer', minimum: 1 } }, default: { n: 0 } },
    });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[tpl].default.name: Required value`,
      `${SPEC_PATH}.properties[tpl].default.n: Invalid value: 0: ${SPEC_PATH}.properties[tpl].default.n in body should be greater than or equal to 1`,
    ]);
  });

  it('requires defaults to be pruned', () => {
    const schema = specSchema({ tpl: { type: 'object', properties: { a: { type: 'string' } }, default: { a: 'x', extra: 1 } } });
    expect(causesFor(schema)).toEqual([`${SPEC_PATH}.properties[tpl].default: Invalid value: {"a":"x","extra":1}: must not have unknown fields`]);
  });

  it('checks defaults of array items and map values', () => {
    const schema = specSchema({
      list: { type: 'array', items: { type: 'string', minLength: 2, default: 'x' } },
      map: { type: 'object', additionalProperties: { type: 'integer', default: 1.5 } },
    });
    expect(causesFor(schema)).toEqual([
      `${SPEC_PATH}.properties[list].items.default: Invalid value: "x": ${SPEC_PATH}.properties[list].items.default in body should be at least 2 chars long`,
      `${SPEC_PATH}.properties[map].additionalProperties.default: Invalid value: "number": ${SPEC_PATH}.properties[map].additionalProperties.default in body must be of type integer: "number"`,
    ]);
  });

  it('accepts a nullable field with default null', () => {
    expect(causesFor(specSchema({ a: { type: 'string', nullable: true, default: null } }))).toEqual([]);
  });
});

describe('defaultCrd', () => {
  it('fills singular, listKind, conversion and storedVersions without mutating the input', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.names = { plural: 'widgets', kind: 'Widget' };
    delete crd.spec.conversion;
    const before = JSON.stringify(crd);
    const out = defaultCrd(crd);
    expect(JSON.stringify(crd)).toBe(before);
    expect(out).not.toBe(crd);
    expect(out.spec.names).toEqual({ plural: 'widgets', kind: 'Widget', singular: 'widget', listKind: 'WidgetList' });
    expect(out.spec.conversion).toEqual({ strategy: 'None' });
    expect(out.status.storedVersions).toEqual(['v1']);
  });

  it('keeps explicit values and appends a new storage version to storedVersions', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.names.singular = 'wdg';
    crd.spec.conversion = { strategy: 'Webhook' };
    crd.status = { storedVersions: ['v0'] };
    const out = defaultCrd(crd);
    expect(out.spec.names.singular).toBe('wdg');
    expect(out.spec.conversion).toEqual({ strategy: 'Webhook' });
    expect(out.status.storedVersions).toEqual(['v0', 'v1']);
  });

  it('makes a CRD without singular/listKind valid', () => {
    const crd = makeCrd(specSchema({}));
    crd.spec.names = { plural: 'widgets', kind: 'Widget' };
    expect(fields(validateCrd(crd))).toEqual(['spec.names.singular', 'spec.names.listKind']);
    expect(validateCrd(defaultCrd(crd))).toEqual([]);
  });
});
