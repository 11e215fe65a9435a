import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { LinuxBridges } from '../../controller/agent/bridges';
import { listLinks } from '../../controller/hal/common/iplink';
import { probeHost } from '../../controller/hal/qemu/host';
import { createTap, deleteTap } from '../../controller/hal/qemu/sidecars';

/**
 * The node's bridge plumbing (agent/bridges.ts) and the backend's taps, against
 * the real kernel, inside a network namespace this test creates and deletes:
 * nothing touches the node's own namespace. Needs root and iproute2.
 */
const NETNS = `kubevm-test-br-${process.pid}`;
const host = probeHost();
const usable = host.root && !!host.ip;
const it = usable ? test : test.skip;
const ip = (...args: string[]) => execFileSync('ip', ['-n', NETNS, ...args], { encoding: 'utf8' });
const names = async () => (await listLinks('ip', NETNS)).map((l) => l.name).filter((n) => n !== 'lo').sort();

beforeAll(() => {
  if (usable) execFileSync('ip', ['netns', 'add', NETNS]);
});
afterAll(() => {
  if (usable) execFileSync('ip', ['netns', 'del', NETNS]);
});

it('ensure creates an up, address-less bridge marked as kubevm-made; it is idempotent and stays in the namespace', async () => {
  const b = new LinuxBridges({ netns: NETNS });
  await b.ensure({ name: 'kvbblue', network: 'default/blue' });
  await b.ensure({ name: 'kvbblue', network: 'default/blue' });
  const [br] = (await listLinks('ip', NETNS, ['type', 'bridge'])).filter((l) => l.name === 'kvbblue');
  expect(br).toMatchObject({ kind: 'bridge', alias: 'kubevm.dev/network=default/blue', up: true, vlanFiltering: false });
  expect(JSON.parse(ip('-j', 'addr', 'show', 'dev', 'kvbblue'))[0].addr_info).toEqual([]);
  expect(fs.existsSync('/sys/class/net/kvbblue')).toBe(false);
});

it('taps: created on the bridge in the namespace; a missing bridge or a non-bridge is named in the error', async () => {
  await createTap(host, 'kvtapa', 'kvbblue', NETNS);
  expect((await listLinks('ip', NETNS, ['master', 'kvbblue'])).map((l) => l.name)).toEqual(['kvtapa']);
  await expect(createTap(host, 'kvtapb', 'nosuchbr', NETNS)).rejects.toThrow(`bridge nosuchbr does not exist on this node in network namespace ${NETNS}`);
  await expect(createTap(host, 'kvtapb', 'kvtapa', NETNS)).rejects.toThrow(/kvtapa in network namespace .* is a tun interface, not a bridge/);
  const b = new LinuxBridges({ netns: NETNS });
  await expect(b.ensure({ name: 'kvtapa', network: 'default/x' })).rejects.toThrow(/interface kvtapa .* is a tun device, not a bridge/);
});

it('prune removes unneeded kubevm bridges once they have no ports, honours every holder, and never touches an operator bridge', async () => {
  const b = new LinuxBridges({ netns: NETNS });
  await b.ensure({ name: 'kvbred', network: 'default/red' });
  ip('link', 'add', 'opbr0', 'type', 'bridge'); // the operator's: no kubevm alias
  await b.ensure({ name: 'opbr0', network: 'default/op' }); // used as it is
  expect((await listLinks('ip', NETNS, ['type', 'bridge'])).find((l) => l.name === 'opbr0')?.alias).toBeUndefined();

  // node-1 needs red; node-0 needs nothing; blue still has a tap.
  expect(await b.prune('node-1', () => new Set(['kvbred']))).toEqual({ removed: [], busy: ['kvbblue'] });
  expect(await b.prune('node-0', () => new Set())).toEqual({ removed: [], busy: ['kvbblue'] });
  await deleteTap(host, 'kvtapa', NETNS);
  expect(await b.prune('node-0', () => new Set())).toEqual({ removed: ['kvbblue'], busy: [] });
  expect(await b.prune('node-1', () => new Set())).toEqual({ removed: ['kvbred'], busy: [] });
  expect(await names()).toEqual(['opbr0']);
});

it('VLAN: the bridge filters VLANs with the Network VLAN as every port PVID, or the error names the missing kernel feature', async () => {
  const b = new LinuxBridges({ netns: NETNS });
  let supported = true;
  try {
    await b.ensure({ name: 'kvbvlan', network: 'default/v', vlan: 42 });
  } catch (e) {
    supported = false;
    expect((e as Error).message).toMatch(/Network default\/v: VLAN 42 needs bridge VLAN filtering, which this node's kernel lacks/);
  }
  if (!supported) return; // this kernel has no CONFIG_BRIDGE_VLAN_FILTERING
  expect((await listLinks('ip', NETNS, ['type', 'bridge'])).find((l) => l.name === 'kvbvlan')).toMatchObject({ vlanFiltering: true, vlanDefaultPvid: 42 });
  await createTap(host, 'kvtapv', 'kvbvlan', NETNS);
  expect(execFileSync('bridge', ['-n', NETNS, '-j', 'vlan', 'show', 'dev', 'kvtapv'], { encoding: 'utf8' })).toMatch(/"vlan":42/);
  await b.ensure({ name: 'kvbvlan', network: 'default/v', vlan: 43 }); // a changed VLAN is applied
  expect((await listLinks('ip', NETNS, ['type', 'bridge'])).find((l) => l.name === 'kvbvlan')).toMatchObject({ vlanDefaultPvid: 43 });
  await deleteTap(host, 'kvtapv', NETNS);
});
