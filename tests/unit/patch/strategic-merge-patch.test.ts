import { PatchError, applyStrategicMergePatch } from '../../../cluster/apiserver/patch';

const names = (list: { name: string }[]) => list.map((c) => c.name);

function deployment(containers: Record<string, unknown>[], extra: object = {}) {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web', namespace: 'default', labels: { app: 'web' } },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: 'web' } },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: { app: 'web' } },
        spec: { containers, ...extra },
      },
    },
  };
}

function pod(spec: object, status: object = {}) {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec, status };
}

describe('applyStrategicMergePatch: maps and plain lists', () => {
  it('merges maps, deletes on null, replaces lists without a merge strategy', () => {
    const live = pod({
      containers: [{ name: 'c', image: 'i:1', args: ['a', 'b'] }],
      tolerations: [{ key: 'k1' }, { key: 'k2' }],
      nodeSelector: { disk: 'ssd', zone: 'a' },
    });
    const out = applyStrategicMergePatch(
      live,
      {
        metadata: { labels: { x: 'y' } },
        spec: {
          containers: [{ name: 'c', args: ['z'] }],
          tolerations: [{ key: 'k3' }],
          nodeSelector: { zone: null },
        },
      },
      '',
      'Pod',
    );
    expect(out.metadata.labels).toEqual({ x: 'y' });
    expect(out.spec.containers).toEqual([{ name: 'c', image: 'i:1', args: ['z'] }]);
    expect(out.spec.tolerations).toEqual([{ key: 'k3' }]);
    expect(out.spec.nodeSelector).toEqual({ disk: 'ssd' });
  });

  it('never mutates the target or the patch', () => {
    const live = deployment([{ name: 'a', image: 'a:1', env: [{ name: 'X', value: '1' }] }]);
    const patch = {
      spec: {
        template: {
          spec: {
            containers: [
              { name: 'a', env: [{ name: 'X', $patch: 'delete' }] },
              { name: 'b', image: 'b:1' },
            ],
          },
        },
      },
    };
    const before = JSON.stringify([live, patch]);
    const out = applyStrategicMergePatch(live, patch, 'apps', 'Deployment');
    expect(JSON.stringify([live, patch])).toBe(before);
    out.spec.template.spec.containers[0].image = 'changed';
    expect(live.spec.template.spec.containers[0].image).toBe('a:1');
  });

  it('rejects a patch that is not an object', () => {
    expect(() => applyStrategicMergePatch({}, [{ op: 'add' }], '', 'Pod')).toThrow(PatchError);
    try {
      applyStrategicMergePatch({}, [], '', 'Pod');
    } catch (e) {
      expect((e as PatchError).code).toBe(400);
    }
  });
});

