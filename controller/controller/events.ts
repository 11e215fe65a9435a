import { GVR, Kube } from '../runtime/kube';

/** Records a core/v1 Event about an object (what `kubectl describe` shows). Never fails the caller. */
export async function recordEvent(kube: Kube, obj: any, type: 'Normal' | 'Warning', reason: string, message: string, component = 'kubevm-controller'): Promise<void> {
  const now = new Date().toISOString();
  try {
    await kube.create(GVR.event, obj.metadata.namespace ?? 'default', {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${obj.metadata.name}.` },
      involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name, namespace: obj.metadata.namespace, uid: obj.metadata.uid },
      reason,
      message,
      type,
      count: 1,
      firstTimestamp: now,
      lastTimestamp: now,
      source: { component },
      reportingComponent: component,
    });
  } catch {
    /* events are best effort, as upstream */
  }
}
