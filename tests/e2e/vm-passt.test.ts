import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { ensureGuest, TestGuest } from '../guest';

/**
 * passt as the pod network's binding through the whole stack (embedded API
 * server, controller, one node agent, real QEMU): the VM's status reports the
 * address passt leases, `ports` changed on the VirtualMachine are applied to the
 * running guest (a new passt behind the NIC, no restart), a passt killed with
 * SIGKILL is restarted (also by an agent that adopted the VM) and the instance's
 * PasstReady condition says so, and `hotplugSlots` reaches the hypervisor.
 * Budget: one boot (~7 s under TCG here); waits allow 90 s.
 */
let c: TestCluster;
let rt: Runtime;
let guest: TestGuest;
const P: number[] = [];
const BOOT_MS = 90_000;
const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';
const get = async (p: string) => (await c.request('GET', p)).json;
const merge = (p: string, body: any) => c.request('PATCH', p, body, { 'Content-Type': 'application/merge-patch+json' });

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** GET 127.0.0.1:port/id without keep-alive; undefined on any failure. */
function fetchId(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/id', agent: false, timeout: 3_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : undefined));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

const vmi = () => get(`${api}/virtualmachineinstances/p`);
const runState = (uid: string) =>
  JSON.parse(fs.readFileSync(path.join(c.dataDir, 'nodes', 'node-0', 'run', uid, 'state.json'), 'utf8'));
const passtPid = (uid: string): number => runState(uid).sidecars.find((s: any) => s.kind === 'passt').process.pid;
const condition = (o: any, type: string) => (o?.status?.conditions ?? []).find((x: any) => x.type === type);

function killQemuUnder(dir: string): void {
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

beforeAll(async () => {
  guest = ensureGuest();
  for (let i = 0; i < 2; i++) P.push(await freePort());
  c = await startTestCluster();
  rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 1,
    backend: 'qemu',
    allowedRoots: [guest.dir],
  });
  const net0 = { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Network', metadata: { name: 'podnet' }, spec: { type: 'pod' } };
  expect((await c.request('POST', `${api}/networks`, net0)).status).toBe(201);
  const vm = {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'p' },
    spec: {
      memory: '128Mi',
      hotplugSlots: 2,
      firmware: { kernel: { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline } },
      interfaces: [{ name: 'eth0', network: 'podnet', ports: [{ name: 'web', port: 8080, nodePort: P[0] }] }],
      cloudInit: {
        userData: `#!/bin/sh
b=$(cat /proc/sys/kernel/random/boot_id)
for p in 8080 8081; do mkdir -p /www$p; echo "port$p $b" > /www$p/id; httpd -p $p -h /www$p; done
`,
      },
    },
  };
  expect((await c.request('POST', `${api}/virtualmachines`, vm)).status).toBe(201);
}, 180_000);

afterAll(async () => {
  await c?.request('DELETE', `${api}/virtualmachines/p`).catch(() => undefined);
  await rt?.stop();
  if (c) killQemuUnder(path.join(c.dataDir, 'nodes'));
  await c?.cleanup();
}, 60_000);

let boot: string;
let uid: string;

test('a pod interface: status.interfaces[].ipAddress is the address passt leases (what the guest got by DHCP); PasstReady; hotplugSlots reserved', async () => {
  const vm = await eventually(
    async () => {
      const v = await get(`${api}/virtualmachines/p`);
      return v.status?.ready && v.status.interfaces?.[0]?.ipAddress ? v : undefined;
    },
    BOOT_MS,
    'VM ready with an address',
  );
  const inst = await vmi();
  uid = inst.metadata.uid;
  const marker = /KUBEVM-GUEST-READY hostname=\S+ ip=(\S+)/.exec(fs.readFileSync(inst.status.consoleLog, 'utf8'));
  expect(vm.status.interfaces[0]).toMatchObject({ name: 'eth0', network: 'podnet', ipAddress: marker?.[1] });
  expect(runState(uid).sidecars.find((s: any) => s.kind === 'passt').lease).toBe(marker?.[1]);
  expect(condition(inst, 'PasstReady')).toMatchObject({ status: 'True', reason: 'PasstRunning' });
  // hotplugSlots: 2 spare PCIe root ports besides the NIC's (and the seed disk's, if any).
  expect(runState(uid).ports.filter((p: any) => p.device === null)).toHaveLength(2);
  boot = (await eventually(() => fetchId(P[0]), 60_000, 'the forwarded node port'))!.replace(/^port8080 /, '');
  expect(boot).toMatch(/^[0-9a-f-]{36}$/);
}, 150_000);

