/**
 * Re-targeting a running NIC onto another network without a restart (the MAC
 * stays, the guest is not rebooted). What QEMU 7.2 allows, measured with the
 * test guest:
 *  - `netdev_del` + `netdev_add` of the NIC's own netdev with the same id does
 *    NOT re-peer the device: the NIC keeps pointing at the deleted backend and
 *    the guest loses the network (no way in QMP 7.2 to set a realized NIC's netdev).
 *  - A tap can move to another bridge (`ip link set TAP master NEWBR`): for
 *    bridge → bridge nothing in QEMU changes at all.
 *  - A NIC that peers a hub port (`-netdev hubport`, args.ts nicHubJson) keeps
 *    that peer for life, and the backend behind the hub can be deleted and a new
 *    one added while the guest runs (tap → tap, tap → passt, passt → tap, and a
 *    new passt with other port forwards). The backend's netdev ids carry a
 *    generation number (nb-NAME-G on hub port np-NAME-G).
 *  - passt → passt (new port forwards, or a passt that died: supervise.ts) goes
 *    behind the hub too, but the old passt goes first: both would bind the same
 *    node ports, and passt silently skips a port it cannot bind.
 *  - Otherwise (a VM started with nicPlumbing 'direct', or adopted from before
 *    hubs): device_del + device_add with the same MAC in the same root port. The
 *    guest sees an unplug and a hotplug (the interface comes back, usually under
 *    the same name, without its address), not a link flap.
 * Every path drops the link (`set_link off`) around the change and raises it
 * again, so the guest sees a carrier flap and may re-run DHCP, and then
 * announces the NIC's MAC (see announce()).
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { missingCapabilities } from '../capabilities';
import { ipArgv, linkInfo } from '../common/iplink';
import { runChecked, sleep, type ProcessRecord } from '../common/process';
import type { RetargetResult } from '../migration-types';
import { HalError, type NicSpec, type PortForward } from '../types';
import { validateNic } from '../validate';
import { nicBackendId, nicBackendJson, nicDevice, nicDeviceJson, nicHubPortId, nicHubPortJson, nicNetdev, tapName } from './args';
import type { QemuInternals, Vm } from './backend';
import { passtSocket, writeState, type Layout, type SidecarRecord } from './layout';
import { createTap, deleteTap, prepareNetDir, startPasst, stopSidecar } from './sidecars';

/** passt socket of backend generation `gen` of a NIC (generation 0: the socket a fresh start uses). */
export function passtSocketFor(l: Layout, nic: string, gen: number): string {
  // NIC names are DNS labels: "name.gen" cannot be another NIC's name.
  return passtSocket(l, gen ? `${nic}.${gen}` : nic);
}

/** One NIC operation at a time per VM. */
const locks = new WeakMap<Vm, Promise<unknown>>();
function serialised<T>(vm: Vm, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(vm) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(fn);
  locks.set(vm, next);
  return next;
}

const quiet = <T>(p: Promise<T>) => p.catch(() => undefined);

export async function retargetNic(ctx: QemuInternals, uid: string, name: string, input: NicSpec): Promise<RetargetResult> {
  const vm = ctx.running(uid);
  if (vm.outgoing || vm.state.incoming)
    throw new HalError('WrongState', `VM ${uid} is migrating; re-target its NICs before or after the migration`);
  const cur = vm.state.spec.nics.find((n) => n.name === name);
  if (!cur) throw new HalError('NotFound', `NIC ${name} is not attached to VM ${uid}`);
  validateNic(input, 'nic');
  if (input.name !== name)
    throw new HalError(
      'Invalid',
      `nic.name: ${JSON.stringify(input.name)} must be ${JSON.stringify(name)} (re-targeting keeps the NIC; detach and attach to rename)`,
    );
  const mac = vm.state.macs[name];
  if (input.mac !== undefined && input.mac.toLowerCase() !== mac)
    throw new HalError('Invalid', `nic.mac: ${JSON.stringify(input.mac)} must stay ${mac} (re-targeting keeps the MAC)`);
  if ((input.model ?? 'virtio') !== (cur.model ?? 'virtio'))
    throw new HalError(
      'Unsupported',
      `nic.model: changing the model of NIC ${name} (${cur.model ?? 'virtio'} → ${input.model ?? 'virtio'}) needs a restart`,
    );
  const missing = missingCapabilities(ctx.backend, { ...vm.state.spec, nics: [input], disks: [], filesystems: [] });
  if (missing.length) throw new HalError('Unsupported', missing.join('; '));
  const next: NicSpec = { ...input, ...(cur.mac !== undefined ? { mac: cur.mac } : {}) };
  return serialised(vm, () => replumb(ctx, vm, cur, next));
}

