/**
 * Supervision of the pod NICs' passt processes (one passt per NIC).
 *
 * When a passt ends while its VM runs (a crash, `kill -9`, the OOM killer),
 * QEMU reports the NIC's stream netdev disconnected (`NETDEV_STREAM_DISCONNECTED`)
 * and, QEMU 7.2 being unable to reconnect a stream netdev, the NIC would stay
 * dead until the VM restarts. The backend instead starts a new passt with the
 * NIC's port forwards and plugs it in behind the NIC's hub (retarget.ts
 * renewPasst): the guest sees a link flap, keeps its address (passt leases the
 * same one) and is not rebooted. NICs without a hub (`nicPlumbing: 'direct'`)
 * are re-plugged instead (the guest sees a hotplug).
 *
 * Back-off: the first restart is immediate; each further restart within the
 * window waits twice as long (1 s, 2 s, 4 s … up to 30 s). Bound: after
 * `maxRestarts` restarts within the window the backend gives up, the NIC's
 * status says `Failed` and the VM's message says why; a change of the NIC's
 * port forwards (or a re-target) gives it a fresh passt and starts over.
 *
 * The restart history lives in the VM state (`passtSupervision`), so an agent
 * that adopts the VM continues the count; adoption also checks every passt,
 * since one that ended while no agent listened sent its event to nobody.
 */
import { isSameProcess, sleep, type ProcessRecord } from '../common/process';
import { nicBackendId, nicNetdev } from './args';
import type { QemuInternals, Vm } from './backend';
import { writeState, type PasstSupervision, type SidecarRecord } from './layout';
import { renewPasst } from './retarget';

export interface PasstRestartPolicy {
  /** Restarts within `windowMs` after which the backend gives up (default 5). */
  maxRestarts?: number;
  /** The window the bound counts in, ms (default 10 minutes). */
  windowMs?: number;
  /** Wait before the second restart in the window, doubling for each further one (default 1000 ms). */
  backoffMs?: number;
  /** Longest wait between restarts (default 30 s). */
  maxBackoffMs?: number;
}

const DEFAULTS: Required<PasstRestartPolicy> = { maxRestarts: 5, windowMs: 10 * 60_000, backoffMs: 1_000, maxBackoffMs: 30_000 };

/** Wait before a restart when `recent` restarts happened within the window. */
export function passtBackoffMs(recent: number, policy: PasstRestartPolicy = {}): number {
  const p = { ...DEFAULTS, ...policy };
  return recent <= 0 ? 0 : Math.min(p.backoffMs * 2 ** (recent - 1), p.maxBackoffMs);
}

/** NICs being restarted, per VM. */
const restarting = new WeakMap<Vm, Set<string>>();

function passtOf(vm: Vm, name: string): SidecarRecord | undefined {
  return vm.state.sidecars.find((s) => s.kind === 'passt' && s.key === name);
}

/** The netdev QEMU names when the NIC's current backend disconnects. */
function currentNetdev(vm: Vm, name: string): string {
  const p = vm.state.nicPlumbing?.[name];
  return p ? nicBackendId(name, p.gen) : nicNetdev(name);
}

function record(vm: Vm, name: string): PasstSupervision {
  vm.state.passtSupervision ??= {};
  return (vm.state.passtSupervision[name] ??= { restarts: 0, recent: [] });
}

function saveState(vm: Vm): void {
  try {
    writeState(vm.layout, vm.state);
  } catch {
    /* run dir removed under us */
  }
}

/**
 * Brings the interface status of one NIC in line with the VM state: for a pod
 * NIC the passt state, its restart count and, unless the guest reported its own
 * address, the address passt leases.
 */
export function syncNicStatus(vm: Vm, name: string): void {
  const i = vm.status.interfaces.find((x) => x.name === name);
  if (!i) return;
  const nic = vm.state.spec.nics.find((n) => n.name === name);
  if (nic?.network !== 'pod') {
    delete i.passt;
    delete i.passtRestarts;
    if (i.ipSource === 'passt') {
      delete i.ip;
      delete i.ipSource;
    }
    return;
  }
  const sup = vm.state.passtSupervision?.[name];
  i.passt = restarting.get(vm)?.has(name) ? 'Restarting' : sup?.failed ? 'Failed' : 'Running';
  if (sup?.restarts) i.passtRestarts = sup.restarts;
  else delete i.passtRestarts;
  const lease = passtOf(vm, name)?.lease;
  if (lease && i.ipSource !== 'guest') {
    i.ip = lease;
    i.ipSource = 'passt';
  }
}

