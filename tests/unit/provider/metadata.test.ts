import { Network } from '../../../provider/resources/network';
import { ContainerPathMount } from '../../../provider/resources/containerpathmount';
import { AUTONAMED, MANAGED_ANNOTATIONS, MANAGED_LABELS, autoname } from '../../../provider/resources/common';
import { UNKNOWN } from '../../../provider/values';

/**
 * The provider's metadata rules without a cluster: autonames, and labels and
 * annotations that merge with what others set (only the keys the provider set
 * are its own). The same rules run over gRPC against the API server in
 * tests/integration/provider-grpc.test.ts.
 */
const net = new Network();
const urn = (name: string) => `urn:pulumi:dev::p::kubevm:index:Network::${name}`;

describe('autonaming', () => {
  test('logical name + "-" + 8 characters of [a-z0-9]; DNS-label safe and at most 63 characters', () => {
    expect(autoname('web')).toMatch(/^web-[a-z0-9]{8}$/);
    expect(autoname('Web_Server.1')).toMatch(/^web-server-1-[a-z0-9]{8}$/);
    const long = autoname('x'.repeat(100));
    expect(long.length).toBe(63);
    expect(long).toMatch(/^x{54}-[a-z0-9]{8}$/);
    expect(autoname('-a-'.repeat(30))).toMatch(/^a[-a]*a-[a-z0-9]{8}$/);
    expect(autoname('___')).toMatch(/^[a-z0-9]{8}$/);
    expect(new Set(Array.from({ length: 50 }, () => autoname('n'))).size).toBe(50);
  });

  test('the random seed of Check makes the name repeatable (preview and update agree)', () => {
    const seed = Buffer.from('seed-1');
    expect(autoname('web', seed)).toBe(autoname('web', seed));
    expect(autoname('web', seed)).not.toBe(autoname('web', Buffer.from('seed-2')));
  });

  test('check: no name → autoname with the marker; the old name is kept across updates; explicit names as given', () => {
    const first = net.check(urn('net'), {}, { type: 'pod' }, 'default', Buffer.from('s'));
    expect(first.failures).toEqual([]);
    expect(first.inputs.name).toMatch(/^net-[a-z0-9]{8}$/);
    expect(first.inputs.annotations).toEqual({ [AUTONAMED]: 'true' });
    const again = net.check(urn('net'), first.inputs, { type: 'pod', annotations: { team: 'a' } }, 'default');
    expect(again.inputs.name).toBe(first.inputs.name);
    expect(again.inputs.annotations).toEqual({ team: 'a', [AUTONAMED]: 'true' });
    const explicit = net.check(urn('net'), first.inputs, { name: 'mine', type: 'pod' }, 'default');
    expect(explicit.inputs.name).toBe('mine');
    expect(explicit.inputs.annotations).toBeUndefined();
    // State from before autonaming (name = logical name, no marker): the name stays, not autonamed.
    const legacy = net.check(urn('net'), { name: 'net', namespace: 'default', type: 'pod' }, { type: 'pod' }, 'default');
    expect(legacy.inputs.name).toBe('net');
    expect(legacy.inputs.annotations).toBeUndefined();
  });

  test('a replacement of an autonamed object need not delete first; an explicit same name must', () => {
    const auto = net.check(urn('net'), {}, { type: 'pod' }, 'default').inputs;
    expect(net.diff(auto, { ...auto, type: 'bridge' }).deleteBeforeReplace).toBe(false);
    const named = { name: 'n', namespace: 'default', type: 'pod' };
    expect(net.diff(named, { ...named, type: 'bridge' }).deleteBeforeReplace).toBe(true);
    // The marker is bookkeeping: it is not a diff.
    expect(net.diff({ ...named, annotations: { [AUTONAMED]: 'true' } }, named).diffs).toEqual([]);
  });

  test('ContainerPathMount: a replacement that keeps vm and tag deletes first even when autonamed (the tag would collide)', () => {
    const cpm = new ContainerPathMount();
    const u = 'urn:pulumi:dev::p::kubevm:index:ContainerPathMount::m';
    const auto = cpm.check(u, {}, { vm: 'web', path: '/srv/a', tag: 'data' }, 'default').inputs;
    expect(cpm.diff(auto, { ...auto, path: '/srv/b' })).toMatchObject({ replaces: ['path'], deleteBeforeReplace: true });
    expect(cpm.diff(auto, { ...auto, path: '/srv/b', tag: 'data2' })).toMatchObject({
      replaces: ['path', 'tag'],
      deleteBeforeReplace: false,
    });
    expect(cpm.diff(auto, { ...auto, labels: { a: 'b' } })).toMatchObject({ replaces: [], diffs: ['labels'] });
  });
});