async function replumb(ctx: QemuInternals, vm: Vm, cur: NicSpec, next: NicSpec, renewal = false): Promise<RetargetResult> {
  if (ctx.ended(vm) || !vm.qmp || vm.qmp.closed) throw new HalError('WrongState', `VM ${vm.state.spec.uid} is not running`);
  let r: RetargetResult;
  if (cur.network === 'bridge' && next.network === 'bridge' && vm.state.taps[cur.name]) r = await remaster(ctx, vm, next);
  else if (cur.network === 'pod' && next.network === 'pod' && vm.state.nicPlumbing?.[cur.name])
    r = await swapPasst(ctx, vm, cur, next);
  else if (vm.state.nicPlumbing?.[cur.name]) r = await swapBehindHub(ctx, vm, cur, next);
  else r = await replug(ctx, vm, cur, next);
  vm.state.spec.nics = vm.state.spec.nics.map((n) => (n.name === cur.name ? next : n));
  // A change asked for gives the NIC a fresh passt: supervision starts over (supervise.ts).
  const sup = vm.state.passtSupervision?.[cur.name];
  if (sup && !renewal) {
    sup.recent = [];
    delete sup.failed;
  }
  writeState(vm.layout, vm.state);
  const i = vm.status.interfaces.find((x) => x.name === cur.name);
  // An address on another network means nothing; the guest reports a new one (if it re-runs DHCP).
  if (i && (cur.network !== next.network || cur.bridge !== next.bridge)) {
    delete i.ip;
    delete i.ipSource;
  }
  ctx.nicChanged(vm, cur.name);
  ctx.emit(vm, renewal ? 'nic-backend-renewed' : 'nic-retargeted');
  return r;
}

/** Drops the NIC's link around fn, so the guest sees a carrier flap. */
async function flap<T>(vm: Vm, name: string, fn: () => Promise<T>): Promise<T> {
  await vm.qmp!.execute('set_link', { name: nicDevice(name), up: false });
  try {
    return await fn();
  } finally {
    await quiet(vm.qmp!.execute('set_link', { name: nicDevice(name), up: true }));
    await announce(vm, name);
  }
}

/**
 * Sends a gratuitous RARP from the NIC (QMP announce-self, as after a migration).
 * A new passt knows the guest's MAC only from a frame the guest sent; until then
 * it addresses the guest by broadcast, which the guest's TCP drops, so the first
 * forwarded connection after a swap stalled for seconds (3 of 7 swaps measured).
 * The announcement teaches passt the MAC (7 of 7 answered at once); bridges
 * learn the MAC on the new port the same way.
 */
async function announce(vm: Vm, name: string): Promise<void> {
  await quiet(vm.qmp!.execute('announce-self', { initial: 1, max: 1, rounds: 1, step: 1, interfaces: [nicDevice(name)] }));
  await sleep(ANNOUNCE_SETTLE_MS); // the frame leaves on a QEMU timer; let it reach the backend before callers use the NIC
}

const ANNOUNCE_SETTLE_MS = 50;

async function checkBridge(ctx: QemuInternals, vm: Vm, bridge: string): Promise<void> {
  const where = vm.state.netns ? ` in network namespace ${vm.state.netns}` : '';
  const br = await linkInfo(ctx.host.ip!, vm.state.netns, bridge);
  if (!br) throw new HalError('Failed', `bridge ${bridge} does not exist on this node${where}`);
  if (br.kind !== 'bridge') throw new HalError('Failed', `${bridge}${where} is a ${br.kind ?? 'plain'} interface, not a bridge`);
}

/** bridge → bridge: the tap moves to the new bridge; QEMU's side does not change. */
async function remaster(ctx: QemuInternals, vm: Vm, next: NicSpec): Promise<RetargetResult> {
  const tap = vm.state.taps[next.name];
  await checkBridge(ctx, vm, next.bridge!);
  await flap(vm, next.name, () =>
    runChecked(ipArgv(ctx.host.ip!, vm.state.netns, 'link', 'set', 'dev', tap, 'master', next.bridge!)),
  );
  return {
    nic: next.name,
    mac: vm.state.macs[next.name],
    method: 'in-place',
    detail: `tap ${tap} moved to bridge ${next.bridge}; the guest saw a link flap`,
  };
}

