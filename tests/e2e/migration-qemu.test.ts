import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { Kube } from '../../controller/runtime/kube';
import { startTestCluster, TestCluster, eventually, tempDir } from '../helpers/cluster';
import { openWatch, type WatchStream } from '../helpers/watch';
import { consoleText, runOnConsole, waitConsole, type ConsoleVm } from '../helpers/guest-console';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { ensureGuest, TestGuest } from '../guest';

/**
 * Live operations on real QEMU guests through the whole stack (API server,
 * controller, two node agents, the real CLI), docs/migration.md:
 *  1. "mover", a guest counting on its console, migrates node → node and back
 *     (ping-pong): the count goes on, same boot id, same instance uid, the VM
 *     status names the new node, the Migration reports duration, downtime and
 *     bytes; what the guest writes to its data disk after two moves is there
 *     at the next boot. Deleting a running Migration cancels it; blockMigration
 *     onto shared storage is refused; stop and start work after the moves.
 *  2. mover's interface moves from bridge Network A to B in place: it reaches
 *     B's peer and no longer A's, no reboot, an InterfaceRetargeted event.
 *  3. A disk and a NIC added to mover's spec appear in the guest; removed, they
 *     are unplugged (VMI status.attached follows); a sata disk is refused live.
 *  4. `kubevm node drain` (bin/kubevm) moves mover off the node and exits 1
 *     naming "pinned", which shares a host directory; with evictionStrategy
 *     None the next drain stops it; `kubevm node uncordon` reopens the node.
 *
 * Networking lives in network namespaces this test makes and deletes: NS holds
 * QEMU's taps and the two Networks' bridges (made here under the names the
 * Network reconciler chose; bridges without kubevm's alias are the operator's,
 * used as they are); NS-a and NS-b hold one peer each, on a veth into bridge A
 * or B, so each peer answers on its own bridge only.
 *
 * Budget (2 cores, TCG; ~80 s in all): two 128 MiB guests boot at once
 * (~20 s), one reboot, six migrations of 0.3-3 s each, two PCIe unplugs.
 */
const NS = `kvmig-${process.pid}`;
const PEERS = { a: { ns: `${NS}-a`, ip: '10.77.0.1' }, b: { ns: `${NS}-b`, ip: '10.77.0.2' } } as const;
const GUEST_IP = '10.77.0.10';
const BOOT_MS = 90_000;
const ns = 'default';
const api = `/apis/kubevm.dev/v1alpha1/namespaces/${ns}`;
const REPO = path.resolve(__dirname, '..', '..');

let c: TestCluster;
let rt: Runtime | undefined;
let guest: TestGuest;
let shareRoot: string;
const netnsMade: string[] = [];

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });
const get = async (p: string) => (await c.request('GET', p)).json;
const merge = async (p: string, body: any) => {
  const r = await c.request('PATCH', p, body, { 'Content-Type': 'application/merge-patch+json' });
  if (r.status !== 200) throw new Error(`PATCH ${p}: ${r.status} ${r.text}`);
  return r.json;
};
const post = async (plural: string, body: any) => {
  const r = await c.request('POST', `${api}/${plural}`, { apiVersion: 'kubevm.dev/v1alpha1', ...body });
  if (r.status !== 201) throw new Error(`POST ${plural}: ${r.status} ${r.text}`);
  return r.json;
};

/** The console of the VM's current instance (log and socket on the node that runs it). */
async function consoleOf(name: string, node?: string): Promise<ConsoleVm> {
  const vmi = await eventually(
    async () => {
      const v = await get(`${api}/virtualmachineinstances/${name}`);
      const log: string | undefined = v?.status?.consoleLog;
      if (!log || (node && (v.status.nodeName !== node || !log.includes(`${path.sep}${node}${path.sep}`)))) return undefined;
      return v;
    },
    30_000,
    `the console of ${name}${node ? ` on ${node}` : ''}`,
  );
  const log = vmi.status.consoleLog;
  return { consoleLog: log, consoleSocket: path.join(path.dirname(log), 'console.sock') };
}

const counts = (text: string) => [...text.matchAll(/COUNT=(\d+)\r?\n/g)].map((m) => Number(m[1]));

// The data disk, found by its serial (the disk name).
const DATA_DEV = 'dev=; for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = data ] && dev=/dev/${d##*/}; done';

