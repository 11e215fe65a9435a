import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { migratable, QemuBackend, type MigrationProgress, type VmSpec, type VmStatus } from '../../controller/hal';
import { ensureGuest, type TestGuest } from '../guest';
import { consoleText, runOnConsole, waitConsole } from '../helpers/guest-console';

/**
 * Live migration between two qemu backend instances on this machine (two node
 * agents: two run roots), with one real test guest moved back and forth:
 *  1. A → B, shared storage: a counter the guest prints on its console keeps
 *     counting on B; a disk hotplugged on A is where the guest left it; the pod
 *     NIC (passt) keeps its MAC and address and its port forward works again
 *     (served by B's passt once A's has let go of the port); downtime is reported.
 *  2. B → A, cancelled mid-way: B keeps running, A's incoming VM fails and is
 *     removed; then a completion timeout gives up the same way.
 *  3. B → A with block mirroring: A gets fresh copies of the disks over NBD; the
 *     guest reads on A what it wrote on B; A's image holds the host's pattern.
 * Budget: one boot (~7-15 s under TCG), migrations of a 128 MiB guest (~1 s).
 */
const UID = `halmig-${process.pid}`;
let guest: TestGuest;
let tmp: string;
let A: QemuBackend;
let B: QemuBackend;
let hostPort: number;
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

/** GET without keep-alive (a pooled connection would outlive the test), undefined on any failure. */
function fetchText(url: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 3_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body : undefined));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

async function eventually<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const counts = (s: VmStatus | undefined) => [...consoleText(s).matchAll(/COUNT=(\d+)\r?\n/g)].map((m) => Number(m[1]));
const alive = (pid: number) => fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
const disk = (dir: string, name: string) => path.join(tmp, dir, `${name}.qcow2`);

/** The VM's spec with its disks under `dir` (shared storage: one dir; block mirroring: one per node). */
function spec(dir: string): VmSpec {
  return {
    name: 'hal-mig',
    uid: UID,
    cpu: { cores: 1 },
    memoryMiB: 128,
    disks: [{ name: 'data', path: disk(dir, 'data'), format: 'qcow2', bus: 'virtio' }],
    nics: [
      { name: 'default', network: 'pod', portForwards: [{ protocol: 'tcp', port: 8080, hostPort, hostAddress: '127.0.0.1' }] },
    ],
    filesystems: [],
    cloudInit: {
      userData: `#!/bin/sh
mkdir -p /www; cat /proc/sys/kernel/random/boot_id > /www/id; httpd -p 8080 -h /www
printf 'guest-token-%s' $((6*7)) | dd of=/dev/vda bs=512 seek=4096 conv=fsync 2>/dev/null
( i=0; while :; do i=$((i+1)); echo "COUNT=$i"; sleep 0.5; done ) &
`,
    },
    kernel: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
  };
}

beforeAll(async () => {
  guest = ensureGuest();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-'));
  fs.chmodSync(tmp, 0o711); // passt runs as nobody and must reach its sockets below
  for (const d of ['shared', 'a-disks']) fs.mkdirSync(path.join(tmp, d));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk('shared', 'data'), '64M']);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk('shared', 'extra'), '32M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x6b 0 4096', disk('shared', 'extra')]); // "kkkk…"
  hostPort = await freePort();
  A = new QemuBackend({ runRoot: path.join(tmp, 'a'), stopGraceMs: 20_000 });
  B = new QemuBackend({ runRoot: path.join(tmp, 'b'), stopGraceMs: 20_000 });
  for (const [n, b] of [
    ['A', A],
    ['B', B],
  ] as const)
    b.observe((s, change) => events.push(`${n}:${change}:${s.phase}:${s.reason ?? ''}`));
}, 600_000);

