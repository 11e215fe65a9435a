import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildQemuCommand, defaultMac, diskNode, kv, tapName, type QemuBuildOptions } from '../../../controller/hal/qemu/args';
import { layoutFor } from '../../../controller/hal/qemu/layout';
import { QmpClient } from '../../../controller/hal/common/qmp';
import type { VmSpec } from '../../../controller/hal/types';
import { ensureQemu } from '../../guest';

const opts = (o: Partial<QemuBuildOptions> = {}): QemuBuildOptions => ({
  qemu: 'qemu-system-x86_64',
  accel: 'tcg',
  fsDriver: 'virtiofs',
  hotplugPorts: 2,
  seed: false,
  macs: {},
  taps: {},
  ...o,
});

const base = (o: Partial<VmSpec> = {}): VmSpec => ({
  name: 'vm1',
  uid: '0b5b9b8e-8d3e-4c1a-9a57-3f1c2d4e5f60',
  cpu: { cores: 2, sockets: 1, threads: 1 },
  memoryMiB: 256,
  disks: [],
  nics: [],
  filesystems: [],
  ...o,
});

const layout = layoutFor('/run/kv', 'vm1uid');

/** The value following each occurrence of `flag`. */
function values(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}
const devices = (argv: string[]) => values(argv, '-device').map((d) => JSON.parse(d));

