import * as fs from 'node:fs';
import * as path from 'node:path';
import * as https from 'node:https';
import { startCluster, defaultDataDir, STATE_FILE } from '../cluster/embedded';

/**
 * `kubevm` command line: the embedded cluster, the console, and the local engine.
 */
const USAGE = `usage:
  kubevm cluster up [--data-dir DIR] [--port N] [--nodes N] [--backend qemu|sim] [--allowed-root DIR]... [--keep-vms]
                                                  run the embedded cluster in the foreground; with
                                                  --nodes, also the VM controller and N node agents;
                                                  VMs stop with it unless --keep-vms
  kubevm cluster status [--data-dir DIR]          is it running, where, how many objects
  kubevm cluster down [--data-dir DIR]            stop a running embedded cluster
  kubevm console VM [-n NAMESPACE] [--no-follow]  print and follow a VM's serial console
                                                  (uses $KUBECONFIG, else the embedded cluster's)
  kubevm node drain NODE [--timeout SECONDS]      cordon NODE and move its VMs away (live migration
                                                  for evictionStrategy LiveMigrate, else stop);
                                                  exits 1 when a VM cannot leave, naming the reason
  kubevm node cordon|uncordon NODE                mark NODE (un)schedulable for new VMs
  kubevm backup VM [-n NS] [--full] [--target-volume NAME | --target-path DIR] [--bandwidth MIBPS]
        [--name NAME] [--no-wait] [--timeout SECONDS]
                                                  take an on-demand Backup (Incremental unless --full;
                                                  name VM-yyyymmdd-hhmmss, UTC) and follow it to the end
  kubevm backups VM [-n NS]                       the VM's Backups, oldest first
  kubevm restore BACKUP (--to VOLUME | --in-place) [-n NS] [--disk D] [--name NAME] [--no-wait]
        [--timeout SECONDS]                       restore a point into a new Volume or onto the stopped
                                                  VM's own disk, and follow it to the end
  kubevm up|preview|refresh|destroy [PROGRAM-DIR] [--stack NAME] [--state FILE] [-c KEY=VALUE]...
        [--kubeconfig FILE] [--namespace NS] [--refresh] [--expect-no-changes]
                                                  the local engine: run a Pulumi TypeScript program
                                                  (Pulumi.yaml + index.ts, default .) without the Pulumi
                                                  CLI; state in PROGRAM-DIR/.kubevm-state.json unless
                                                  --state; --expect-no-changes exits 1 on changes; the
                                                  cluster: --kubeconfig, else kubevm:kubeconfig config,
                                                  else $KUBECONFIG, else the embedded cluster's`;

interface Flags {
  dataDir: string;
  port: number;
  verbose: boolean;
  nodes: number;
  backend: 'qemu' | 'sim';
  allowedRoots: string[];
  keepVms: boolean;
}

function parseFlags(args: string[]): Flags {
  const f: Flags = { dataDir: defaultDataDir(), port: 6443, verbose: false, nodes: 0, backend: 'qemu', allowedRoots: [], keepVms: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = (): string => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : args[++i];
      if (v === undefined) fail(`${a.split('=')[0]} needs a value`);
      return v;
    };
    if (a === '--data-dir' || a.startsWith('--data-dir=')) f.dataDir = path.resolve(value());
    else if (a === '--port' || a.startsWith('--port=')) {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`--port: ${JSON.stringify(v)} is not a port number (0-65535)`);
      f.port = n;
    } else if (a === '--nodes' || a.startsWith('--nodes=')) {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 64) fail(`--nodes: ${JSON.stringify(v)} must be a whole number from 0 to 64`);
      f.nodes = n;
    } else if (a === '--backend' || a.startsWith('--backend=')) {
      const v = value();
      if (v !== 'qemu' && v !== 'sim') fail(`--backend: ${JSON.stringify(v)} is not a backend (qemu, sim)`);
      f.backend = v;
    } else if (a === '--allowed-root' || a.startsWith('--allowed-root=')) {
      const v = value();
      if (!path.isAbsolute(v)) fail(`--allowed-root: ${JSON.stringify(v)} must be an absolute path`);
      f.allowedRoots.push(path.resolve(v));
    } else if (a === '--keep-vms') f.keepVms = true;
    else if (a === '-v' || a === '--verbose') f.verbose = true;
    else fail(`unknown flag ${JSON.stringify(a)}\n${USAGE}`);
  }
  return f;
}

function fail(msg: string): never {
  process.stderr.write(`kubevm: ${msg}\n`);
  process.exit(2);
}

