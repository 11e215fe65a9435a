import type { Backend, FilesystemSpec } from '../hal/types';
import { confinePath } from '../hal/common/paths';

/**
 * The node agent's half of ContainerPath shares: which directories of an
 * instance's spec.filesystems the guest gets, bringing a running guest in line
 * with the spec (hot-add through the HAL's mountPath, removal through
 * unmountPath where the backend has it), and the per-filesystem report the
 * agent writes to the instance status (status.filesystems), from which the
 * controller derives each ContainerPathMount's phase.
 *
 * A VM's own filesystem that cannot be shared fails the instance (as it always
 * did); a ContainerPathMount's only fails that mount: the VM runs without it.
 */
export interface FilesystemReport {
  name: string;
  mount?: string;
  path: string;
  phase: 'Attached' | 'Pending' | 'DetachPending' | 'Failed';
  message?: string;
}

export class FilesystemShares {
  private readonly reports = new Map<string, Map<string, FilesystemReport>>();
  /** Mounts refused before reaching the backend (path outside the allowed roots, …), per instance uid. */
  private readonly refused = new Map<string, FilesystemReport[]>();
  /** Hot-adds the backend refused: not retried until the spec of that filesystem changes (or the agent restarts). */
  private readonly failedAdds = new Map<string, Map<string, FilesystemReport>>();

  constructor(
    private readonly backend: Backend,
    private readonly allowedRoots: string[],
  ) {}

  /**
   * The HAL shares of an instance. A VM's own filesystem outside the allowed
   * roots throws (the instance fails with the field named); a mount's is left
   * out and reported Failed.
   */
  specsOf(vmi: any): FilesystemSpec[] {
    const b = this.backend;
    const shares: FilesystemSpec[] = [];
    const refused: FilesystemReport[] = [];
    for (const [i, f] of ((vmi.spec.filesystems ?? []) as any[]).entries()) {
      const share: FilesystemSpec = { tag: f.name, hostPath: f.containerPath.path, readOnly: true };
      if (f.mount) {
        const base = { name: f.name, mount: f.mount, path: share.hostPath };
        if (!b.capabilities().includes('filesystem')) {
          refused.push({
            ...base,
            phase: 'Failed',
            message: `backend "${b.name}" lacks capability "filesystem" needed by ContainerPathMount ${f.mount}`,
          });
          continue;
        }
        try {
          confinePath(share.hostPath, { allowedRoots: this.allowedRoots });
        } catch (e) {
          refused.push({
            ...base,
            phase: 'Failed',
            message: `ContainerPathMount ${f.mount}: spec.path: ${(e as Error).message}`,
          });
          continue;
        }
      } else {
        try {
          confinePath(share.hostPath, { allowedRoots: this.allowedRoots });
        } catch (e) {
          throw new Error(`spec.filesystems[${i}].containerPath.path: ${(e as Error).message}`);
        }
      }
      shares.push(share);
    }
    this.refused.set(vmi.metadata.uid, refused);
    return shares;
  }

  /** The instance started with `shares`: they are all attached. */
  started(vmi: any, shares: FilesystemSpec[]): void {
    const origin = originOf(vmi);
    const next = new Map<string, FilesystemReport>();
    for (const f of shares) next.set(f.tag, { ...this.base(f, origin), phase: 'Attached' });
    this.finish(vmi.metadata.uid, next);
  }

  /**
   * After an agent restart: the shares the previous agent reported in the
   * instance status (undefined when it reported none: the guest then runs what
   * its spec says).
   */
  adopted(vmi: any): FilesystemSpec[] | undefined {
    const list = vmi.status?.filesystems;
    if (!Array.isArray(list)) return undefined;
    this.reports.set(vmi.metadata.uid, new Map(list.map((e: FilesystemReport) => [e.name, { ...e }])));
    return list
      .filter((e: FilesystemReport) => (e.phase === 'Attached' || e.phase === 'DetachPending') && e.path)
      .map((e: FilesystemReport) => ({ tag: e.name, hostPath: e.path, readOnly: true }));
  }

