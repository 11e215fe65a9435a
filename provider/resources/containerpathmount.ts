import { GVR } from '../../controller/runtime/kube';
import type { UpdateClass } from '../diff';
import { specSchema } from '../spec-schema';
import { plain } from '../values';
import type { Verdict } from '../wait';
import { CrdResource, type DiffOutcome, type OpContext, type Props } from './common';

/**
 * kubevm:index:ContainerPathMount: a directory of the node attached to a VM,
 * like a volume attachment (docs/containerpathmount.md). Its spec (vm, path,
 * tag) cannot change in place: a change replaces the mount. Create waits for
 * `Attached` when the VM runs; a mount of a stopped (or not yet existing) VM
 * is done at once and attached at the VM's next start, and so is one the
 * backend can only attach at the next start (with a warning).
 */
const DONE_PENDING: Record<string, string> = {
  VMNotRunning: 'the VM is not running: the share is attached at its next start',
  VMNotFound: 'the VM does not exist (yet): the share is attached once it exists and runs',
  AttachAtNextStart:
    'the backend cannot add the share to the running VM: it is attached at the next start (restartRequired is true)',
};

export class ContainerPathMount extends CrdResource {
  readonly token = 'kubevm:index:ContainerPathMount';
  readonly kind = 'ContainerPathMount';
  readonly gvr = GVR.containerPathMount;
  readonly outputKeys = ['uid', 'phase', 'reason', 'message', 'node', 'restartRequired'];
  readonly defaultTimeoutMs = 2 * 60_000;

  classifySpec(key: string): UpdateClass {
    const marker = specSchema(this.kind).properties?.[key]?.['x-kubevm-update'];
    return marker === 'live' || marker === 'restart' || marker === 'replace' ? marker : 'replace';
  }

  outputs(obj: any): Props {
    const s = obj.status ?? {};
    return {
      uid: obj.metadata.uid,
      phase: s.phase ?? 'Pending',
      reason: s.reason ?? '',
      message: s.message ?? '',
      node: s.node ?? '',
      restartRequired: (s.conditions ?? []).some((c: any) => c.type === 'RestartRequired' && c.status === 'True'),
    };
  }

  ready(obj: any): Verdict {
    const s = obj.status ?? {};
    if (s.phase === 'Attached') return { done: true };
    if (s.phase === 'Failed') return { done: false, failed: `${s.reason ?? 'Failed'}: ${s.message ?? 'phase Failed'}` };
    return { done: s.phase === 'Pending' && s.reason in DONE_PENDING };
  }

  /** Two mounts of one VM cannot hold the same tag: a replacement that keeps vm and tag deletes the old mount first. */
  diff(olds: Props, news: Props, ignoreChanges: string[] = []): DiffOutcome {
    const d = super.diff(olds, news, ignoreChanges);
    if (d.replaces.length && !d.deleteBeforeReplace) {
      const o = plain(olds);
      const n = plain(news);
      if (o.namespace === n.namespace && o.vm === n.vm && o.tag === n.tag) d.deleteBeforeReplace = true;
    }
    return d;
  }

  async create(ctx: OpContext, raw: Props, timeoutMs: number): Promise<{ id: string; obj: any }> {
    const made = await super.create(ctx, raw, timeoutMs);
    this.warnIfPending(ctx, made.id, made.obj);
    return made;
  }

  private warnIfPending(ctx: OpContext, id: string, obj: any): void {
    const reason = obj?.status?.reason;
    const why = DONE_PENDING[reason];
    if (obj?.status?.phase !== 'Pending' || !why) return;
    // A stopped VM is the ordinary case; the other two deserve the user's attention.
    if (reason === 'VMNotRunning') ctx.progress(`${id}: ${why}`);
    else ctx.warn(`${id}: not attached yet: ${why}`);
  }
}
