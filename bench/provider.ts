import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster } from '../cluster/embedded';
import { startRuntime } from '../cluster/runtime';
import { runEngine, type EngineOptions, type EngineResult, type Operation } from '../engine/engine';
import { StateStore } from '../engine/state';
import { emptyPb, fromStruct, grpc, providerPb, providerRpc, toStruct } from '../provider/proto';
import { resourceFor } from '../provider/resources';
import { startServer } from '../provider/server';
import { secret, type Json } from '../provider/values';

/**
 * The provider and the local engine at fleet scale.
 *
 * 1. Check+Diff per resource kind over the real gRPC wire (provider/server.ts
 *    startServer, a grpc-js client in the same process), one pair at a time, as
 *    the engine sends them for an unchanged resource: Check(olds = last inputs)
 *    then Diff(olds = recorded outputs). Baselines in the same process: a bare
 *    gRPC round trip (GetPluginInfo, an empty request the provider answers with a
 *    constant), and the same check+diff called in-process without the wire.
 * 2. A program of N VMs (bench/programs/fleet1000: one pod Network, N sim VMs)
 *    through the local engine (engine/engine.ts runEngine) on the embedded cluster
 *    with the sim backend: the first `up` (create N VMs, each acknowledged when
 *    ready), a no-change `preview`, a `refresh`, and a no-change `up` (which saves
 *    the state after every step). Baseline: the same program with count=0 (the
 *    fixed cost of starting the engine, the provider and the program).
 *    WAVE bounds the creates in flight (each VM depends on the VM WAVE places
 *    earlier): with all 1,000 at once the provider opens a TLS connection per
 *    concurrent request and on two cores the handshakes outlast undici's 10 s
 *    connect timeout ("fetch failed"); see docs/benchmarks.md.
 *
 * Usage: npm run bench -- provider [N] [NODES] [WAVE]   (defaults 1000, 4, 100; WAVE 0 = all VMs at once)
 */
const N = Number(process.argv[2] ?? 1000);
const NODES = Number(process.argv[3] ?? 4);
/** 0: all VMs registered at once; W: at most W creates in flight (each VM depends on the one W places earlier). */
const WAVE = Number(process.argv[4] ?? 100);
const PAIRS = Number(process.env.BENCH_PAIRS ?? 3000);
const PROGRAM = path.join(__dirname, 'programs', 'fleet1000');
const PB = providerPb as any;
const DIFF_NONE = PB.DiffResponse.DiffChanges.DIFF_NONE;

const gc = () => ((global as any).gc?.(), (global as any).gc?.());
const sec = (ms: number) => (ms / 1000).toFixed(2);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

// ---- 1. check + diff over the wire ------------------------------------------------

interface Sample {
  kind: string;
  urn: string;
  id: string;
  /** Inputs as the SDK sends them (wire values: secrets wrapped). */
  news: Record<string, Json>;
  /** A status the controller would have written, for the recorded outputs. */
  status: Record<string, Json>;
}

const urn = (type: string, name: string) => `urn:pulumi:dev::bench::kubevm:index:${type}::${name}`;
const SAMPLES: Sample[] = [
  {
    kind: 'VirtualMachine',
    urn: urn('VirtualMachine', 'web-1'),
    id: 'default/web-1',
    // The quick start's VM: most of the fields a fleet program sets.
    news: {
      name: 'web-1',
      backend: 'sim',
      runStrategy: 'Always',
      terminationGracePeriodSeconds: 10,
      memory: '128Mi',
      cpu: { cores: 1 },
      labels: { app: 'fleet', role: 'web' },
      firmware: { kernel: { kernelPath: '/srv/guest/vmlinuz', initrdPath: '/srv/guest/initrd', cmdline: 'console=ttyS0' } },
      disks: [{ name: 'data', volume: 'web-1-data' }],
      interfaces: [{ name: 'eth0', network: 'fleet-net' }],
      filesystems: [{ name: 'share', containerPath: { path: '/srv/share', readOnly: true } }],
      cloudInit: secret({ userData: '#!/bin/sh\necho hello\n' }),
    },
    status: {
      printableStatus: 'Running',
      ready: true,
      node: 'node-0',
      observedGeneration: 1,
      interfaces: [{ name: 'eth0', ipAddress: '10.0.2.15' }],
    },
  },
  {
    kind: 'Network',
    urn: urn('Network', 'fleet-net'),
    id: 'default/fleet-net',
    news: { name: 'fleet-net', type: 'pod', labels: { app: 'fleet' } },
    status: { phase: 'Ready' },
  },
  {
    kind: 'Volume',
    urn: urn('Volume', 'web-1-data'),
    id: 'default/web-1-data',
    news: { name: 'web-1-data', size: '16Mi', source: { blank: {} }, labels: { app: 'fleet' } },
    status: {
      phase: 'Ready',
      nodeName: 'node-0',
      path: '/var/lib/kubevm/volumes/web-1-data.qcow2',
      actualSize: 200704,
      virtualSize: 16777216,
    },
  },
];