  /**
   * Brings the shares of a running guest (`have`) in line with the spec
   * (`want`, from specsOf) and returns what the guest has afterwards. Removals
   * go first, so a tag whose directory changed can be re-added at once where
   * the backend can unplug.
   */
  async apply(vmi: any, have: FilesystemSpec[], want: FilesystemSpec[]): Promise<FilesystemSpec[]> {
    const uid: string = vmi.metadata.uid;
    const b = this.backend;
    const prev = this.reports.get(uid) ?? new Map<string, FilesystemReport>();
    const origin = originOf(vmi);
    const next = new Map<string, FilesystemReport>();
    let shared = [...have];
    for (const h of have) {
      const w = want.find((x) => x.tag === h.tag);
      if (w && w.hostPath === h.hostPath) continue;
      let why = `backend "${b.name}" cannot remove a share from a running VM: it stays until the next start`;
      if (b.unmountPath) {
        try {
          await b.unmountPath(uid, h.tag);
          shared = shared.filter((x) => x.tag !== h.tag);
          continue;
        } catch (e) {
          why = `${(e as Error).message}: the share stays until the next start`;
        }
      }
      const mount = prev.get(h.tag)?.mount;
      next.set(h.tag, { name: h.tag, ...(mount ? { mount } : {}), path: h.hostPath, phase: 'DetachPending', message: why });
    }
    const failed = this.failedAdds.get(uid) ?? new Map<string, FilesystemReport>();
    for (const w of want) {
      const base = this.base(w, origin);
      const cur = shared.find((x) => x.tag === w.tag);
      const before = failed.get(w.tag);
      if (cur && cur.hostPath === w.hostPath) next.set(w.tag, { ...base, phase: 'Attached' });
      else if (cur)
        next.set(w.tag, {
          ...base,
          phase: 'Pending',
          message: `tag ${w.tag} is still held by the removed share of ${cur.hostPath}: shared at the next start`,
        });
      else if (before && before.path === w.hostPath && before.mount === base.mount) next.set(w.tag, before);
      else if (!b.capabilities().includes('hotplug-filesystem'))
        next.set(w.tag, {
          ...base,
          phase: 'Pending',
          message: `backend "${b.name}" lacks capability "hotplug-filesystem": shared at the next start`,
        });
      else {
        try {
          await b.mountPath(uid, w);
          shared.push(w);
          next.set(w.tag, { ...base, phase: 'Attached' });
        } catch (e) {
          const report: FilesystemReport = { ...base, phase: 'Failed', message: (e as Error).message };
          failed.set(w.tag, report);
          next.set(w.tag, report);
        }
      }
    }
    // A filesystem gone from the spec forgets its failure: adding it again is tried again.
    for (const tag of [...failed.keys()]) if (!want.some((w) => w.tag === tag)) failed.delete(tag);
    this.failedAdds.set(uid, failed);
    this.finish(uid, next);
    return shared;
  }

  /** The report for the instance status, by name; undefined before the agent knows anything. */
  report(uid: string): FilesystemReport[] | undefined {
    const r = this.reports.get(uid);
    return r ? [...r.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) : undefined;
  }

  forget(uid: string): void {
    this.reports.delete(uid);
    this.refused.delete(uid);
    this.failedAdds.delete(uid);
  }

  private base(f: FilesystemSpec, origin: Map<string, string | undefined>): { name: string; mount?: string; path: string } {
    const mount = origin.get(f.tag);
    return { name: f.tag, ...(mount ? { mount } : {}), path: f.hostPath };
  }

  private finish(uid: string, next: Map<string, FilesystemReport>): void {
    for (const r of this.refused.get(uid) ?? []) next.set(r.name, r);
    this.reports.set(uid, next);
  }
}

function originOf(vmi: any): Map<string, string | undefined> {
  return new Map(((vmi.spec.filesystems ?? []) as any[]).map((f) => [f.name, f.mount]));
}
