import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { HalError, QemuBackend, type PortForward, type VmSpec } from '../../controller/hal';
import { passtLease } from '../../controller/hal/qemu/sidecars';
import { passtBackoffMs } from '../../controller/hal/qemu/supervise';
import { ensureGuest, type TestGuest } from '../guest';
import { runOnConsole, waitConsole } from '../helpers/guest-console';

/**
 * passt as the pod network's binding, on real guests: the address its DHCP
 * leases in the status, supervision (a passt killed with SIGKILL is restarted
 * and plugged in again behind the NIC's hub; the guest keeps running), port
 * forwards changed on a running VM, and supervision across adoption, with the
 * restart bound. Two guests boot at once: "hub" (default plumbing) and
 * "direct" (`nicPlumbing: 'direct'`: a re-plug instead of a swap behind a hub).
 * Each serves `/id` (which port answered, and its boot id) with busybox httpd
 * on guest ports 8080 and 8081; the host forwards node ports to them.
 */
const H = `halpst-${process.pid}`;
const D = `halpsd-${process.pid}`;
const token = `token-${process.pid}`;
let guest: TestGuest;
let tmp: string;
let hub: QemuBackend;
let direct: QemuBackend;
let server: http.Server;
let loopbackPort: number;
const P: number[] = []; // free node ports
const events: string[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** GET without keep-alive, undefined on any failure (a port nobody forwards, a dead passt). */
function fetchText(port: number, p = '/id'): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false, timeout: 3_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : undefined));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

async function eventually<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const fwd = (port: number, hostPort: number): PortForward => ({ protocol: 'tcp', port, hostPort, hostAddress: '127.0.0.1' });

function spec(uid: string, forwards: PortForward[]): VmSpec {
  return {
    name: uid,
    uid,
    cpu: { cores: 1 },
    memoryMiB: 128,
    disks: [],
    nics: [{ name: 'default', network: 'pod', portForwards: forwards }],
    filesystems: [],
    cloudInit: {
      userData: `#!/bin/sh
b=$(cat /proc/sys/kernel/random/boot_id)
for p in 8080 8081; do mkdir -p /www$p; echo "port$p $b" > /www$p/id; httpd -p $p -h /www$p; done
`,
    },
    kernel: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
  };
}

const stateOf = (b: string, uid: string) => JSON.parse(fs.readFileSync(path.join(tmp, b, uid, 'state.json'), 'utf8'));
const passtPid = (b: string, uid: string): number => stateOf(b, uid).sidecars.find((s: any) => s.kind === 'passt').process.pid;
const alive = (pid: number) => fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
/** Sockets a process holds open. */
const sockets = (pid: number) =>
  fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false;
    }
  }).length;
const backend = (dir: string, extra: Partial<ConstructorParameters<typeof QemuBackend>[0]> = {}) => {
  const b = new QemuBackend({ runRoot: path.join(tmp, dir), stopGraceMs: 10_000, ...extra });
  b.observe((s, change) => events.push(`${dir}:${s.uid}:${change}:${s.interfaces[0]?.passt ?? ''}`));
  return b;
};

