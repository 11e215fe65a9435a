import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster } from '../cluster/embedded';
import { startRuntime } from '../cluster/runtime';

/**
 * Many VMs on the sim backend (no processes): the API server, the controller
 * and the node agents in one process, as in the embedded cluster. Measures
 * the create rate, create → Running and create → Ready latency, and heap per
 * VM (everything: stored VM and VMI objects, events, watch window, informer
 * caches of controller and agents). Usage: npm run bench -- vm-scale [N] [NODES]
 */
const N = Number(process.argv[2] ?? 2000);
const NODES = Number(process.argv[3] ?? 4);
const CONCURRENCY = 32;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}
const gc = () => ((global as any).gc?.(), (global as any).gc?.());

async function main(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubevm-scale-'));
  const c = await startCluster({ dataDir, port: 0, historySize: 10_000, compactIntervalMs: 60_000 });
  const rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir,
    nodes: NODES,
    backend: 'sim',
    sim: { delays: { startMs: 150, guestReadyMs: 2000, stopMs: 100, jitter: 0.2 } },
    // Simulated nodes big enough for the fleet: scheduling still accounts every VM.
    nodeCapacity: { cpu: Math.ceil(N / NODES) + 1, memoryBytes: (Math.ceil(N / NODES) + 1) * 16 * 1024 * 1024 },
  });
  gc();
  const heapBase = process.memoryUsage().heapUsed;
  const rssBase = process.memoryUsage().rss;

  const created = new Map<string, number>();
  const running = new Map<string, number>();
  const ready = new Map<string, number>();
  rt.controller.caches.vms.inf.on('update', (vm: any) => {
    const n = vm.metadata.name;
    if (vm.status?.printableStatus === 'Running' && !running.has(n)) running.set(n, performance.now());
    if (vm.status?.ready && !ready.has(n)) ready.set(n, performance.now());
  });
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < N) {
        const i = next++;
        const name = `vm-${i}`;
        created.set(name, performance.now());
        await rt.kube.create({ group: 'kubevm.dev', version: 'v1alpha1', plural: 'virtualmachines', namespaced: true }, 'default', {
          apiVersion: 'kubevm.dev/v1alpha1',
          kind: 'VirtualMachine',
          metadata: { name, labels: { fleet: 'scale' } },
          spec: { backend: 'sim', runStrategy: 'Always', memory: '16Mi', cpu: { cores: 1 } },
        });
      }
    }),
  );
  const createdAt = performance.now();
  const deadline = Date.now() + 30 * 60_000;
  let last = 0;
  while (ready.size < N && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    if (performance.now() - last > 10_000) {
      last = performance.now();
      console.log(`  ${((performance.now() - t0) / 1000).toFixed(0)} s: running ${running.size}/${N}, ready ${ready.size}/${N}`);
    }
  }
  const allReady = performance.now();
  gc();
  const heapPerVm = Math.round((process.memoryUsage().heapUsed - heapBase) / N);
  const rssPerVm = Math.round((process.memoryUsage().rss - rssBase) / N);
  const toRunning = [...running.entries()].map(([n, t]) => t - created.get(n)!);
  const toReady = [...ready.entries()].map(([n, t]) => t - created.get(n)!);
  const objects = c.backend.list('/').length;

  console.log(`${N} VMs on ${NODES} sim nodes (start 150 ms, guest ready 2 s simulated), API server + controller + agents in one process`);
  console.log(`create rate:          ${(N / ((createdAt - t0) / 1000)).toFixed(0)} VMs/s (${CONCURRENCY} concurrent clients)`);
  console.log(`all ready after:      ${((allReady - t0) / 1000).toFixed(1)} s (${ready.size}/${N} ready)`);
  console.log(`create → Running:     p50 ${(pct(toRunning, 50) / 1000).toFixed(2)} s, p95 ${(pct(toRunning, 95) / 1000).toFixed(2)} s`);
  console.log(`create → Ready:       p50 ${(pct(toReady, 50) / 1000).toFixed(2)} s, p95 ${(pct(toReady, 95) / 1000).toFixed(2)} s (2 s of it is the simulated boot)`);
  console.log(`heap per VM:          ${heapPerVm} bytes (${(heapPerVm / 1024).toFixed(1)} KiB; KubeVirt publishes ~173 KB per VMI); RSS per VM ${rssPerVm} bytes`);
  console.log(`stored objects:       ${objects}`);
  console.log(
    `vm-scale: vms=${N} create_per_s=${(N / ((createdAt - t0) / 1000)).toFixed(0)} all_ready_s=${((allReady - t0) / 1000).toFixed(1)} ready_p50_s=${(pct(toReady, 50) / 1000).toFixed(2)} ready_p95_s=${(pct(toReady, 95) / 1000).toFixed(2)} heap_per_vm_bytes=${heapPerVm}`,
  );
  await rt.stop({ stopVms: false });
  await c.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
