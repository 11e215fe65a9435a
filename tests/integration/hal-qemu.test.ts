import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { HalError, QemuBackend, type VmSpec, type VmStatus } from '../../controller/hal';
import { ensureGuest, type TestGuest } from '../guest';

/**
 * The qemu backend against real QEMU (TCG here; KVM where usable) and the real
 * test guest. Two guests boot once, in parallel, and every check runs on them:
 *  - "main": passt NIC, read-only virtiofs share, a qcow2 data disk, user-data;
 *    then hotplug, pause, agent restart (adopt), virtiofs hotplug, graceful stop.
 *  - "ninep": the 9p fallback and QEMU user networking; then kill -9.
 * Budget: the guest prints its ready marker within 60 s of start().
 */
const READY_BUDGET_MS = 60_000;

let guest: TestGuest;
let tmp: string;
let runRoot: string;
let shareRoot: string;
let server: http.Server;
let port: number;
const token = `token-${process.pid}-${Date.now()}`;
const backends: QemuBackend[] = [];
const pids = new Set<number>();

function backend(opts: Partial<ConstructorParameters<typeof QemuBackend>[0]> = {}): QemuBackend {
  const b = new QemuBackend({ runRoot, allowedRoots: [shareRoot], stopGraceMs: 20_000, ...opts });
  backends.push(b);
  return b;
}