beforeAll(async () => {
  guest = ensureGuest();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvp-'));
  fs.chmodSync(tmp, 0o711); // passt runs as nobody and must reach its sockets below
  server = http.createServer((_req, res) => res.end(token));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  loopbackPort = (server.address() as net.AddressInfo).port;
  for (let i = 0; i < 5; i++) P.push(await freePort());
  hub = backend('h');
  direct = backend('d', { nicPlumbing: 'direct' });
  await Promise.all([hub.start(spec(H, [fwd(8080, P[0])])), direct.start(spec(D, [fwd(8080, P[4])]))]);
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
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the lease is read from passt’s start-up log (IPv4 only, the last start wins); the back-off doubles up to its cap', () => {
  const start = (a: string) =>
    `Failed to send 12 bytes to syslog\nDHCP:\n    assign: ${a}\n    mask: 255.255.255.0\n    router: 192.0.2.1\nNDP/DHCPv6:\n    assign: fd00::2\n`;
  expect(passtLease(start('192.0.2.2'))).toBe('192.0.2.2');
  expect(passtLease(start('192.0.2.2') + start('10.1.2.3'))).toBe('10.1.2.3');
  expect(passtLease('NDP/DHCPv6:\n    assign: fd00::2\n')).toBeUndefined();
  expect([0, 1, 2, 3, 4, 5, 6, 7].map((n) => passtBackoffMs(n))).toEqual([0, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  expect(passtBackoffMs(2, { backoffMs: 100, maxBackoffMs: 150 })).toBe(150);
});

describe('one guest, its NIC behind a hub', () => {
  let boot: string;
  let qemuPid: number;

  test('the status carries the address passt leases, first from passt’s log, then as the guest reports it', async () => {
    // start() returned at QMP ready, long before the guest booted: the lease comes from passt itself.
    const early = events.find((e) => e.startsWith(`h:${H}:qmp-ready:`));
    expect(early).toBe(`h:${H}:qmp-ready:Running`);
    const lease = stateOf('h', H).sidecars.find((s: any) => s.kind === 'passt').lease;
    expect(lease).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const ready = await waitConsole(() => hub.status(H), /KUBEVM-GUEST-READY hostname=\S+ ip=(\S+)/, 90_000);
    expect(ready[1]).toBe(lease); // what udhcpc in the guest got is what passt logged
    await eventually('the guest’s report', () => hub.status(H)!.interfaces[0].ipSource === 'guest');
    expect(hub.status(H)!.interfaces[0]).toMatchObject({ name: 'default', ip: lease, ipSource: 'guest', passt: 'Running' });
    expect(hub.status(H)!.interfaces[0].passtRestarts).toBeUndefined();
    boot = (await eventually('the forwarded port', () => fetchText(P[0]), 60_000)).replace(/^port8080 /, '');
    expect(boot).toMatch(/^[0-9a-f-]{36}$/);
    qemuPid = hub.status(H)!.pid!;
  }, 120_000);

  test('kill -9 of its passt: a new passt is plugged in behind the hub; the forwarded port answers again, same boot; the guest reaches the node', async () => {
    const old = passtPid('h', H);
    process.kill(old, 'SIGKILL');
    // Poll: the first restart is immediate, but this machine is slow; no timing is asserted.
    expect(await eventually('the forwarded port after the restart', () => fetchText(P[0]), 60_000)).toBe(`port8080 ${boot}`);
    // The new passt may answer before the supervisor has recorded it (this machine is slow under load).
    const now = await eventually('the new passt recorded', () => {
      const p = passtPid('h', H);
      return p !== old ? p : undefined;
    });
    expect(alive(now)).toBe(true);
    const s = await eventually('the restart in the status', () => {
      const x = hub.status(H)!;
      return x.interfaces[0].passt === 'Running' && x.interfaces[0].passtRestarts === 1 ? x : undefined;
    });
    expect(s).toMatchObject({ phase: 'Running', pid: qemuPid });
    expect(s.message).toMatch(
      /NIC default: its passt went away \(network backend nb-default-0 disconnected\); a new passt was started \(behind the NIC's hub\), restart 1/,
    );
    expect(events.filter((e) => e.startsWith(`h:${H}:nic-backend-`))).toEqual([
      `h:${H}:nic-backend-lost:Restarting`,
      `h:${H}:nic-backend-renewed:Restarting`,
      `h:${H}:nic-backend-restarted:Running`,
    ]);
    const st = stateOf('h', H);
    expect(st.nicPlumbing.default.gen).toBe(1);
    expect(st.passtSupervision.default).toMatchObject({ restarts: 1 });
    // Outbound too: the guest reaches the node's loopback through passt's gateway.
    const out = await runOnConsole(
      () => hub.status(H),
      `echo "OUT-$((1+1)) $(wget -q -O - http://$(cat /run/net/eth0.router):${loopbackPort}/) $(cat /proc/sys/kernel/random/boot_id)"`,
    );
    expect(/OUT-2 (\S+) (\S+)/.exec(out)?.slice(1)).toEqual([token, boot]);
  }, 120_000);

  test('port forwards changed live: the new port answers, the old one no longer does; no restart', async () => {
    const r = await hub.retargetNic(H, 'default', { name: 'default', network: 'pod', portForwards: [fwd(8081, P[1])] });
    expect(r).toMatchObject({ nic: 'default', method: 'in-place' });
    expect(r.detail).toMatch(/a new passt \(forwards tcp \d+→8081\) swapped in behind the NIC's hub/);
    expect(await eventually('the new forward', () => fetchText(P[1]), 60_000)).toBe(`port8081 ${boot}`);
    expect(await fetchText(P[0])).toBeUndefined();
    expect(hub.status(H)).toMatchObject({ phase: 'Running', pid: qemuPid });
    expect(stateOf('h', H).spec.nics[0].portForwards).toEqual([fwd(8081, P[1])]);
    // Overlapping sets: the new passt needs P[1] too, so the old one lets go first.
    await hub.retargetNic(H, 'default', { name: 'default', network: 'pod', portForwards: [fwd(8081, P[1]), fwd(8080, P[0])] });
    expect(
      await eventually(
        'both forwards',
        async () => ((await fetchText(P[1])) && (await fetchText(P[0])) ? true : undefined),
        60_000,
      ),
    ).toBe(true);
    expect(await fetchText(P[0])).toBe(`port8080 ${boot}`);
    expect(hub.status(H)!.interfaces[0]).toMatchObject({ passt: 'Running', passtRestarts: 1 }); // a change asked for is no restart
  }, 120_000);

  test('a node port another process holds is refused with the field and the rule; the NIC keeps its forwards', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(P[2], '127.0.0.1', r));
    try {
      const e = await hub
        .retargetNic(H, 'default', { name: 'default', network: 'pod', portForwards: [fwd(8081, P[1]), fwd(8080, P[2])] })
        .catch((x) => x);
      expect(e).toBeInstanceOf(HalError);
      expect(e.message).toMatch(
        new RegExp(
          `nic\\.portForwards\\[1\\]: tcp port ${P[2]} on 127\\.0\\.0\\.1 cannot be forwarded: the node port is taken \\(EADDRINUSE\\); the NIC is unchanged`,
        ),
      );
    } finally {
      holder.close();
    }
    expect(await fetchText(P[1])).toBe(`port8081 ${boot}`);
    expect(stateOf('h', H).spec.nics[0].portForwards).toHaveLength(2);
  }, 60_000);

  test('adoption keeps supervision: a passt that died while no agent ran is restarted by the adopting backend', async () => {
    const before = sockets(qemuPid);
    await hub.close(); // the agent goes away; QEMU and passt keep running
    const old = passtPid('h', H);
    process.kill(old, 'SIGKILL');
    // QEMU has seen passt go (and our QMP connection) once it closed both sockets: its event went to nobody.
    await eventually('QEMU to drop the QMP and passt connections', () => sockets(qemuPid) === before - 2);
    // The next agent restarts at most once within the window (the bound, below).
    hub = backend('h', { passtRestart: { maxRestarts: 1, backoffMs: 100 } });
    const s = await hub.adopt(H);
    expect(s).toMatchObject({ phase: 'Running', pid: qemuPid, adopted: true });
    expect(await eventually('the forwarded port after adoption', () => fetchText(P[1]), 60_000)).toBe(`port8081 ${boot}`);
    expect(alive(passtPid('h', H))).toBe(true);
    await eventually('the restart count carried over', () => hub.status(H)!.interfaces[0].passtRestarts === 2);
    expect(hub.status(H)!.message).toMatch(/its passt ended while no agent was watching; a new passt was started/);
  }, 120_000);

  test('the bound: a passt that keeps dying is given up on (Failed, with the reason); new port forwards bring a new one', async () => {
    process.kill(passtPid('h', H), 'SIGKILL');
    const s = await eventually('the supervisor giving up', () => {
      const x = hub.status(H)!;
      return x.interfaces[0].passt === 'Failed' ? x : undefined;
    });
    expect(s.phase).toBe('Running'); // the VM runs on, without a network on that NIC
    expect(s.message).toMatch(
      /NIC default: its passt ended 2 times within 600 s; not restarted again .*; the NIC has no network until the VM restarts or its port forwards change/,
    );
    expect(events).toContain(`h:${H}:nic-backend-failed:Failed`);
    expect(await fetchText(P[1])).toBeUndefined();
    await hub.retargetNic(H, 'default', { name: 'default', network: 'pod', portForwards: [fwd(8080, P[3])] });
    expect(await eventually('a fresh passt', () => fetchText(P[3]), 60_000)).toBe(`port8080 ${boot}`);
    expect(hub.status(H)!.interfaces[0]).toMatchObject({ passt: 'Running', passtRestarts: 2 });
    expect(stateOf('h', H).passtSupervision.default).toMatchObject({ restarts: 2, recent: [] });
  }, 120_000);

  test('a stop is not a crash: passt goes with the VM and nothing restarts it', async () => {
    const pid = passtPid('h', H);
    const ended = await hub.stop(H, { graceMs: 10_000 });
    expect(ended.phase).toBe('Succeeded');
    expect(alive(pid)).toBe(false);
    expect(events.filter((e) => e.startsWith(`h:${H}:nic-backend-lost`))).toHaveLength(3); // the three kills above
  }, 60_000);
});

test('a NIC without a hub (nicPlumbing direct): a killed passt is replaced by re-plugging the NIC; the forward answers again', async () => {
  await waitConsole(() => direct.status(D), /KUBEVM-USERDATA-DONE/, 90_000);
  const boot = (await eventually('the forwarded port', () => fetchText(P[4]), 60_000)).replace(/^port8080 /, '');
  const old = passtPid('d', D);
  process.kill(old, 'SIGKILL');
  const s = await eventually('the re-plug', () => {
    const x = direct.status(D)!;
    return x.interfaces[0].passtRestarts === 1 ? x : undefined;
  });
  expect(s.interfaces[0].passt).toBe('Running');
  // The guest saw an unplug and a hotplug: the interface is back, without its address (the test
  // guest's watcher knows eth0 by name and does not run DHCP again, so do it here).
  const out = await runOnConsole(
    () => direct.status(D),
    'ip link set eth0 up; udhcpc -i eth0 -n -q -f -t 5 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1; echo "DHCP-$((1+1)) $(cat /run/net/eth0.ip)"',
  );
  expect(/DHCP-2 (\S+)/.exec(out)?.[1]).toBe(s.interfaces[0].ip);
  expect(await eventually('the forwarded port after the re-plug', () => fetchText(P[4]), 60_000)).toBe(`port8080 ${boot}`);
  expect(s.message).toMatch(/a new passt was started \(the NIC re-plugged\), restart 1/);
  expect(passtPid('d', D)).not.toBe(old);
}, 150_000);
