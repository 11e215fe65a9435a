import { parseCron, validateTimeZone } from '../../controller/backup/cron';
import { GVR } from '../../controller/runtime/kube';
import type { UpdateClass } from '../diff';
import { specSchema, type Failure } from '../spec-schema';
import type { Verdict } from '../wait';
import { containsUnknown, isObject, plain, UNKNOWN } from '../values';
import { CrdResource, type Autonaming, type CheckOutcome, type Props } from './common';

/**
 * kubevm:index:BackupPolicy: scheduled full and incremental backups of a set
 * of VMs, with retention (docs/backup.md). Every field but the target applies
 * in place (the controller reads the policy at each run); a new target starts a
 * new chain, so it replaces the policy. The Backups a policy made are not owned
 * by it: deleting the policy keeps them (and their files).
 *
 * Check parses the schedule and the time zone with the controller's own code,
 * so a bad cron expression is refused before anything is written. Create and
 * update wait until the controller has seen the spec and reports the policy
 * Ready; an InvalidSchedule verdict fails at once with its message.
 */
export class BackupPolicy extends CrdResource {
  readonly token = 'kubevm:index:BackupPolicy';
  readonly kind = 'BackupPolicy';
  readonly gvr = GVR.backupPolicy;
  readonly outputKeys = ['uid', 'nextScheduleTime', 'lastScheduleTime', 'lastResult', 'chains'];
  readonly defaultTimeoutMs = 2 * 60_000;

  classifySpec(key: string): UpdateClass {
    const marker = specSchema(this.kind).properties?.[key]?.['x-kubevm-update'];
    return marker === 'live' || marker === 'restart' || marker === 'replace' ? marker : 'replace';
  }

  protected semanticFailures(spec: Props): Failure[] {
    const out: Failure[] = [];
    if (typeof spec.schedule === 'string') {
      try {
        parseCron(spec.schedule, 'schedule');
      } catch (e) {
        out.push({ property: 'schedule', reason: (e as Error).message });
      }
    }
    if (isObject(spec.target) && spec.target.path !== undefined && spec.target.volume !== undefined)
      out.push({ property: 'target', reason: 'target: set path (a directory on the node) or volume (a Filesystem Volume), not both' });
    if (typeof spec.timeZone === 'string') {
      try {
        validateTimeZone(spec.timeZone, 'timeZone');
      } catch (e) {
        out.push({ property: 'timeZone', reason: (e as Error).message });
      }
    }
    return out;
  }

  /** A policy must select VMs by name or by labels; values not known yet (previews) count as a selection. */
  check(urn: string, olds: Props, news: Props, defaultNamespace: string, randomSeed?: Uint8Array, autonaming?: Autonaming): CheckOutcome {
    const out = super.check(urn, olds, news, defaultNamespace, randomSeed, autonaming);
    const p = plain(news);
    const some = (v: unknown): boolean =>
      containsUnknown(v) || (Array.isArray(v) ? v.length > 0 : isObject(v) && Object.keys(v).length > 0);
    const selector = p.selector === UNKNOWN ? UNKNOWN : p.selector?.matchLabels;
    if (!some(p.vms) && !some(selector))
      out.failures.push({
        property: 'vms',
        reason: 'vms: set vms or selector.matchLabels (or both): the policy selects no VirtualMachine',
      });
    return out;
  }

  outputs(obj: any): Props {
    const s = obj.status ?? {};
    return {
      uid: obj.metadata.uid,
      nextScheduleTime: s.nextScheduleTime ?? '',
      lastScheduleTime: s.lastScheduleTime ?? '',
      lastResult: s.lastResult ?? '',
      chains: s.chains ?? [],
    };
  }

  ready(obj: any): Verdict {
    const c = (obj.status?.conditions ?? []).find((x: any) => x.type === 'Ready');
    if (c?.status === 'True') return { done: true };
    if (c?.reason === 'InvalidSchedule')
      return { done: false, failed: `InvalidSchedule: ${c.message ?? 'the schedule is invalid'}` };
    return { done: false };
  }
}
