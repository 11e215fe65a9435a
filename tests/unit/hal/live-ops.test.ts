import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  HalError,
  migratable,
  SimBackend,
  SimWorld,
  validateSpec,
  type MigrationProgress,
  type VmSpec,
} from '../../../controller/hal';
import { QmpClient } from '../../../controller/hal/common/qmp';
import { buildQemuCommand, defaultMac, type QemuBuildOptions } from '../../../controller/hal/qemu/args';
import { layoutFor } from '../../../controller/hal/qemu/layout';
import { formatUri, parseUri } from '../../../controller/hal/qemu/migration';
import { ensureQemu } from '../../guest';

/**
 * The pure parts of live migration and NIC re-targeting (addresses, placement,
 * hub plumbing, migratable, hotplugSlots) and the sim backend's simulated
 * migration. The real thing runs in tests/integration/hal-migration.test.ts and
 * hal-retarget.test.ts.
 */
const base = (o: Partial<VmSpec> = {}): VmSpec => ({
  name: 'vm1',
  uid: 'uid-1',
  cpu: { cores: 1 },
  memoryMiB: 64,
  disks: [],
  nics: [],
  filesystems: [],
  ...o,
});

const opts = (o: Partial<QemuBuildOptions> = {}): QemuBuildOptions => ({
  qemu: 'qemu-system-x86_64',
  accel: 'tcg',
  fsDriver: '9p',
  hotplugPorts: 2,
  seed: false,
  macs: {},
  taps: {},
  ...o,
});

const layout = layoutFor('/run/kv', 'vm1uid');
const values = (argv: string[], flag: string) => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
const devices = (argv: string[]) => values(argv, '-device').map((d) => JSON.parse(d));

describe('migratable', () => {
  test('a spec without shared directories migrates; one with a share is refused with the reason', () => {
    expect(migratable(base({ nics: [{ name: 'n', network: 'pod' }] }))).toEqual({ ok: true });
    const r = migratable(base({ filesystems: [{ tag: 'data', hostPath: '/srv', readOnly: true }] }));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/spec\.filesystems\[0\] \(tag "data"\) shares a host directory \(virtiofs or 9p\)/);
  });
});

describe('migration addresses', () => {
  test('format and parse round-trip, with and without the NBD part, IPv6 in brackets', () => {
    const plain = { host: '127.0.0.1', port: 4444 };
    expect(formatUri(plain)).toBe('tcp:127.0.0.1:4444');
    expect(parseUri('tcp:127.0.0.1:4444')).toEqual(plain);
    const nbd = { host: '::1', port: 4444, nbd: { host: '10.0.0.2', port: 10809, disks: ['root', 'data-1'] } };
    expect(formatUri(nbd)).toBe('tcp:[::1]:4444+nbd:10.0.0.2:10809:root,data-1');
    expect(parseUri(formatUri(nbd))).toEqual(nbd);
  });

  test('anything else is refused with the rule', () => {
    for (const bad of [
      'exec:cat',
      'tcp:localhost:1',
      'tcp:127.0.0.1:0',
      'tcp:127.0.0.1:70000',
      'tcp:1.2.3.4:5+nbd:1.2.3.4:6:',
      42,
    ])
      expect(() => parseUri(bad)).toThrow(HalError);
    expect(() => parseUri('unix:/x')).toThrow(/uri: "unix:\/x" must be a target address from prepareIncoming/);
  });
});

describe('hotplugSlots', () => {
  test('0 to 32 spare root ports; other values are refused naming the field', () => {
    const spec = base({ hotplugSlots: 7 });
    expect(() => validateSpec(spec)).not.toThrow();
    const { ports } = buildQemuCommand(spec, layout, opts({ hotplugPorts: spec.hotplugSlots! }));
    expect(ports.filter((p) => p.device === null)).toHaveLength(7);
    for (const bad of [-1, 33, 1.5, '4'])
      expect(() => validateSpec(base({ hotplugSlots: bad as any }))).toThrow(
        /spec\.hotplugSlots: .* must be an integer from 0 to 32/,
      );
  });
});

