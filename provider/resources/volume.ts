import { GVR } from '../../controller/runtime/kube';
import type { UpdateClass } from '../diff';
import type { Failure } from '../spec-schema';
import type { Verdict } from '../wait';
import { CrdResource, type Props } from './common';

/**
 * kubevm:index:Volume. A volume's content is made once (blank, imported or
 * cloned) on one node, and there is no resize yet: every spec change replaces it
 * (delete first when the name stays, since names must be unique). volumeMode
 * Filesystem makes a directory for backups instead of a disk image.
 */
export class Volume extends CrdResource {
  readonly token = 'kubevm:index:Volume';
  readonly kind = 'Volume';
  readonly gvr = GVR.volume;
  readonly outputKeys = ['uid', 'phase', 'node', 'path', 'actualSize', 'virtualSize'];

  classifySpec(_key: string): UpdateClass {
    return 'replace';
  }

  protected semanticFailures(spec: Props): Failure[] {
    const src = spec.source ?? {};
    const set = ['blank', 'image', 'clone', 'fromBackup'].filter((k) => src[k] !== undefined);
    if (set.length > 1) return [{ property: 'source', reason: `source: set exactly one of blank, image, clone, fromBackup (got ${set.join(', ')})` }];
    if (spec.volumeMode === 'Filesystem') {
      if (set.length && set[0] !== 'blank')
        return [{ property: 'source', reason: `source.${set[0]}: a Filesystem volume is an empty directory; sources apply to Block volumes` }];
      if (spec.size === undefined) return [{ property: 'size', reason: 'size: required for a Filesystem volume (its capacity)' }];
    }
    if ((set.length === 0 || set[0] === 'blank') && spec.size === undefined)
      return [{ property: 'size', reason: 'size: required for a blank volume' }];
    return [];
  }

  outputs(obj: any): Props {
    const s = obj.status ?? {};
    return { uid: obj.metadata.uid, phase: s.phase ?? 'Pending', node: s.nodeName ?? '', path: s.path ?? '', actualSize: s.actualSize ?? 0, virtualSize: s.virtualSize ?? 0 };
  }

  ready(obj: any): Verdict {
    const s = obj.status ?? {};
    if (s.phase === 'Failed') return { done: false, failed: s.message ?? 'phase Failed' };
    // A Filesystem volume without spec.nodeName is placed by the first Backup that targets it:
    // as ready as it gets until then (the policy that targets it may be the next resource).
    if (obj.spec?.volumeMode === 'Filesystem' && !obj.spec?.nodeName && !s.nodeName && s.phase === 'Pending' && s.message) return { done: true };
    return { done: s.phase === 'Ready' };
  }
}