describe('applyStrategicMergePatch: merge keys by field path', () => {
  it('merges Deployment containers by name at spec.template.spec, and env/ports/volumeMounts inside', () => {
    const live = deployment(
      [
        {
          name: 'app',
          image: 'app:1',
          env: [
            { name: 'A', value: '1' },
            { name: 'B', value: '2' },
          ],
          ports: [{ containerPort: 80, name: 'http' }],
          volumeMounts: [{ mountPath: '/data', name: 'data' }],
        },
        { name: 'sidecar', image: 'sc:1' },
      ],
      { volumes: [{ name: 'data', emptyDir: {} }] },
    );
    const out = applyStrategicMergePatch(
      live,
      {
        spec: {
          template: {
            spec: {
              containers: [
                {
                  name: 'app',
                  image: 'app:2',
                  env: [{ name: 'B', value: '22' }],
                  ports: [{ containerPort: 80, protocol: 'TCP' }],
                  volumeMounts: [{ mountPath: '/cache', name: 'cache' }],
                },
              ],
              volumes: [{ name: 'cache', emptyDir: { medium: 'Memory' } }],
            },
          },
        },
      },
      'apps',
      'Deployment',
    );
    const [app, sidecar] = out.spec.template.spec.containers;
    expect(app.image).toBe('app:2');
    expect(app.env).toEqual([
      { name: 'A', value: '1' },
      { name: 'B', value: '22' },
    ]);
    expect(app.ports).toEqual([{ containerPort: 80, name: 'http', protocol: 'TCP' }]);
    expect(app.volumeMounts.map((m: { mountPath: string }) => m.mountPath).sort()).toEqual(['/cache', '/data']);
    expect(sidecar).toEqual({ name: 'sidecar', image: 'sc:1' });
    expect(out.spec.template.spec.volumes.map((v: { name: string }) => v.name).sort()).toEqual(['cache', 'data']);
  });

  it('merges DaemonSet initContainers and imagePullSecrets, hostAliases by ip', () => {
    const live = {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: 'ds' },
      spec: {
        template: {
          spec: {
            initContainers: [{ name: 'init', image: 'i:1' }],
            containers: [{ name: 'c', image: 'c:1' }],
            imagePullSecrets: [{ name: 'reg1' }],
            hostAliases: [{ ip: '10.0.0.1', hostnames: ['a'] }],
          },
        },
      },
    };
    const out = applyStrategicMergePatch(
      live,
      {
        spec: {
          template: {
            spec: {
              initContainers: [{ name: 'init', image: 'i:2' }],
              imagePullSecrets: [{ name: 'reg2' }],
              hostAliases: [{ ip: '10.0.0.1', hostnames: ['b'] }],
            },
          },
        },
      },
      'apps',
      'DaemonSet',
    );
    const spec = out.spec.template.spec;
    expect(spec.initContainers).toEqual([{ name: 'init', image: 'i:2' }]);
    expect(spec.containers).toEqual([{ name: 'c', image: 'c:1' }]);
    expect(names(spec.imagePullSecrets).sort()).toEqual(['reg1', 'reg2']);
    // hostnames has no merge strategy: replaced inside the merged item.
    expect(spec.hostAliases).toEqual([{ ip: '10.0.0.1', hostnames: ['b'] }]);
  });

  it('merges Service ports by port, not containerPort', () => {
    const svc = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 's' },
      spec: {
        selector: { app: 'web' },
        ports: [
          { port: 80, targetPort: 8080, name: 'http' },
          { port: 443, targetPort: 8443, name: 'https' },
        ],
      },
    };
    const out = applyStrategicMergePatch(svc, { spec: { ports: [{ port: 443, targetPort: 9443 }] } }, '', 'Service');
    expect(out.spec.ports).toEqual([
      { port: 80, targetPort: 8080, name: 'http' },
      { port: 443, targetPort: 9443, name: 'https' },
    ]);
  });

  it('merges status.conditions by type and Node status.addresses by type', () => {
    const node = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'n1' },
      status: {
        conditions: [
          { type: 'Ready', status: 'False', reason: 'Starting' },
          { type: 'MemoryPressure', status: 'False' },
        ],
        addresses: [{ type: 'InternalIP', address: '10.0.0.5' }],
      },
    };
    const out = applyStrategicMergePatch(
      node,
      {
        status: {
          conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
          addresses: [{ type: 'Hostname', address: 'n1' }],
        },
      },
      '',
      'Node',
    );
    expect(out.status.conditions).toEqual([
      { type: 'Ready', status: 'True', reason: 'KubeletReady' },
      { type: 'MemoryPressure', status: 'False' },
    ]);
    expect(out.status.addresses.map((a: { type: string }) => a.type).sort()).toEqual(['Hostname', 'InternalIP']);
  });

  it('merges metadata.ownerReferences by uid and finalizers as a set', () => {
    const live = {
      metadata: {
        name: 'x',
        finalizers: ['a', 'b'],
        ownerReferences: [{ uid: 'u1', name: 'o1', kind: 'ReplicaSet' }],
      },
    };
    const out = applyStrategicMergePatch(
      live,
      { metadata: { finalizers: ['b', 'c'], ownerReferences: [{ uid: 'u2', name: 'o2', kind: 'ReplicaSet' }] } },
      '',
      'ConfigMap',
    );
    expect(out.metadata.finalizers).toEqual(['a', 'b', 'c']);
    expect(out.metadata.ownerReferences.map((o: { uid: string }) => o.uid).sort()).toEqual(['u1', 'u2']);
  });

  it('does not apply built-in merge keys to an unknown group with a built-in kind name', () => {
    const live = { spec: { template: { spec: { containers: [{ name: 'a' }] } } } };
    const out = applyStrategicMergePatch(
      live,
      { spec: { template: { spec: { containers: [{ name: 'b' }] } } } },
      'example.com',
      'Deployment',
    );
    expect(out.spec.template.spec.containers).toEqual([{ name: 'b' }]);
  });

  it('fails with 400 when a merge-list item lacks its merge key', () => {
    let err: PatchError | undefined;
    try {
      applyStrategicMergePatch(pod({ containers: [{ name: 'a' }] }), { spec: { containers: [{ image: 'x' }] } }, '', 'Pod');
    } catch (e) {
      err = e as PatchError;
    }
    expect(err).toBeInstanceOf(PatchError);
    expect(err?.code).toBe(400);
    expect(err?.message).toContain('does not contain declared merge key: name');
  });
});