// A static address on the bridge (no DHCP there), what the data disk holds, the boot id, then a count every half second.
const moverUserData = `#!/bin/sh
ip addr add ${GUEST_IP}/24 dev eth0
ip link set eth0 up
${DATA_DEV}
echo "DISK-HOLDS=$(dd if=$dev bs=36 count=1 2>/dev/null | tr -dc 0-9a-f-)."
echo "BOOT-ID=$(cat /proc/sys/kernel/random/boot_id)"
( i=0; while :; do i=$((i+1)); echo "COUNT=$i"; sleep 0.5; done ) &
`;

function vmSpec(extra: any): any {
  return {
    runStrategy: 'Always',
    memory: '128Mi',
    terminationGracePeriodSeconds: 5,
    firmware: { kernel: { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline } },
    ...extra,
  };
}

async function running(name: string, uidNot?: string): Promise<any> {
  return eventually(
    async () => {
      const v = await get(`${api}/virtualmachines/${name}`);
      return v.status?.printableStatus === 'Running' && v.status.ready && v.status.instanceUID !== uidNot ? v : undefined;
    },
    BOOT_MS,
    `${name} running`,
  );
}

/**
 * Creates a Migration (POST of `spec`, or `create` for another way) once watches are open, and waits for its
 * end, recording the phases it went through and the VM's printable statuses meanwhile.
 */
async function migrate(
  name: string,
  spec: any,
  create?: () => Promise<void>,
): Promise<{ m: any; phases: string[]; vmStates: string[]; progress: number[] }> {
  const watch: WatchStream = await openWatch(c, `${api}/migrations?watch=true`);
  const vmWatch: WatchStream = await openWatch(c, `${api}/virtualmachines?watch=true`);
  try {
    if (create) await create();
    else await post('migrations', { kind: 'Migration', metadata: { name }, spec });
    const [end] = await watch.waitFor(
      (e) => e.object?.metadata?.name === name && ['Succeeded', 'Failed'].includes(e.object.status?.phase),
      1,
      120_000,
    );
    const phases = [
      ...new Set(
        watch.events
          .filter((e) => e.object?.metadata?.name === name)
          .map((e) => e.object.status?.phase)
          .filter(Boolean),
      ),
    ] as string[];
    const vmStates = [
      ...new Set(vmWatch.events.filter((e) => e.object?.metadata?.name === spec.vm).map((e) => e.object.status?.printableStatus)),
    ] as string[];
    const progress = watch.events
      .filter(
        (e) => e.object?.metadata?.name === name && e.object.status?.phase === 'Running' && e.object.status.bytesTransferred,
      )
      .map((e) => e.object.status.bytesTransferred);
    return { m: end.object, phases, vmStates, progress };
  } finally {
    watch.close();
    vmWatch.close();
  }
}

/** A failed migration fails the test with its reason and message. */
function succeeded(m: any): any {
  if (m.status?.phase !== 'Succeeded')
    throw new Error(`Migration ${m.metadata.name} is ${m.status?.phase}: ${m.status?.reason}: ${m.status?.message}`);
  return m.status;
}

/** Pings both peers from the guest; reports what tells a reboot or a hotplug from a link flap. */
async function probe(con: ConsoleVm, waitForShell = false) {
  const out = await runOnConsole(
    () => con,
    `a=no; b=no; ping -c 2 -W 1 ${PEERS.a.ip} >/dev/null 2>&1 && a=ok; ping -c 2 -W 1 ${PEERS.b.ip} >/dev/null 2>&1 && b=ok; ` +
      'echo "PROBE-$((1+1)) A=$a B=$b FLAPS=$(cat /sys/class/net/eth0/carrier_changes) MAC=$(cat /sys/class/net/eth0/address) BOOT=$(cat /proc/sys/kernel/random/boot_id)"',
    { waitForShell },
  );
  const m = /PROBE-2 A=(\w+) B=(\w+) FLAPS=(\d+) MAC=(\S+) BOOT=(\S+)/.exec(out);
  if (!m) throw new Error(`no probe result in: ${out}`);
  return { A: m[1], B: m[2], flaps: Number(m[3]), mac: m[4], boot: m[5] };
}