interface CheckDiffFigures {
  kind: string;
  wireUs: number;
  wireP99Us: number;
  inProcessUs: number;
  concurrentUs: number;
}

async function checkDiffBench(): Promise<{ rows: CheckDiffFigures[]; emptyUs: number; emptyP99Us: number }> {
  const { port, server, provider } = await startServer();
  const client = new (providerRpc as any).ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const rpc = (method: string, req: any): Promise<any> =>
    new Promise((resolve, reject) => client[method](req, (err: any, res: any) => (err ? reject(err) : resolve(res))));
  // Check and Diff need no cluster, but configure as the engine does (the namespace comes from it).
  await rpc(
    'configure',
    new PB.ConfigureRequest()
      .setArgs(toStruct({ namespace: 'default' }))
      .setAcceptsecrets(true)
      .setAcceptresources(true),
  );

  const timeLoop = async (count: number, fn: () => Promise<void>): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      await fn();
      out.push((performance.now() - t0) * 1000);
    }
    return out;
  };
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

  // Baseline: an empty request answered with a constant (the provider's GetPluginInfo).
  const empty = () => rpc('getPluginInfo', new emptyPb.Empty()).then(() => undefined);
  await timeLoop(500, empty);
  gc();
  const emptyTimes = await timeLoop(PAIRS, empty);

  const rows: CheckDiffFigures[] = [];
  for (const s of SAMPLES) {
    const r = resourceFor(s.urn);
    // What the engine holds after a create: checked inputs, and the provider's outputs for the object.
    const checked = fromStruct(
      (await rpc('check', new PB.CheckRequest().setUrn(s.urn).setOlds(toStruct({})).setNews(toStruct(s.news)))).getInputs(),
    )!;
    const obj = { ...r.toObject(r.normalise(JSON.parse(JSON.stringify(checked)))), status: s.status };
    obj.metadata.uid = '6f1c2d3e-0000-4000-8000-000000000001';
    const outputs = JSON.parse(JSON.stringify(r.result(checked, obj)));

    // One pair, as engine.ts sends it for an unchanged resource (struct building included).
    const pair = async () => {
      const c = await rpc('check', new PB.CheckRequest().setUrn(s.urn).setOlds(toStruct(checked)).setNews(toStruct(s.news)));
      if (c.getFailuresList().length)
        throw new Error(
          `${s.kind}: check failed: ${c
            .getFailuresList()
            .map((f: any) => f.getReason())
            .join('; ')}`,
        );
      const inputs = fromStruct(c.getInputs()) ?? {};
      const d = await rpc(
        'diff',
        new PB.DiffRequest()
          .setUrn(s.urn)
          .setId(s.id)
          .setOlds(toStruct(outputs))
          .setNews(toStruct(inputs))
          .setOldInputs(toStruct(checked)),
      );
      if (d.getChanges() !== DIFF_NONE)
        throw new Error(`${s.kind}: an unchanged resource diffs: ${d.getDiffsList().join(', ')} (a perpetual diff)`);
    };
    await timeLoop(300, pair);
    gc();
    const wire = await timeLoop(PAIRS, pair);

    // The same two calls without the wire: the provider's own logic.
    const local = () => {
      const c = r.check(s.urn, checked, s.news, 'default');
      const d = r.diff(outputs, c.inputs, []);
      if (d.diffs.length) throw new Error(`${s.kind}: in-process diff not empty`);
    };
    for (let i = 0; i < 300; i++) local();
    const l0 = performance.now();
    for (let i = 0; i < PAIRS; i++) local();
    const inProcessUs = ((performance.now() - l0) * 1000) / PAIRS;

    // 16 pairs in flight (the program runs with --parallel 16): time per pair from throughput.
    let next = 0;
    const c0 = performance.now();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next++ < PAIRS) await pair();
      }),
    );
    const concurrentUs = ((performance.now() - c0) * 1000) / PAIRS;
    rows.push({ kind: s.kind, wireUs: mean(wire), wireP99Us: pct(wire, 99), inProcessUs, concurrentUs });
  }
  client.close();
  provider.log.close();
  server.forceShutdown();
  return { rows, emptyUs: mean(emptyTimes), emptyP99Us: pct(emptyTimes, 99) };
}