interface HostSide {
  sidecar?: SidecarRecord;
  tap?: string;
  passtSocket: string;
}

/** The host side of a new backend generation: a passt (on its own socket) or a tap on the bridge. */
async function hostSide(ctx: QemuInternals, vm: Vm, next: NicSpec, gen: number): Promise<HostSide> {
  const l = vm.layout;
  const sock = passtSocketFor(l, next.name, gen);
  if (next.network === 'pod') {
    prepareNetDir(l, ctx.host);
    const rec = await startPasst(ctx.host, l, { ...next, name: gen ? `${next.name}.${gen}` : next.name });
    return { sidecar: { ...rec, key: next.name }, passtSocket: sock };
  }
  if (next.network === 'bridge') {
    await checkBridge(ctx, vm, next.bridge!);
    const tap = tapName(`${vm.state.spec.uid}@${ctx.runRoot}`, `${next.name}.${gen}.${Date.now()}`);
    await createTap(ctx.host, tap, next.bridge!, vm.state.netns);
    return { tap, passtSocket: sock };
  }
  return { passtSocket: sock };
}

async function dropHostSide(ctx: QemuInternals, vm: Vm, h: HostSide): Promise<void> {
  if (h.sidecar) await stopSidecar(h.sidecar);
  if (h.tap) await deleteTap(ctx.host, h.tap, vm.state.netns);
}

/** Retires the current host side of a NIC (its passt, its tap) and records the new one. */
async function swapHostSide(ctx: QemuInternals, vm: Vm, name: string, h: HostSide): Promise<void> {
  const old = vm.state.sidecars.filter((s) => s.kind === 'passt' && s.key === name);
  vm.state.sidecars = vm.state.sidecars.filter((s) => !old.includes(s));
  if (h.sidecar) vm.state.sidecars.push(h.sidecar);
  for (const s of old) await stopSidecar(s);
  const oldTap = vm.state.taps[name];
  if (h.tap) vm.state.taps[name] = h.tap;
  else delete vm.state.taps[name];
  if (oldTap && oldTap !== h.tap) await deleteTap(ctx.host, oldTap, vm.state.netns);
}

/** The NIC peers a hub: a new backend behind the hub, the device untouched. */
async function swapBehindHub(ctx: QemuInternals, vm: Vm, cur: NicSpec, next: NicSpec): Promise<RetargetResult> {
  const name = cur.name;
  const p = vm.state.nicPlumbing![name];
  const gen = p.gen + 1;
  const qmp = vm.qmp!;
  const h = await hostSide(ctx, vm, next, gen);
  const oldVia = { passtSocket: passtSocketFor(vm.layout, name, p.gen), tap: vm.state.taps[name] };
  try {
    await flap(vm, name, async () => {
      await qmp.execute('netdev_del', { id: nicBackendId(name, p.gen) });
      await qmp.execute('netdev_del', { id: nicHubPortId(name, p.gen) });
      try {
        await qmp.execute('netdev_add', nicBackendJson(next, nicBackendId(name, gen), h));
        try {
          await qmp.execute('netdev_add', nicHubPortJson(name, { hub: p.hub, gen }));
        } catch (e) {
          await quiet(qmp.execute('netdev_del', { id: nicBackendId(name, gen) }));
          throw e;
        }
      } catch (e) {
        // Put the old backend back (passt accepts a new connection; the old tap still exists).
        await quiet(qmp.execute('netdev_add', nicBackendJson(cur, nicBackendId(name, p.gen), oldVia)));
        await quiet(qmp.execute('netdev_add', nicHubPortJson(name, p)));
        throw e;
      }
    });
  } catch (e) {
    await dropHostSide(ctx, vm, h);
    throw new HalError('Failed', `re-targeting NIC ${name}: ${(e as Error).message}`);
  }
  p.gen = gen;
  await swapHostSide(ctx, vm, name, h);
  return {
    nic: name,
    mac: vm.state.macs[name],
    method: 'in-place',
    detail: `backend swapped behind the NIC's hub (${describe(cur)} → ${describe(next)}); the guest saw a link flap`,
  };
}

/**
 * passt → passt behind the NIC's hub: new port forwards, or a passt that ended
 * (supervise.ts). Both passts would want the same host ports, so the old one
 * goes first (if it still runs); while the NIC's link is down, the new one starts
 * and is plugged in. When it cannot start or plug, a passt with the old forwards
 * takes its place, so the NIC keeps a network.
 */
