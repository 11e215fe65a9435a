import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { AddressInfo } from 'node:net';
import { startTestCluster, TestCluster, eventually, tempDir } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { ensureGuest, TestGuest } from '../guest';

/**
 * The whole stack on real QEMU (software emulation here): kubectl-visible
 * VirtualMachines run by the controller and a node agent, booting the tiny
 * test guest. Budget: a guest boots in ~7 s on this machine; waits allow 90 s.
 */
let c: TestCluster;
let rt: Runtime;
let guest: TestGuest;
let shareRoot: string;
let server: http.Server;
let port: number;
const ns = 'default';
const BOOT_MS = 90_000;

const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';
const get = async (p: string) => (await c.request('GET', p)).json;
const merge = (p: string, body: any) => c.request('PATCH', p, body, { 'Content-Type': 'application/merge-patch+json' });

function consoleOf(vmi: any): string {
  return vmi?.status?.consoleLog && fs.existsSync(vmi.status.consoleLog) ? fs.readFileSync(vmi.status.consoleLog, 'utf8') : '';
}

async function waitConsole(name: string, re: RegExp, uid?: string): Promise<RegExpMatchArray> {
  const m = await eventually(async () => {
    const vmi = await get(`${api}/virtualmachineinstances/${name}`);
    if (uid && vmi.metadata?.uid !== uid) return undefined;
    return consoleOf(vmi).match(re) ?? undefined;
  }, BOOT_MS, `${re} on the console of ${name}`);
  return m!;
}

// conv=fsync: a write to a raw block device reaches the disk only with a flush; sync(2) does not send one,
// and qcow2 metadata of a newly allocated cluster stays in QEMU's memory until the guest flushes.
const userData = (p: number) => `#!/bin/sh
dev=
for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = data ] && dev=/dev/$(basename $d); done
echo "E2E-DEV=\${dev:-none}"
if [ "$(dd if=$dev bs=5 count=1 2>/dev/null)" = KVMOK ]; then echo "E2E-DISK=persisted"; else printf KVMOK | dd of=$dev bs=5 count=1 conv=notrunc,fsync 2>/dev/null; echo "E2E-DISK=written"; fi
echo "E2E-SHARE=$(cat /mnt/share/hello.txt)"
if echo x > /mnt/share/new.txt 2>/dev/null; then echo E2E-WRITE=allowed; else echo E2E-WRITE=refused; fi
gw=$(cat /run/net/eth0.router)
echo "E2E-HTTP=$(wget -q -O - http://$gw:${p}/token)"
`;

beforeAll(async () => {
  guest = ensureGuest();
  shareRoot = tempDir('kubevm-share-');
  fs.mkdirSync(path.join(shareRoot, 'app'));
  fs.writeFileSync(path.join(shareRoot, 'app', 'hello.txt'), 'hello-from-the-node');
  fs.chmodSync(shareRoot, 0o755);
  server = http.createServer((_req, res) => res.end('token-42'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as AddressInfo).port;
  c = await startTestCluster();
  rt = await startRuntime({ kubeconfigPath: c.kubeconfigPath, dataDir: c.dataDir, nodes: 1, backend: 'qemu', allowedRoots: [guest.dir, shareRoot] });
  for (const body of [
    { kind: 'Network', metadata: { name: 'podnet' }, spec: { type: 'pod' } },
    { kind: 'Volume', metadata: { name: 'data' }, spec: { size: '16Mi', format: 'qcow2', source: { blank: {} } } },
  ]) {
    const plural = body.kind === 'Network' ? 'networks' : 'volumes';
    expect((await c.request('POST', `${api}/${plural}`, { apiVersion: 'kubevm.dev/v1alpha1', ...body })).status).toBe(201);
  }
  const vm = {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'g' },
    spec: {
      runStrategy: 'RerunOnFailure',
      memory: '256Mi',
      firmware: { kernel: { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline } },
      disks: [{ name: 'data', volume: 'data' }],
      interfaces: [{ name: 'eth0', network: 'podnet' }],
      filesystems: [{ name: 'share', containerPath: { path: path.join(shareRoot, 'app') } }],
      cloudInit: { userData: userData(port) },
    },
  };
  expect((await c.request('POST', `${api}/virtualmachines`, vm)).status).toBe(201);
}, 180_000);

afterAll(async () => {
  await c?.request('DELETE', `${api}/virtualmachines/g`).catch(() => undefined);
  await rt?.stop();
  // Agents let VMs run across their own restarts; the test's VMs must not outlive it.
  for (const dir of [path.join(c?.dataDir ?? '/nonexistent', 'nodes')]) if (fs.existsSync(dir)) killQemuUnder(dir);
  await c?.cleanup();
  server?.close();
  fs.rmSync(shareRoot, { recursive: true, force: true });
}, 60_000);

