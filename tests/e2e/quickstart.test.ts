import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually, tempDir } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { runEngine, type EngineOptions } from '../../engine/engine';
import { engineCommand } from '../../engine/cli';
import { ensureGuest, TestGuest } from '../guest';

/**
 * examples/quickstart end to end: the program runs through the local engine (the
 * kubevm provider over gRPC) against the embedded cluster with the real QEMU
 * backend and one node. Three TCG guests share the machine's cores: the `up`
 * budget is generous (they are usually all Ready in 20-30 s).
 */
const PROGRAM = path.resolve(__dirname, '../../examples/quickstart');
const VMS = ['qs-web-1', 'qs-web-2', 'qs-worker-1'];
const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';
// Three 1-core VMs on one node: a 2-core machine would leave the third unschedulable. The idle
// test guests share the cores fine, so the node reports at least 4 allocatable CPUs.
const NODE_CAPACITY = { cpu: Math.max(4, os.cpus().length), memoryBytes: os.totalmem() };

let c: TestCluster;
let rt: Runtime;
let guest: TestGuest;
let shareDir: string;
let stateDir: string;
let lines: string[] = [];
let opts: EngineOptions;
let args: string[];

const get = async (p: string) => c.request('GET', `${api}/${p}`);

/** Pids of QEMU processes whose command line mentions this test's cluster data directory. */
function qemuPids(): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('qemu-system') && cmd.includes(c.dataDir)) out.push(Number(pid));
    } catch {
      /* gone */
    }
  }
  return out;
}

beforeAll(async () => {
  guest = ensureGuest();
  shareDir = tempDir('kubevm-qs-share-');
  fs.writeFileSync(path.join(shareDir, 'motd.txt'), 'hello-from-the-quickstart-share');
  fs.chmodSync(shareDir, 0o755);
  stateDir = tempDir('kubevm-qs-state-');
  c = await startTestCluster();
  rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 1,
    backend: 'qemu',
    allowedRoots: [guest.dir, shareDir],
    nodeCapacity: NODE_CAPACITY,
  });
  const config = { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline, sharePath: shareDir };
  const statePath = path.join(stateDir, 'state.json');
  opts = { programDir: PROGRAM, statePath, kubeconfig: c.kubeconfigPath, config, out: (l) => lines.push(l) };
  args = [
    PROGRAM,
    '--state',
    statePath,
    '--kubeconfig',
    c.kubeconfigPath,
    ...Object.entries(config).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
  ];
}, 120_000);

afterAll(async () => {
  if (c) for (const vm of VMS) await c.request('DELETE', `${api}/virtualmachines/${vm}`).catch(() => undefined);
  await rt?.stop({ stopVms: true });
  // The test's VMs must not outlive it, whatever happened above.
  if (c) for (const pid of qemuPids()) process.kill(pid, 'SIGKILL');
  await c?.cleanup();
  for (const d of [shareDir, stateDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
}, 60_000);

beforeEach(() => {
  lines = [];
});

test('up: a Network, 3 Volumes and 3 VMs, each Ready with an IP; the guests ran their user data and read the share', async () => {
  const r = await runEngine('up', opts);
  expect(r.errors).toEqual([]);
  expect(r.steps.map((s) => `${s.op} ${s.name}`).sort()).toEqual(
    ['qs-net', ...VMS, ...VMS.map((v) => `${v}-data`)].map((n) => `create ${n}`).sort(),
  );
  for (const name of VMS) {
    const vm = (await get(`virtualmachines/${name}`)).json;
    expect(vm.status.printableStatus).toBe('Running');
    expect(vm.status.ready).toBe(true);
    expect(vm.status.node).toBe('node-0');
    expect(vm.status.interfaces?.[0]?.ipAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(vm.metadata.labels).toEqual({ app: 'quickstart', role: name.includes('worker') ? 'worker' : 'web' });
    expect(vm.spec.filesystems).toEqual([{ name: 'share', containerPath: { path: shareDir, readOnly: true } }]);
  }
  // The provider waited for readiness: the recorded outputs hold the IPs.
  const state = JSON.parse(fs.readFileSync(opts.statePath!, 'utf8'));
  for (const name of VMS)
    expect(state.resources.find((x: any) => x.urn.endsWith(`::${name}`)).outputs.ipAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  // cloud-init user data ran in each guest and read the ContainerPath share.
  for (const name of VMS) {
    await eventually(
      async () => {
        const vmi = (await get(`virtualmachineinstances/${name}`)).json;
        const log =
          vmi?.status?.consoleLog && fs.existsSync(vmi.status.consoleLog) ? fs.readFileSync(vmi.status.consoleLog, 'utf8') : '';
        return log.includes('quickstart: share says: hello-from-the-quickstart-share');
      },
      30_000,
      `the user data output on the console of ${name}`,
    );
  }
  expect(qemuPids()).toHaveLength(3);
}, 150_000);

test('a second preview finds no changes: --expect-no-changes passes (CLI argument array)', async () => {
  expect(await engineCommand('preview', [...args, '--expect-no-changes'], { out: (l) => lines.push(l) })).toBe(0);
  expect(lines).toContain('Resources: 7 unchanged');
}, 60_000);

test('an out-of-band kubectl edit of one VM: refresh records it, preview shows exactly that field', async () => {
  const r = await c.kubectl([
    'patch',
    'vm',
    'qs-web-2',
    '--type',
    'merge',
    '-p',
    JSON.stringify({ metadata: { labels: { role: 'db' } } }),
  ]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);

  expect(await engineCommand('refresh', args, { out: (l) => lines.push(l) })).toBe(0);
  expect(lines).toContain('~ kubevm:index:VirtualMachine qs-web-2 refreshed');

  lines = [];
  expect(await engineCommand('preview', [...args, '--expect-no-changes'], { out: (l) => lines.push(l) })).toBe(1);
  const p = await runEngine('preview', opts);
  const changed = p.steps.filter((s) => s.op !== 'same');
  expect(changed.map((s) => [s.op, s.name])).toEqual([['update', 'qs-web-2']]);
  expect(changed[0].changes).toEqual([{ path: 'labels.role', kind: 'UPDATE', old: 'db', new: 'web' }]);
  expect(lines).toContain('~ kubevm:index:VirtualMachine qs-web-2 update');
  expect(lines).toContain('    ~ labels.role: "db" => "web"');
  expect(lines).toContain('Resources: 1 to update, 6 unchanged');
}, 60_000);

test('destroy removes everything and no QEMU process of the test remains', async () => {
  const r = await runEngine('destroy', opts);
  expect(r.errors).toEqual([]);
  expect(r.steps.filter((s) => s.op === 'delete')).toHaveLength(7);
  for (const name of VMS) {
    expect((await get(`virtualmachines/${name}`)).status).toBe(404);
    expect((await get(`volumes/${name}-data`)).status).toBe(404);
  }
  expect((await get('networks/qs-net')).status).toBe(404);
  // The VMs are gone at once; their instances go when the agent has stopped QEMU and removed its files.
  await eventually(
    async () => (await get('virtualmachineinstances')).json.items.length === 0,
    60_000,
    'the instances to be removed',
  );
  await eventually(() => qemuPids().length === 0, 30_000, 'the QEMU processes to exit');
  expect(JSON.parse(fs.readFileSync(opts.statePath!, 'utf8')).resources).toEqual([]);
}, 120_000);