/** What the guest sees: its block devices by serial (the disk name) and its network interfaces by MAC. */
async function devices(con: ConsoleVm): Promise<{ disks: string[]; nics: Record<string, string> }> {
  const out = await runOnConsole(
    () => con,
    'for d in /sys/block/vd*; do echo "BLK-$((1+1)) ${d##*/} $(cat $d/serial 2>/dev/null)"; done; for n in /sys/class/net/*; do echo "NET-$((1+1)) ${n##*/} $(cat $n/address)"; done',
    { waitForShell: false },
  );
  return {
    disks: [...out.matchAll(/BLK-2 (vd[a-z]+) (\S*)/g)]
      .map((m) => m[2])
      .filter(Boolean)
      .sort(),
    nics: Object.fromEntries([...out.matchAll(/NET-2 (\S+) (\S+)/g)].filter((m) => m[1] !== 'lo').map((m) => [m[1], m[2]])),
  };
}

/** bin/kubevm with an argument array and KUBECONFIG set; never through a shell. */
function kubevm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(REPO, 'bin', 'kubevm'), ...args],
      { env: { ...process.env, KUBECONFIG: c.kubeconfigPath }, timeout: 180_000 },
      (err, stdout, stderr) =>
        resolve({
          code: err ? (typeof (err as any).code === 'number' ? (err as any).code : 1) : 0,
          stdout: String(stdout),
          stderr: String(stderr),
        }),
    );
  });
}

function killQemuUnder(dir: string): void {
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

const alive = (pid: number) => fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
const nodeRunDir = (node: string) => path.join(c.dataDir, 'nodes', node, 'run');

beforeAll(async () => {
  guest = ensureGuest();
  shareRoot = tempDir('kubevm-mig-share-');
  fs.writeFileSync(path.join(shareRoot, 'hello.txt'), 'hello');
  fs.chmodSync(shareRoot, 0o755);
  ip('netns', 'add', NS);
  netnsMade.push(NS);
  // Both nodes' QEMUs run in NS: the migration stream goes over its loopback (down in a new namespace).
  ip('-n', NS, 'link', 'set', 'lo', 'up');
  for (const p of Object.values(PEERS)) {
    ip('netns', 'add', p.ns);
    netnsMade.push(p.ns);
  }
  c = await startTestCluster();
  rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 2,
    backend: 'qemu',
    allowedRoots: [guest.dir, shareRoot],
    netns: NS,
  });
  for (const n of ['net-a', 'net-b'])
    await post('networks', { kind: 'Network', metadata: { name: n }, spec: { type: 'bridge' } });
  // The bridges, each with its peer, before any VM needs them.
  for (const [n, peer] of [
    ['net-a', PEERS.a],
    ['net-b', PEERS.b],
  ] as const) {
    const br: string = await eventually(
      async () => (await get(`${api}/networks/${n}`)).status?.bridgeName,
      10_000,
      `${n} bridge name`,
    );
    const veth = `v${br}`.slice(0, 15);
    ip('-n', NS, 'link', 'add', br, 'type', 'bridge');
    ip('-n', NS, 'link', 'set', br, 'up');
    ip('-n', NS, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'p0', 'netns', peer.ns);
    ip('-n', NS, 'link', 'set', veth, 'master', br, 'up');
    ip('-n', peer.ns, 'addr', 'add', `${peer.ip}/24`, 'dev', 'p0');
    ip('-n', peer.ns, 'link', 'set', 'p0', 'up');
  }
  // Both guests boot at once: mover (on net-a) and pinned (a host directory share, held on node-1).
  await post('volumes', {
    kind: 'Volume',
    metadata: { name: 'mover-data' },
    spec: { size: '16Mi', format: 'qcow2', source: { blank: {} } },
  });
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name: 'mover' },
    spec: vmSpec({
      disks: [{ name: 'data', volume: 'mover-data' }],
      interfaces: [{ name: 'eth0', network: 'net-a' }],
      cloudInit: { userData: moverUserData },
    }),
  });
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name: 'pinned' },
    spec: vmSpec({
      nodeSelector: { 'kubernetes.io/hostname': 'node-1' },
      filesystems: [{ name: 'share', containerPath: { path: shareRoot } }],
    }),
  });
}, 180_000);

afterAll(async () => {
  await rt?.stop({ stopVms: true }).catch(() => undefined);
  // The test's VMs must not outlive it, whatever happened above.
  const nodes = path.join(c?.dataDir ?? '/nonexistent', 'nodes');
  if (fs.existsSync(nodes)) killQemuUnder(nodes);
  await c?.cleanup();
  for (const n of netnsMade) {
    try {
      ip('netns', 'del', n);
    } catch {
      /* gone */
    }
  }
  if (shareRoot) fs.rmSync(shareRoot, { recursive: true, force: true });
}, 60_000);

