import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { ensureGuest, TestGuest } from '../guest';

/**
 * bridge Networks on real QEMU through the whole stack: VMs b1 and b2 on
 * Network blue reach each other; r1 on Network red is unreachable from b1.
 *
 * Everything network-related lives in a network namespace this test creates
 * (the node option `netns`): QEMU runs there (`ip netns exec`), the agent makes
 * the bridges there and the backend the taps. The guests' 10.99.0.0/24
 * addresses exist only inside the guests; the node's own namespace gets no
 * bridge, tap or address. The namespace is deleted afterwards.
 *
 * Budget: three 128 MiB guests boot at once under TCG on two cores (~15 s, plus
 * ~6 s of DHCP attempts: a bridge here has no DHCP server); waits allow 90 s.
 */
const NETNS = `kubevm-test-${process.pid}`;
const BOOT_MS = 90_000;
const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';
const ADDR = { b1: '10.99.0.11', b2: '10.99.0.12', r1: '10.99.0.21' } as const;

let c: TestCluster;
let rt: Runtime | undefined;
let guest: TestGuest;
let netnsMade = false;

const get = async (p: string) => (await c.request('GET', p)).json;
const ipj = (...args: string[]) => JSON.parse(execFileSync('ip', ['-n', NETNS, '-j', ...args], { encoding: 'utf8' }) || '[]');

function consoleOf(vmi: any): string {
  return vmi?.status?.consoleLog && fs.existsSync(vmi.status.consoleLog) ? fs.readFileSync(vmi.status.consoleLog, 'utf8') : '';
}

async function waitConsole(name: string, re: RegExp, timeoutMs = BOOT_MS): Promise<RegExpMatchArray> {
  return (await eventually(async () => consoleOf(await get(`${api}/virtualmachineinstances/${name}`)).match(re) ?? undefined, timeoutMs, `${re} on the console of ${name}`))!;
}

// Static address, no DHCP on a bridge Network. b1 then pings b2 until it answers (b2 may boot later).
const userData = (name: keyof typeof ADDR) => `#!/bin/sh
ip addr add ${ADDR[name]}/24 dev eth0
ip link set eth0 up
echo "NET-UP ip=${ADDR[name]}"
${
  name === 'b1'
    ? `r=fail; i=0
while [ $i -lt 60 ]; do ping -c 1 -W 1 ${ADDR.b2} >/dev/null 2>&1 && { r=ok; break; }; i=$((i+1)); done
echo "PING-B2=$r"`
    : ''
}`;

function vm(name: keyof typeof ADDR, network: string): any {
  return {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name },
    spec: {
      runStrategy: 'Always',
      memory: '128Mi',
      terminationGracePeriodSeconds: 5,
      firmware: { kernel: { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline } },
      interfaces: [{ name: 'eth0', network }],
      cloudInit: { userData: userData(name) },
    },
  };
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

/** Types a command on the guest's serial console (a root shell once user-data is done); retried until `re` shows. */
async function onConsole(name: string, command: string, re: RegExp): Promise<RegExpMatchArray> {
  const vmi = await get(`${api}/virtualmachineinstances/${name}`);
  const sock = net.createConnection(path.join(path.dirname(vmi.status.consoleLog), 'console.sock'));
  await new Promise<void>((r, j) => sock.once('connect', () => r()).once('error', j));
  try {
    const before = consoleOf(vmi).length;
    for (let attempt = 0; ; attempt++) {
      sock.write(`\n${command}\n`);
      const m = await eventually(async () => consoleOf(await get(`${api}/virtualmachineinstances/${name}`)).slice(before).match(re) ?? undefined, 15_000, `${re} on ${name}`).catch((e) => {
        if (attempt >= 2) throw e;
        return undefined;
      });
      if (m) return m;
    }
  } finally {
    sock.destroy();
  }
}