function killQemuUnder(dir: string): void {
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes(dir)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

test('RerunOnFailure: the VM runs, the guest boots and reports ready; kubectl shows phase, node and IP', async () => {
  await waitConsole('g', /KUBEVM-GUEST-READY hostname=g ip=(\S+)/);
  const vm = await eventually(async () => {
    const v = await get(`${api}/virtualmachines/g`);
    return v.status?.ready && v.status.interfaces?.[0]?.ipAddress ? v : undefined;
  }, BOOT_MS, 'VM ready with an IP');
  expect(vm.status.printableStatus).toBe('Running');
  expect(vm.status.node).toBe('node-0');
  const out = await c.kubectl(['get', 'vm', 'g', '--no-headers']);
  expect(out.stdout).toMatch(new RegExp(`^g\\s+\\S+\\s+Running\\s+True\\s+node-0\\s+${vm.status.interfaces[0].ipAddress.replace(/\./g, '\\.')}`));
});

test('cloud-init user data ran: the data disk is written, the ContainerPath share is readable but not writable, passt reaches the node', async () => {
  expect((await waitConsole('g', /E2E-DEV=(\S+)/))[1]).toMatch(/^\/dev\/vd[a-z]$/); // found by its serial, the disk name
  expect((await waitConsole('g', /E2E-DISK=(\w+)/))[1]).toBe('written');
  expect((await waitConsole('g', /E2E-SHARE=(\S*)/))[1]).toBe('hello-from-the-node');
  expect((await waitConsole('g', /E2E-WRITE=(\w+)/))[1]).toBe('refused');
  expect((await waitConsole('g', /E2E-HTTP=(\S*)/))[1]).toBe('token-42');
  expect(fs.existsSync(path.join(shareRoot, 'app', 'new.txt'))).toBe(false);
});

test('an agent restart keeps the VM: same QEMU pid, still Running', async () => {
  const before = await get(`${api}/virtualmachineinstances/g`);
  expect(before.status.pid).toBeGreaterThan(0);
  await rt.restartAgent('node-0');
  await new Promise((r) => setTimeout(r, 2000));
  const after = await get(`${api}/virtualmachineinstances/g`);
  expect(after.metadata.uid).toBe(before.metadata.uid);
  expect(after.status.pid).toBe(before.status.pid);
  expect(after.status.phase).toBe('Running');
  expect(() => process.kill(before.status.pid, 0)).not.toThrow();
  expect((await get(`${api}/virtualmachines/g`)).status.printableStatus).toBe('Running');
});

test('kill -9 of QEMU: RerunOnFailure starts a new instance, and the disk data survived the restart', async () => {
  const before = await get(`${api}/virtualmachineinstances/g`);
  process.kill(before.status.pid, 'SIGKILL');
  const next = await eventually(async () => {
    const i = await get(`${api}/virtualmachineinstances/g`);
    return i.metadata?.uid && i.metadata.uid !== before.metadata.uid ? i : undefined;
  }, 30_000, 'a new instance');
  expect((await waitConsole('g', /E2E-DISK=(\w+)/, next.metadata.uid))[1]).toBe('persisted');
  const vm = await get(`${api}/virtualmachines/g`);
  expect(vm.status.instanceUID).toBe(next.metadata.uid);
});

test('kubevm console prints the serial console', async () => {
  const { consoleCommand } = await import('../../cli/console');
  const { Kube } = await import('../../controller/runtime/kube');
  const chunks: Buffer[] = [];
  const out = new (require('node:stream').Writable)({ write: (b: Buffer, _e: string, cb: () => void) => (chunks.push(b), cb()) });
  const code = await consoleCommand(Kube.fromFile(c.kubeconfigPath), ns, 'g', false, out);
  expect(code).toBe(0);
  expect(Buffer.concat(chunks).toString()).toContain('KUBEVM-GUEST-READY hostname=g');
});

test('a share outside the allowed roots is refused with the reason; Halted stops the VM and removes its files', async () => {
  const bad = await c.request('POST', `${api}/virtualmachines`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'escape' },
    spec: { runStrategy: 'Once', memory: '128Mi', firmware: { kernel: { kernelPath: guest.kernel, initrdPath: guest.initrd } }, filesystems: [{ name: 'etc', containerPath: { path: '/etc' } }] },
  });
  expect(bad.status).toBe(201);
  const failed = await eventually(async () => {
    const v = await get(`${api}/virtualmachines/escape`);
    return v.status?.conditions?.find((x: any) => x.type === 'Failure' && x.status === 'True');
  }, 30_000, 'the escape VM to fail');
  expect(failed.message).toContain('spec.filesystems[0].containerPath.path');
  expect(failed.message).toContain('outside the allowed roots');
  const climbing = await c.request('POST', `${api}/virtualmachines`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'climb' },
    spec: { filesystems: [{ name: 'x', containerPath: { path: `${shareRoot}/app/../../etc` } }] },
  });
  expect(climbing.status).toBe(422);
  expect(climbing.json.details.causes[0].field).toBe('spec.filesystems[0].containerPath.path');

  const vmi = await get(`${api}/virtualmachineinstances/g`);
  const runDirs = path.join(c.dataDir, 'nodes', 'node-0', 'run');
  const before = fs.readdirSync(runDirs);
  expect(before.length).toBeGreaterThan(0);
  await merge(`${api}/virtualmachines/g`, { spec: { runStrategy: 'Halted' } });
  await eventually(async () => (await get(`${api}/virtualmachines/g`)).status?.printableStatus === 'Stopped', 60_000, 'Stopped');
  await eventually(async () => (await c.request('GET', `${api}/virtualmachineinstances/g`)).status === 404, 30_000, 'instance removed');
  expect(() => process.kill(vmi.status.pid, 0)).toThrow();
  expect(fs.readdirSync(runDirs).filter((d) => d.includes(vmi.metadata.uid.slice(0, 8)))).toEqual([]);
  // The data Volume is still in use by the (stopped) VM: deletion waits.
  await c.request('DELETE', `${api}/volumes/data`);
  await new Promise((r) => setTimeout(r, 1000));
  expect((await get(`${api}/volumes/data`)).metadata.deletionTimestamp).toBeDefined();
});
