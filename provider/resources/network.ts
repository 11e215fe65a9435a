import { GVR } from '../../controller/runtime/kube';
import type { UpdateClass } from '../diff';
import type { Verdict } from '../wait';
import { CrdResource, type Props } from './common';

/**
 * kubevm:index:Network. The type and the bridge's VLAN define what instances
 * are wired to, so changing them replaces the Network; the CIDR is informational.
 */
export class Network extends CrdResource {
  readonly token = 'kubevm:index:Network';
  readonly kind = 'Network';
  readonly gvr = GVR.network;
  readonly outputKeys = ['uid', 'phase', 'bridgeName'];
  readonly defaultTimeoutMs = 2 * 60_000;

  classifySpec(key: string): UpdateClass {
    return key === 'type' || key === 'bridge' ? 'replace' : 'live';
  }

  outputs(obj: any): Props {
    return { uid: obj.metadata.uid, phase: obj.status?.phase ?? 'Pending', bridgeName: obj.status?.bridgeName ?? '' };
  }

  ready(obj: any): Verdict {
    const phase = obj.status?.phase;
    return phase === 'Failed' ? { done: false, failed: 'phase Failed' } : { done: phase === 'Ready' };
  }
}