function readState(dataDir: string): { pid: number; url: string; port: number; kubeconfig: string } | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dataDir, STATE_FILE), 'utf8'));
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function up(f: Flags): Promise<void> {
  const st = readState(f.dataDir);
  if (st && alive(st.pid)) fail(`a cluster is already running from ${f.dataDir} (pid ${st.pid}, ${st.url})`);
  const cluster = await startCluster({ dataDir: f.dataDir, port: f.port, log: f.verbose ? (l) => console.log(l) : undefined });
  console.log(`kubevm cluster is up at ${cluster.url} (data in ${f.dataDir})`);
  console.log(`kubeconfig: ${cluster.kubeconfigPath}`);
  console.log(`export KUBECONFIG=${cluster.kubeconfigPath}`);
  let runtime: { stop(o?: { stopVms?: boolean }): Promise<void> } | undefined;
  if (f.nodes > 0) {
    // Loaded only when needed; require (not import()) so tsx resolves the TypeScript source.
    const { startRuntime } = require('../cluster/runtime') as typeof import('../cluster/runtime');
    runtime = await startRuntime({
      kubeconfigPath: cluster.kubeconfigPath,
      dataDir: f.dataDir,
      nodes: f.nodes,
      backend: f.backend,
      allowedRoots: f.allowedRoots.length ? f.allowedRoots : undefined,
      log: f.verbose ? (l) => console.log(l) : undefined,
    });
    console.log(`VM runtime: controller and ${f.nodes} node agent(s) with the ${f.backend} backend; try: kubectl get nodes,vm`);
  } else console.log('try: kubectl get namespaces');
  let stopping = false;
  const stop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${sig}: shutting down`);
    // VMs stop with the cluster unless --keep-vms (then the next `up` adopts them).
    await runtime?.stop({ stopVms: !f.keepVms });
    await cluster.stop();
    console.log('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

function get(url: string, token: string, ca: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { headers: { Authorization: `Bearer ${token}` }, ca, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timed out')));
  });
}

async function status(f: Flags): Promise<void> {
  const st = readState(f.dataDir);
  if (!st || !alive(st.pid)) {
    console.log(`kubevm cluster: not running (data dir ${f.dataDir})`);
    process.exit(1);
  }
  const token = fs.readFileSync(path.join(f.dataDir, 'token'), 'utf8').trim();
  const ca = fs.readFileSync(path.join(f.dataDir, 'pki', 'ca.crt'), 'utf8');
  try {
    const ready = await get(`${st.url}/readyz`, token, ca);
    const ns = await get(`${st.url}/api/v1/namespaces`, token, ca);
    const count = ns.code === 200 ? JSON.parse(ns.body).items.length : '?';
    console.log(`kubevm cluster: running (pid ${st.pid}) at ${st.url}, readyz=${ready.body}, namespaces=${count}`);
    console.log(`export KUBECONFIG=${st.kubeconfig}`);
  } catch (e) {
    console.log(`kubevm cluster: pid ${st.pid} exists but ${st.url} does not answer: ${(e as Error).message}`);
    process.exit(1);
  }
}

async function down(f: Flags): Promise<void> {
  const st = readState(f.dataDir);
  if (!st || !alive(st.pid)) {
    console.log('kubevm cluster: not running');
    return;
  }
  process.kill(st.pid, 'SIGTERM');
  const deadline = Date.now() + 15_000;
  while (alive(st.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (alive(st.pid)) fail(`pid ${st.pid} did not stop within 15 s`);
  console.log(`kubevm cluster: stopped (pid ${st.pid})`);
}

async function consoleMain(args: string[]): Promise<void> {
  let ns = 'default';
  let follow = true;
  let vm: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-n' || a === '--namespace') ns = args[++i] ?? fail('-n needs a namespace');
    else if (a === '--no-follow') follow = false;
    else if (a.startsWith('-')) fail(`unknown flag ${JSON.stringify(a)}\n${USAGE}`);
    else if (!vm) vm = a;
    else fail(`unexpected argument ${JSON.stringify(a)}`);
  }
  if (!vm) fail(`console needs a VM name\n${USAGE}`);
  const kubeconfig = process.env.KUBECONFIG ?? path.join(defaultDataDir(), 'kubeconfig');
  if (!fs.existsSync(kubeconfig)) fail(`no kubeconfig at ${kubeconfig}: set KUBECONFIG or start the embedded cluster`);
  const { Kube } = require('../controller/runtime/kube') as typeof import('../controller/runtime/kube');
  const { consoleCommand } = require('./console') as typeof import('./console');
  process.exitCode = await consoleCommand(Kube.fromFile(kubeconfig), ns, vm, follow);
}

async function nodeMain(sub: string | undefined, args: string[]): Promise<void> {
  let node: string | undefined;
  let timeoutMs = 600_000;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--timeout') {
      const v = Number(args[++i]);
      if (!Number.isFinite(v) || v <= 0) fail('--timeout needs a positive number of seconds');
      timeoutMs = v * 1000;
    } else if (a.startsWith('-')) fail(`unknown flag ${JSON.stringify(a)}\n${USAGE}`);
    else if (!node) node = a;
    else fail(`unexpected argument ${JSON.stringify(a)}`);
  }
  if (!sub || !['drain', 'cordon', 'uncordon'].includes(sub)) fail(`node needs drain, cordon or uncordon\n${USAGE}`);
  if (!node) fail(`node ${sub} needs a node name\n${USAGE}`);
  const kubeconfig = process.env.KUBECONFIG ?? path.join(defaultDataDir(), 'kubeconfig');
  if (!fs.existsSync(kubeconfig)) fail(`no kubeconfig at ${kubeconfig}: set KUBECONFIG or start the embedded cluster`);
  const { Kube } = require('../controller/runtime/kube') as typeof import('../controller/runtime/kube');
  const { drainNode, cordon } = require('../controller/drain') as typeof import('../controller/drain');
  const kube = Kube.fromFile(kubeconfig);
  try {
    if (sub === 'drain') {
      const res = await drainNode(kube, node!, { timeoutMs, out: (l) => console.log(l) });
      process.exitCode = res.ok ? 0 : 1;
    } else {
      await cordon(kube, node!, sub === 'cordon');
      console.log(`node/${node} ${sub}ed`);
    }
  } catch (e) {
    process.stderr.write(`kubevm node ${sub}: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}