// ---- 2. a fleet program through the local engine ------------------------------------

/** Wraps StateStore.save to count the state writes and the time they take (a benchmark probe, not a patch). */
interface SaveFigures {
  saves: number;
  /** Saves that wrote the file (a new file renamed over it changes the inode). */
  writes: number;
  ms: number;
  maxMs: number;
  bytes: number;
}

function probeStateSaves(): { reset(): void; read(): SaveFigures } {
  const orig = StateStore.prototype.save;
  const f: SaveFigures = { saves: 0, writes: 0, ms: 0, maxMs: 0, bytes: 0 };
  const ino = (file: string) => (fs.existsSync(file) ? fs.statSync(file).ino : -1);
  StateStore.prototype.save = function (this: StateStore, state) {
    const before = ino(this.file);
    const t0 = performance.now();
    orig.call(this, state);
    const dt = performance.now() - t0;
    f.saves++;
    f.ms += dt;
    f.maxMs = Math.max(f.maxMs, dt);
    if (ino(this.file) !== before) f.writes++;
    f.bytes = fs.statSync(this.file).size;
  };
  return {
    reset: () => void Object.assign(f, { saves: 0, writes: 0, ms: 0, maxMs: 0 }),
    read: () => ({ ...f }),
  };
}

interface RunFigures {
  op: string;
  ms: number;
  result: EngineResult;
  saves: SaveFigures;
}

/** The embedded cluster's data, the state files: removed at the end, also after a failure. */
let dataDir = '';

