import { GVR } from '../../controller/runtime/kube';
import type { UpdateClass } from '../diff';
import { specSchema, type Failure } from '../spec-schema';
import type { Verdict } from '../wait';
import { waitFor } from '../wait';
import { plain, UNKNOWN } from '../values';
import { CrdResource, type DiffOutcome, type OpContext, type Props } from './common';

/**
 * kubevm:index:VirtualMachine. Each spec field's `x-kubevm-update` marker in
 * controller/api/schema.ts says how a change is applied: live (UPDATE), restart
 * (UPDATE; the VM restarts only when spec.updatePolicy is Restart, otherwise it
 * keeps running and the output `restartRequired` turns true) or replace.
 * Readiness depends on the run strategy: Always/RerunOnFailure wait for a ready
 * guest, Halted for Stopped, Manual/Once only for the controller to see the spec.
 */
const RUNNING = new Set(['Always', 'RerunOnFailure']);

/**
 * Failure reasons the controller writes with printableStatus ErrorUnschedulable
 * (controller/controller/vm.ts) on which a wait gives up at once: the
 * scheduler's verdict (no node offers the backend, a capability, the memory or
 * CPU) and specs no node can run. A missing Network (NetworkNotFound) is waited
 * for: the same program may be about to create it.
 */
const FAIL_FAST_REASONS = new Set(['Unschedulable', 'InvalidSpec']);

/** Why the VM cannot start, when the controller says no node can take it; undefined otherwise. */
export function unschedulable(obj: any): string | undefined {
  const s = obj?.status ?? {};
  if (s.printableStatus !== 'ErrorUnschedulable') return undefined;
  const c = (s.conditions ?? []).find((x: any) => x.type === 'Failure' && x.status === 'True');
  return c && FAIL_FAST_REASONS.has(c.reason) ? `the VM cannot be scheduled (${c.reason}): ${c.message}` : undefined;
}

export class VirtualMachine extends CrdResource {
  readonly token = 'kubevm:index:VirtualMachine';
  readonly kind = 'VirtualMachine';
  readonly gvr = GVR.vm;
  readonly outputKeys = ['uid', 'printableStatus', 'ready', 'node', 'ipAddress', 'restartRequired', 'restartRequiredFields'];
  /** cloud-init data can hold credentials: always a secret in outputs and state. */
  readonly secretKeys = ['cloudInit'];

  classifySpec(key: string): UpdateClass {
    const marker = specSchema(this.kind).properties?.[key]?.['x-kubevm-update'];
    return marker === 'live' || marker === 'restart' || marker === 'replace' ? marker : 'replace';
  }

  protected semanticFailures(spec: Props): Failure[] {
    const out: Failure[] = [];
    for (const list of ['disks', 'interfaces', 'filesystems']) {
      const seen = new Set<string>();
      (Array.isArray(spec[list]) ? spec[list] : []).forEach((item: any, i: number) => {
        if (typeof item?.name !== 'string') return;
        if (seen.has(item.name)) out.push({ property: `${list}[${i}].name`, reason: `${list}[${i}].name: value ${JSON.stringify(item.name)} is used twice; names must be unique` });
        seen.add(item.name);
      });
    }
    const ci = spec.cloudInit ?? {};
    if (ci.userData !== undefined && ci.userDataSecretRef !== undefined)
      out.push({ property: 'cloudInit.userData', reason: 'cloudInit.userData: set either userData or userDataSecretRef, not both' });
    return out;
  }

  outputs(obj: any): Props {
    const s = obj.status ?? {};
    const restartRequired = (s.conditions ?? []).some((c: any) => c.type === 'RestartRequired' && c.status === 'True');
    return {
      uid: obj.metadata.uid,
      printableStatus: s.printableStatus ?? 'Unknown',
      ready: s.ready === true,
      node: s.node ?? '',
      ipAddress: (s.interfaces ?? []).find((i: any) => i.ipAddress)?.ipAddress ?? '',
      restartRequired,
      restartRequiredFields: (s.restartRequiredFields ?? []).map((f: string) => f.replace(/^spec\./, '')),
    };
  }

  /**
   * The preview tells whether the update will leave the VM needing a restart:
   * restart-class changes under updatePolicy Manual keep it running with
   * restartRequired true; under Restart the VM restarts and ends up current.
   */
  previewUpdate(olds: Props, news: Props, change: DiffOutcome): Props {
    const out = this.previewResult(news);
    const policy = plain(news).updatePolicy ?? 'Manual';
    if (policy === UNKNOWN) return out;
    const pending = new Set<string>(policy === 'Restart' ? [] : [...(plain(olds).restartRequiredFields ?? []), ...change.restarts]);
    out.restartRequired = pending.size > 0;
    out.restartRequiredFields = [...pending].sort();
    return out;
  }

  ready(obj: any): Verdict {
    const strategy = obj.spec?.runStrategy ?? 'Always';
    const s = obj.status ?? {};
    if (RUNNING.has(strategy)) {
      const stuck = unschedulable(obj);
      return stuck ? { done: false, failed: stuck } : { done: s.ready === true };
    }
    if (strategy === 'Halted') return { done: s.printableStatus === 'Stopped' };
    return { done: s.observedGeneration !== undefined };
  }

  protected async waitUpdated(ctx: OpContext, before: any, after: any, timeoutMs: number, id: string, change: DiffOutcome): Promise<any> {
    const strategy = after.spec?.runStrategy ?? 'Always';
    const restarting = change.restarts.length > 0 && (after.spec?.updatePolicy ?? 'Manual') === 'Restart' && RUNNING.has(strategy) && !!before.status?.instanceUID;
    if (!restarting) {
      const obj = await this.waitReady(ctx, after, timeoutMs, id);
      if (this.outputs(obj).restartRequired)
        ctx.warn(`${id}: changes to ${change.restarts.join(', ') || 'the spec'} take effect at the next restart (updatePolicy is Manual); restartRequired is true`);
      return obj;
    }
    ctx.progress(`${id}: restarting to apply ${change.restarts.join(', ')} (updatePolicy Restart)`);
    const gen = after.metadata.generation ?? 0;
    return waitFor(ctx, {
      gvr: this.gvr,
      namespace: after.metadata.namespace,
      name: after.metadata.name,
      what: `VirtualMachine ${id} to restart with a new ready instance`,
      timeoutMs,
      check: (o) => {
        if (!o) return { done: false, failed: 'deleted while waiting' };
        if ((o.status?.observedGeneration ?? 0) < gen) return { done: false };
        const stuck = unschedulable(o);
        if (stuck) return { done: false, failed: stuck };
        return { done: o.status?.instanceUID !== before.status.instanceUID && o.status?.ready === true };
      },
    });
  }
}