/** QMP NETDEV_STREAM_DISCONNECTED: if it is the current backend of a pod NIC, its passt went away. */
export function onStreamDisconnected(ctx: QemuInternals, vm: Vm, netdevId: string, policy?: PasstRestartPolicy): void {
  const nic = vm.state.spec.nics.find((n) => n.network === 'pod' && currentNetdev(vm, n.name) === netdevId);
  if (!nic) return; // a backend that was just swapped out
  superviseNic(ctx, vm, nic.name, `its passt went away (network backend ${netdevId} disconnected)`, policy);
}

/** After adoption: pod NICs whose passt ended while no agent was listening. */
export function checkPassts(ctx: QemuInternals, vm: Vm, policy?: PasstRestartPolicy): void {
  for (const n of vm.state.spec.nics) {
    if (n.network !== 'pod') continue;
    const rec = passtOf(vm, n.name);
    if (vm.state.passtSupervision?.[n.name]?.failed) continue;
    if (!rec || !isSameProcess(rec.process)) superviseNic(ctx, vm, n.name, 'its passt ended while no agent was watching', policy);
  }
}

/** Whether the VM no longer wants its NICs restarted. */
function finished(ctx: QemuInternals, vm: Vm): boolean {
  return ctx.ended(vm) || vm.detached || !!vm.state.stopRequested || !!vm.state.migratedTo;
}

/** Restarts a NIC's passt with back-off until one runs, the bound is reached, or the VM ends. */
export function superviseNic(ctx: QemuInternals, vm: Vm, name: string, why: string, policy: PasstRestartPolicy = {}): void {
  if (finished(ctx, vm)) return;
  const set = restarting.get(vm) ?? new Set<string>();
  restarting.set(vm, set);
  if (set.has(name)) return;
  set.add(name);
  const p = { ...DEFAULTS, ...policy };
  const dead: ProcessRecord | undefined = passtOf(vm, name)?.process;
  vm.status.message = `NIC ${name}: ${why}; restarting it`;
  syncNicStatus(vm, name);
  ctx.emit(vm, 'nic-backend-lost');
  void (async () => {
    let last = why;
    let outcome: 'restarted' | 'failed' | undefined;
    try {
      for (;;) {
        // A migration owns the VM's devices until it ends; an outgoing one that succeeds ends the VM.
        while ((vm.outgoing || vm.state.incoming) && !finished(ctx, vm)) await sleep(250);
        if (finished(ctx, vm)) return;
        const sup = record(vm, name);
        const now = Date.now();
        sup.recent = sup.recent.filter((t) => now - t < p.windowMs);
        if (sup.recent.length >= p.maxRestarts) {
          sup.failed = `its passt ended ${sup.recent.length + 1} times within ${Math.round(p.windowMs / 1000)} s; not restarted again (last: ${last})`;
          vm.status.message = `NIC ${name}: ${sup.failed}; the NIC has no network until the VM restarts or its port forwards change`;
          saveState(vm);
          outcome = 'failed';
          return;
        }
        await sleep(passtBackoffMs(sup.recent.length, p));
        if (finished(ctx, vm)) return;
        sup.recent.push(Date.now());
        try {
          const r = await renewPasst(ctx, vm, name, dead);
          if (r === 'superseded') return; // re-targeted or given new forwards meanwhile
          sup.restarts++;
          delete sup.failed;
          vm.status.message = `NIC ${name}: ${why}; a new passt was started (${r.method === 'replug' ? 'the NIC re-plugged' : "behind the NIC's hub"}), restart ${sup.restarts}`;
          saveState(vm);
          outcome = 'restarted';
          return;
        } catch (e) {
          last = (e as Error).message;
          vm.status.message = `NIC ${name}: restarting its passt failed: ${last}`;
          saveState(vm);
        }
      }
    } finally {
      set.delete(name);
      if (!ctx.ended(vm) && !vm.detached) {
        syncNicStatus(vm, name);
        ctx.emit(
          vm,
          outcome === 'failed'
            ? 'nic-backend-failed'
            : outcome === 'restarted'
              ? 'nic-backend-restarted'
              : 'nic-backend-superseded',
        );
      }
    }
  })();
}