afterAll(async () => {
  for (const b of [A, B]) {
    if (!b) continue;
    for (const s of b.list()) if (s.phase !== 'Succeeded' && s.phase !== 'Failed') await b.kill(s.uid).catch(() => undefined);
    await b.close();
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('migratable() refuses shared directories with the reason; prepareIncoming refuses them and starts nothing', async () => {
  const shared = { ...spec('shared'), filesystems: [{ tag: 'share0', hostPath: tmp, readOnly: true }] };
  const m = migratable(shared);
  expect(m).toEqual({
    ok: false,
    reason: expect.stringMatching(/spec\.filesystems\[0\] \(tag "share0"\) shares a host directory/),
  });
  expect(migratable(spec('shared'))).toEqual({ ok: true });
  await expect(B.prepareIncoming(shared)).rejects.toThrow(/cannot be live-migrated: spec\.filesystems\[0\]/);
  await expect(B.prepareIncoming(spec('shared'), { listen: { address: 'localhost' } })).rejects.toThrow(
    /listen\.address: "localhost" must be an IP address/,
  );
  expect(fs.existsSync(path.join(tmp, 'b', UID))).toBe(false);
});

describe('one guest, moved between two backends', () => {
  let bootId: string;
  let macs: string[];
  let ipBefore: string | undefined;
  let pidA: number;

  test('boots on A: counting on its console, a hotplugged disk, the port forward answers with its boot id', async () => {
    const s = await A.start(spec('shared'));
    pidA = s.pid!;
    await waitConsole(() => A.status(UID), /COUNT=3\r?\n/, 90_000);
    await A.attachDisk(UID, { name: 'extra', path: disk('shared', 'extra'), format: 'qcow2', bus: 'virtio' });
    await waitConsole(() => A.status(UID), /KUBEVM-GUEST-DISKS vda,vdb,vdc/, 30_000);
    bootId = (await eventually('the forwarded port on A', () => fetchText(`http://127.0.0.1:${hostPort}/id`), 30_000)).trim();
    expect(bootId).toMatch(/^[0-9a-f-]{36}$/);
    macs = A.status(UID)!.interfaces.map((i) => i.mac);
    ipBefore = A.status(UID)!.interfaces[0].ip;
    expect(ipBefore).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  }, 120_000);

  test('A → B over TCP (shared storage): the counter goes on on B, same MAC and address, downtime reported, A ends', async () => {
    const source = await A.migrationSource(UID);
    expect(source.spec.disks.map((d) => d.name)).toEqual(['data', 'extra']); // the hotplugged disk is part of it
    expect(source.disks.find((d) => d.name === 'extra')?.virtualSize).toBe(32 * 1024 * 1024);
    const inc = await B.prepareIncoming(source.spec, { source });
    expect(inc.uri).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
    expect(inc.status).toMatchObject({ phase: 'Starting', reason: 'IncomingMigration' });

    const progress: MigrationProgress[] = [];
    const lastOnA = () => counts(A.status(UID)).at(-1)!;
    const res = await A.migrate(UID, { uri: inc.uri, onProgress: (p) => progress.push(p) });
    expect(res.totalMs).toBeGreaterThan(0);
    expect(res.downtimeMs).toBeGreaterThan(0);
    expect(res.downtimeMs).toBeLessThanOrEqual(res.totalMs);
    expect(res.memoryBytes).toBeGreaterThan(1024 * 1024);
    expect(res.bytes).toBe(res.memoryBytes + res.diskBytes);
    expect(progress.some((p) => p.status === 'active' && p.transferredBytes > 0 && p.totalBytes >= 128 * 1024 * 1024)).toBe(true);

    expect(A.status(UID)).toMatchObject({ phase: 'Succeeded', reason: 'Migrated' });
    expect(alive(pidA)).toBe(false);
    await eventually('B running', () => (B.status(UID)!.phase === 'Running' ? true : undefined), 10_000);
    const b = B.status(UID)!;
    expect(b.interfaces.map((i) => i.mac)).toEqual(macs);
    expect(b.interfaces[0].ip).toBe(ipBefore);
    expect(b.guestReadyAt).toBe(A.status(UID)!.guestReadyAt);
    expect(events).toContain('B:migrated-in:Running:');

    // The guest did not restart: it counts on from where it was on A.
    const last = lastOnA();
    await waitConsole(() => B.status(UID), new RegExp(`COUNT=${last + 4}\\r?\\n`), 30_000);
    const onB = counts(B.status(UID));
    expect(onB[0]).toBeGreaterThan(last);
    expect(onB[0]).toBeLessThanOrEqual(last + 2); // a line cut at the switch-over is split between the two logs
    expect(onB).toEqual(onB.map((_c, i) => onB[0] + i));
  }, 60_000);

  test('on B: the hotplugged disk is in its slot, and the port forward reaches the same guest through B’s passt', async () => {
    const out = await runOnConsole(
      () => B.status(UID),
      'for d in /sys/block/vd*; do echo "DISK-$((1+1)) ${d##*/} $(cat $d/serial) $(head -c 4 /dev/${d##*/} | tr -c k .)"; done',
      { waitForShell: false },
    );
    expect(out).toMatch(/DISK-2 vdc extra kkkk/);
    expect(out).toMatch(/DISK-2 vda data /);
    const id = await eventually('the forwarded port on B', () => fetchText(`http://127.0.0.1:${hostPort}/id`), 60_000);
    expect(id.trim()).toBe(bootId);
    const state = JSON.parse(fs.readFileSync(path.join(tmp, 'b', UID, 'state.json'), 'utf8'));
    const passts = state.sidecars.filter((s: any) => s.kind === 'passt');
    expect(passts).toHaveLength(1);
    expect(alive(passts[0].process.pid)).toBe(true);
    expect(events).toContain('B:nic-forwards-ready:Running:');
  }, 90_000);

  test('B → A cancelled mid-way: B keeps running and counting, A’s incoming VM fails and abortIncoming removes it', async () => {
    await A.cleanup(UID); // the ended incarnation from before
    const source = await B.migrationSource(UID);
    const inc = await A.prepareIncoming(source.spec, { source });
    let cancel: Promise<void> | undefined;
    const p = B.migrate(UID, {
      uri: inc.uri,
      bandwidth: 1024 * 1024, // 1 MiB/s: slow enough to cancel
      onProgress: (pr) => {
        if (!cancel && pr.status === 'active' && pr.transferredBytes > 0) cancel = B.cancelMigration(UID);
      },
    });
    await expect(p).rejects.toMatchObject({ code: 'Cancelled' });
    await cancel;
    expect(B.status(UID)!.phase).toBe('Running');
    expect(await B.qmp(UID, 'query-status')).toMatchObject({ status: 'running' });
    const n = counts(B.status(UID)).at(-1)!;
    await waitConsole(() => B.status(UID), new RegExp(`COUNT=${n + 2}\\r?\\n`), 20_000);
    // A's QEMU loses its stream and exits; the backend says why.
    await eventually('A incoming ended', () => (A.status(UID)?.phase === 'Failed' ? true : undefined), 20_000);
    expect(A.status(UID)).toMatchObject({ reason: 'MigrationFailed' });
    await A.abortIncoming(UID);
    expect(fs.existsSync(path.join(tmp, 'a', UID))).toBe(false);
    await A.abortIncoming(UID); // idempotent
    await B.cancelMigration(UID); // nothing to cancel: a no-op
  }, 60_000);

  test('a completion timeout gives up the same way (HalError Timeout), the guest stays on B', async () => {
    const source = await B.migrationSource(UID);
    const inc = await A.prepareIncoming(source.spec, { source });
    // 8 s per GiB × 128 MiB of memory (no disk is mirrored) = 1 s, at 1 MiB/s: too little time.
    await expect(B.migrate(UID, { uri: inc.uri, bandwidth: 1024 * 1024, completionTimeoutPerGiB: 8 })).rejects.toThrow(
      /did not complete within 1 s \(completionTimeoutPerGiB 8 s\)/,
    );
    expect(B.status(UID)!.phase).toBe('Running');
    await A.abortIncoming(UID);
    expect(fs.existsSync(path.join(tmp, 'a', UID))).toBe(false);
  }, 60_000);

  test('B → A with block mirroring: A gets its own copies of the disks, holding what the guest and the host wrote', async () => {
    const source = await B.migrationSource(UID);
    const local: VmSpec = { ...source.spec, disks: source.spec.disks.map((d) => ({ ...d, path: disk('a-disks', d.name) })) };
    await expect(B.migrate(UID, { uri: 'tcp:127.0.0.1:1', blockMirror: true })).rejects.toThrow(
      /blockMirror: true needs a target prepared with blockMirror/,
    );
    // An image already there must have the source's size (blockdev-mirror needs equal sizes).
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk('a-disks', 'data'), '16M']);
    await expect(A.prepareIncoming(local, { source, blockMirror: true })).rejects.toThrow(
      /data\.qcow2 \(disk data\) exists with virtual size 16777216, but the source's disk has 67108864 bytes/,
    );
    fs.rmSync(disk('a-disks', 'data'));
    expect(fs.existsSync(path.join(tmp, 'a', UID))).toBe(false);
    const inc = await A.prepareIncoming(local, { source, blockMirror: true });
    expect(inc.uri).toMatch(/^tcp:127\.0\.0\.1:\d+\+nbd:127\.0\.0\.1:\d+:data,extra$/);
    expect(fs.existsSync(disk('a-disks', 'data'))).toBe(true); // created empty, 64 MiB like the source's
    const mirroring: MigrationProgress[] = [];
    const res = await B.migrate(UID, { uri: inc.uri, onProgress: (p) => p.disk && mirroring.push(p) });
    expect(res.diskBytes).toBe((64 + 32) * 1024 * 1024);
    expect(res.mirrorMs).toBeGreaterThan(0);
    expect(mirroring.at(-1)?.disk).toMatchObject({ ready: true, totalBytes: (64 + 32) * 1024 * 1024 });
    // A learns from its own QEMU's MIGRATION event, which may arrive just after B's migrate() resolved.
    await eventually('A running', () => (A.status(UID)!.phase === 'Running' ? true : undefined), 10_000);
    expect(B.status(UID)).toMatchObject({ phase: 'Succeeded', reason: 'Migrated' });

    const out = await runOnConsole(
      () => A.status(UID),
      'echo "READ-$((1+1)) $(dd if=/dev/vda bs=512 skip=4096 count=1 2>/dev/null | head -c 14) $(head -c 4 /dev/vdc | tr -c k .)"',
      { waitForShell: false },
    );
    expect(out).toMatch(/READ-2 guest-token-42 kkkk/);
    const n = await eventually('a count on A', () => counts(A.status(UID)).at(-1), 10_000);
    await waitConsole(() => A.status(UID), new RegExp(`COUNT=${n + 2}\\r?\\n`), 20_000);

    // The copies are A's own files: stop the guest and read them without QEMU.
    await A.kill(UID);
    const read = (file: string, cmd: string) =>
      execFileSync('qemu-io', ['-r', '-f', 'qcow2', '-c', cmd, file], { encoding: 'utf8' });
    expect(read(disk('a-disks', 'extra'), 'read -P 0x6b 0 4096')).toMatch(/read 4096\/4096 bytes/);
    expect(read(disk('a-disks', 'data'), 'read -v 2097152 14')).toMatch(/guest.token.42/);
    await A.cleanup(UID);
    await B.cleanup(UID);
  }, 120_000);
});
