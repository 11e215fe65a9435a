import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startCluster, defaultDataDir, STATE_FILE } from '../cluster/embedded';
import { startRuntime } from '../cluster/runtime';
import { runEngine, type EngineOptions } from '../engine/engine';
import { Kube } from '../controller/runtime/kube';
import { ensureGuest } from '../tests/guest';

/**
 * `npm start`: the quick start. Starts the embedded cluster in this process with the
 * VM controller and one node agent on the QEMU backend, deploys examples/quickstart
 * through the local engine and the kubevm provider (this machine's guest paths as
 * config), prints a table of the fleet, then shows a drift check: an out-of-band
 * `kubectl patch`, `refresh` and `preview` showing the changed field, and `up`
 * putting it back. Then the cluster keeps running until Ctrl-C.
 *
 *   node --import tsx scripts/quickstart.ts [--once] [--verbose]
 *
 * --once: destroys the stack, stops the VMs and the cluster, exits 0.
 */
const ROOT = path.resolve(__dirname, '..');
const PROGRAM = path.join(ROOT, 'examples', 'quickstart');
const API = '/apis/kubevm.dev/v1alpha1/namespaces/default';
const DRIFT_VM = 'qs-web-2';

const argv = process.argv.slice(2);
const once = argv.includes('--once');
const verbose = argv.includes('--verbose');
for (const a of argv)
  if (a !== '--once' && a !== '--verbose')
    fail(`unknown argument ${JSON.stringify(a)} (usage: npm start [-- --once] [-- --verbose])`);

function fail(msg: string): never {
  console.error(`quickstart: ${msg}`);
  process.exit(1);
}

const t0 = Date.now();
const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
const say = (msg: string) => console.log(`[${secs(Date.now() - t0).padStart(6)}] ${msg}`);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** QEMU processes started under this data directory (their command lines name their run directory). */
function qemuPids(dataDir: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        return cmd.includes('qemu-system') && cmd.includes(path.join(dataDir, 'nodes'));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** For printed commands only (nothing here runs through a shell). */
const quote = (a: string): string => (/^[\w./=:@-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) =>
      r
        .map((x, i) => x.padEnd(widths[i]))
        .join('   ')
        .trimEnd(),
    )
    .join('\n');
}