beforeAll(async () => {
  guest = ensureGuest();
  execFileSync('ip', ['netns', 'add', NETNS]);
  netnsMade = true;
  c = await startTestCluster();
  rt = await startRuntime({ kubeconfigPath: c.kubeconfigPath, dataDir: c.dataDir, nodes: 1, backend: 'qemu', allowedRoots: [guest.dir], netns: NETNS });
  for (const name of ['blue', 'red'])
    expect((await c.request('POST', `${api}/networks`, { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Network', metadata: { name }, spec: { type: 'bridge' } })).status).toBe(201);
  for (const [name, network] of [['b1', 'blue'], ['b2', 'blue'], ['r1', 'red']] as const)
    expect((await c.request('POST', `${api}/virtualmachines`, vm(name, network))).status).toBe(201);
}, 120_000);

afterAll(async () => {
  await rt?.stop({ stopVms: true }).catch(() => undefined);
  // The test's VMs must not outlive it, whatever happened above.
  const nodes = path.join(c?.dataDir ?? '/nonexistent', 'nodes');
  if (fs.existsSync(nodes)) killQemuUnder(nodes);
  await c?.cleanup();
  if (netnsMade) execFileSync('ip', ['netns', 'del', NETNS]);
}, 60_000);

test('QEMU runs in the node netns; each Network has its own address-less bridge there and nothing in the root namespace', async () => {
  for (const name of Object.keys(ADDR)) await waitConsole(name, /NET-UP ip=/);
  const vmi = await get(`${api}/virtualmachineinstances/b1`);
  expect(fs.readlinkSync(`/proc/${vmi.status.pid}/ns/net`)).toBe(`net:[${fs.statSync(`/run/netns/${NETNS}`).ino}]`);

  const blue = (await get(`${api}/networks/blue`)).status.bridgeName;
  const red = (await get(`${api}/networks/red`)).status.bridgeName;
  expect(blue).toMatch(/^kvb/);
  expect(red).not.toBe(blue);
  const bridges = ipj('-d', 'link', 'show', 'type', 'bridge');
  expect(bridges.map((b: any) => b.ifname).sort()).toEqual([blue, red].sort());
  expect(bridges.find((b: any) => b.ifname === blue).ifalias).toBe('kubevm.dev/network=default/blue');
  for (const br of [blue, red]) {
    expect(ipj('addr', 'show', 'dev', br)[0].addr_info).toEqual([]); // no IPv4, no IPv6 link-local
    expect(fs.existsSync(`/sys/class/net/${br}`)).toBe(false); // not in the node's root namespace
  }
  // One tap per NIC, each on its Network's bridge.
  expect(ipj('link', 'show', 'master', blue)).toHaveLength(2);
  expect(ipj('link', 'show', 'master', red)).toHaveLength(1);
}, BOOT_MS + 10_000);

test('b1 reaches b2 on the same Network; r1 on another Network is unreachable', async () => {
  expect((await waitConsole('b1', /PING-B2=(ok|fail)/))[1]).toBe('ok');
  await waitConsole('b1', /KUBEVM-USERDATA-DONE/);
  await waitConsole('r1', /NET-UP ip=/); // r1 is up with its address: the failure below is isolation
  // b2 again as the control, in the same breath.
  const m = await onConsole(
    'b1',
    `a=fail; b=fail; ping -c 1 -W 2 ${ADDR.b2} >/dev/null 2>&1 && a=ok; ping -c 3 -W 1 ${ADDR.r1} >/dev/null 2>&1 && b=ok; echo "PING-B2-AGAIN=$a PING-R1=$b"`,
    /PING-B2-AGAIN=(ok|fail) PING-R1=(ok|fail)/,
  );
  expect({ b2: m[1], r1: m[2] }).toEqual({ b2: 'ok', r1: 'fail' });
}, BOOT_MS + 40_000);

test('an agent restart adopts the VMs (same QEMU pid through ip netns exec)', async () => {
  const before = await get(`${api}/virtualmachineinstances/b2`);
  await rt!.restartAgent('node-0');
  await new Promise((r) => setTimeout(r, 1500));
  const after = await get(`${api}/virtualmachineinstances/b2`);
  expect(after.metadata.uid).toBe(before.metadata.uid);
  expect(after.status.pid).toBe(before.status.pid);
  expect(after.status.phase).toBe('Running');
});

test('deleting the only VM on red removes its bridge; blue stays', async () => {
  const red = (await get(`${api}/networks/red`)).status.bridgeName;
  const blue = (await get(`${api}/networks/blue`)).status.bridgeName;
  await c.request('DELETE', `${api}/virtualmachines/r1`);
  await eventually(async () => (await c.request('GET', `${api}/virtualmachineinstances/r1`)).status === 404, 30_000, 'r1 instance gone');
  await eventually(async () => !ipj('link', 'show', 'type', 'bridge').some((b: any) => b.ifname === red), 15_000, `bridge ${red} removed`);
  expect(ipj('link', 'show', 'type', 'bridge').map((b: any) => b.ifname)).toEqual([blue]);
});
