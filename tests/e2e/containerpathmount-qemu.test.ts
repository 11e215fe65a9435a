import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startTestCluster, TestCluster, eventually, tempDir } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import type { QemuBackend } from '../../controller/hal';
import { ensureGuest, TestGuest } from '../guest';

/**
 * A ContainerPathMount on real QEMU (software emulation): the test guest runs,
 * a mount is created with kubectl-level API calls, and the running guest reads
 * a file of the mounted directory through its serial console. As root the qemu
 * backend shares directories over virtiofs and adds them to the running VM;
 * without root it uses 9p, which QEMU cannot hot-add: the mount then waits for
 * the next start (restart-class) and the guest sees it after a restart.
 */
let c: TestCluster;
let rt: Runtime;
let guest: TestGuest;
let shareRoot: string;
const token = `mount-${randomBytes(4).toString('hex')}`;
const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';
const BOOT_MS = 90_000;
const get = async (p: string) => (await c.request('GET', p)).json;

const backend = (): QemuBackend => rt.agents[0]['opts'].backend as QemuBackend;

function consoleOf(vmi: any): string {
  return vmi?.status?.consoleLog && fs.existsSync(vmi.status.consoleLog) ? fs.readFileSync(vmi.status.consoleLog, 'utf8') : '';
}

async function waitConsole(re: RegExp, uid: string, timeoutMs = BOOT_MS): Promise<RegExpMatchArray> {
  const m = await eventually(
    async () => {
      const vmi = await get(`${api}/virtualmachineinstances/g`);
      if (vmi.metadata?.uid !== uid) return undefined;
      return consoleOf(vmi).match(re) ?? undefined;
    },
    timeoutMs,
    `${re} on the console of g`,
  );
  return m!;
}

/** Types a command line into the guest's serial console (a root shell). */
async function typeIntoConsole(uid: string, line: string): Promise<void> {
  const sock = net.createConnection(backend().status(uid)!.consoleSocket!);
  await new Promise<void>((r, j) => sock.once('connect', () => r()).once('error', j));
  await new Promise<void>((r) => sock.write(`\n${line}\n`, () => r()));
  await new Promise((r) => setTimeout(r, 200));
  sock.destroy();
}

async function runningInstance(notUid?: string): Promise<any> {
  const vmi = await eventually(
    async () => {
      const i = await get(`${api}/virtualmachineinstances/g`);
      return i.metadata?.uid && i.metadata.uid !== notUid && i.status?.phase === 'Running' ? i : undefined;
    },
    BOOT_MS,
    'a running instance of g',
  );
  await waitConsole(/KUBEVM-GUEST-READY /, vmi.metadata.uid);
  return vmi;
}

beforeAll(async () => {
  guest = ensureGuest();
  shareRoot = tempDir('kubevm-cpm-');
  fs.mkdirSync(path.join(shareRoot, 'site'));
  fs.writeFileSync(path.join(shareRoot, 'site', 'hello.txt'), `${token}\n`);
  fs.chmodSync(shareRoot, 0o755);
  c = await startTestCluster();
  rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 1,
    backend: 'qemu',
    allowedRoots: [guest.dir, shareRoot],
  });
  const vm = {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'g' },
    spec: {
      memory: '256Mi',
      terminationGracePeriodSeconds: 10,
      firmware: { kernel: { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline } },
    },
  };
  expect((await c.request('POST', `${api}/virtualmachines`, vm)).status).toBe(201);
}, 180_000);

afterAll(async () => {
  await c?.request('DELETE', `${api}/virtualmachines/g`).catch(() => undefined);
  await eventually(
    async () => (await c.request('GET', `${api}/virtualmachineinstances/g`)).status === 404,
    60_000,
    'instance gone',
  ).catch(() => undefined);
  await rt?.stop({ stopVms: true });
  await c?.cleanup();
  fs.rmSync(shareRoot, { recursive: true, force: true });
}, 120_000);

test('a running guest sees a file of the mounted directory once the mount is created; the share is read-only', async () => {
  const vmi = await runningInstance();
  expect(consoleOf(vmi)).not.toContain(token);
  const r = await c.request('POST', `${api}/containerpathmounts`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'ContainerPathMount',
    metadata: { name: 'site' },
    spec: { vm: 'g', path: path.join(shareRoot, 'site'), tag: 'site' },
  });
  expect(r.status).toBe(201);
  const hot = backend().capabilities().includes('hotplug-filesystem');
  let uid = vmi.metadata.uid;
  if (!hot) {
    // 9p (not root): restart-class. The mount says so; a restart brings it in, mounted at boot under /mnt/site.
    const m = await eventually(
      async () => {
        const x = await get(`${api}/containerpathmounts/site`);
        return x.status?.reason === 'AttachAtNextStart' ? x : undefined;
      },
      30_000,
      'AttachAtNextStart',
    );
    expect(m.status.phase).toBe('Pending');
    await c.request(
      'PATCH',
      `${api}/virtualmachines/g`,
      { metadata: { annotations: { 'kubevm.dev/request': 'restart' } } },
      { 'Content-Type': 'application/merge-patch+json' },
    );
    uid = (await runningInstance(uid)).metadata.uid;
  }
  const m = await eventually(
    async () => {
      const x = await get(`${api}/containerpathmounts/site`);
      return x.status?.phase === 'Attached' ? x : undefined;
    },
    60_000,
    'mount Attached',
  );
  expect(m.status).toMatchObject({ node: 'node-0', instanceUID: uid });
  if (hot) expect(uid).toBe(vmi.metadata.uid); // hot-added: the same instance, no restart
  // The guest mounts the share by its tag (the hot-plugged device needs a moment to bind: retry).
  await typeIntoConsole(
    uid,
    'mkdir -p /mnt/site; grep -q " /mnt/site " /proc/mounts || for i in 1 2 3 4 5 6 7 8 9 10; do mount -t virtiofs -o ro site /mnt/site 2>/dev/null && break; sleep 0.5; done; ' +
      // $((1)) keeps the echoed command line from matching the markers.
      'echo "CPM-READ$((1))=$(cat /mnt/site/hello.txt)"; touch /mnt/site/new 2>/dev/null && echo CPM-WRITE$((1))=allowed || echo CPM-WRITE$((1))=refused',
  );
  expect((await waitConsole(/CPM-READ1=(\S+)/, uid, 30_000))[1]).toBe(token);
  expect((await waitConsole(/CPM-WRITE1=(\w+)/, uid, 30_000))[1]).toBe('refused');
  expect(fs.existsSync(path.join(shareRoot, 'site', 'new'))).toBe(false);
}, 240_000);