describe('live migration between the two node agents', () => {
  let uid: string;
  let bootId: string;

  test('A → B (kubectl create): the guest counts on, same boot id and uid, the VM names the new node; duration, downtime, bytes', async () => {
    const vm = await running('mover');
    uid = vm.status.instanceUID;
    const from: string = vm.status.node;
    const src = await consoleOf('mover', from);
    bootId = (await waitConsole(() => src, /BOOT-ID=(\S+)\r?\n/, BOOT_MS))[1];
    await waitConsole(() => src, /COUNT=3\r?\n/, BOOT_MS);
    const before = counts(consoleText(src)).at(-1)!;
    // `kubevm console mover` (follow) from before the move: it must carry on with the target's console.
    const { consoleCommand } = await import('../../cli/console');
    const followed: string[] = [];
    const stopFollowing = new AbortController();
    const following = consoleCommand(
      Kube.fromFile(c.kubeconfigPath),
      ns,
      'mover',
      true,
      new Writable({ write: (chunk, _enc, cb) => (followed.push(String(chunk)), cb()) }),
      stopFollowing.signal,
    );
    // Follow the source's console until its run directory is removed after the switch-over.
    let lastOnSource = before;
    const tail = setInterval(() => {
      const n = counts(consoleText(src)).at(-1);
      if (n) lastOnSource = n;
    }, 50);

    // 32 MiB/s: a few seconds on the wire, so the progress and the VM's Migrating status have time to show.
    const yaml = `apiVersion: kubevm.dev/v1alpha1\nkind: Migration\nmetadata:\n  name: mig-1\nspec:\n  vm: mover\n  bandwidthMiBps: 32\n`;
    const { m, phases, vmStates, progress } = await migrate('mig-1', { vm: 'mover' }, async () => {
      const r = await c.kubectl(['create', '-f', '-'], { input: yaml });
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain('migration.kubevm.dev/mig-1 created');
    }).finally(() => clearInterval(tail));
    expect(succeeded(m)).toMatchObject({ phase: 'Succeeded', sourceNode: from, instanceUID: uid });
    const to: string = m.status.targetNode;
    expect(to).not.toBe(from);
    expect(phases).toEqual(expect.arrayContaining(['Scheduling', 'PreparingTarget', 'TargetReady', 'Running', 'Succeeded']));
    expect(vmStates).toContain('Migrating');
    expect(progress.length).toBeGreaterThan(0); // bytesTransferred while it ran
    expect(Math.max(...progress)).toBeLessThanOrEqual(m.status.bytesTransferred);
    expect(m.status.durationMs).toBeGreaterThan(0);
    expect(m.status.downtimeMs).toBeGreaterThan(0);
    expect(m.status.downtimeMs).toBeLessThanOrEqual(m.status.durationMs);
    expect(m.status.bytesTransferred).toBeGreaterThan(1024 * 1024); // the guest's memory went over the wire

    const after = await eventually(
      async () => {
        const v = await get(`${api}/virtualmachines/mover`);
        return v.status?.node === to && v.status.printableStatus === 'Running' && v.status.ready ? v : undefined;
      },
      30_000,
      'the VM status names the new node',
    );
    expect(after.status.instanceUID).toBe(uid);
    await eventually(async () => (Math.max(...counts(followed.join(''))) > lastOnSource ? true : undefined), 30_000, 'kubevm console to follow the guest onto the target');
    stopFollowing.abort();
    expect(await following).toBe(0);
    const vmi = await get(`${api}/virtualmachineinstances/mover`);
    expect(vmi.metadata.uid).toBe(uid);
    expect(vmi.spec.nodeName).toBe(to);
    expect(vmi.status.migrationState).toMatchObject({
      migration: 'mig-1',
      sourceNode: from,
      targetNode: to,
      completed: true,
      downtimeMs: m.status.downtimeMs,
    });

    // The guest did not restart: the target's console goes on counting from where the source stopped.
    const dst = await consoleOf('mover', to);
    await waitConsole(() => dst, /COUNT=\d+\r?\n[\s\S]*COUNT=\d+\r?\n[\s\S]*COUNT=\d+\r?\n/, 30_000);
    const onTarget = counts(consoleText(dst));
    expect(onTarget[0]).toBeGreaterThan(before);
    expect(onTarget[0]).toBeLessThanOrEqual(lastOnSource + 3);
    expect(onTarget).toEqual(onTarget.map((_x, i) => onTarget[0] + i));
    expect(consoleText(dst)).not.toContain('KUBEVM-GUEST-READY');
    const out = await runOnConsole(() => dst, 'echo "BOOT-$((1+1))=$(cat /proc/sys/kernel/random/boot_id)"', {
      waitForShell: false,
    });
    expect(/BOOT-2=(\S+)/.exec(out)?.[1]).toBe(bootId);

    // The target node's agent runs it; the source node kept nothing of it.
    expect(fs.readFileSync(`/proc/${vmi.status.pid}/cmdline`, 'utf8')).toContain(nodeRunDir(to));
    expect(fs.existsSync(path.join(nodeRunDir(from), uid))).toBe(false);
    const events = (await get(`/api/v1/namespaces/${ns}/events`)).items
      .filter((e: any) => e.involvedObject.name === 'mig-1')
      .map((e: any) => e.reason);
    expect(events).toEqual(expect.arrayContaining(['TargetChosen', 'Migrated']));
    const table = await c.kubectl(['get', 'vmim', 'mig-1', '-o', 'wide', '--no-headers']);
    expect(table.stdout).toMatch(new RegExp(`^mig-1\\s+mover\\s+Succeeded\\s+${from}\\s+${to}\\s+${m.status.downtimeMs}\\s`));
  }, 180_000);

  test('B → A (ping-pong): back on the first node, still the same boot and instance', async () => {
    const vm = await get(`${api}/virtualmachines/mover`);
    const from = vm.status.node;
    const { m } = await migrate('mig-2', { vm: 'mover' });
    expect(succeeded(m)).toMatchObject({ phase: 'Succeeded', sourceNode: from, instanceUID: uid });
    expect(m.status.targetNode).not.toBe(from);
    const back = await eventually(
      async () => {
        const v = await get(`${api}/virtualmachines/mover`);
        return v.status?.node === m.status.targetNode && v.status.ready ? v : undefined;
      },
      30_000,
      'the VM back on the first node',
    );
    expect(back.status.instanceUID).toBe(uid);
    const con = await consoleOf('mover', m.status.targetNode);
    await waitConsole(() => con, /COUNT=\d+\r?\n[\s\S]*COUNT=\d+\r?\n/, 30_000);
    const out = await runOnConsole(() => con, 'echo "BOOT-$((1+1))=$(cat /proc/sys/kernel/random/boot_id)"', {
      waitForShell: false,
    });
    expect(/BOOT-2=(\S+)/.exec(out)?.[1]).toBe(bootId);
    expect(fs.existsSync(path.join(nodeRunDir(from), uid))).toBe(false);
    // The guest writes its boot id to the data disk (shared storage: the same file on every node); the next boot reads it.
    const w = await runOnConsole(
      () => con,
      `${DATA_DEV}; cat /proc/sys/kernel/random/boot_id | dd of=$dev bs=36 count=1 conv=notrunc,fsync 2>/dev/null; echo "WROTE-$((1+1))=$?"`,
      { waitForShell: false },
    );
    expect(w).toMatch(/WROTE-2=0/);
  }, 120_000);

  test('deleting a running Migration cancels it: the guest counts on where it was, the target node keeps nothing', async () => {
    const vm = await get(`${api}/virtualmachines/mover`);
    const from: string = vm.status.node;
    const watch = await openWatch(c, `${api}/migrations?watch=true`);
    try {
      // 1 MiB/s: slow enough to be caught in the act.
      await post('migrations', { kind: 'Migration', metadata: { name: 'mig-cancel' }, spec: { vm: 'mover', bandwidthMiBps: 1 } });
      const [run] = await watch.waitFor(
        (e) => e.object?.metadata?.name === 'mig-cancel' && e.object.status?.phase === 'Running',
        1,
        60_000,
      );
      const to: string = run.object.status.targetNode;
      expect((await c.request('DELETE', `${api}/migrations/mig-cancel`)).status).toBe(200);
      const [del] = await watch.waitFor((e) => e.type === 'DELETED' && e.object?.metadata?.name === 'mig-cancel', 1, 60_000);
      expect(del.object.status).toMatchObject({
        phase: 'Failed',
        reason: 'Cancelled',
        message: `cancelled; the VM keeps running on ${from}`,
      });
      const v = await get(`${api}/virtualmachines/mover`);
      expect(v.status).toMatchObject({ node: from, instanceUID: uid, printableStatus: 'Running' });
      const vmi = await get(`${api}/virtualmachineinstances/mover`);
      expect(vmi.status.migrationState).toMatchObject({
        migration: 'mig-cancel',
        sourceNode: from,
        targetNode: to,
        failed: true,
      });
      const con = await consoleOf('mover', from);
      const n = counts(consoleText(con)).at(-1)!;
      await waitConsole(() => con, new RegExp(`COUNT=${n + 2}\\r?\\n`), 20_000);
      await eventually(
        async () => !fs.existsSync(path.join(nodeRunDir(to), uid)),
        20_000,
        `no run directory of the instance left on ${to}`,
      );
    } finally {
      watch.close();
    }
  }, 120_000);

  test('blockMigration between nodes that share storage is refused (the disks would be copied onto themselves)', async () => {
    const { m } = await migrate('mig-block', { vm: 'mover', blockMigration: true });
    expect(m.status).toMatchObject({ phase: 'Failed', reason: 'Unschedulable' });
    expect(m.status.message).toMatch(
      /^spec\.blockMigration: every other node shares storage with node-\d \(storage domain embedded-[0-9a-f]+\).*migrate without blockMigration$/,
    );
    expect((await get(`${api}/virtualmachines/mover`)).status).toMatchObject({ printableStatus: 'Running', instanceUID: uid });
  }, 60_000);

  test('stop and start work after the migrations: the agent of the node it ended on owns it', async () => {
    const vmi = await get(`${api}/virtualmachineinstances/mover`);
    await merge(`${api}/virtualmachines/mover`, { spec: { runStrategy: 'Halted' } });
    await eventually(
      async () => (await get(`${api}/virtualmachines/mover`)).status?.printableStatus === 'Stopped',
      60_000,
      'mover Stopped',
    );
    await eventually(
      async () => (await c.request('GET', `${api}/virtualmachineinstances/mover`)).status === 404,
      30_000,
      'instance removed',
    );
    expect(alive(vmi.status.pid)).toBe(false);
    for (const n of ['node-0', 'node-1']) expect(fs.existsSync(path.join(nodeRunDir(n), uid))).toBe(false);

    await merge(`${api}/virtualmachines/mover`, { spec: { runStrategy: 'Always' } });
    const next = await running('mover', uid);
    const con = await consoleOf('mover', next.status.node);
    const boot = (await waitConsole(() => con, /BOOT-ID=(\S+)\r?\n/, BOOT_MS))[1];
    expect(boot).not.toBe(bootId); // a new boot, as a restart should be
    // What the guest wrote after two migrations is on the disk.
    expect((await waitConsole(() => con, /DISK-HOLDS=(\S*)\./, 10_000))[1]).toBe(bootId);
    await waitConsole(() => con, /COUNT=1\r?\n/, 30_000);
  }, 180_000);
});