test('ports changed on the VirtualMachine are applied live: the new node port answers, the old one no longer; same instance, no RestartRequired', async () => {
  const r = await merge(`${api}/virtualmachines/p`, {
    spec: { interfaces: [{ name: 'eth0', network: 'podnet', ports: [{ name: 'alt', port: 8081, nodePort: P[1] }] }] },
  });
  expect(r.status).toBe(200);
  expect(await eventually(() => fetchId(P[1]), 60_000, 'the new forward')).toBe(`port8081 ${boot}`);
  expect(await fetchId(P[0])).toBeUndefined();
  const inst = await vmi();
  expect(inst.metadata.uid).toBe(uid);
  expect(inst.status.pid).toBe(runState(uid).qemu.pid);
  const vm = await eventually(
    async () => {
      const v = await get(`${api}/virtualmachines/p`);
      return v.status?.observedGeneration === v.metadata.generation ? v : undefined;
    },
    10_000,
    'the VM status to catch up',
  );
  expect(condition(vm, 'RestartRequired')).toBeUndefined();
  // The event is recorded after the new forward works: wait for it.
  const events = await eventually(
    async () => {
      const l = (await get('/api/v1/namespaces/default/events')).items.filter((e: any) => e.involvedObject.name === 'p' && e.reason === 'PortsUpdated');
      return l.length ? l : undefined;
    },
    10_000,
    'the PortsUpdated event',
  );
  expect(events.map((e: any) => e.message)).toEqual([
    expect.stringMatching(new RegExp(`interface eth0: port forwards now tcp ${P[1]}→8081, applied live \\(a new passt`)),
  ]);
}, 90_000);

test('kill -9 of the passt is repaired without a restart, also after an agent restart (adoption); PasstReady reports the restarts', async () => {
  // The passt of the new port forwards, once the run state records it (the old one is gone).
  const first = await eventually(
    () => {
      const p = passtPid(uid);
      try {
        process.kill(p, 0);
        return p;
      } catch {
        return undefined;
      }
    },
    30_000,
    'the running passt recorded',
  );
  process.kill(first!, 'SIGKILL');
  expect(await eventually(() => fetchId(P[1]), 60_000, 'the forward after the first restart')).toBe(`port8081 ${boot}`);
  await eventually(
    async () => condition(await vmi(), 'PasstReady')?.message === 'interface eth0: passt restarted 1 time(s)',
    30_000,
    'PasstReady after one restart',
  );
  expect(condition(await vmi(), 'PasstReady')).toMatchObject({ status: 'True', reason: 'PasstRestarted' });

  await rt.restartAgent('node-0');
  const pid = passtPid(uid);
  process.kill(pid, 'SIGKILL');
  await eventually(() => passtPid(uid) !== pid, 60_000, 'a new passt from the adopting agent');
  expect(await eventually(() => fetchId(P[1]), 60_000, 'the forward after the second restart')).toBe(`port8081 ${boot}`);
  await eventually(
    async () => condition(await vmi(), 'PasstReady')?.message === 'interface eth0: passt restarted 2 time(s)',
    30_000,
    'PasstReady after two restarts',
  );
  const inst = await vmi();
  expect(inst.metadata.uid).toBe(uid);
  expect(inst.status.phase).toBe('Running');
  expect(inst.status.message).toMatch(
    /NIC eth0: its passt went away .*; a new passt was started \(behind the NIC's hub\), restart 2/,
  );
}, 150_000);
