import * as fs from 'node:fs';
import * as path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { KINDS } from '../../../controller/api/schema';
import { generateSchema, schemaJson, statusOutputValues, RESOURCE_KINDS, token } from '../../../scripts/gen-schema';

const root = path.join(__dirname, '..', '..', '..');
const schema = JSON.parse(fs.readFileSync(path.join(root, 'schema.json'), 'utf8'));

/**
 * Pulumi's package metaschema (pkg/codegen/schema/pulumi.json, a copy in tests/fixtures).
 * It is JSON Schema 2020-12, whose own meta-schema ships inside ajv: no network.
 * strict: false because it uses keywords/formats ajv does not know (it only warns).
 */
function metaschemaValidator() {
  const ajv = new Ajv2020({ strict: false, allErrors: true, logger: false });
  addFormats(ajv);
  return ajv.compile(JSON.parse(fs.readFileSync(path.join(root, 'tests/fixtures/pulumi-package-metaschema.json'), 'utf8')));
}

test('schema.json validates against the Pulumi package metaschema, and the validator catches a bad type', () => {
  const validate = metaschemaValidator();
  expect({ ok: validate(schema), errors: validate.errors ?? null }).toEqual({ ok: true, errors: null });
  const broken = structuredClone(schema);
  broken.resources[token('VirtualMachine')].inputProperties.memory.type = 'strng';
  expect(validate(broken)).toBe(false);
});

test('schema.json is up to date with controller/api/schema.ts (run npm run gen)', () => {
  expect(fs.readFileSync(path.join(root, 'schema.json'), 'utf8') === schemaJson()).toBe(true);
});

test('every spec field of each resource kind is an input and an output, nested fields included', () => {
  const missing: string[] = [];
  const walk = (s: any, p: any, where: string): void => {
    if (!p) return void missing.push(where);
    if (s.type === 'array') return walk(s.items, p.items, `${where}[]`);
    if (s.type !== 'object' || !s.properties) return;
    const t = schema.types[decodeURIComponent(String(p.$ref).replace('#/types/', ''))];
    if (!t) return void missing.push(`${where} (type ${p.$ref})`);
    for (const [k, v] of Object.entries<any>(s.properties)) walk(v, t.properties[k], `${where}.${k}`);
  };
  for (const kind of RESOURCE_KINDS) {
    const k = KINDS.find((x) => x.kind === kind)!;
    const r = schema.resources[token(kind)];
    for (const [field, s] of Object.entries<any>(k.spec.properties)) {
      walk(s, r.inputProperties[field], `${kind}.${field}`);
      if (!r.properties[field]) missing.push(`${kind}.${field} (output)`);
    }
    for (const m of ['name', 'namespace', 'labels', 'annotations']) if (!r.inputProperties[m]) missing.push(`${kind}.${m}`);
  }
  expect(missing).toEqual([]);
  expect(Object.keys(schema.resources).sort()).toEqual([token('BackupPolicy'), token('ContainerPathMount'), token('Install'), token('Network'), token('VirtualMachine'), token('Volume')]);
  expect(Object.keys(schema.functions).sort()).toEqual([token('getNodeCapabilities'), token('getVirtualMachine'), token('listBackups')]);
});

test('each VirtualMachine input says how a change is applied', () => {
  const vm = KINDS.find((k) => k.kind === 'VirtualMachine')!;
  const text: Record<string, string> = { live: 'is applied live', restart: 'needs a restart', replace: 'replaces the VM' };
  const inputs = schema.resources[token('VirtualMachine')].inputProperties;
  for (const [field, s] of Object.entries<any>(vm.spec.properties)) {
    expect([field, inputs[field].description]).toEqual([field, expect.stringContaining(text[s['x-kubevm-update']])]);
  }
});

test('secrets are marked: cloud-init data and the provider kubeconfig', () => {
  const ci = schema.types[token('VirtualMachineCloudInit')].properties;
  expect([ci.userData.secret, ci.networkData.secret, ci.hostname.secret]).toEqual([true, true, undefined]);
  expect(schema.config.variables.kubeconfig.secret).toBe(true);
  expect(schema.provider.inputProperties.kubeconfig.secret).toBe(true);
  expect(Object.keys(schema.provider.inputProperties).sort()).toEqual(['context', 'kubeconfig', 'namespace']);
});

test('status outputs are read from an observed status', () => {
  const vm = statusOutputValues('VirtualMachine', {
    printableStatus: 'Running',
    ready: true,
    node: 'n1',
    interfaces: [{ name: 'eth0', ipAddress: '10.0.2.15' }],
    conditions: [{ type: 'RestartRequired', status: 'True' }],
    restartRequiredFields: ['memory'],
  });
  expect(vm).toEqual({
    printableStatus: 'Running',
    ready: true,
    node: 'n1',
    ipAddress: '10.0.2.15',
    restartRequired: true,
    restartRequiredFields: ['memory'],
  });
  expect(statusOutputValues('VirtualMachine', undefined).restartRequired).toBe(false);
  expect(statusOutputValues('Volume', { phase: 'Ready', path: '/d/x.qcow2', nodeName: 'n1' })).toMatchObject({
    phase: 'Ready',
    path: '/d/x.qcow2',
    node: 'n1',
  });
  // Every output named by STATUS_OUTPUTS is an output-only property of the resource.
  const gen = generateSchema();
  expect(Object.keys(gen.resources[token('Network')].properties)).toEqual(expect.arrayContaining(['phase', 'bridgeName']));
  expect(gen.resources[token('Network')].inputProperties.bridgeName).toBeUndefined();
});
