import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Kube } from '../controller/runtime/kube';
import { Controller } from '../controller/controller';
import { Agent } from '../controller/agent/agent';
import { LinuxBridges } from '../controller/agent/bridges';
import { createBackend, SimWorld, type SimBackendOptions } from '../controller/hal';
import { allCrds } from '../controller/api/crds';
import { STORAGE_DOMAIN_LABEL } from '../controller/controller/migration';

/**
 * The VM runtime inside the embedded cluster: installs the kubevm.dev CRDs,
 * then runs the controller and N node agents in this process, each agent with
 * its own HAL backend instance and node directory. They talk to the API server
 * over HTTPS like they would in a real cluster.
 */
export interface RuntimeOptions {
  kubeconfigPath: string;
  dataDir: string;
  nodes: number;
  backend: 'qemu' | 'sim';
  /** Directories ContainerPath shares, kernels and image imports may come from. */
  allowedRoots?: string[];
  sim?: SimBackendOptions;
  /** What each node reports as allocatable (default: this machine's cores and memory). */
  nodeCapacity?: { cpu: number; memoryBytes: number };
  /**
   * qemu backend: a named network namespace (`ip netns add NAME`, made by the
   * caller) for every node's VMs and bridges: QEMU runs there and the agents
   * create the bridges of `type: bridge` Networks there, not in this process's
   * namespace (tests; a node that keeps VM networks off its host stack).
   */
  netns?: string;
  /** One simulated "host" per node name; reuse to restart agents and adopt. */
  simWorlds?: Map<string, SimWorld>;
  log?: (line: string) => void;
}

export interface Runtime {
  kube: Kube;
  controller: Controller;
  agents: Agent[];
  /** Stops the agent of one node (its VMs keep running) and starts a fresh one: an agent restart. */
  restartAgent(nodeName: string): Promise<Agent>;
  /** Stops the controller and agents; VMs keep running (adoptable) unless stopVms. */
  stop(opts?: { stopVms?: boolean }): Promise<void>;
}

export async function installCrds(kube: Kube, timeoutMs = 10_000): Promise<void> {
  for (const crd of allCrds()) {
    const path = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`;
    const current = await kube.request('GET', path).catch(() => undefined);
    if (!current) await kube.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd);
    else if (!isDeepStrictEqual(current.spec.versions.map((v: any) => v.schema), crd.spec.versions.map((v: any) => v.schema)))
      await kube.request('PUT', path, { ...crd, metadata: { ...crd.metadata, resourceVersion: current.metadata.resourceVersion } });
  }
  const deadline = Date.now() + timeoutMs;
  for (const crd of allCrds()) {
    for (;;) {
      const got = await kube.request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`);
      if ((got.status?.conditions ?? []).some((c: any) => c.type === 'Established' && c.status === 'True')) break;
      if (Date.now() > deadline) throw new Error(`CRD ${crd.metadata.name} not Established after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export async function startRuntime(opts: RuntimeOptions): Promise<Runtime> {
  const kube = Kube.fromFile(opts.kubeconfigPath);
  await installCrds(kube);
  const log = opts.log ?? (() => {});
  const controller = new Controller(kube, { log });
  await controller.start();
  const worlds = opts.simWorlds ?? new Map<string, SimWorld>();
  const allowedRoots = opts.allowedRoots ?? [path.join(opts.dataDir, 'shared')];
  for (const r of allowedRoots) fs.mkdirSync(r, { recursive: true });
  let bridges: LinuxBridges | undefined;
  // A fresh network namespace has its loopback down; migration streams between the nodes' QEMUs use it.
  if (opts.backend === 'qemu' && opts.netns) execFileSync('ip', ['-n', opts.netns, 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
  const storageDomain = `embedded-${createHash('sha256').update(path.resolve(opts.dataDir)).digest('hex').slice(0, 10)}`;
  const makeAgent = (i: number): Agent => {
    const nodeName = `node-${i}`;
    const nodeDir = path.join(opts.dataDir, 'nodes', nodeName);
    fs.mkdirSync(nodeDir, { recursive: true });
    let backend;
    if (opts.backend === 'sim') {
      if (!worlds.has(nodeName)) worlds.set(nodeName, new SimWorld());
      backend = createBackend('sim', { ...(opts.sim ?? {}), world: worlds.get(nodeName), allowedRoots });
    } else {
      // passt drops to `nobody` and must reach its socket under the run root: every directory
      // above it needs o+x (search, not read). The data directory's secrets stay 0600.
      for (let d = nodeDir; d.startsWith(opts.dataDir) && d !== path.dirname(d); d = path.dirname(d)) {
        const mode = fs.statSync(d).mode & 0o777;
        if (!(mode & 0o001)) fs.chmodSync(d, mode | 0o001);
        if (d === opts.dataDir) break;
      }
      backend = createBackend('qemu', { runRoot: path.join(nodeDir, 'run'), allowedRoots, ...(opts.netns ? { netns: opts.netns } : {}) });
      // Bridges only where the backend can attach taps to them (root + iproute2), in the backend's namespace.
      // One manager for all nodes: they share this host's (or the netns's) bridges.
      if (backend.capabilities().includes('network-bridge')) bridges ??= new LinuxBridges({ netns: backend.netns, ip: backend.host.ip });
    }
    return new Agent(kube, {
      nodeName,
      backend,
      volumeDir: path.join(nodeDir, 'volumes'),
      allowedRoots,
      bridges,
      cpu: opts.nodeCapacity?.cpu,
      memoryBytes: opts.nodeCapacity?.memoryBytes,
      // All nodes of the embedded cluster see the same files: live migration needs no disk copy between them.
      labels: { [STORAGE_DOMAIN_LABEL]: storageDomain },
      log: (l) => log(`[${nodeName}] ${l}`),
    });
  };
  const agents: Agent[] = [];
  for (let i = 0; i < opts.nodes; i++) {
    const a = makeAgent(i);
    await a.start();
    agents.push(a);
  }
  return {
    kube,
    controller,
    agents,
    async restartAgent(nodeName: string) {
      const i = agents.findIndex((a) => a.nodeName === nodeName);
      if (i < 0) throw new Error(`no agent for ${nodeName}`);
      await agents[i].stop();
      const next = makeAgent(i);
      await next.start();
      agents[i] = next;
      return next;
    },
    async stop(stopOpts = {}) {
      for (const a of agents) await a.stop(stopOpts);
      await controller.stop();
    },
  };
}
