import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  createBackend,
  HalError,
  missingCapabilities,
  requiredCapabilities,
  SimBackend,
  validateSpec,
  type VmSpec,
} from '../../../controller/hal';
import { parseNicMarker, parseReadyMarker } from '../../../controller/hal/qemu/console';
import { needsSeed, seedFiles } from '../../../controller/hal/qemu/seed';

const spec = (o: Partial<VmSpec> = {}): VmSpec => ({
  name: 'web-1',
  uid: 'uid-1',
  cpu: { cores: 1 },
  memoryMiB: 256,
  disks: [],
  nics: [],
  filesystems: [],
  ...o,
});

describe('validateSpec', () => {
  test('a plain spec passes', () => {
    expect(() => validateSpec(spec())).not.toThrow();
  });

  test.each<[string, Partial<VmSpec>, RegExp]>([
    ['name', { name: 'Web_1' }, /^spec\.name: "Web_1" must be a DNS label/],
    ['uid with a slash', { uid: '../x' }, /^spec\.uid: "\.\.\/x" must be/],
    ['cores', { cpu: { cores: 0 } }, /^spec\.cpu\.cores: 0 must be an integer from 1/],
    ['memory', { memoryMiB: 8 }, /^spec\.memoryMiB: 8 must be at least 16/],
    [
      'disk path',
      { disks: [{ name: 'd', path: 'rel.qcow2', format: 'qcow2', bus: 'virtio' }] },
      /^spec\.disks\[0\]\.path: "rel\.qcow2" must be an absolute path/,
    ],
    [
      'sata read-only',
      { disks: [{ name: 'd', path: '/d', format: 'raw', bus: 'sata', readOnly: true }] },
      /readOnly: true is not supported on bus sata/,
    ],
    [
      'duplicate disks',
      {
        disks: [
          { name: 'd', path: '/a', format: 'raw', bus: 'virtio' },
          { name: 'd', path: '/b', format: 'raw', bus: 'virtio' },
        ],
      },
      /^spec\.disks\[\]\.name: "d" is used twice/,
    ],
    [
      'bridge without a bridge',
      { nics: [{ name: 'n', network: 'bridge' }] },
      /^spec\.nics\[0\]\.bridge: undefined must name a Linux bridge/,
    ],
    ['multicast MAC', { nics: [{ name: 'n', network: 'pod', mac: '01:00:5e:00:00:01' }] }, /must be a unicast MAC/],
    [
      'port',
      { nics: [{ name: 'n', network: 'pod', portForwards: [{ protocol: 'tcp', port: 70000 }] }] },
      /portForwards\[0\]\.port: 70000 must be an integer from 1 to 65535/,
    ],
    ['tag', { filesystems: [{ tag: 'a b', hostPath: '/x', readOnly: true }] }, /^spec\.filesystems\[0\]\.tag: "a b" must be/],
  ])('rejects a bad %s, naming field, value and rule', (_what, o, re) => {
    let err: unknown;
    try {
      validateSpec(spec(o));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HalError);
    expect((err as HalError).code).toBe('Invalid');
    expect((err as Error).message).toMatch(re);
  });
});

describe('capabilities', () => {
  test('requiredCapabilities lists what each field needs', () => {
    const need = requiredCapabilities(
      spec({
        kernel: { kernel: '/k' },
        cloudInit: { userData: '#!/bin/sh' },
        disks: [{ name: 'd', path: '/d', format: 'qcow2', bus: 'virtio' }],
        nics: [
          { name: 'n', network: 'bridge', bridge: 'br0' },
          { name: 'p', network: 'pod', portForwards: [{ protocol: 'tcp', port: 22 }] },
        ],
        filesystems: [{ tag: 't', hostPath: '/x', readOnly: true }],
      }),
    );
    expect(need.map((n) => `${n.capability}@${n.field}`)).toEqual([
      'lifecycle@spec',
      'direct-kernel-boot@kernel',
      'cloud-init-nocloud@cloudInit',
      'disk-qcow2@disks[0].format',
      'network-bridge@nics[0].network',
      'network-pod@nics[1].network',
      'port-forward@nics[1].portForwards',
      'filesystem@filesystems[0]',
    ]);
  });

  test('missingCapabilities names the backend, the capability and the field', () => {
    const b = new SimBackend({ capabilities: ['lifecycle', 'network-pod'] });
    expect(missingCapabilities(b, spec({ nics: [{ name: 'n', network: 'bridge', bridge: 'br0' }] }))).toEqual([
      'backend "sim" lacks capability "network-bridge" needed by spec.nics[0].network',
    ]);
    expect(missingCapabilities(b, spec({ nics: [{ name: 'n', network: 'pod' }] }))).toEqual([]);
  });
});

