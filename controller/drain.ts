import { GVR, Kube } from './runtime/kube';

/**
 * `kubevm node drain NODE`: cordons the node (spec.unschedulable), then moves
 * its running VMs away: a VM with evictionStrategy LiveMigrate gets a Migration;
 * one with None is stopped (its instance is deleted; its run strategy starts it
 * again on another node). Waits until the node runs no instance any more, or a
 * migration fails (a VM that cannot migrate blocks the drain with the reason),
 * or the timeout passes. Never deletes an instance whose migration failed.
 */
export interface DrainResult {
  ok: boolean;
  migrated: string[];
  stopped: string[];
  /** `namespace/vm: reason` of VMs still on the node. */
  blocked: string[];
}

export async function cordon(kube: Kube, node: string, unschedulable: boolean): Promise<void> {
  const n = await kube.tryGet(GVR.node, undefined, node);
  if (!n) throw new Error(`node ${node} not found`);
  await kube.mergePatch(GVR.node, undefined, node, { spec: { unschedulable: unschedulable || null } });
}

export async function drainNode(kube: Kube, node: string, opts: { timeoutMs?: number; out?: (line: string) => void; pollMs?: number } = {}): Promise<DrainResult> {
  const out = opts.out ?? (() => undefined);
  const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
  await cordon(kube, node, true);
  out(`node/${node} cordoned`);
  const onNode = async () => (await kube.list(GVR.vmi)).filter((v) => v.spec?.nodeName === node && !['Succeeded', 'Failed'].includes(v.status?.phase));
  const started = new Map<string, string>(); // vm key → migration name
  const migrated: string[] = [];
  const stopped: string[] = [];
  const blocked = new Map<string, string>();
  for (const vmi of await onNode()) {
    const k = `${vmi.metadata.namespace}/${vmi.metadata.name}`;
    const vm = await kube.tryGet(GVR.vm, vmi.metadata.namespace, vmi.metadata.name);
    const strategy = vm?.spec?.evictionStrategy ?? 'LiveMigrate';
    if (strategy === 'None') {
      await kube.delete(GVR.vmi, vmi.metadata.namespace, vmi.metadata.name);
      stopped.push(k);
      out(`virtualmachine/${vmi.metadata.name} -n ${vmi.metadata.namespace}: stopped (evictionStrategy None)`);
      continue;
    }
    const m = await kube.create(GVR.migration, vmi.metadata.namespace, {
      apiVersion: 'kubevm.dev/v1alpha1',
      kind: 'Migration',
      metadata: { generateName: `drain-${vmi.metadata.name}-`.slice(0, 58), namespace: vmi.metadata.namespace, labels: { 'kubevm.dev/drain': node } },
      spec: { vm: vmi.metadata.name },
    });
    started.set(k, m.metadata.name);
    out(`virtualmachine/${vmi.metadata.name} -n ${vmi.metadata.namespace}: migrating (Migration ${m.metadata.name})`);
  }
  for (;;) {
    for (const [k, name] of started) {
      if (migrated.includes(k) || blocked.has(k)) continue;
      const [ns] = k.split('/');
      const m = await kube.tryGet(GVR.migration, ns, name);
      if (m?.status?.phase === 'Succeeded') {
        migrated.push(k);
        out(`virtualmachine/${k.split('/')[1]} -n ${ns}: migrated to ${m.status.targetNode} (downtime ${m.status.downtimeMs ?? '?'} ms)`);
      } else if (!m || m.status?.phase === 'Failed') {
        const reason = m ? `${m.status.reason}: ${m.status.message}` : 'the Migration was deleted';
        blocked.set(k, reason);
        out(`virtualmachine/${k.split('/')[1]} -n ${ns}: blocks the drain: ${reason}`);
      }
    }
    const left = (await onNode()).map((v) => `${v.metadata.namespace}/${v.metadata.name}`);
    const waiting = left.filter((k) => !blocked.has(k));
    const unresolved = [...started.keys()].filter((k) => !migrated.includes(k) && !blocked.has(k));
    if (!waiting.length && !unresolved.length) {
      const res = { ok: left.length === 0, migrated, stopped, blocked: left.map((k) => `${k}: ${blocked.get(k) ?? 'still running'}`) };
      out(res.ok ? `node/${node} drained` : `node/${node} not drained: ${res.blocked.length} VM(s) cannot leave`);
      return res;
    }
    if (Date.now() > deadline) {
      const res = { ok: false, migrated, stopped, blocked: left.map((k) => `${k}: ${blocked.get(k) ?? 'timed out waiting'}`) };
      out(`node/${node} not drained: timed out with ${left.length} VM(s) left`);
      return res;
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 500));
  }
}