describe('re-targeting a running NIC to another Network', () => {
  test('net-a → net-b in place: B’s peer answers and A’s no longer; same boot, MAC and instance; a link flap; an event', async () => {
    const vm = await running('mover');
    const con = await consoleOf('mover', vm.status.node);
    const first = await probe(con, true);
    const vmi = await get(`${api}/virtualmachineinstances/mover`);
    expect(first).toMatchObject({ A: 'ok', B: 'no', mac: vmi.status.interfaces[0].macAddress });

    await merge(`${api}/virtualmachines/mover`, { spec: { interfaces: [{ name: 'eth0', network: 'net-b' }] } });
    const ev = await eventually(
      async () => {
        const list = (await get(`/api/v1/namespaces/${ns}/events`)).items.filter(
          (e: any) => e.involvedObject.name === 'mover' && e.reason === 'InterfaceRetargeted',
        );
        return list.length ? list[0] : undefined;
      },
      30_000,
      'InterfaceRetargeted event',
    );
    expect(ev.message).toContain('interface eth0 now on Network net-b');
    expect(ev.message).toContain(`MAC ${first.mac} kept, no restart`);

    const p = await probe(con);
    expect(p).toMatchObject({ A: 'no', B: 'ok', mac: first.mac, boot: first.boot });
    expect(p.flaps).toBeGreaterThan(first.flaps); // what the guest sees: its link went down and up
    const after = await eventually(
      async () => {
        const x = await get(`${api}/virtualmachineinstances/mover`);
        return x.status?.interfaces?.[0]?.network === 'net-b' ? x : undefined;
      },
      10_000,
      'VMI interface on net-b',
    );
    expect(after.metadata.uid).toBe(vm.status.instanceUID);
    expect(after.status.interfaces[0].macAddress).toBe(first.mac);
    const v = await get(`${api}/virtualmachines/mover`);
    expect(v.status.instanceUID).toBe(vm.status.instanceUID);
    expect((v.status.conditions ?? []).some((x: any) => x.type === 'RestartRequired')).toBe(false);
  }, 120_000);
});

