/**
 * End-to-end sequences of what kubectl sends, chaining the patch functions the way the HTTP
 * layer does: apply the patch, then record managedFields for the writer.
 */
import {
  ManagedFieldsEntry,
  PatchError,
  applyJsonPatch,
  applyStrategicMergePatch,
  serverSideApply,
  updateManagedFields,
} from '../../../cluster/apiserver/patch';

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

function deployment(image: string, replicas = 2) {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web', namespace: 'default' },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'web' } },
      template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image }] } },
    },
  };
}

/** What the HTTP layer does for a non-apply write. */
function write(oldObj: any, newObj: any, manager: string, now: string) {
  const out = JSON.parse(JSON.stringify(newObj));
  out.metadata.managedFields = updateManagedFields({ oldObj, newObj, manager, apiVersion: 'apps/v1', now });
  return out;
}

describe('kubectl flows', () => {
  it('client-side apply create + update, then upgrade to server-side apply', () => {
    // 1. `kubectl apply` (client-side) creates with the last-applied annotation.
    const body = deployment('nginx:1.24');
    const created = write(
      undefined,
      { ...body, metadata: { ...body.metadata, annotations: { [LAST_APPLIED]: JSON.stringify(body) } } },
      'kubectl-client-side-apply',
      '2026-01-01T00:00:00Z',
    );
    expect(created.metadata.managedFields).toHaveLength(1);

    // 2. A second client-side apply sends a strategic merge patch with $setElementOrder.
    const smp = {
      metadata: { annotations: { [LAST_APPLIED]: '{"new":true}' } },
      spec: {
        template: {
          spec: {
            '$setElementOrder/containers': [{ name: 'web' }],
            containers: [{ image: 'nginx:1.25', name: 'web' }],
          },
        },
      },
    };
    const patched = applyStrategicMergePatch(created, smp, 'apps', 'Deployment');
    const v2 = write(created, patched, 'kubectl-client-side-apply', '2026-01-01T00:01:00Z');
    expect(v2.spec.template.spec.containers).toEqual([{ name: 'web', image: 'nginx:1.25' }]);
    expect(v2.metadata.managedFields).toHaveLength(1);

    // 3. Another actor scales the deployment.
    const scaled = write(v2, { ...v2, spec: { ...v2.spec, replicas: 5 } }, 'kubectl-scale', '2026-01-01T00:02:00Z');

    // 4. `kubectl apply --server-side` upgrades the client-side entry with a JSON patch.
    const csa = scaled.metadata.managedFields.find((e: ManagedFieldsEntry) => e.manager === 'kubectl-client-side-apply');
    const upgradedEntries = scaled.metadata.managedFields.map((e: ManagedFieldsEntry) =>
      e === csa ? { ...e, manager: 'kubectl', operation: 'Apply' } : e,
    );
    const rv = { ...scaled, metadata: { ...scaled.metadata, resourceVersion: '9' } };
    const upgradePatch = [
      { op: 'test', path: '/metadata/resourceVersion', value: '9' },
      { op: 'replace', path: '/metadata/managedFields', value: upgradedEntries },
    ];
    const upgraded = write(rv, applyJsonPatch(rv, upgradePatch), 'kubectl', '2026-01-01T00:03:00Z');
    expect(upgraded.metadata.managedFields.map((e: ManagedFieldsEntry) => `${e.operation}:${e.manager}`)).toEqual([
      'Apply:kubectl',
      'Update:kubectl-scale',
    ]);

    // A stale resourceVersion in that patch is a 409.
    expect(() => applyJsonPatch({ ...rv, metadata: { ...rv.metadata, resourceVersion: '10' } }, upgradePatch)).toThrow(
      PatchError,
    );

    // 5. The server-side apply itself: kubectl owns image (no conflict) but replicas now belongs
    //    to kubectl-scale, so changing it conflicts unless forced.
    const config = deployment('nginx:1.26', 3);
    let err: PatchError | undefined;
    try {
      serverSideApply({
        live: upgraded,
        applied: config,
        manager: 'kubectl',
        force: false,
        apiVersion: 'apps/v1',
        now: '2026-01-01T00:04:00Z',
      });
    } catch (e) {
      err = e as PatchError;
    }
    expect(err?.message).toBe('Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas');

    // Leaving replicas out: image changes, the dropped replicas stays (kubectl-scale owns it),
    // and the last-applied annotation kubectl no longer sends is removed.
    const { replicas: _r, ...specWithoutReplicas } = config.spec;
    const applied = serverSideApply({
      live: upgraded,
      applied: { ...config, spec: specWithoutReplicas },
      manager: 'kubectl',
      force: false,
      apiVersion: 'apps/v1',
      now: '2026-01-01T00:04:00Z',
    });
    expect(applied.spec.replicas).toBe(5);
    expect(applied.spec.template.spec.containers).toEqual([{ name: 'web', image: 'nginx:1.26' }]);
    expect(applied.metadata.annotations).toBeUndefined();
  });
});
