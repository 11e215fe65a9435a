import { startRuntime, type Runtime, type RuntimeOptions } from '../../cluster/runtime';
import type { TestCluster } from './cluster';

/**
 * The VM runtime (controller + node agents) on the sim backend for a test cluster:
 * fast simulated delays and roomy nodes, so tests place VMs freely. Options override.
 */
export function startSimRuntime(c: TestCluster, o: Partial<RuntimeOptions> = {}): Promise<Runtime> {
  return startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 1,
    backend: 'sim',
    nodeCapacity: { cpu: 32, memoryBytes: 32 * 1024 ** 3 },
    ...o,
    sim: { ...o.sim, delays: { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0, ...o.sim?.delays } },
  });
}
