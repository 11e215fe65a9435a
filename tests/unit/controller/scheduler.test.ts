import { pickNode, vcpus, memoryBytes, parseQuantity } from '../../../controller/controller/scheduler';
import { NodeUsage } from '../../../controller/controller/caches';

const node = (name: string, cpu: string, memory: string, extra: any = {}) => ({
  metadata: { name, labels: { zone: name.endsWith('a') ? 'a' : 'b' }, annotations: { 'kubevm.dev/backends': 'qemu', 'kubevm.dev/capabilities': 'lifecycle,network-pod,disk-qcow2' } },
  status: { allocatable: { cpu, memory }, conditions: [{ type: 'Ready', status: 'True' }] },
  ...extra,
});
const vm = (spec: any) => ({ metadata: { name: 'v', namespace: 'default' }, spec: { backend: 'qemu', memory: '1Gi', cpu: { cores: 2 }, ...spec } });
const vmi = (name: string, nodeName: string, spec: any, phase = 'Running') => ({ metadata: { name, namespace: 'default' }, spec: { nodeName, ...spec }, status: { phase } });

test('quantities and sizes', () => {
  expect(parseQuantity('1Gi')).toBe(1024 ** 3);
  expect(parseQuantity('500m')).toBe(0.5);
  expect(vcpus({ cpu: { sockets: 2, cores: 2, threads: 2 } })).toBe(8);
  expect(memoryBytes({})).toBe(128 * 1024 ** 2);
});

test('usage follows instances: placed, finished and deleted', () => {
  const u = new NodeUsage((s) => ({ cpu: vcpus(s), mem: memoryBytes(s) }));
  u.observe(vmi('x', 'n1', { memory: '1Gi', cpu: { cores: 2 } }), false);
  u.observe(vmi('y', 'n1', { memory: '2Gi' }), false);
  expect(u.of('n1')).toEqual({ cpu: 3, mem: 3 * 1024 ** 3 });
  u.observe(vmi('y', 'n1', { memory: '2Gi' }, 'Succeeded'), false);
  expect(u.of('n1')).toEqual({ cpu: 2, mem: 1024 ** 3 });
  u.observe(vmi('x', 'n1', {}), true);
  expect(u.of('n1')).toEqual({ cpu: 0, mem: 0 });
});

test('picks the ready node with the most free memory that fits; explains when none does', () => {
  const u = new NodeUsage((s) => ({ cpu: vcpus(s), mem: memoryBytes(s) }));
  const nodes = [node('n1a', '4', '4Gi'), node('n2b', '4', '8Gi'), node('n3b', '64', '64Gi', { spec: { unschedulable: true } })];
  expect(pickNode(vm({}), nodes, (n) => u.of(n), new Set())).toEqual({ node: 'n2b' });
  u.observe(vmi('big', 'n2b', { memory: '7680Mi', cpu: { cores: 1 } }), false); // 512Mi left: too little
  expect(pickNode(vm({}), nodes, (n) => u.of(n), new Set())).toEqual({ node: 'n1a' });
  expect(pickNode(vm({ nodeSelector: { zone: 'b' } }), nodes, (n) => u.of(n), new Set())).toEqual({
    error: '0/3 nodes are available: n1a: nodeSelector does not match; n2b: insufficient memory; n3b: cordoned (unschedulable)',
  });
  expect(pickNode(vm({ cpu: { cores: 8 } }), nodes, (n) => u.of(n), new Set())).toMatchObject({ error: expect.stringContaining('n1a: insufficient cpu') });
  expect(pickNode(vm({}), nodes, (n) => u.of(n), new Set(['n2b']))).toMatchObject({ error: expect.stringContaining("n1a: the VM's volumes are on n2b") });
  expect(pickNode(vm({ backend: 'sim' }), nodes, (n) => u.of(n), new Set())).toMatchObject({ error: expect.stringContaining('no sim backend') });
});