describe('command line for live operations', () => {
  const nics: VmSpec['nics'] = [
    { name: 'default', network: 'pod' },
    { name: 'lan', network: 'bridge', bridge: 'br0' },
  ];

  test('hub plumbing: the NIC peers a hub port; the backend of generation 0 sits behind the hub', () => {
    const { argv } = buildQemuCommand(
      base({ nics }),
      layout,
      opts({ taps: { lan: 'kvtap0' }, nicPlumbing: { default: { hub: 0, gen: 0 }, lan: { hub: 1, gen: 0 } } }),
    );
    expect(values(argv, '-netdev').map((n) => JSON.parse(n))).toEqual([
      { type: 'hubport', id: 'net-default', hubid: 0 },
      { type: 'stream', id: 'nb-default-0', server: false, addr: { type: 'unix', path: '/run/kv/vm1uid/net/default.sock' } },
      { type: 'hubport', id: 'np-default-0', hubid: 0, netdev: 'nb-default-0' },
      { type: 'hubport', id: 'net-lan', hubid: 1 },
      { type: 'tap', id: 'nb-lan-0', ifname: 'kvtap0', script: 'no', downscript: 'no' },
      { type: 'hubport', id: 'np-lan-0', hubid: 1, netdev: 'nb-lan-0' },
    ]);
    expect(
      devices(argv)
        .filter((d) => d.netdev)
        .map((d) => d.netdev),
    ).toEqual(['net-default', 'net-lan']);
  });

  test('placement: devices go to the source’s root ports (a hotplugged one included), -incoming defer last', () => {
    const spec = base({
      disks: [
        { name: 'root', path: '/a', format: 'qcow2', bus: 'virtio' },
        { name: 'hot', path: '/b', format: 'qcow2', bus: 'virtio' },
      ],
    });
    // On the source "hot" was hotplugged into a spare port after the other device.
    const placement = [
      { id: 'rp0', device: 'disk-root' },
      { id: 'rp1', device: null },
      { id: 'rp2', device: 'disk-hot' },
      { id: 'rp3', device: null },
    ];
    const { argv, ports } = buildQemuCommand(spec, layout, opts({ placement, incoming: true, hotplugPorts: 9 }));
    expect(ports).toEqual(placement);
    expect(
      devices(argv)
        .filter((d) => d.driver === 'virtio-blk-pci')
        .map((d) => [d.id, d.bus]),
    ).toEqual([
      ['disk-root', 'rp0'],
      ['disk-hot', 'rp2'],
    ]);
    expect(devices(argv).filter((d) => d.driver === 'pcie-root-port')).toHaveLength(4);
    expect(argv.slice(-2)).toEqual(['-incoming', 'defer']);
    expect(() => buildQemuCommand(base({ disks: spec.disks.slice(0, 1) }), layout, opts({ placement }))).toThrow(
      /placement: the source has devices this spec lacks: disk-hot/,
    );
    expect(() => buildQemuCommand(spec, layout, opts({ placement: placement.slice(0, 1) }))).toThrow(
      /placement: the source has no root port for device disk-hot/,
    );
  });

  test('a real QEMU accepts hub plumbing with -incoming defer and waits for the migration', async () => {
    ensureQemu();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvl-'));
    const l = layoutFor(dir, 'vm');
    fs.mkdirSync(l.dir);
    const spec = base({ nics: [{ name: 'n', network: 'user' }] });
    const { argv } = buildQemuCommand(
      spec,
      l,
      opts({ macs: { n: defaultMac(spec.uid, 'n') }, nicPlumbing: { n: { hub: 3, gen: 0 } }, incoming: true }),
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
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'inmigrate' });
      const info: string = await qmp.execute('human-monitor-command', { 'command-line': 'info network' });
      expect(info).toMatch(/hub 3[\s\S]*np-n-0: nb-n-0: .*type=user[\s\S]*net-n: nic-n:/);
      await qmp.execute('quit');
    } finally {
      if (!exited) child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe('sim backend: simulated live operations', () => {
  const fast = { startMs: 10, guestReadyMs: 20, stopMs: 10, migrateMs: 40, jitter: 0 };
  const vm = (o: Partial<VmSpec> = {}) =>
    base({ uid: `sim-${Math.random().toString(36).slice(2, 8)}`, nics: [{ name: 'default', network: 'pod' }], ...o });

  test('migrate moves the guest to the target node: Running there with the same MAC and guest facts, Migrated here', async () => {
    const a = new SimBackend({ delays: fast, world: new SimWorld() });
    const b = new SimBackend({ delays: fast, world: new SimWorld() });
    const spec = vm();
    await a.start(spec);
    await new Promise((r) => setTimeout(r, 40));
    const source = await a.migrationSource(spec.uid);
    const inc = await b.prepareIncoming(source.spec, { source });
    expect(inc.uri).toBe(`sim:${b.world.id}/${spec.uid}`);
    expect(b.status(spec.uid)).toMatchObject({ phase: 'Starting', reason: 'IncomingMigration' });
    const progress: MigrationProgress[] = [];
    const r = await a.migrate(spec.uid, { uri: inc.uri, onProgress: (p) => progress.push(p) });
    expect(r.bytes).toBe(64 * 1024 * 1024);
    expect(r.downtimeMs).toBeGreaterThan(0);
    expect(progress.map((p) => p.status)).toEqual(['active', 'active', 'active', 'completed']);
    expect(a.status(spec.uid)).toMatchObject({ phase: 'Succeeded', reason: 'Migrated' });
    const t = b.status(spec.uid)!;
    expect(t.phase).toBe('Running');
    expect(t.interfaces[0].mac).toBe(source.guest.interfaces[0].mac);
    expect(t.guestReadyAt).toBe(source.guest.readyAt);
  });

  test('cancel leaves the source running and fails the target; abortIncoming removes it; injected failures and shares are refused', async () => {
    const a = new SimBackend({
      delays: fast,
      world: new SimWorld(),
      failMigration: (s) => (s.name === 'flaky' ? 'link reset' : undefined),
    });
    const b = new SimBackend({ delays: fast, world: new SimWorld() });
    const spec = vm();
    await a.start(spec);
    const inc = await b.prepareIncoming(spec);
    const p = a.migrate(spec.uid, { uri: inc.uri });
    await a.cancelMigration(spec.uid);
    await expect(p).rejects.toMatchObject({ code: 'Cancelled' });
    expect(a.status(spec.uid)!.phase).toBe('Running');
    expect(b.status(spec.uid)).toMatchObject({ phase: 'Failed', reason: 'MigrationFailed' });
    await b.abortIncoming(spec.uid);
    expect(b.status(spec.uid)).toBeUndefined();
    await expect(a.migrate(spec.uid, { uri: inc.uri })).rejects.toThrow(/no migration target is waiting/);

    const flaky = vm({ name: 'flaky' });
    await a.start(flaky);
    const inc2 = await b.prepareIncoming(flaky);
    await expect(a.migrate(flaky.uid, { uri: inc2.uri })).rejects.toThrow(/link reset; the VM keeps running here/);
    expect(a.status(flaky.uid)!.phase).toBe('Running');

    await expect(b.prepareIncoming(vm({ filesystems: [{ tag: 't', hostPath: '/x', readOnly: true }] }))).rejects.toThrow(
      /cannot be live-migrated: spec\.filesystems\[0\]/,
    );
  });

  test('retargetNic keeps the MAC and refuses a new one', async () => {
    const a = new SimBackend({ delays: fast });
    const spec = vm();
    await a.start(spec);
    const mac = a.status(spec.uid)!.interfaces[0].mac;
    expect(await a.retargetNic(spec.uid, 'default', { name: 'default', network: 'bridge', bridge: 'br1' })).toMatchObject({
      method: 'in-place',
      mac,
    });
    await expect(
      a.retargetNic(spec.uid, 'default', { name: 'default', network: 'pod', mac: '52:54:00:00:00:01' }),
    ).rejects.toThrow(/must stay/);
  });
});