async function backupMain(cmd: 'backup' | 'backups' | 'restore', args: string[]): Promise<void> {
  const { parseBackupArgs, runBackupCli, UsageError } = require('./backup') as typeof import('./backup');
  let parsed: ReturnType<typeof parseBackupArgs>;
  try {
    parsed = parseBackupArgs(cmd, args);
  } catch (e) {
    if (e instanceof UsageError) fail(e.message);
    throw e;
  }
  const kubeconfig = process.env.KUBECONFIG ?? path.join(defaultDataDir(), 'kubeconfig');
  if (!fs.existsSync(kubeconfig)) fail(`no kubeconfig at ${kubeconfig}: set KUBECONFIG or start the embedded cluster`);
  const { Kube } = require('../controller/runtime/kube') as typeof import('../controller/runtime/kube');
  try {
    process.exitCode = await runBackupCli(Kube.fromFile(kubeconfig), parsed, { out: (l) => console.log(l), err: (l) => process.stderr.write(`kubevm ${cmd}: ${l}\n`) });
  } catch (e) {
    process.stderr.write(`kubevm ${cmd}: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}

async function engineMain(op: 'up' | 'preview' | 'refresh' | 'destroy', args: string[]): Promise<void> {
  // Loaded only when needed; require (not import()) so tsx resolves the TypeScript source.
  const { engineCommand, UsageError } = require('../engine/cli') as typeof import('../engine/cli');
  const embedded = path.join(defaultDataDir(), 'kubeconfig');
  const kubeconfig = !process.env.KUBECONFIG && fs.existsSync(embedded) ? embedded : undefined;
  try {
    process.exitCode = await engineCommand(op, args, { defaultKubeconfig: kubeconfig });
  } catch (e) {
    if (e instanceof UsageError) fail(`${e.message}\n${USAGE}`);
    process.stderr.write(`kubevm ${op}: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === 'cluster') {
    const f = parseFlags(rest);
    if (sub === 'up') return up(f);
    if (sub === 'status') return status(f);
    if (sub === 'down') return down(f);
  }
  if (cmd === 'up' || cmd === 'preview' || cmd === 'refresh' || cmd === 'destroy') return engineMain(cmd, [sub, ...rest].filter((x) => x !== undefined));
  if (cmd === 'node') return nodeMain(sub, rest);
  if (cmd === 'backup' || cmd === 'backups' || cmd === 'restore') return backupMain(cmd, [sub, ...rest].filter((x) => x !== undefined));
  if (cmd === 'console') return consoleMain([sub, ...rest].filter((x) => x !== undefined));
  if (cmd === '-h' || cmd === '--help' || cmd === 'help') {
    console.log(USAGE);
    return;
  }
  fail(`unknown command ${JSON.stringify(argv.join(' '))}\n${USAGE}`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => fail((e as Error).stack ?? String(e)));
}