async function waitFor<T>(
  what: string,
  fn: () => T | undefined | null | false,
  timeoutMs: number,
  describe?: () => string,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describe ? `; last state: ${describe()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function consoleOf(s: VmStatus | undefined): string {
  try {
    return fs.readFileSync(s!.consoleLog!, 'utf8');
  } catch {
    return '';
  }
}

/** Waits until the console log matches and returns the first capture group (or the match). */
async function fromConsole(b: QemuBackend, uid: string, re: RegExp, timeoutMs = 30_000): Promise<string> {
  const m = await waitFor(
    `console /${re.source}/ of ${uid}`,
    () => re.exec(consoleOf(b.status(uid))),
    timeoutMs,
    () => consoleOf(b.status(uid)).slice(-600),
  );
  return m[1] ?? m[0];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const userData = (checks: string) => `#!/bin/sh
echo "UD-HOSTNAME=$(hostname)"
${checks}
echo UD-END
`;

function mainSpec(): VmSpec {
  const disk = path.join(tmp, 'data.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
  return {
    name: 'hal-main',
    uid: `halmain-${process.pid}`,
    cpu: { cores: 1 },
    memoryMiB: 256,
    disks: [{ name: 'data', path: disk, format: 'qcow2', bus: 'virtio' }],
    nics: [{ name: 'default', network: 'pod' }],
    filesystems: [{ tag: 'share0', hostPath: path.join(shareRoot, 'share'), readOnly: true }],
    cloudInit: {
      hostname: 'hal-main',
      userData: userData(`
echo "UD-SHARE=$(cat /mnt/share0/hello.txt)"
if echo x > /mnt/share0/written 2>/dev/null; then echo UD-WRITE=ok; else echo UD-WRITE=failed; fi
echo "UD-DISKS=$(ls /sys/block | grep vd | tr '\\n' ' ')"
gw=$(cat /run/net/eth0.router)
echo "UD-HTTP=$(wget -q -O - http://$gw:${port}/token)"`),
    },
    kernel: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
  };
}

function ninepSpec(): VmSpec {
  return {
    name: 'hal-ninep',
    uid: `halninep-${process.pid}`,
    cpu: { cores: 1 },
    memoryMiB: 192,
    disks: [],
    nics: [{ name: 'default', network: 'user' }],
    filesystems: [{ tag: 'share9', hostPath: path.join(shareRoot, 'share'), readOnly: true }],
    cloudInit: {
      userData: userData(`
echo "UD-SHARE=$(cat /mnt/share9/hello.txt)"
if echo x > /mnt/share9/written9 2>/dev/null; then echo UD-WRITE=ok; else echo UD-WRITE=failed; fi
echo "UD-FSTYPE=$(grep share9 /proc/mounts | cut -d' ' -f3)"`),
    },
    kernel: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
  };
}

beforeAll(async () => {
  guest = ensureGuest();
  // Short base path: unix socket paths (108 bytes) live under the run root.
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvh-'));
  fs.chmodSync(tmp, 0o711); // passt (running as nobody) must reach its socket below

  runRoot = path.join(tmp, 'run');
  shareRoot = path.join(tmp, 'shares');
  fs.mkdirSync(path.join(shareRoot, 'share'), { recursive: true });
  fs.writeFileSync(path.join(shareRoot, 'share', 'hello.txt'), 'hello-from-the-host\n');
  fs.mkdirSync(path.join(shareRoot, 'extra'));
  fs.writeFileSync(path.join(shareRoot, 'extra', 'extra.txt'), 'extra-content-42\n');
  fs.symlinkSync('/etc', path.join(shareRoot, 'escape'));
  server = http.createServer((req, res) => res.end(req.url === '/token' ? token : 'wrong path'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
}, 600_000);

afterAll(async () => {
  for (const b of backends) await b.close();
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('qemu backend on a real guest', () => {
  let main: QemuBackend;
  let ninep: QemuBackend;
  let mainUid: string;
  let ninepUid: string;
  let mainPid: number;

  test('refuses a share that escapes the allowed roots through a symlink, starting nothing', async () => {
    const b = backend();
    const spec = {
      ...ninepSpec(),
      uid: 'escape-1',
      filesystems: [{ tag: 'x', hostPath: path.join(shareRoot, 'escape'), readOnly: true }],
    };
    await expect(b.start(spec)).rejects.toThrow(
      /filesystems\[0\]\.hostPath: .*resolves through a symlink to "\/etc", outside the allowed roots/,
    );
    await expect(
      b.start({ ...spec, filesystems: [{ tag: 'x', hostPath: `${shareRoot}/share/../../..`, readOnly: true }] }),
    ).rejects.toThrow(/contains "\.\."/);
    expect(fs.existsSync(path.join(runRoot, 'escape-1'))).toBe(false);
  });

  test('boots both guests; the ready marker appears within the budget and QMP reports running', async () => {
    main = backend();
    ninep = backend({ fsDriver: '9p' });
    expect(main.fsDriver).toBe(main.host.root ? 'virtiofs' : '9p');
    const a = mainSpec();
    const b = ninepSpec();
    mainUid = a.uid;
    ninepUid = b.uid;
    const t0 = Date.now();
    const [sa, sb] = await Promise.all([main.start(a), ninep.start(b)]);
    pids.add(sa.pid!).add(sb.pid!);
    mainPid = sa.pid!;
    expect(sa.phase).toBe('Running');
    expect(sa.qmpReadyAt).toBeGreaterThanOrEqual(t0);
    expect(await main.qmp(mainUid, 'query-status')).toMatchObject({ status: 'running', running: true });

    const ready = await waitFor(
      'guest ready marker',
      () => main.status(mainUid)!.guestReadyAt,
      READY_BUDGET_MS,
      () => JSON.stringify(main.status(mainUid)),
    );
    expect(ready - t0).toBeLessThan(READY_BUDGET_MS);
    await waitFor(
      '9p guest ready marker',
      () => ninep.status(ninepUid)!.guestReadyAt,
      READY_BUDGET_MS,
      () => consoleOf(ninep.status(ninepUid)).slice(-500),
    );
    expect(main.status(mainUid)!.guestHostname).toBe('hal-main');
    expect(consoleOf(main.status(mainUid))).toMatch(/KUBEVM-GUEST-READY hostname=hal-main ip=\S+ macs=/);
  }, 120_000);

  test('user-data ran: hostname from the seed, the data disk is visible', async () => {
    await fromConsole(main, mainUid, /UD-END/);
    expect(await fromConsole(main, mainUid, /UD-HOSTNAME=(\S+)/)).toBe('hal-main');
    // vda = the data disk, vdb = the cidata seed
    expect(await fromConsole(main, mainUid, /UD-DISKS=([^\r\n]*)/)).toMatch(/vda vdb/);
  });

  test('pod network: passt hands out a lease and the guest reaches a TCP server on 127.0.0.1', async () => {
    const s = main.status(mainUid)!;
    expect(s.interfaces).toHaveLength(1);
    expect(s.interfaces[0].ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(await fromConsole(main, mainUid, /UD-HTTP=([^\r\n]*)/)).toBe(token);
  });

  test('read-only share: readable in the guest, writing fails (virtiofs and 9p)', async () => {
    expect(await fromConsole(main, mainUid, /UD-SHARE=([^\r\n]*)/)).toBe('hello-from-the-host');
    expect(await fromConsole(main, mainUid, /UD-WRITE=(\w+)/)).toBe('failed');
    await fromConsole(ninep, ninepUid, /UD-END/);
    expect(await fromConsole(ninep, ninepUid, /UD-SHARE=([^\r\n]*)/)).toBe('hello-from-the-host');
    expect(await fromConsole(ninep, ninepUid, /UD-WRITE=(\w+)/)).toBe('failed');
    expect(await fromConsole(ninep, ninepUid, /UD-FSTYPE=(\S+)/)).toBe('9p');
    expect(fs.readdirSync(path.join(shareRoot, 'share'))).toEqual(['hello.txt']);
  });

  test('user network: slirp lease', async () => {
    expect(ninep.status(ninepUid)!.interfaces[0].ip).toBe('10.0.2.15');
  });

  test('kill -9 of QEMU from outside is reported as a failure (own child, and adopted)', async () => {
    // Own child: a guest-less VM (firmware only) is enough to watch the process die.
    const bare = backend();
    const s0 = await bare.start({
      name: 'bare',
      uid: `halbare-${process.pid}`,
      cpu: { cores: 1 },
      memoryMiB: 64,
      disks: [],
      nics: [],
      filesystems: [],
    });
    pids.add(s0.pid!);
    const ended0 = new Promise<VmStatus>((resolve) => bare.observe((st, change) => change === 'ended' && resolve(st)));
    process.kill(s0.pid!, 'SIGKILL');
    expect(await ended0).toMatchObject({ phase: 'Failed', reason: 'Killed', exit: { code: null, signal: 'SIGKILL' } });
    await bare.cleanup(s0.uid);

    // Adopted: not our child, so the end is seen through QMP and /proc.
    const pid = ninep.status(ninepUid)!.pid!;
    await ninep.close();
    ninep = backend({ fsDriver: '9p' });
    expect((await ninep.adopt(ninepUid))!.pid).toBe(pid);
    const ended = new Promise<VmStatus>((resolve) =>
      ninep.observe((st, change) => st.uid === ninepUid && change === 'ended' && resolve(st)),
    );
    process.kill(pid, 'SIGKILL');
    expect(await ended).toMatchObject({ phase: 'Failed', reason: 'ProcessGone' });
    await ninep.cleanup(ninepUid);
    expect(fs.existsSync(path.join(runRoot, ninepUid))).toBe(false);
  });

  test('stop of a paused VM skips the power button (a paused guest cannot see it) and quits', async () => {
    const bare = backend();
    const s0 = await bare.start({
      name: 'bare',
      uid: `halpaused-${process.pid}`,
      cpu: { cores: 1 },
      memoryMiB: 64,
      disks: [],
      nics: [],
      filesystems: [],
    });
    pids.add(s0.pid!);
    await bare.pause(s0.uid);
    const t0 = Date.now();
    expect(await bare.stop(s0.uid, { graceMs: 20_000 })).toMatchObject({
      phase: 'Succeeded',
      reason: 'Stopped',
      exit: { code: 0 },
    });
    expect(Date.now() - t0).toBeLessThan(5_000);
    await bare.cleanup(s0.uid);
  });

  test('hotplug: a disk and a NIC appear in the guest and unplug again', async () => {
    const disk = path.join(tmp, 'hot.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
    await main.attachDisk(mainUid, { name: 'hot', path: disk, format: 'qcow2', bus: 'virtio' });
    await fromConsole(main, mainUid, /KUBEVM-GUEST-DISKS vda,vdb,vdc/);
    await main.attachNic(mainUid, { name: 'extra', network: 'user' });
    const nic = await waitFor(
      'hotplugged NIC lease',
      () => main.status(mainUid)!.interfaces.find((i) => i.name === 'extra')?.ip,
      20_000,
    );
    expect(nic).toBe('10.0.2.15');
    await main.detachNic(mainUid, 'extra');
    await main.detachDisk(mainUid, 'hot');
    await fromConsole(main, mainUid, /KUBEVM-GUEST-DISKS vda,vdb\r?\n/);
    await expect(main.detachDisk(mainUid, 'hot')).rejects.toThrow(HalError);
  }, 60_000);

  test('pause and resume', async () => {
    expect((await main.pause(mainUid)).phase).toBe('Paused');
    expect(await main.qmp(mainUid, 'query-status')).toMatchObject({ status: 'paused' });
    expect((await main.resume(mainUid)).phase).toBe('Running');
  });

  test('agent restart: a new backend instance adopts the same QEMU pid', async () => {
    const before = main.status(mainUid)!;
    await main.close(); // the old agent goes away; QEMU keeps running
    expect(alive(mainPid)).toBe(true);
    main = backend();
    expect(main.status(mainUid)).toBeUndefined();
    expect(await main.discover()).toContain(mainUid);
    const s = await main.adopt(mainUid);
    expect(s).toMatchObject({ phase: 'Running', pid: mainPid, adopted: true, guestReadyAt: before.guestReadyAt });
    expect(await main.qmp(mainUid, 'query-status')).toMatchObject({ status: 'running' });
    await waitFor(
      'interface IPs recovered from the console log',
      () => main.status(mainUid)!.interfaces[0]?.ip === before.interfaces[0].ip,
      5_000,
    );
    // Adopting twice is harmless; a uid with no process is not adoptable.
    expect((await main.adopt(mainUid))!.pid).toBe(mainPid);
    expect(await main.adopt('no-such-vm')).toBeUndefined();
  });

  test('mountPath hotplugs a read-only virtiofs share; the console socket takes commands', async () => {
    if (!main.capabilities().includes('hotplug-filesystem')) return; // not root: 9p only
    await expect(
      main.mountPath(mainUid, { tag: 'bad', hostPath: path.join(shareRoot, 'escape'), readOnly: true }),
    ).rejects.toThrow(/symlink/);
    await main.mountPath(mainUid, { tag: 'extra', hostPath: path.join(shareRoot, 'extra'), readOnly: true });
    const sock = net.createConnection(main.status(mainUid)!.consoleSocket!);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    // The guest needs a moment to bind the hotplugged device; retry the mount in the guest.
    sock.write(
      '\nmkdir -p /mnt/x; for i in 1 2 3 4 5 6 7 8 9 10; do mount -t virtiofs -o ro extra /mnt/x 2>/dev/null && break; sleep 0.5; done; ' +
        'cat /mnt/x/extra.txt; touch /mnt/x/new 2>/dev/null || echo HOTPLUG-RO-$((40+2))\n',
    );
    await fromConsole(main, mainUid, /^extra-content-42/m, 20_000);
    await fromConsole(main, mainUid, /HOTPLUG-RO-42/, 10_000);
    sock.destroy();
    expect(fs.existsSync(path.join(shareRoot, 'extra', 'new'))).toBe(false);
  }, 40_000);

  test('graceful stop: ACPI power button, the guest powers off, QEMU and its helpers end', async () => {
    const st = await main.stop(mainUid);
    expect(st).toMatchObject({ phase: 'Succeeded', reason: 'GuestShutdown' });
    expect(alive(mainPid)).toBe(false);
    expect(consoleOf(st)).toMatch(/KUBEVM-GUEST-POWEROFF/);
    const state = JSON.parse(fs.readFileSync(path.join(runRoot, mainUid, 'state.json'), 'utf8'));
    for (const s of state.sidecars) expect(alive(s.process.pid)).toBe(false);
    await main.cleanup(mainUid);
    expect(fs.existsSync(path.join(runRoot, mainUid))).toBe(false);
    expect(fs.readFileSync(path.join(shareRoot, 'share', 'hello.txt'), 'utf8')).toBe('hello-from-the-host\n');
  }, 40_000);
});