async function main(): Promise<void> {
  const mem = os.totalmem() / 2 ** 30;
  const load = () => os.loadavg()[0].toFixed(1);
  console.log(
    `machine: ${os.cpus().length} cores, ${mem.toFixed(0)} GiB, Node ${process.version}, ${os.type()} ${os.release()}, load average ${load()}`,
  );

  // 1.
  const cd = await checkDiffBench();
  console.log(`check+diff over gRPC, one pair at a time (${PAIRS} pairs per kind, unchanged inputs, DIFF_NONE checked):`);
  console.log(
    `  baseline empty gRPC round trip (GetPluginInfo): ${cd.emptyUs.toFixed(0)} µs mean, p99 ${cd.emptyP99Us.toFixed(0)} µs`,
  );
  for (const r of cd.rows) {
    console.log(
      `  ${r.kind.padEnd(15)} ${r.wireUs.toFixed(0).padStart(5)} µs per Check+Diff pair (p99 ${r.wireP99Us.toFixed(0)} µs; ${(r.wireUs / (2 * cd.emptyUs)).toFixed(1)}× two empty round trips); ` +
        `in-process check+diff ${r.inProcessUs.toFixed(0)} µs; 16 in flight ${r.concurrentUs.toFixed(0)} µs per pair`,
    );
  }
  const vmRow = cd.rows.find((r) => r.kind === 'VirtualMachine')!;

  // 2.
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubevm-bench-provider-'));
  const c = await startCluster({ dataDir, port: 0, historySize: 10_000, compactIntervalMs: 60_000 });
  const rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir,
    nodes: NODES,
    backend: 'sim',
    sim: { delays: { startMs: 150, guestReadyMs: 2000, stopMs: 100, jitter: 0.2 } },
    // Simulated nodes big enough for the fleet (32Mi for every third VM): scheduling still accounts every VM.
    nodeCapacity: { cpu: Math.ceil(N / NODES) + 1, memoryBytes: (Math.ceil(N / NODES) + 1) * 32 * 1024 * 1024 },
  });
  const probe = probeStateSaves();
  const statePath = path.join(dataDir, 'fleet-state.json');
  const errors: string[] = [];
  let progress = 0;
  const base: EngineOptions = {
    programDir: PROGRAM,
    statePath,
    kubeconfig: c.kubeconfigPath,
    timeoutMs: 30 * 60_000,
    out: (l) => {
      if (/^[+~-]/.test(l)) progress++;
      if (l.startsWith('error') || (l.includes('program: ') && /error/i.test(l))) errors.push(l);
    },
  };
  const run = async (op: Operation, count: number, state = statePath, prefix = 'f'): Promise<RunFigures> => {
    probe.reset();
    progress = 0;
    gc();
    const t0 = performance.now();
    let last = t0;
    const ticker = setInterval(() => {
      if (performance.now() - last >= 10_000) {
        last = performance.now();
        console.log(`  … ${op}: ${((last - t0) / 1000).toFixed(0)} s${progress ? `, ${progress} created` : ''}`);
      }
    }, 1000);
    const result = await runEngine(op, {
      ...base,
      statePath: state,
      config: { count: String(count), prefix, wave: String(WAVE) },
    }).finally(() => clearInterval(ticker));
    const ms = performance.now() - t0;
    if (!result.ok) throw new Error(`${op} failed: ${[...result.errors, ...errors].slice(0, 5).join('\n')}`);
    return { op, ms, result, saves: probe.read() };
  };

  // Baseline: the same program with no VMs (engine, provider, SDK shim and program start-up; the Network only).
  const emptyState = path.join(dataDir, 'empty-state.json');
  await run('up', 0, emptyState, 'base');
  const preview0 = await run('preview', 0, emptyState, 'base');

  console.log(
    `${N} VMs (+1 Network) through the local engine, ${WAVE ? `at most ${WAVE} creates in flight` : 'all registered at once'}, embedded cluster with ${NODES} sim nodes ` +
      `(start 150 ms, guest ready 2 s simulated); engine, provider, API server, controller and agents in this process, the program in a child:`,
  );
  const up = await run('up', N);
  const ready = (await rt.kube.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines')).items.filter(
    (v: any) => v.status?.ready === true,
  ).length;
  if (ready !== N) throw new Error(`after up: ${ready}/${N} VMs ready`);
  if (up.result.steps.filter((s) => s.op === 'create').length !== N + 1)
    throw new Error(`up: expected ${N + 1} creates, got ${up.result.summary}`);
  gc();
  const heapAfterUp = process.memoryUsage().heapUsed;

  const preview = await run('preview', N);
  if (preview.result.changes !== 0) throw new Error(`no-change preview found changes: ${preview.result.summary}`);
  const refresh = await run('refresh', N);
  if (refresh.result.changes !== 0) throw new Error(`refresh of untouched VMs found drift: ${refresh.result.summary}`);
  const up2 = await run('up', N);
  if (up2.result.changes !== 0) throw new Error(`no-change up found changes: ${up2.result.summary}`);

  const line = (f: RunFigures, what: string) => {
    const s = f.saves.saves
      ? `; ${f.saves.saves} saves, ${f.saves.writes} written, ${sec(f.saves.ms)} s in saves (file ${(f.saves.bytes / 1024).toFixed(0)} KiB, slowest save ${f.saves.maxMs.toFixed(1)} ms)`
      : '';
    console.log(`  ${what.padEnd(22)} ${sec(f.ms).padStart(7)} s  (${f.result.summary}${s})`);
  };
  line(preview0, 'preview, count=0');
  line(up, `up (create ${N})`);
  line(preview, 'preview, no change');
  line(refresh, 'refresh');
  line(up2, 'up, no change');
  // refresh runs no program: its whole time is per-resource Reads.
  const perVm = (f: RunFigures) => (f.ms - (f === refresh ? 0 : preview0.ms)) / N;
  console.log(
    `  per VM (beyond the count=0 program run): up ${perVm(up).toFixed(1)} ms, preview ${perVm(preview).toFixed(1)} ms, refresh ${perVm(refresh).toFixed(1)} ms, no-change up ${perVm(up2).toFixed(1)} ms` +
      ` (one Check+Diff pair over gRPC: ${(vmRow.wireUs / 1000).toFixed(1)} ms)`,
  );
  console.log(
    `  heap after up: ${(heapAfterUp / 2 ** 20).toFixed(0)} MiB (API server, controller, agents, engine state, in one process); load average now ${load()}`,
  );

  console.log(
    `provider: checkdiff_us=${vmRow.wireUs.toFixed(0)} preview${N}_s=${sec(preview.ms)} refresh${N}_s=${sec(refresh.ms)} up${N}_s=${sec(up.ms)}`,
  );
  await rt.stop({ stopVms: false });
  await c.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  process.exit(1);
});