test('deleting the mount detaches it: live on virtiofs once the guest let go of it (9p: at the next start)', async () => {
  const vmi = await get(`${api}/virtualmachineinstances/g`);
  await typeIntoConsole(vmi.metadata.uid, 'umount /mnt/site && echo CPM-UMOUNT$((1))=ok');
  await waitConsole(/CPM-UMOUNT1=ok/, vmi.metadata.uid, 30_000);
  expect((await c.request('DELETE', `${api}/containerpathmounts/site`)).status).toBe(200);
  if (backend().capabilities().includes('hotplug-filesystem')) {
    const after = await eventually(
      async () => {
        const i = await get(`${api}/virtualmachineinstances/g`);
        return i.spec.filesystems === undefined && i.status.filesystems?.length === 0 ? i : undefined;
      },
      60_000,
      'the share unplugged',
    );
    expect(after.metadata.uid).toBe(vmi.metadata.uid);
    const state = JSON.parse(
      fs.readFileSync(path.join(c.dataDir, 'nodes', 'node-0', 'run', vmi.metadata.uid, 'state.json'), 'utf8'),
    );
    expect(state.spec.filesystems).toEqual([]);
    expect(state.sidecars.filter((s: any) => s.kind === 'virtiofsd')).toEqual([]);
    expect((await get(`${api}/virtualmachines/g`)).status.conditions.some((x: any) => x.type === 'RestartRequired')).toBe(false);
  } else {
    const i = await eventually(
      async () => {
        const x = await get(`${api}/virtualmachineinstances/g`);
        return x.status.filesystems?.[0]?.phase === 'DetachPending' ? x : undefined;
      },
      30_000,
      'DetachPending',
    );
    expect(i.status.filesystems[0].message).toContain('stays until the next start');
  }
}, 120_000);

test('virtiofs: deleting a mount the guest still uses unplugs it anyway; the mount in the guest then fails (unmount first)', async () => {
  const vmi = await get(`${api}/virtualmachineinstances/g`);
  const r = await c.request('POST', `${api}/containerpathmounts`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'ContainerPathMount',
    metadata: { name: 'site2' },
    spec: { vm: 'g', path: path.join(shareRoot, 'site'), tag: 'site2' },
  });
  expect(r.status).toBe(201);
  if (!backend().capabilities().includes('hotplug-filesystem')) {
    // 9p: nothing is added or removed live; the mount waits for a start that this test does not make.
    await eventually(
      async () => (await get(`${api}/containerpathmounts/site2`)).status?.reason === 'AttachAtNextStart',
      30_000,
      'AttachAtNextStart',
    );
    await c.request('DELETE', `${api}/containerpathmounts/site2`);
    return;
  }
  await eventually(
    async () => (await get(`${api}/containerpathmounts/site2`)).status?.phase === 'Attached',
    60_000,
    'site2 Attached',
  );
  await typeIntoConsole(
    vmi.metadata.uid,
    'mkdir -p /mnt/s2; for i in 1 2 3 4 5 6 7 8 9 10; do mount -t virtiofs -o ro site2 /mnt/s2 2>/dev/null && break; sleep 0.5; done; echo "CPM-S2$((1))=$(cat /mnt/s2/hello.txt)"',
  );
  expect((await waitConsole(/CPM-S21=(\S+)/, vmi.metadata.uid, 30_000))[1]).toBe(token);
  expect((await c.request('DELETE', `${api}/containerpathmounts/site2`)).status).toBe(200);
  await eventually(
    async () => {
      const i = await get(`${api}/virtualmachineinstances/g`);
      return i.spec.filesystems === undefined && i.status.filesystems?.length === 0;
    },
    60_000,
    'site2 unplugged',
  );
  await typeIntoConsole(vmi.metadata.uid, 'cat /mnt/s2/hello.txt 2>/dev/null || echo CPM-GONE$((1))=yes');
  await waitConsole(/CPM-GONE1=yes/, vmi.metadata.uid, 30_000);
  expect(consoleOf(await get(`${api}/virtualmachineinstances/g`))).toMatch(
    /Transport endpoint is not connected|virtio_fs_enqueue_req\(\) failed/,
  );
}, 120_000);