describe('buildQemuCommand', () => {
  test('machine, acceleration, memory, CPU topology, control sockets', () => {
    const { argv } = buildQemuCommand(base({ cpu: { cores: 2, sockets: 2, threads: 1 } }), layout, opts());
    expect(argv[0]).toBe('qemu-system-x86_64');
    expect(values(argv, '-machine')).toEqual(['q35,memory-backend=mem']);
    expect(values(argv, '-accel')).toEqual(['tcg']);
    expect(JSON.parse(values(argv, '-object')[0])).toEqual({
      'qom-type': 'memory-backend-memfd',
      id: 'mem',
      size: 256 * 1024 * 1024,
      share: true,
    });
    expect(values(argv, '-m')).toEqual(['256M']);
    expect(values(argv, '-smp')).toEqual(['4,sockets=2,cores=2,threads=1']);
    expect(values(argv, '-cpu')).toEqual(['max']);
    expect(values(argv, '-uuid')).toEqual(['0b5b9b8e-8d3e-4c1a-9a57-3f1c2d4e5f60']);
    expect(values(argv, '-pidfile')).toEqual(['/run/kv/vm1uid/qemu.pid']);
    expect(values(argv, '-chardev')).toEqual([
      'socket,id=qmp,path=/run/kv/vm1uid/qmp.sock,server=on,wait=off',
      'socket,id=serial0,path=/run/kv/vm1uid/console.sock,server=on,wait=off,logfile=/run/kv/vm1uid/console.log,logappend=on',
    ]);
    expect(argv).toContain('-nodefaults');
    expect(values(argv, '-sandbox')[0]).toMatch(/^on,.*spawn=deny/);
    expect(values(buildQemuCommand(base(), layout, opts({ accel: 'kvm' })).argv, '-cpu')).toEqual(['host']);
    expect(values(buildQemuCommand(base({ cpu: { cores: 1, model: 'qemu64' } }), layout, opts()).argv, '-cpu')).toEqual([
      'qemu64',
    ]);
  });

  test('direct kernel boot passes the command line as one argument (no shell, no quoting)', () => {
    const { argv } = buildQemuCommand(
      base({ kernel: { kernel: '/k/vmlinuz', initrd: '/k/initrd', cmdline: 'console=ttyS0 a="b c"' } }),
      layout,
      opts(),
    );
    expect(values(argv, '-kernel')).toEqual(['/k/vmlinuz']);
    expect(values(argv, '-initrd')).toEqual(['/k/initrd']);
    expect(values(argv, '-append')).toEqual(['console=ttyS0 a="b c"']);
  });

  test('disks: qcow2 via -blockdev JSON on its own root port; sata on the AHCI bus; boot order', () => {
    const { argv, ports } = buildQemuCommand(
      base({
        disks: [
          { name: 'root', path: '/d/with,comma.qcow2', format: 'qcow2', bus: 'virtio', bootOrder: 1 },
          { name: 'legacy', path: '/d/l.raw', format: 'raw', bus: 'sata' },
          { name: 'iso-like-but-readonly', path: '/d/ro.raw', format: 'raw', bus: 'virtio', readOnly: true },
        ],
      }),
      layout,
      opts(),
    );
    const bd = values(argv, '-blockdev').map((b) => JSON.parse(b));
    expect(bd[0]).toEqual({
      driver: 'qcow2',
      'node-name': diskNode('root'),
      'read-only': false,
      discard: 'unmap',
      file: {
        driver: 'file',
        filename: '/d/with,comma.qcow2',
        'node-name': `${diskNode('root')}f`,
        'read-only': false,
        discard: 'unmap',
      },
    });
    expect(bd[2]['read-only']).toBe(true);
    for (const b of bd) expect(b['node-name'].length).toBeLessThanOrEqual(31);
    const devs = devices(argv);
    const root = devs.find((d) => d.id === 'disk-root');
    expect(root).toMatchObject({ driver: 'virtio-blk-pci', drive: diskNode('root'), bootindex: 1 });
    expect(ports.find((p) => p.id === root.bus)?.device).toBe('disk-root');
    expect(devs.find((d) => d.id === 'disk-legacy')).toMatchObject({ driver: 'ide-hd', bus: 'ide.0' });
  });

  test('NICs: passt stream socket for pod, slirp with port forwards for user, tap for bridge', () => {
    const spec = base({
      nics: [
        { name: 'default', network: 'pod' },
        { name: 'mgmt', network: 'user', model: 'e1000e', portForwards: [{ protocol: 'tcp', port: 22, hostPort: 2222 }] },
        { name: 'lan', network: 'bridge', bridge: 'br0' },
      ],
    });
    const macs = { default: '52:54:00:00:00:01', mgmt: '52:54:00:00:00:02', lan: '52:54:00:00:00:03' };
    const { argv } = buildQemuCommand(spec, layout, opts({ macs, taps: { lan: 'kvtap0' } }));
    expect(values(argv, '-netdev').map((n) => JSON.parse(n))).toEqual([
      { type: 'stream', id: 'net-default', server: false, addr: { type: 'unix', path: '/run/kv/vm1uid/net/default.sock' } },
      { type: 'user', id: 'net-mgmt', hostfwd: [{ str: 'tcp:127.0.0.1:2222-:22' }] },
      { type: 'tap', id: 'net-lan', ifname: 'kvtap0', script: 'no', downscript: 'no' },
    ]);
    const nics = devices(argv).filter((d) => d.netdev);
    expect(nics.map((d) => [d.driver, d.id, d.mac])).toEqual([
      ['virtio-net-pci', 'nic-default', '52:54:00:00:00:01'],
      ['e1000e', 'nic-mgmt', '52:54:00:00:00:02'],
      ['virtio-net-pci', 'nic-lan', '52:54:00:00:00:03'],
    ]);
  });

  test('a launcher prefix (ip netns exec NS) goes before QEMU; the rest of the command is unchanged', () => {
    const plain = buildQemuCommand(base(), layout, opts()).argv;
    const { argv } = buildQemuCommand(base(), layout, opts({ launcher: ['/usr/sbin/ip', 'netns', 'exec', 'kv-ns'] }));
    expect(argv.slice(0, 5)).toEqual(['/usr/sbin/ip', 'netns', 'exec', 'kv-ns', 'qemu-system-x86_64']);
    expect(argv.slice(4)).toEqual(plain);
    // The pid file path is the adoption marker: verbatim in argv (QEMU's own argv after the exec).
    expect(argv).toContain(layout.pidFile);
  });

  test('filesystems: virtiofs chardev + vhost-user-fs; 9p read-only with escaped path', () => {
    const fsSpec = base({ filesystems: [{ tag: 'data', hostPath: '/srv/a,b', readOnly: true }] });
    const v = buildQemuCommand(fsSpec, layout, opts());
    expect(values(v.argv, '-chardev')).toContain('socket,id=fsc-data,path=/run/kv/vm1uid/fs/data.sock');
    expect(devices(v.argv).find((d) => d.id === 'fs-data')).toMatchObject({
      driver: 'vhost-user-fs-pci',
      chardev: 'fsc-data',
      tag: 'data',
    });
    const n = buildQemuCommand(fsSpec, layout, opts({ fsDriver: '9p' }));
    expect(values(n.argv, '-fsdev')).toEqual(['local,id=fsdev-data,path=/srv/a,,b,security_model=none,readonly=on']);
    expect(devices(n.argv).find((d) => d.id === 'fs-data')).toMatchObject({
      driver: 'virtio-9p-pci',
      fsdev: 'fsdev-data',
      mount_tag: 'data',
    });
  });

  test('NoCloud seed: the seed directory as a read-only vvfat disk labelled cidata', () => {
    const { argv } = buildQemuCommand(base(), layout, opts({ seed: true }));
    expect(JSON.parse(values(argv, '-blockdev')[0])).toEqual({
      driver: 'vvfat',
      'node-name': 'cidata',
      dir: '/run/kv/vm1uid/seed',
      label: 'cidata',
      'read-only': true,
    });
    expect(devices(argv).find((d) => d.id === 'cloudinit')).toMatchObject({ driver: 'virtio-blk-pci', drive: 'cidata' });
  });

  test('root ports: one per PCIe device plus the reserved hotplug spares, multifunction slots', () => {
    const spec = base({
      disks: [{ name: 'a', path: '/a', format: 'raw', bus: 'virtio' }],
      nics: [{ name: 'n', network: 'user' }],
    });
    const { argv, ports } = buildQemuCommand(spec, layout, opts({ hotplugPorts: 8 }));
    expect(ports).toHaveLength(10);
    expect(ports.filter((p) => p.device === null)).toHaveLength(8);
    const rps = devices(argv).filter((d) => d.driver === 'pcie-root-port');
    expect(rps.map((r) => r.id)).toEqual(ports.map((p) => p.id));
    expect(rps[0]).toMatchObject({ bus: 'pcie.0', chassis: 1, addr: '0x2.0x0', multifunction: true });
    expect(rps[7]).toMatchObject({ addr: '0x2.0x7' });
    expect(rps[7].multifunction).toBeUndefined();
    expect(rps[8]).toMatchObject({ addr: '0x3.0x0', multifunction: true });
    expect(new Set(rps.map((r) => r.chassis)).size).toBe(rps.length);
  });

  test('helpers: keyval escaping, stable MACs, tap names within IFNAMSIZ', () => {
    expect(kv('/a,b,,c')).toBe('/a,,b,,,,c');
    expect(defaultMac('uid-1', 'default')).toBe(defaultMac('uid-1', 'default'));
    expect(defaultMac('uid-1', 'default')).not.toBe(defaultMac('uid-2', 'default'));
    expect(defaultMac('uid-1', 'x')).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    expect(tapName('0b5b9b8e-8d3e-4c1a-9a57-3f1c2d4e5f60', 'a-very-long-interface-name').length).toBeLessThanOrEqual(15);
  });
});

