/**
 * Picks a Node for a new instance: Ready, matching the VM's nodeSelector,
 * offering the VM's backend, holding its Volumes (node-local storage), and
 * with enough free CPU and memory after the instances already placed there.
 * Among those, the one with the most free memory wins.
 */
export function parseQuantity(q: string | number | undefined): number {
  if (q === undefined) return 0;
  if (typeof q === 'number') return q;
  const m = /^([0-9.]+)(m|Ki|Mi|Gi|Ti|K|M|G|T)?$/.exec(q);
  if (!m) return NaN;
  const mult: Record<string, number> = { m: 1e-3, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, K: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}

export function vcpus(spec: any): number {
  const c = spec.cpu ?? {};
  return (c.sockets ?? 1) * (c.cores ?? 1) * (c.threads ?? 1);
}

export function memoryBytes(spec: any): number {
  return parseQuantity(spec.memory ?? '128Mi');
}

/**
 * What the VM needs of a backend, with the VM field that needs it (mirrors the
 * HAL's requiredCapabilities, on the VM spec and its resolved networks).
 */
export function neededCapabilities(vm: any, networks: any[]): { capability: string; field: string }[] {
  const s = vm.spec;
  const needs = [{ capability: 'lifecycle', field: 'spec' }];
  if (s.firmware?.kernel) needs.push({ capability: 'direct-kernel-boot', field: 'spec.firmware.kernel' });
  if (s.cloudInit) needs.push({ capability: 'cloud-init-nocloud', field: 'spec.cloudInit' });
  (s.disks ?? []).forEach((_d: any, i: number) => needs.push({ capability: 'disk-qcow2', field: `spec.disks[${i}]` }));
  (s.interfaces ?? []).forEach((nic: any, i: number) => {
    const type = networks.find((n) => n.name === nic.network)?.type ?? 'pod';
    needs.push({ capability: `network-${type}`, field: `spec.interfaces[${i}].network` });
    if (nic.ports?.length) needs.push({ capability: 'port-forward', field: `spec.interfaces[${i}].ports` });
  });
  (s.filesystems ?? []).forEach((_f: any, i: number) => needs.push({ capability: 'filesystem', field: `spec.filesystems[${i}]` }));
  return needs;
}

export function pickNode(
  vm: any,
  nodes: any[],
  usedOn: (node: string) => { cpu: number; mem: number },
  requiredNodes: Set<string>,
  networks: any[] = [],
): { node: string } | { error: string } {
  const backend = vm.spec.backend ?? 'qemu';
  const needs = neededCapabilities(vm, networks);
  const reasons: string[] = [];
  let best: { node: string; freeMem: number } | undefined;
  for (const n of nodes) {
    const name = n.metadata.name;
    const ready = (n.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True');
    if (!ready || n.spec?.unschedulable) {
      reasons.push(`${name}: ${!ready ? 'not ready' : 'cordoned (unschedulable)'}`);
      continue;
    }
    const backends = String(n.metadata.annotations?.['kubevm.dev/backends'] ?? '').split(',');
    if (!backends.includes(backend)) {
      reasons.push(`${name}: no ${backend} backend`);
      continue;
    }
    const have = new Set(String(n.metadata.annotations?.['kubevm.dev/capabilities'] ?? '').split(','));
    const lacking = needs.filter((x) => !have.has(x.capability));
    if (lacking.length) {
      reasons.push(`${name}: backend "${backend}" lacks ${lacking.map((x) => `capability "${x.capability}" needed by ${x.field}`).join(', ')}`);
      continue;
    }
    const sel = vm.spec.nodeSelector ?? {};
    if (!Object.entries(sel).every(([k, v]) => n.metadata.labels?.[k] === v)) {
      reasons.push(`${name}: nodeSelector does not match`);
      continue;
    }
    if (requiredNodes.size && !requiredNodes.has(name)) {
      reasons.push(`${name}: the VM's volumes are on ${[...requiredNodes].join(', ')}`);
      continue;
    }
    const used = usedOn(name);
    const cpu = parseQuantity(n.status?.allocatable?.cpu) - used.cpu;
    const mem = parseQuantity(n.status?.allocatable?.memory) - used.mem;
    if (cpu < vcpus(vm.spec) || mem < memoryBytes(vm.spec)) {
      reasons.push(`${name}: insufficient ${cpu < vcpus(vm.spec) ? 'cpu' : 'memory'}`);
      continue;
    }
    if (!best || mem > best.freeMem) best = { node: name, freeMem: mem };
  }
  if (best) return { node: best.node };
  return { error: nodes.length ? `0/${nodes.length} nodes are available: ${reasons.join('; ')}` : 'no nodes have registered' };
}
