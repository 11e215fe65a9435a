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

export function pickNode(vm: any, nodes: any[], vmis: any[], requiredNodes: Set<string>): { node: string } | { error: string } {
  const backend = vm.spec.backend ?? 'qemu';
  const reasons: string[] = [];
  let best: { node: string; freeMem: number } | undefined;
  for (const n of nodes) {
    const name = n.metadata.name;
    const ready = (n.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True');
    if (!ready || n.spec?.unschedulable) {
      reasons.push(`${name}: not ready`);
      continue;
    }
    const backends = String(n.metadata.annotations?.['kubevm.dev/backends'] ?? '').split(',');
    if (!backends.includes(backend)) {
      reasons.push(`${name}: no ${backend} backend`);
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
    let usedCpu = 0;
    let usedMem = 0;
    for (const i of vmis) {
      if (i.spec?.nodeName !== name || ['Succeeded', 'Failed'].includes(i.status?.phase)) continue;
      usedCpu += vcpus(i.spec);
      usedMem += memoryBytes(i.spec);
    }
    const cpu = parseQuantity(n.status?.allocatable?.cpu) - usedCpu;
    const mem = parseQuantity(n.status?.allocatable?.memory) - usedMem;
    if (cpu < vcpus(vm.spec) || mem < memoryBytes(vm.spec)) {
      reasons.push(`${name}: insufficient ${cpu < vcpus(vm.spec) ? 'cpu' : 'memory'}`);
      continue;
    }
    if (!best || mem > best.freeMem) best = { node: name, freeMem: mem };
  }
  if (best) return { node: best.node };
  return { error: nodes.length ? `0/${nodes.length} nodes are available: ${reasons.join('; ')}` : 'no nodes have registered' };
}