async function main(): Promise<void> {
  const dataDir = path.resolve(defaultDataDir());
  try {
    const st = JSON.parse(fs.readFileSync(path.join(dataDir, STATE_FILE), 'utf8'));
    if (st.pid !== process.pid && alive(st.pid))
      fail(`a cluster is already running from ${dataDir} (pid ${st.pid}): stop it first (node bin/kubevm cluster down)`);
  } catch {
    /* no cluster running */
  }

  const guest = ensureGuest();
  const sharedRoot = path.join(dataDir, 'shared');
  const shareDir = path.join(sharedRoot, 'quickstart');
  fs.mkdirSync(shareDir, { recursive: true });
  fs.writeFileSync(path.join(shareDir, 'motd.txt'), `hello from ${os.hostname()}'s ${shareDir}\n`);
  fs.chmodSync(shareDir, 0o755);
  fs.chmodSync(sharedRoot, 0o755);

  say(`starting the embedded cluster (data in ${dataDir})`);
  const cluster = await startCluster({ dataDir, log: verbose ? (l) => console.log(l) : undefined });
  // One node runs all three 1-core VMs: the idle test guests share the cores, so the node
  // reports at least 4 allocatable CPUs (a 2-core machine would leave the third unschedulable).
  const runtime = await startRuntime({
    kubeconfigPath: cluster.kubeconfigPath,
    dataDir,
    nodes: 1,
    backend: 'qemu',
    allowedRoots: [guest.dir, sharedRoot],
    nodeCapacity: { cpu: Math.max(4, os.cpus().length), memoryBytes: os.totalmem() },
    log: verbose ? (l) => console.log(l) : undefined,
  });
  say(`cluster up at ${cluster.url}; controller and node-0 (qemu backend) running`);
  const kube = Kube.fromFile(cluster.kubeconfigPath);

  let stopping = false;
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('stopping the VMs and the cluster');
    await runtime.stop({ stopVms: true });
    await cluster.stop();
    const left = qemuPids(dataDir);
    if (left.length) {
      console.error(`quickstart: QEMU processes still running: ${left.join(', ')}`);
      process.exit(1);
    }
    say('stopped');
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  const created = new Map<string, number>();
  let upStart = 0;
  const opts: EngineOptions = {
    programDir: PROGRAM,
    statePath: path.join(dataDir, 'quickstart-state.json'),
    kubeconfig: cluster.kubeconfigPath,
    config: { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline, sharePath: shareDir },
    out: (l) => {
      const m = /^\+ kubevm:index:VirtualMachine (\S+) created$/.exec(l);
      if (m) created.set(m[1], Date.now() - upStart);
      console.log(`    ${l}`);
    },
  };
  try {
    say('kubevm up examples/quickstart (the provider waits until each guest reports ready)');
    upStart = Date.now();
    const up = await runEngine('up', opts);
    if (!up.ok) throw new Error(`up failed: ${up.errors.join('; ')}`);

    // VMs that already existed (a previous run's state) were not waited for by `up`: they boot again
    // with this runtime. Wait until every guest is ready with an IP.
    const readyIn = new Map(created);
    let vms: any[] = [];
    for (const deadline = Date.now() + 180_000; ;) {
      vms = ((await kube.request('GET', `${API}/virtualmachines`)).items ?? []).filter(
        (v: any) => v.metadata.labels?.app === 'quickstart',
      );
      for (const v of vms)
        if (v.status?.ready && v.status.interfaces?.[0]?.ipAddress && !readyIn.has(v.metadata.name))
          readyIn.set(v.metadata.name, Date.now() - upStart);
      if (vms.length && vms.every((v) => readyIn.has(v.metadata.name))) break;
      if (Date.now() > deadline)
        throw new Error(
          `not ready after 180 s: ${vms
            .filter((v) => !readyIn.has(v.metadata.name))
            .map((v) => `${v.metadata.name} (${v.status?.printableStatus ?? 'no status'})`)
            .join(', ')}`,
        );
      await new Promise((r) => setTimeout(r, 500));
    }
    const rows = [['VM', 'NODE', 'PHASE', 'IP', 'READY IN']];
    for (const v of vms) {
      const s = v.status ?? {};
      rows.push([
        v.metadata.name,
        s.node ?? '-',
        s.printableStatus ?? '-',
        s.interfaces?.[0]?.ipAddress ?? '-',
        secs(readyIn.get(v.metadata.name)!),
      ]);
    }
    console.log(`\n${table(rows)}\n`);

    say(`drift check: an out-of-band edit, kubectl patch of ${DRIFT_VM}'s label role`);
    const env = { ...process.env, KUBECONFIG: cluster.kubeconfigPath };
    const patch = ['patch', 'vm', DRIFT_VM, '--type', 'merge', '-p', JSON.stringify({ metadata: { labels: { role: 'db' } } })];
    console.log(`    $ kubectl ${patch.map(quote).join(' ')}`);
    // Asynchronously: the API server answering kubectl runs in this process.
    console.log(`    ${(await promisify(execFile)('kubectl', patch, { env, encoding: 'utf8', timeout: 60_000 })).stdout.trim()}`);
    say('kubevm refresh: reads every resource back from the cluster');
    if (!(await runEngine('refresh', opts)).ok) throw new Error('refresh failed');
    say('kubevm preview --expect-no-changes: the drift, field by field');
    const preview = await runEngine('preview', opts);
    say(
      preview.changes
        ? `drift found: ${preview.changes} change(s) (a CI drift check exits 1 here)`
        : 'no drift found (unexpected)',
    );
    say('kubevm up: puts the declared value back');
    if (!(await runEngine('up', opts)).ok) throw new Error('up failed');

    if (once) {
      say('--once: kubevm destroy examples/quickstart');
      const d = await runEngine('destroy', opts);
      if (!d.ok) throw new Error(`destroy failed: ${d.errors.join('; ')}`);
      return shutdown(0);
    }
    console.log(`
The cluster keeps running until Ctrl-C (the VMs stop with it). In another shell:

  export KUBECONFIG=${cluster.kubeconfigPath}
  kubectl get vm -o wide                       # phase, ready, node, IP
  node bin/kubevm console qs-web-1             # a VM's serial console, followed (Ctrl-C to leave)
  node bin/kubevm preview --refresh --expect-no-changes --state ${opts.statePath} ${path.relative(process.cwd(), PROGRAM) || '.'} \\
    ${Object.entries(opts.config!)
      .map(([k, v]) => `-c ${quote(`${k}=${v}`)}`)
      .join(' ')}
`);
  } catch (e) {
    console.error(`quickstart: ${(e as Error).message}`);
    if (once) {
      say('--once: kubevm destroy examples/quickstart');
      await runEngine('destroy', opts).catch(() => undefined);
    }
    await shutdown(1);
  }
}

void main();