describe('labels and annotations', () => {
  test('check names the key, the value and the rule; reserved keys are refused', () => {
    const { failures } = net.check(
      urn('n'),
      {},
      { labels: { 'bad key!': 'x', ok: 'not ok!', n: 3 as any }, annotations: { [MANAGED_LABELS]: 'a', 'UPPER.example/x': 'v' } },
      'default',
    );
    const by = Object.fromEntries(failures.map((f) => [f.property, f.reason]));
    expect(by['labels["bad key!"]']).toContain('key "bad key!" must be at most 63 letters');
    expect(by['labels["ok"]']).toContain('value "not ok!" must be empty or at most 63');
    expect(by['labels["n"]']).toContain('value 3 must be a string');
    expect(by[`annotations["${MANAGED_LABELS}"]`]).toContain('is reserved for the provider');
    expect(by['annotations["UPPER.example/x"]']).toContain('must have a DNS subdomain as its prefix');
    // Unknown values (preview) are not validated.
    expect(net.check(urn('n'), {}, { name: 'n', labels: { a: UNKNOWN }, annotations: UNKNOWN }, 'default').failures).toEqual([]);
  });

  test('create: the object carries the labels, the annotations and the lists of keys the provider manages', () => {
    const obj = net.toObject({ name: 'n', namespace: 'default', labels: { app: 'x', tier: 'a' }, annotations: { note: 'hi' } });
    expect(obj.metadata.labels).toEqual({ app: 'x', tier: 'a' });
    expect(obj.metadata.annotations).toEqual({ note: 'hi', [MANAGED_LABELS]: 'app,tier', [MANAGED_ANNOTATIONS]: 'note' });
  });

  test('update merges: keys others set stay, keys the program dropped go, the managed lists follow', () => {
    const live = {
      metadata: {
        name: 'n',
        namespace: 'default',
        labels: { app: 'x', tier: 'a', 'kubectl-added': 'yes' },
        annotations: { note: 'hi', 'kubevm.dev/request': 'start', [MANAGED_LABELS]: 'app,tier', [MANAGED_ANNOTATIONS]: 'note' },
      },
    };
    const next = net.toObject({ name: 'n', namespace: 'default', labels: { app: 'y' } }, live);
    expect(next.metadata.labels).toEqual({ app: 'y', 'kubectl-added': 'yes' });
    expect(next.metadata.annotations).toEqual({
      'kubevm.dev/request': 'start',
      [MANAGED_LABELS]: 'app',
      [MANAGED_ANNOTATIONS]: '',
    });
    // An object without the lists (written by an older provider): the previous inputs say what is ours.
    const old = { metadata: { name: 'n', namespace: 'default', labels: { app: 'x', other: 'o' } } };
    expect(net.toObject({ name: 'n', namespace: 'default' }, old, { labels: { app: 'x' } }).metadata.labels).toEqual({
      other: 'o',
    });
  });

  test('read: only managed keys are inputs (no drift from keys others add); import uses the lists too', () => {
    const obj = {
      metadata: {
        name: 'n',
        namespace: 'default',
        labels: { app: 'x', 'kubectl-added': 'yes' },
        annotations: {
          [AUTONAMED]: 'true',
          'kubevm.dev/request': 'stop',
          [MANAGED_LABELS]: 'app,gone',
          [MANAGED_ANNOTATIONS]: AUTONAMED,
        },
      },
      spec: { type: 'pod' },
    };
    const like = { name: 'n', namespace: 'default', labels: { app: 'x', gone: 'g' }, annotations: { [AUTONAMED]: 'true' } };
    // A managed key removed out of band is drift (it is missing); the kubectl-added one is not an input.
    expect(net.inputsFromObject(obj, like)).toEqual({
      name: 'n',
      namespace: 'default',
      labels: { app: 'x' },
      annotations: { [AUTONAMED]: 'true' },
    });
    expect(net.inputsFromObject(obj, undefined)).toEqual({
      name: 'n',
      namespace: 'default',
      labels: { app: 'x' },
      annotations: { [AUTONAMED]: 'true' },
    });
    // Import of an object the provider never wrote: all labels, the annotations no tool wrote.
    const foreign = {
      metadata: {
        name: 'n',
        namespace: 'default',
        labels: { a: '1' },
        annotations: { mine: 'm', 'kubectl.kubernetes.io/last-applied-configuration': '{}', 'kubevm.dev/once-started': 't' },
      },
      spec: {},
    };
    expect(net.inputsFromObject(foreign, undefined)).toEqual({
      name: 'n',
      namespace: 'default',
      labels: { a: '1' },
      annotations: { mine: 'm' },
    });
  });
});