describe('factory', () => {
  test('picks backends by name and refuses unknown names', () => {
    expect(createBackend('sim').name).toBe('sim');
    const runRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'kvf-'));
    expect(createBackend('qemu', { runRoot, host: { kvm: false } }).name).toBe('qemu');
    fs.rmSync(runRoot, { recursive: true });
    expect(() => createBackend('xen')).toThrow('unknown hypervisor backend "xen" (known: qemu, sim)');
    expect(() => createBackend('qemu', {} as any)).toThrow(/needs options with runRoot/);
  });
  test('qemu netns: a plain namespace name, and only with root and iproute2', () => {
    const runRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'kvf-'));
    const host = { kvm: false, root: true, ip: '/usr/sbin/ip' };
    expect(createBackend('qemu', { runRoot, host, netns: 'kubevm-nodes' }).netns).toBe('kubevm-nodes');
    for (const bad of ['../x', 'a/b', '', '-n'])
      expect(() => createBackend('qemu', { runRoot, host, netns: bad })).toThrow(/netns: .* must be a network namespace name/);
    expect(() => createBackend('qemu', { runRoot, host: { ...host, root: false }, netns: 'ns1' })).toThrow(
      /netns ns1: running VMs in a network namespace needs root and the ip command/,
    );
    fs.rmSync(runRoot, { recursive: true });
  });
});

describe('NoCloud seed and console markers', () => {
  test('seed files: meta-data, user-data, network-config, share list', () => {
    const s = spec({
      cloudInit: { userData: '#!/bin/sh\necho hi\n', networkData: 'version: 2\n', hostname: 'h1' },
      filesystems: [{ tag: 'a', hostPath: '/x', readOnly: true }],
    });
    expect(needsSeed(s)).toBe(true);
    expect(needsSeed(spec())).toBe(false);
    expect(seedFiles(s, '9p')).toEqual({
      'meta-data': 'instance-id: "uid-1"\nlocal-hostname: h1\n',
      'user-data': '#!/bin/sh\necho hi\n',
      'network-config': 'version: 2\n',
      'kubevm-mounts': 'a 9p ro\n',
    });
    expect(seedFiles(spec({ filesystems: [{ tag: 'a', hostPath: '/x', readOnly: false }] }), 'virtiofs')).toMatchObject({
      'meta-data': 'instance-id: "uid-1"\nlocal-hostname: web-1\n',
      'user-data': '#cloud-config\n{}\n',
      'kubevm-mounts': 'a virtiofs rw\n',
    });
  });

  test('ready and NIC markers parse; other lines do not', () => {
    expect(
      parseReadyMarker(
        'KUBEVM-GUEST-READY hostname=h ip=192.0.2.2 macs=52:54:00:AA:bb:cc/192.0.2.2,52:54:00:00:00:01/none uptime=2.8',
      ),
    ).toEqual({
      hostname: 'h',
      ip: '192.0.2.2',
      ips: { '52:54:00:aa:bb:cc': '192.0.2.2' },
    });
    expect(parseReadyMarker('KUBEVM-GUEST-READY hostname=h ip=none macs=none uptime=1')).toEqual({
      hostname: 'h',
      ip: undefined,
      ips: {},
    });
    expect(parseReadyMarker('echo KUBEVM-GUEST-READ')).toBeUndefined();
    expect(parseNicMarker('KUBEVM-GUEST-NIC mac=52:54:00:00:00:02 ip=10.0.2.15')).toEqual({
      mac: '52:54:00:00:00:02',
      ip: '10.0.2.15',
    });
  });
});