async function swapPasst(ctx: QemuInternals, vm: Vm, cur: NicSpec, next: NicSpec): Promise<RetargetResult> {
  const name = cur.name;
  const p = vm.state.nicPlumbing![name];
  const qmp = vm.qmp!;
  await checkNewForwards(cur, next);
  let now: NicSpec | undefined;
  let err: Error | undefined;
  await flap(vm, name, async () => {
    // The old backend may be half gone already (its passt died): missing ids are fine.
    await quiet(qmp.execute('netdev_del', { id: nicBackendId(name, p.gen) }));
    await quiet(qmp.execute('netdev_del', { id: nicHubPortId(name, p.gen) }));
    const old = vm.state.sidecars.filter((s) => s.kind === 'passt' && s.key === name);
    vm.state.sidecars = vm.state.sidecars.filter((s) => !old.includes(s));
    for (const s of old) await stopSidecar(s);
    for (const nic of cur === next ? [next] : [next, cur]) {
      const gen = p.gen + 1;
      let h: HostSide | undefined;
      try {
        h = await hostSide(ctx, vm, nic, gen);
        await qmp.execute('netdev_add', nicBackendJson(nic, nicBackendId(name, gen), h));
        try {
          await qmp.execute('netdev_add', nicHubPortJson(name, { hub: p.hub, gen }));
        } catch (e) {
          await quiet(qmp.execute('netdev_del', { id: nicBackendId(name, gen) }));
          throw e;
        }
        p.gen = gen;
        vm.state.sidecars.push(h.sidecar!);
        now = nic;
        return;
      } catch (e) {
        err ??= e as Error;
        if (h) await dropHostSide(ctx, vm, h);
      }
    }
  });
  if (now !== next) {
    writeState(vm.layout, vm.state);
    throw new HalError(
      'Failed',
      `new passt for NIC ${name}: ${err?.message}; ${now ? 'the NIC is back on a passt with its old port forwards' : 'the NIC has no network backend now'}`,
    );
  }
  return {
    nic: name,
    mac: vm.state.macs[name],
    method: 'in-place',
    detail: `a new passt (${forwardsText(next)}) swapped in behind the NIC's hub; the guest saw a link flap`,
  };
}

const forwardKey = (f: PortForward) => `${f.protocol}/${f.hostAddress ?? '*'}/${f.hostPort ?? f.port}`;

function forwardsText(n: NicSpec): string {
  const f = n.portForwards ?? [];
  return f.length ? `forwards ${f.map((x) => `${x.protocol} ${x.hostPort ?? x.port}→${x.port}`).join(', ')}` : 'no port forwards';
}

/**
 * Host ports the new passt forwards that the old one did not must be free now:
 * passt skips a port it cannot bind (it only exits when none of an option's
 * ports binds), so a taken port would fail silently later.
 */
async function checkNewForwards(cur: NicSpec, next: NicSpec): Promise<void> {
  const had = new Set((cur.portForwards ?? []).map(forwardKey));
  for (const [i, f] of (next.portForwards ?? []).entries()) {
    if (had.has(forwardKey(f))) continue;
    try {
      await bindable(f);
    } catch (e) {
      throw new HalError(
        'Failed',
        `nic.portForwards[${i}]: ${f.protocol} port ${f.hostPort ?? f.port}${f.hostAddress ? ` on ${f.hostAddress}` : ''} cannot be forwarded: the node port is taken (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); the NIC is unchanged`,
      );
    }
  }
}

/**
 * A new passt for a pod NIC whose passt ended (supervise.ts), with the NIC's
 * current port forwards: swapped in behind the hub (a link flap), or re-plugged
 * for NICs without a hub. `dead` is the passt that was seen to end: when the NIC
 * has another one by now (a re-target or port change came first), nothing is done.
 */
export async function renewPasst(
  ctx: QemuInternals,
  vm: Vm,
  name: string,
  dead: ProcessRecord | undefined,
): Promise<RetargetResult | 'superseded'> {
  return serialised(vm, async () => {
    const nic = vm.state.spec.nics.find((n) => n.name === name);
    const rec = vm.state.sidecars.find((s) => s.kind === 'passt' && s.key === name);
    if (nic?.network !== 'pod') return 'superseded';
    if (rec && (!dead || rec.process.pid !== dead.pid || rec.process.startTime !== dead.startTime)) return 'superseded';
    return replumb(ctx, vm, nic, nic, true);
  });
}

