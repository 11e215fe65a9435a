import * as fs from 'node:fs';
import * as path from 'node:path';
import { generated } from '../../../scripts/gen-api';
import { allCrds, updateClassOf } from '../../../controller/api/crds';
import { KINDS } from '../../../controller/api/schema';
import { validateCrd, defaultCrd, compileVersion } from '../../../cluster/apiserver/crd';

const root = path.join(__dirname, '..', '..', '..');

test('generated files are up to date with controller/api/schema.ts (run npm run gen)', () => {
  for (const [rel, content] of Object.entries(generated())) {
    expect({ file: rel, same: fs.readFileSync(path.join(root, rel), 'utf8') === content }).toEqual({ file: rel, same: true });
  }
});

test('every CRD passes the API server CRD validation and carries no kubevm-private keywords', () => {
  for (const crd of allCrds()) {
    expect(validateCrd(defaultCrd(crd))).toEqual([]);
    expect(JSON.stringify(crd)).not.toContain('x-kubevm-');
  }
});

test('every VirtualMachine spec field is classified live, restart or replace', () => {
  const vm = KINDS.find((k) => k.kind === 'VirtualMachine')!;
  for (const field of Object.keys(vm.spec.properties)) expect([field, ['live', 'restart', 'replace'].includes(updateClassOf('VirtualMachine', field)!)]).toEqual([field, true]);
  expect(updateClassOf('VirtualMachine', 'disks')).toBe('live');
  expect(updateClassOf('VirtualMachine', 'memory')).toBe('restart');
});

test('the VirtualMachine schema defaults and rejects bad values with field paths', () => {
  const crd = defaultCrd(allCrds().find((c) => c.spec.names.kind === 'VirtualMachine'));
  crd.metadata.uid = 'test';
  crd.metadata.resourceVersion = '1';
  const v = compileVersion(crd, 'v1alpha1');
  const vm = v.applyDefaults({ apiVersion: 'kubevm.dev/v1alpha1', kind: 'VirtualMachine', metadata: { name: 'a' }, spec: { disks: [{ name: 'root', volume: 'root' }] } });
  expect(vm.spec.runStrategy).toBe('Always');
  expect(vm.spec.memory).toBe('128Mi');
  expect(vm.spec.disks[0].bus).toBe('virtio');
  const bad = v.validate({ ...vm, spec: { ...vm.spec, memory: 'lots', runStrategy: 'Sometimes', filesystems: [{ name: 'x', containerPath: { path: 'relative' } }] } });
  const fields = bad.map((c) => c.field);
  expect(fields).toEqual(expect.arrayContaining(['spec.memory', 'spec.runStrategy', 'spec.filesystems[0].containerPath.path']));
  const climbing = v.validate({ ...vm, spec: { ...vm.spec, filesystems: [{ name: 'x', containerPath: { path: '/srv/share/../../etc' } }] } });
  expect(climbing.map((c) => c.field)).toEqual(['spec.filesystems[0].containerPath.path']);
  expect(v.validate({ ...vm, spec: { ...vm.spec, filesystems: [{ name: 'x', containerPath: { path: '/srv/share..d/x' } }] } })).toEqual([]);
});