describe('hotplug through the API', () => {
  test('a disk and a NIC added to the running VM’s spec appear in the guest; removed, they are unplugged', async () => {
    await post('volumes', {
      kind: 'Volume',
      metadata: { name: 'hp' },
      spec: { size: '16Mi', format: 'qcow2', source: { blank: {} } },
    });
    await eventually(async () => (await get(`${api}/volumes/hp`)).status?.phase === 'Ready', 30_000, 'Volume hp Ready');
    const vm = await running('mover');
    const con = await consoleOf('mover', vm.status.node);
    const before = await devices(con);
    expect(before.disks).toContain('data');
    expect(before.disks).not.toContain('hp');
    expect(Object.keys(before.nics)).toEqual(['eth0']);
    const from = consoleText(con).length;

    await merge(`${api}/virtualmachines/mover`, {
      spec: {
        disks: [
          { name: 'data', volume: 'mover-data' },
          { name: 'hp', volume: 'hp' },
        ],
        interfaces: [
          { name: 'eth0', network: 'net-b' },
          { name: 'eth1', network: 'net-a' },
        ],
      },
    });
    const vmi = await eventually(
      async () => {
        const x = await get(`${api}/virtualmachineinstances/mover`);
        return x.status?.attached?.disks?.includes('hp') &&
          x.status.attached.interfaces?.includes('eth1') &&
          x.status.interfaces?.length === 2
          ? x
          : undefined;
      },
      60_000,
      'VMI status.attached with hp and eth1',
    );
    expect(vmi.metadata.uid).toBe(vm.status.instanceUID);
    const mac = vmi.status.interfaces.find((i: any) => i.name === 'eth1').macAddress;
    // The guest's hotplug watcher reports both (the NIC after its DHCP attempt: there is no server on the bridge).
    await waitConsole(() => con, new RegExp(`KUBEVM-GUEST-NIC mac=${mac}`), 60_000, from);
    await waitConsole(() => con, /KUBEVM-GUEST-DISKS vd[a-z],vd[a-z],vd[a-z]/, 30_000, from); // seed, data, hp
    const plugged = await devices(con);
    expect(plugged.disks).toEqual([...before.disks, 'hp'].sort());
    expect(plugged.nics).toEqual({ ...before.nics, eth1: mac });

    await merge(`${api}/virtualmachines/mover`, {
      spec: { disks: [{ name: 'data', volume: 'mover-data' }], interfaces: [{ name: 'eth0', network: 'net-b' }] },
    });
    const gone = await eventually(
      async () => {
        const x = await get(`${api}/virtualmachineinstances/mover`);
        return x.status?.attached &&
          !x.status.attached.disks?.length &&
          !x.status.attached.interfaces?.length &&
          x.status.interfaces?.length === 1
          ? x
          : undefined;
      },
      60_000,
      'VMI status.attached empty again',
    );
    expect(gone.metadata.uid).toBe(vm.status.instanceUID);
    const unplugged = await devices(con);
    expect(unplugged).toEqual(before);
    expect(consoleText(con).slice(from)).not.toContain('KUBEVM-GUEST-READY'); // no reboot along the way

    // A disk that cannot be hot-plugged (sata) is refused with the reason; the VM runs on as it was.
    await merge(`${api}/virtualmachines/mover`, {
      spec: {
        disks: [
          { name: 'data', volume: 'mover-data' },
          { name: 'legacy', volume: 'hp', bus: 'sata' },
        ],
      },
    });
    const warn = await eventually(
      async () => {
        const list = (await get(`/api/v1/namespaces/${ns}/events`)).items.filter(
          (e: any) => e.involvedObject.name === 'mover' && e.reason === 'HotplugFailed',
        );
        return list.length ? list : undefined;
      },
      30_000,
      'HotplugFailed event',
    );
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatchObject({ type: 'Warning', message: 'disk legacy: only bus virtio can be hotplugged (got sata)' });
    const still = await get(`${api}/virtualmachineinstances/mover`);
    expect(still.metadata.uid).toBe(vm.status.instanceUID);
    expect(still.status.attached.disks).toEqual([]);
    await merge(`${api}/virtualmachines/mover`, { spec: { disks: [{ name: 'data', volume: 'mover-data' }] } });
  }, 150_000);
});