function describe(n: NicSpec): string {
  return n.network === 'bridge' ? `bridge ${n.bridge}` : n.network === 'pod' ? 'pod (passt)' : 'user (slirp)';
}

/** No hub: unplug the device and plug it again with the same MAC in the same root port. */
async function replug(ctx: QemuInternals, vm: Vm, cur: NicSpec, next: NicSpec): Promise<RetargetResult> {
  const name = cur.name;
  const qmp = vm.qmp!;
  const mac = vm.state.macs[name];
  const port = vm.state.ports.find((x) => x.device === nicDevice(name))?.id;
  if (!port) throw new HalError('Failed', `NIC ${name} has no root port recorded; it cannot be re-plugged`);
  await ctx.unplug(vm, nicDevice(name));
  await quiet(qmp.execute('netdev_del', { id: nicNetdev(name) }));
  // Generation 0 paths: the old passt goes first, the new one takes its socket.
  const oldHost: HostSide = { passtSocket: passtSocketFor(vm.layout, name, 0), tap: vm.state.taps[name] };
  const plug = async (nic: NicSpec, h: HostSide) => {
    await qmp.execute('netdev_add', nicBackendJson(nic, nicNetdev(name), h));
    try {
      await qmp.execute('device_add', nicDeviceJson(nic, mac, port));
    } catch (e) {
      await quiet(qmp.execute('netdev_del', { id: nicNetdev(name) }));
      throw e;
    }
  };
  let h: HostSide | undefined;
  try {
    await swapHostSide(ctx, vm, name, { passtSocket: oldHost.passtSocket });
    h = await hostSide(ctx, vm, next, 0);
    await plug(next, h);
    await announce(vm, name);
  } catch (e) {
    if (h) await dropHostSide(ctx, vm, h);
    // Bring the old network back, so the VM keeps its NIC.
    let restored = false;
    try {
      const back = await hostSide(ctx, vm, cur, 0);
      await plug(cur, back);
      await swapHostSide(ctx, vm, name, back);
      restored = true;
    } catch {
      /* reported below */
    }
    writeState(vm.layout, vm.state);
    throw new HalError(
      'Failed',
      `re-targeting NIC ${name} (re-plug): ${(e as Error).message}; ${restored ? 'the NIC is back on its old network' : 'the NIC could not be restored and is unplugged'}`,
    );
  }
  await swapHostSide(ctx, vm, name, h);
  return {
    nic: name,
    mac,
    method: 'replug',
    detail: `device re-plugged in ${port} with MAC ${mac} (${describe(cur)} → ${describe(next)}; this VM's NICs peer their backend directly, so the guest saw a hotplug)`,
  };
}

/**
 * After an incoming migration: a pod NIC whose passt had to start without its
 * port forwards (the source's passt held the ports) gets a passt with them as
 * soon as the ports are free, swapped in behind the NIC. Tries for a minute.
 */
export async function completeForwards(ctx: QemuInternals, vm: Vm, name: string, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const nic = vm.state.spec.nics.find((n) => n.name === name);
    if (!nic || ctx.ended(vm)) return;
    try {
      // Only touch the NIC once the ports can be had (a re-plug must not repeat).
      for (const f of nic.portForwards ?? []) await bindable(f);
      await serialised(vm, () => replumb(ctx, vm, nic, nic));
      ctx.emit(vm, 'nic-forwards-ready');
      return;
    } catch (e) {
      if (Date.now() > end) {
        vm.status.message = `NIC ${name}: port forwards not active after the migration: ${(e as Error).message}`;
        ctx.emit(vm, 'nic-forwards-failed');
        return;
      }
      await sleep(250);
    }
  }
}

/** Resolves when the forwarded host port can be bound (nothing holds it), else rejects. */
function bindable(f: PortForward): Promise<void> {
  const port = f.hostPort ?? f.port;
  const address = f.hostAddress ?? '0.0.0.0';
  return new Promise((resolve, reject) => {
    if (f.protocol === 'udp') {
      const s = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
      s.once('error', (e) => (s.close(), reject(e)));
      s.bind(port, address, () => s.close(() => resolve()));
      return;
    }
    const s = net.createServer();
    s.once('error', reject);
    s.listen(port, address, () => s.close(() => resolve()));
  });
}
