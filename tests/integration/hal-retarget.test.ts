import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { HalError, QemuBackend, type VmSpec } from '../../controller/hal';
import { ensureGuest, type TestGuest } from '../guest';
import { runOnConsole, waitConsole } from '../helpers/guest-console';

/**
 * NIC re-targeting and hotplug on real guests, in network namespaces this test
 * makes and deletes (nothing touches the machine's own network):
 *   NS     QEMU (the backend's `netns`), bridges brA and brB
 *   NS-a   the peer on bridge A: 10.77.0.1 (a veth whose other end is on brA)
 *   NS-b   the peer on bridge B: 10.77.0.2
 * The peers live in namespaces of their own, so each address answers on its own
 * bridge only. Two guests: "hub" (default plumbing: every NIC behind a QEMU hub)
 * and "direct" (nicPlumbing 'direct', the fallback). pod NICs use passt, which
 * stays in the machine's namespace and maps its gateway to the host's loopback,
 * where a small HTTP server answers.
 */
const NS = `kvrt-${process.pid}`;
const PEERS = { brA: { ns: `${NS}-a`, ip: '10.77.0.1' }, brB: { ns: `${NS}-b`, ip: '10.77.0.2' } } as const;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });

let guest: TestGuest;
let tmp: string;
let server: http.Server;
let port: number;
let hub: QemuBackend;
let direct: QemuBackend;
const H = `halrth-${process.pid}`;
const D = `halrtd-${process.pid}`;
const token = `token-${process.pid}`;

function spec(uid: string, addr: string, extra: Partial<VmSpec> = {}): VmSpec {
  return {
    name: uid,
    uid,
    cpu: { cores: 1 },
    memoryMiB: 128,
    disks: [],
    nics: [{ name: 'lan', network: 'bridge', bridge: 'brA' }],
    filesystems: [],
    cloudInit: { userData: `#!/bin/sh\nip addr add ${addr}/24 dev eth0\nip link set eth0 up\n` },
    kernel: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
    ...extra,
  };
}

/** Pings both peers from the guest; also reports what tells a reboot or a hotplug from a link flap. */
async function probe(b: QemuBackend, uid: string, setup = '') {
  const out = await runOnConsole(
    () => b.status(uid),
    `${setup}a=no; b=no; ping -c 2 -W 1 ${PEERS.brA.ip} >/dev/null 2>&1 && a=ok; ping -c 2 -W 1 ${PEERS.brB.ip} >/dev/null 2>&1 && b=ok; ` +
      "echo \"PROBE-$((1+1)) A=$a B=$b IFS=$(ls /sys/class/net | tr '\\n' ,) FLAPS=$(cat /sys/class/net/eth0/carrier_changes) " +
      'MAC=$(cat /sys/class/net/eth0/address) BOOT=$(cat /proc/sys/kernel/random/boot_id)"',
  );
  const m = /PROBE-2 A=(\w+) B=(\w+) IFS=(\S+) FLAPS=(\d+) MAC=(\S+) BOOT=(\S+)/.exec(out);
  if (!m) throw new Error(`no probe result in: ${out}`);
  return { A: m[1], B: m[2], ifs: m[3], flaps: Number(m[4]), mac: m[5], boot: m[6] };
}

/** Static address again after a change of network (the guest has no DHCP on a bridge). */
const readdress = (addr: string) =>
  `ip addr flush dev eth0; ip route flush dev eth0; ip addr add ${addr}/24 dev eth0; ip link set eth0 up; `;

beforeAll(async () => {
  guest = ensureGuest();
  ip('netns', 'add', NS);
  for (const [br, peer] of Object.entries(PEERS)) {
    ip('-n', NS, 'link', 'add', br, 'type', 'bridge');
    ip('-n', NS, 'link', 'set', br, 'up');
    ip('netns', 'add', peer.ns);
    ip('-n', NS, 'link', 'add', `v${br}`, 'type', 'veth', 'peer', 'name', 'p0', 'netns', peer.ns);
    ip('-n', NS, 'link', 'set', `v${br}`, 'master', br, 'up');
    ip('-n', peer.ns, 'addr', 'add', `${peer.ip}/24`, 'dev', 'p0');
    ip('-n', peer.ns, 'link', 'set', 'p0', 'up');
  }
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvr-'));
  fs.chmodSync(tmp, 0o711); // passt runs as nobody and must reach its sockets below
  server = http.createServer((_req, res) => res.end(token));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
  hub = new QemuBackend({ runRoot: path.join(tmp, 'h'), netns: NS, stopGraceMs: 10_000 });
  direct = new QemuBackend({ runRoot: path.join(tmp, 'd'), netns: NS, stopGraceMs: 10_000, nicPlumbing: 'direct' });
  // Both guests boot at once; "hub" reserves a single hotplug slot.
  await Promise.all([hub.start(spec(H, '10.77.0.10', { hotplugSlots: 1 })), direct.start(spec(D, '10.77.0.11'))]);
}, 600_000);