describe('applyStrategicMergePatch: ordering (upstream test cases)', () => {
  const containers = (...ns: (string | [string, object])[]) =>
    ns.map((n) => (Array.isArray(n) ? { name: n[0], ...n[1] } : { name: n }));

  it('unique scalars when merging lists', () => {
    const out = applyStrategicMergePatch(
      { metadata: { finalizers: ['1', '2'] } },
      { metadata: { finalizers: ['2', '3'] } },
      '',
      'Pod',
    );
    expect(out.metadata.finalizers).toEqual(['1', '2', '3']);
  });

  it('preserves the order from the patch in a merging list', () => {
    const out = applyStrategicMergePatch(
      pod({ containers: containers('1', ['2', { image: 'b' }], '3') }),
      { spec: { containers: containers(['3', { image: 'c' }], ['1', { image: 'a' }], ['2', { args: ['x'] }]) } },
      '',
      'Pod',
    );
    expect(out.spec.containers).toEqual(
      containers(['3', { image: 'c' }], ['1', { image: 'a' }], ['2', { image: 'b', args: ['x'] }]),
    );
  });

  it('keeps server-only items before patched ones that followed them', () => {
    const out = applyStrategicMergePatch(
      pod({ containers: containers('1', ['2', { image: 'b' }], '3') }),
      { spec: { containers: containers(['3', { image: 'c' }], ['1', { image: 'a' }]) } },
      '',
      'Pod',
    );
    expect(names(out.spec.containers)).toEqual(['2', '3', '1']);
  });

  it('preserves the order from the patch in a merging scalar list', () => {
    const live = { metadata: { finalizers: ['1', '2', '3'] } };
    expect(applyStrategicMergePatch(live, { metadata: { finalizers: ['3', '1', '2'] } }, '', 'Pod').metadata.finalizers).toEqual([
      '3',
      '1',
      '2',
    ]);
    expect(applyStrategicMergePatch(live, { metadata: { finalizers: ['3', '1'] } }, '', 'Pod').metadata.finalizers).toEqual([
      '2',
      '3',
      '1',
    ]);
  });

  it('places an item new to the server before the server-only items (as upstream does)', () => {
    const out = applyStrategicMergePatch(
      pod({ containers: containers('a', 'b') }),
      { spec: { containers: containers('c') } },
      '',
      'Pod',
    );
    expect(names(out.spec.containers)).toEqual(['c', 'a', 'b']);
  });
});