describe('the built command line runs in a real QEMU', () => {
  test('QEMU accepts it: devices, block nodes and the seed disk exist', async () => {
    ensureQemu();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kva-'));
    const l = layoutFor(dir, 'vm');
    fs.mkdirSync(l.dir);
    fs.mkdirSync(l.seedDir);
    fs.writeFileSync(path.join(l.seedDir, 'meta-data'), 'instance-id: x\n');
    fs.mkdirSync(path.join(dir, 'share,with comma'));
    const disk = path.join(dir, 'disk, one.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'b.raw'), '4M']);
    const spec = base({
      memoryMiB: 64,
      disks: [
        { name: 'root', path: disk, format: 'qcow2', bus: 'virtio', bootOrder: 1 },
        { name: 'legacy', path: path.join(dir, 'b.raw'), format: 'raw', bus: 'sata' },
      ],
      nics: [{ name: 'mgmt', network: 'user', model: 'e1000e' }],
      filesystems: [{ tag: 'share', hostPath: path.join(dir, 'share,with comma'), readOnly: true }],
    });
    const { argv } = buildQemuCommand(
      spec,
      l,
      opts({ fsDriver: '9p', seed: true, macs: { mgmt: defaultMac(spec.uid, 'mgmt') } }),
    );
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    let exited = false;
    child.once('exit', () => (exited = true));
    try {
      const qmp = await QmpClient.connect(l.qmpSocket, { timeoutMs: 20_000, alive: () => !exited }).catch((e) => {
        throw new Error(`${e.message}\n${stderr}`);
      });
      const peripherals = (await qmp.execute('qom-list', { path: '/machine/peripheral' })).map((p: any) => p.name);
      expect(peripherals).toEqual(
        expect.arrayContaining(['disk-root', 'disk-legacy', 'nic-mgmt', 'fs-share', 'cloudinit', 'rp0']),
      );
      const nodes = (await qmp.execute('query-named-block-nodes', { flat: true })).map((n: any) => n['node-name']);
      expect(nodes).toEqual(expect.arrayContaining([diskNode('root'), diskNode('legacy'), 'cidata']));
      expect(fs.readFileSync(l.pidFile, 'utf8').trim()).toBe(String(child.pid));
      await qmp.execute('quit');
    } finally {
      if (!exited) child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