afterAll(async () => {
  for (const [b, uid] of [
    [hub, H],
    [direct, D],
  ] as const) {
    if (b?.status(uid)) await b.kill(uid).catch(() => undefined);
    await b?.close();
  }
  server?.close();
  for (const n of [NS, PEERS.brA.ns, PEERS.brB.ns]) {
    try {
      ip('netns', 'del', n);
    } catch {
      /* not made */
    }
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('NIC behind a hub (default plumbing)', () => {
  let first: Awaited<ReturnType<typeof probe>>;

  test('on bridge A: reaches A’s peer, not B’s', async () => {
    first = await probe(hub, H);
    expect(first).toMatchObject({ A: 'ok', B: 'no', ifs: 'eth0,lo,', mac: hub.status(H)!.interfaces[0].mac });
  }, 120_000);

  test('bridge A → bridge B in place: reaches B’s peer and no longer A’s; same MAC, same boot, a link flap, no new NIC', async () => {
    const r = await hub.retargetNic(H, 'lan', { name: 'lan', network: 'bridge', bridge: 'brB' });
    expect(r).toMatchObject({ nic: 'lan', mac: first.mac, method: 'in-place' });
    expect(r.detail).toMatch(/moved to bridge brB/);
    const p = await probe(hub, H);
    expect(p).toMatchObject({ A: 'no', B: 'ok', ifs: 'eth0,lo,', mac: first.mac, boot: first.boot });
    expect(p.flaps).toBeGreaterThan(first.flaps);
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'h', H, 'state.json'), 'utf8')).spec.nics[0].bridge).toBe('brB');
  }, 60_000);

  test('bridge → pod (passt) in place behind the hub: DHCP from passt, the host’s loopback server answers', async () => {
    const r = await hub.retargetNic(H, 'lan', { name: 'lan', network: 'pod' });
    expect(r).toMatchObject({ method: 'in-place', mac: first.mac });
    const out = await runOnConsole(
      () => hub.status(H),
      'ip addr flush dev eth0; udhcpc -i eth0 -n -q -f -t 5 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1; ' +
        `echo "POD-$((1+1)) $(cat /run/net/eth0.ip) $(wget -q -O - http://$(cat /run/net/eth0.router):${port}/) $(cat /proc/sys/kernel/random/boot_id)"`,
    );
    const m = /POD-2 (\S+) (\S+) (\S+)/.exec(out);
    expect(m?.[1]).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(m?.[2]).toBe(token);
    expect(m?.[3]).toBe(first.boot);
    const state = JSON.parse(fs.readFileSync(path.join(tmp, 'h', H, 'state.json'), 'utf8'));
    expect(state.taps).toEqual({}); // the tap is gone with the bridge NIC
    expect(state.sidecars.filter((s: any) => s.kind === 'passt')).toHaveLength(1);
  }, 60_000);

  test('pod → bridge A in place: A’s peer answers again, same boot', async () => {
    const r = await hub.retargetNic(H, 'lan', { name: 'lan', network: 'bridge', bridge: 'brA' });
    expect(r.method).toBe('in-place');
    const p = await probe(hub, H, readdress('10.77.0.10'));
    expect(p).toMatchObject({ A: 'ok', B: 'no', ifs: 'eth0,lo,', mac: first.mac, boot: first.boot });
    const state = JSON.parse(fs.readFileSync(path.join(tmp, 'h', H, 'state.json'), 'utf8'));
    expect(state.sidecars.filter((s: any) => s.kind === 'passt')).toHaveLength(0); // passt stopped
  }, 60_000);

  test('bad requests are refused with the field and the rule, and leave the NIC as it was', async () => {
    const bad = async (nic: any, re: RegExp, code: HalError['code']) => {
      const e = await hub.retargetNic(H, 'lan', nic).catch((x) => x);
      expect(e).toBeInstanceOf(HalError);
      expect(e.code).toBe(code);
      expect(e.message).toMatch(re);
    };
    await bad({ name: 'other', network: 'pod' }, /nic\.name: "other" must be "lan"/, 'Invalid');
    await bad({ name: 'lan', network: 'pod', mac: '52:54:00:00:00:99' }, /nic\.mac: .* must stay /, 'Invalid');
    await bad({ name: 'lan', network: 'pod', model: 'e1000e' }, /changing the model .* needs a restart/, 'Unsupported');
    await bad(
      { name: 'lan', network: 'bridge', bridge: 'nosuchbr' },
      /bridge nosuchbr does not exist on this node in network namespace/,
      'Failed',
    );
    await bad({ name: 'lan', network: 'bridge' }, /nic\.bridge: undefined must name a Linux bridge/, 'Invalid');
    await expect(hub.retargetNic(H, 'nope', { name: 'nope', network: 'pod' })).rejects.toThrow(/NIC nope is not attached/);
    expect((await probe(hub, H)).A).toBe('ok');
  }, 60_000);

  test('hotplug into the one reserved slot: a NIC on bridge B appears and works, a second device finds no slot; unplug completes; a disk then uses the slot', async () => {
    await hub.attachNic(H, { name: 'side', network: 'bridge', bridge: 'brB' });
    const mac = hub.status(H)!.interfaces.find((i) => i.name === 'side')!.mac;
    await waitConsole(() => hub.status(H), new RegExp(`KUBEVM-GUEST-NIC mac=${mac}`), 30_000); // appeared (no DHCP on a bridge)
    const out = await runOnConsole(
      () => hub.status(H),
      `n=$(grep -l ${mac} /sys/class/net/*/address | cut -d/ -f5); ip addr add 10.77.0.20/24 dev $n; ip link set $n up; ` +
        `r=no; ping -c 2 -W 1 -I $n ${PEERS.brB.ip} >/dev/null 2>&1 && r=ok; echo "SIDE-$((1+1)) $n $r"`,
    );
    expect(out).toMatch(/SIDE-2 eth1 ok/);
    const disk = path.join(tmp, 'hot.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
    await expect(hub.attachDisk(H, { name: 'hot', path: disk, format: 'qcow2', bus: 'virtio' })).rejects.toThrow(
      /has no free hotplug slot \(all \d+ pcie-root-ports in use/,
    );
    await hub.detachNic(H, 'side'); // resolves on the guest's DEVICE_DELETED
    expect(hub.status(H)!.interfaces.map((i) => i.name)).toEqual(['lan']);
    await hub.attachDisk(H, { name: 'hot', path: disk, format: 'qcow2', bus: 'virtio' });
    await waitConsole(() => hub.status(H), /KUBEVM-GUEST-DISKS vda,vdb/, 30_000);
    await hub.detachDisk(H, 'hot');
    await waitConsole(() => hub.status(H), /KUBEVM-GUEST-DISKS vda\r?\n/, 30_000);
    expect((await probe(hub, H)).boot).toBe(first.boot);
  }, 90_000);
});

describe('NIC peering its backend directly (nicPlumbing direct)', () => {
  let first: Awaited<ReturnType<typeof probe>>;

  test('bridge A → bridge B moves the tap in place', async () => {
    first = await probe(direct, D);
    expect(first).toMatchObject({ A: 'ok', B: 'no' });
    const r = await direct.retargetNic(D, 'lan', { name: 'lan', network: 'bridge', bridge: 'brB' });
    expect(r.method).toBe('in-place');
    expect(await probe(direct, D)).toMatchObject({ A: 'no', B: 'ok', mac: first.mac, boot: first.boot });
  }, 120_000);

  test('bridge → pod falls back to a re-plug: same MAC in the same slot, the guest sees a hotplug, not a reboot', async () => {
    const before = JSON.parse(fs.readFileSync(path.join(tmp, 'd', D, 'state.json'), 'utf8'));
    const slot = before.ports.find((p: any) => p.device === 'nic-lan').id;
    const r = await direct.retargetNic(D, 'lan', { name: 'lan', network: 'pod' });
    expect(r).toMatchObject({ method: 'replug', mac: first.mac });
    expect(r.detail).toContain(`re-plugged in ${slot}`);
    const out = await runOnConsole(
      () => direct.status(D),
      'ip link set eth0 up; udhcpc -i eth0 -n -q -f -t 5 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1; ' +
        `echo "POD-$((1+1)) $(cat /sys/class/net/eth0/address) $(wget -q -O - http://$(cat /run/net/eth0.router):${port}/) $(cat /proc/sys/kernel/random/boot_id)"`,
    );
    expect(/POD-2 (\S+) (\S+) (\S+)/.exec(out)?.slice(1)).toEqual([first.mac, token, first.boot]);
    const after = JSON.parse(fs.readFileSync(path.join(tmp, 'd', D, 'state.json'), 'utf8'));
    expect(after.ports.find((p: any) => p.device === 'nic-lan').id).toBe(slot);
    expect(after.taps).toEqual({});
  }, 90_000);
});