describe('applyStrategicMergePatch: directives', () => {
  it('handles a kubectl client-side apply payload with $setElementOrder and $patch: delete', () => {
    const live = deployment([
      {
        name: 'nginx',
        image: 'nginx:1.24',
        env: [
          { name: 'A', value: '1' },
          { name: 'B', value: '2' },
          { name: 'C', value: '3' },
        ],
      },
      { name: 'injected', image: 'mesh:1' }, // added by someone else: server-only
      { name: 'old', image: 'old:1' },
    ]);
    const patch = {
      metadata: { annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"kind":"Deployment"}\n' } },
      spec: {
        template: {
          spec: {
            '$setElementOrder/containers': [{ name: 'nginx' }, { name: 'metrics' }],
            containers: [
              {
                '$setElementOrder/env': [{ name: 'C' }, { name: 'A' }, { name: 'D' }],
                env: [
                  { name: 'D', value: '4' },
                  { $patch: 'delete', name: 'B' },
                ],
                image: 'nginx:1.25',
                name: 'nginx',
              },
              { image: 'metrics:1', name: 'metrics' },
              { $patch: 'delete', name: 'old' },
            ],
          },
        },
      },
    };
    const out = applyStrategicMergePatch(live, patch, 'apps', 'Deployment');
    const cs = out.spec.template.spec.containers;
    // Upstream's interleaving: the new 'metrics' has no server position, so it is placed before
    // the server-only 'injected' (which sorted after 'nginx' on the server).
    expect(names(cs)).toEqual(['nginx', 'metrics', 'injected']);
    expect(cs[0].image).toBe('nginx:1.25');
    expect(cs[0].env).toEqual([
      { name: 'C', value: '3' },
      { name: 'A', value: '1' },
      { name: 'D', value: '4' },
    ]);
    expect(cs[1]).toEqual({ name: 'metrics', image: 'metrics:1' });
    expect(cs[2]).toEqual({ name: 'injected', image: 'mesh:1' });
    expect(out.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']).toBeDefined();
    expect(JSON.stringify(out)).not.toMatch(/\$setElementOrder|\$patch|\$retainKeys|\$deleteFromPrimitiveList/);
  });

  it('$setElementOrder alone reorders without changing contents; unknown items in it are ignored', () => {
    const live = pod({ containers: [{ name: '1' }, { name: '3', image: 'x' }] });
    const out = applyStrategicMergePatch(
      live,
      { spec: { '$setElementOrder/containers': [{ name: '3' }, { name: '2' }, { name: '1' }] } },
      '',
      'Pod',
    );
    expect(out.spec.containers).toEqual([{ name: '3', image: 'x' }, { name: '1' }]);
  });

  it('$setElementOrder whose order contradicts the patch list is a 400', () => {
    const live = pod({ containers: [{ name: '1' }, { name: '3' }, { name: '2' }] });
    let err: PatchError | undefined;
    try {
      applyStrategicMergePatch(
        live,
        {
          spec: {
            '$setElementOrder/containers': [{ name: '1' }, { name: '2' }, { name: '3' }],
            containers: [
              { name: '3', image: '3' },
              { name: '1', image: '1' },
            ],
          },
        },
        '',
        'Pod',
      );
    } catch (e) {
      err = e as PatchError;
    }
    expect(err?.code).toBe(400);
    expect(err?.message).toContain("doesn't match");
  });

  it('$deleteFromPrimitiveList with $setElementOrder on finalizers', () => {
    const out = applyStrategicMergePatch(
      { metadata: { name: 'x', finalizers: ['x', 'y'] } },
      {
        metadata: {
          '$setElementOrder/finalizers': ['x', 'z'],
          finalizers: ['z'],
          '$deleteFromPrimitiveList/finalizers': ['y'],
        },
      },
      '',
      'ConfigMap',
    );
    expect(out.metadata.finalizers).toEqual(['x', 'z']);
  });

  it('$patch: replace on a list replaces the whole merge list', () => {
    const out = applyStrategicMergePatch(
      pod({ containers: [{ name: 'a', image: 'a' }, { name: 'b' }] }),
      { spec: { containers: [{ name: 'c', image: 'c' }, { $patch: 'replace' }] } },
      '',
      'Pod',
    );
    expect(out.spec.containers).toEqual([{ name: 'c', image: 'c' }]);
    const emptied = applyStrategicMergePatch(
      pod({ containers: [{ name: 'a' }] }),
      { spec: { containers: [{ $patch: 'replace' }] } },
      '',
      'Pod',
    );
    expect(emptied.spec.containers).toEqual([]);
  });

  it('$patch: replace on a map replaces the map', () => {
    const out = applyStrategicMergePatch(
      pod({ nodeSelector: { a: '1', b: '2' } }),
      { spec: { nodeSelector: { $patch: 'replace', c: '3' } } },
      '',
      'Pod',
    );
    expect(out.spec.nodeSelector).toEqual({ c: '3' });
  });

  it('$patch: delete on a map removes it; on list items removes every match', () => {
    const live = pod({
      nodeSelector: { a: '1' },
      containers: [{ name: '1' }, { name: '1' }, { name: '2', image: 'a' }, { name: '3' }, { name: '3' }],
    });
    const out = applyStrategicMergePatch(
      live,
      {
        spec: {
          nodeSelector: { $patch: 'delete' },
          containers: [
            { name: '1', $patch: 'delete' },
            { name: '3', $patch: 'delete' },
          ],
        },
      },
      '',
      'Pod',
    );
    expect(out.spec.nodeSelector).toBeUndefined();
    expect(out.spec.containers).toEqual([{ name: '2', image: 'a' }]);
  });

  it('$patch: merge is accepted as the default behaviour', () => {
    const out = applyStrategicMergePatch(
      pod({ nodeSelector: { a: '1' } }),
      { spec: { nodeSelector: { $patch: 'merge', b: '2' } } },
      '',
      'Pod',
    );
    expect(out.spec.nodeSelector).toEqual({ a: '1', b: '2' });
  });

  it('an unknown $patch value is a 400', () => {
    expect(() => applyStrategicMergePatch(pod({}), { spec: { $patch: 'explode' } }, '', 'Pod')).toThrow(/unknown patch type/);
  });

  it('$retainKeys on Deployment spec.strategy clears keys not retained', () => {
    const live = deployment([{ name: 'a' }]);
    const out = applyStrategicMergePatch(
      live,
      { spec: { strategy: { $retainKeys: ['type'], type: 'Recreate' } } },
      'apps',
      'Deployment',
    );
    expect(out.spec.strategy).toEqual({ type: 'Recreate' });
  });

  it('$retainKeys on a volume switches its source', () => {
    const live = pod({
      volumes: [
        { name: 'v', emptyDir: {} },
        { name: 'w', emptyDir: {} },
      ],
    });
    const out = applyStrategicMergePatch(
      live,
      { spec: { volumes: [{ name: 'v', $retainKeys: ['configMap', 'name'], configMap: { name: 'cm' } }] } },
      '',
      'Pod',
    );
    expect(out.spec.volumes).toEqual([
      { name: 'v', configMap: { name: 'cm' } },
      { name: 'w', emptyDir: {} },
    ]);
  });

  it('$retainKeys that omits a key present in the patch is a 400', () => {
    let err: PatchError | undefined;
    try {
      applyStrategicMergePatch(
        deployment([]),
        { spec: { strategy: { $retainKeys: ['type'], rollingUpdate: {} } } },
        'apps',
        'Deployment',
      );
    } catch (e) {
      err = e as PatchError;
    }
    expect(err?.code).toBe(400);
    expect(err?.message).toBe('invalid patch format of retainKeys');
  });

  it('strips directives and nulls from values that are new to the target', () => {
    const out = applyStrategicMergePatch(
      pod({}),
      {
        spec: {
          '$setElementOrder/containers': [{ name: 'a' }],
          containers: [
            {
              name: 'a',
              env: [
                { name: 'X', value: '1' },
                { name: 'Y', $patch: 'delete' },
              ],
              image: null,
            },
          ],
          securityContext: { $retainKeys: ['runAsUser'], runAsUser: 1 },
        },
      },
      '',
      'Pod',
    );
    expect(out.spec).toEqual({
      containers: [{ name: 'a', env: [{ name: 'X', value: '1' }] }],
      securityContext: { runAsUser: 1 },
    });
  });
});