describe('kubevm node drain', () => {
  test('drain migrates the VM away and exits 1 naming the VM that shares a host directory; with evictionStrategy None it is stopped; uncordon reopens the node', async () => {
    const pinned = await running('pinned');
    const node: string = pinned.status.node;
    expect(node).toBe('node-1');
    const other = node === 'node-0' ? 'node-1' : 'node-0';
    let mover = await running('mover');
    if (mover.status.node !== node) {
      const { m } = await migrate('to-drained-node', { vm: 'mover', targetNode: node });
      expect(succeeded(m)).toMatchObject({ phase: 'Succeeded', targetNode: node });
      mover = await eventually(
        async () => {
          const v = await get(`${api}/virtualmachines/mover`);
          return v.status?.node === node && v.status.ready ? v : undefined;
        },
        30_000,
        `mover on ${node}`,
      );
    }

    const r = await kubevm(['node', 'drain', node, '--timeout', '120']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`node/${node} cordoned`);
    expect(r.stdout).toMatch(new RegExp(`virtualmachine/mover -n ${ns}: migrated to ${other} \\(downtime \\d+ ms\\)`));
    expect(r.stdout).toMatch(
      /virtualmachine\/pinned -n default: blocks the drain: NotMigratable: VirtualMachine pinned cannot be live-migrated: spec\.filesystems\[0\] .*shares a host directory/,
    );
    expect(r.stdout).toContain(`node/${node} not drained: 1 VM(s) cannot leave`);

    const n = (await c.request('GET', `/api/v1/nodes/${node}`)).json;
    expect(n.spec.unschedulable).toBe(true);
    const moved = await get(`${api}/virtualmachines/mover`);
    expect(moved.status).toMatchObject({ node: other, instanceUID: mover.status.instanceUID, printableStatus: 'Running' });
    const still = await get(`${api}/virtualmachines/pinned`);
    expect(still.status).toMatchObject({ node, instanceUID: pinned.status.instanceUID, printableStatus: 'Running' });

    // Cordoned: a migration to it is refused.
    const refused = await migrate('to-cordoned', { vm: 'mover' });
    expect(refused.m.status).toMatchObject({ phase: 'Failed', reason: 'Unschedulable' });
    expect(refused.m.status.message).toBe(`every other node is cordoned: ${node}`);

    // evictionStrategy None: the next drain stops the VM instead (it waits, unschedulable, for the node to reopen).
    await merge(`${api}/virtualmachines/pinned`, { spec: { evictionStrategy: 'None' } });
    const qemuPid: number = (await get(`${api}/virtualmachineinstances/pinned`)).status.pid;
    expect(alive(qemuPid)).toBe(true);
    const again = await kubevm(['node', 'drain', node, '--timeout', '120']);
    expect(again.stdout).toContain(`virtualmachine/pinned -n ${ns}: stopped (evictionStrategy None)`);
    expect(again.stdout).toContain(`node/${node} drained`);
    expect(again.code).toBe(0);
    expect(alive(qemuPid)).toBe(false);
    await eventually(
      async () => (await c.request('GET', `${api}/virtualmachineinstances/pinned`)).status === 404,
      30_000,
      'pinned instance gone',
    );
    await eventually(
      async () => (await get(`${api}/virtualmachines/pinned`)).status?.printableStatus === 'ErrorUnschedulable',
      30_000,
      'pinned waiting for its node',
    );

    const u = await kubevm(['node', 'uncordon', node]);
    expect(u).toMatchObject({ code: 0, stderr: '' });
    expect(u.stdout).toContain(`node/${node} uncordoned`);
    expect((await c.request('GET', `/api/v1/nodes/${node}`)).json.spec?.unschedulable).toBeUndefined();
    const { m } = await migrate('after-uncordon', { vm: 'mover' });
    expect(succeeded(m)).toMatchObject({ phase: 'Succeeded', sourceNode: other, targetNode: node });
    // pinned's run strategy starts it again there.
    await eventually(
      async () => {
        const v = await get(`${api}/virtualmachines/pinned`);
        return v.status?.node === node && v.status.instanceUID !== pinned.status.instanceUID;
      },
      30_000,
      'a new instance of pinned on the reopened node',
    );
  }, 240_000);
});
