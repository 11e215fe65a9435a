import * as fs from 'node:fs';
import * as path from 'node:path';
import { missingCapabilities } from '../capabilities';
import { checkNetnsName, netnsExists } from '../common/iplink';
import { confinePath } from '../common/paths';
import { qemuEnv } from './malloc';
import { isAlive, isSameProcess, recordOf, signalRecorded, spawnDetached, tail, waitGone } from '../common/process';
import { QmpClient, type QmpEvent } from '../common/qmp';
import {
  HalError,
  type Backend,
  type Capability,
  type DiskSpec,
  type FilesystemSpec,
  type NicSpec,
  type StatusListener,
  type StopOptions,
  type VmSpec,
  type VmStatus,
} from '../types';
import { validateDisk, validateFilesystem, validateNic, validateSpec } from '../validate';
import {
  blockdevJson,
  buildQemuCommand,
  defaultMac,
  diskDevice,
  diskDeviceJson,
  diskNode,
  fsChardev,
  fsDevice,
  nicDevice,
  nicDeviceJson,
  nicNetdevIds,
  nicNetdevsJson,
  tapName,
  virtiofsDeviceJson,
} from './args';
import { ConsoleFollower, parseNicMarker, parseReadyMarker } from './console';
import { probeHost, type HostInfo } from './host';
import { layoutFor, readState, virtiofsSocket, writeState, type Layout, type SidecarRecord, type VmState } from './layout';
import { needsSeed, seedFiles, writeSeed } from './seed';
import { createTap, deleteTap, prepareNetDir, startPasst, startVirtiofsd, stopSidecar } from './sidecars';
import type {
  IncomingMigration,
  IncomingOptions,
  MigrateOptions,
  MigrationResult,
  MigrationSource,
  RetargetResult,
} from '../migration-types';
import type { NicPlumbing } from './layout';
import * as migration from './migration';
import * as retarget from './retarget';
import { checkPassts, onStreamDisconnected, syncNicStatus, type PasstRestartPolicy } from './supervise';
import type {
  BackupRequest,
  BackupResult,
  BackupSource,
  DiskTracking,
  RestoreRequest,
  RestoreResult,
  VerifyResult,
  MergeRequest,
  MergeResult,
} from '../backup-types';
import { QemuBackups } from './backup';
import { diskForQemu, specForQemu } from './cbt';

export interface QemuBackendOptions {
  /** Directory holding one run directory per VM (keep it short: unix socket paths live there). */
  runRoot: string;
  /** Host directories filesystems may share from; empty refuses every share. */
  allowedRoots?: string[];
  /** Spare pcie-root-ports per VM for hotplug (default 4; a spec's hotplugSlots overrides it). */
  hotplugPorts?: number;
  /**
   * How NICs reach their backend. `hub` (default): through a QEMU hub per NIC, so
   * retargetNic swaps the backend in place (the guest sees a link flap) between any
   * network kinds; costs the tap's offloads (vnet_hdr), which a hub does not pass.
   * `direct`: the NIC peers its backend (tap offloads kept); retargetNic then moves
   * taps between bridges in place and re-plugs the device for other changes.
   */
  nicPlumbing?: 'hub' | 'direct';
  /** Filesystem transport; auto = virtiofs when root and virtiofsd exist, else 9p. */
  fsDriver?: 'auto' | 'virtiofs' | '9p';
  /** Acceleration; auto = kvm when usable (see host.ts), else tcg. */
  accel?: 'auto' | 'kvm' | 'tcg';
  /** How long start() waits for QMP (default 30 s: a loaded 2-core node is slow). */
  startTimeoutMs?: number;
  /** Default ACPI grace period for stop() (default 30 s). */
  stopGraceMs?: number;
  /**
   * Named network namespace (`ip netns add NAME`) for this node's VMs: QEMU is
   * started as `ip netns exec NAME qemu-system-x86_64 …` (exec, so the pid is
   * QEMU's) and bridge NIC taps are created there (`ip -n NAME …`). The bridges
   * must exist in that namespace. pod NICs are unaffected (passt stays in the
   * node's namespace; QEMU reaches it over a unix socket); QEMU user networking
   * and its port forwards live inside the namespace. Needs root and iproute2.
   */
  netns?: string;
  /**
   * pod NICs: how a passt that ended while its VM runs is restarted (back-off and
   * bound; qemu/supervise.ts). Default: at once, then 1 s, 2 s, 4 s …, giving up
   * after 5 restarts within 10 minutes.
   */
  passtRestart?: PasstRestartPolicy;
  /** Host probe overrides (tests). */
  host?: Partial<HostInfo>;
}

/** Runtime of one VM this backend instance drives (also used by migration.ts and retarget.ts). */
export interface Vm {
  state: VmState;
  layout: Layout;
  status: VmStatus;
  qmp?: QmpClient;
  console?: ConsoleFollower;
  /** Last SHUTDOWN event: tells a guest poweroff from a host quit or signal. */
  shutdown?: { guest: boolean; reason: string };
  /** Resolves once the VM has ended and been accounted for. */
  ended: Promise<void>;
  markEnded: () => void;
  /** Set by close(): events of a process we let go of are ignored. */
  detached: boolean;
  /** An outgoing live migration in progress (migration.ts). */
  outgoing?: migration.OutgoingMigration;
}

/** What migration.ts and retarget.ts use of a backend instance's internals. */
export interface QemuInternals {
  backend: QemuBackend;
  host: HostInfo;
  runRoot: string;
  vms: Map<string, Vm>;
  get(uid: string): Vm;
  running(uid: string): Vm;
  ended(vm: Vm): boolean;
  launch(spec: VmSpec, incoming?: migration.IncomingLaunch): Promise<VmStatus>;
  emit(vm: Vm, change: string): void;
  setPhase(vm: Vm, phase: VmStatus['phase'], reason: string | undefined, change: string): void;
  unplug(vm: Vm, id: string, timeoutMs?: number): Promise<void>;
  /** A NIC's backend changed (re-target, new passt): refresh its interface status. */
  nicChanged(vm: Vm, name: string): void;
}

const DEFAULT_HOTPLUG_PORTS = 4;

function writeStateQuietly(vm: Vm): void {
  try {
    writeState(vm.layout, vm.state);
  } catch {
    /* run dir removed under us: the in-memory status still holds */
  }
}

export class QemuBackend implements Backend {
  readonly name = 'qemu' as const;
  readonly host: HostInfo;
  readonly fsDriver: 'virtiofs' | '9p';
  readonly accel: 'kvm' | 'tcg';
  /** Network namespace of this node's VMs (see QemuBackendOptions.netns). */
  readonly netns?: string;
  private readonly caps: Capability[];
  private readonly vms = new Map<string, Vm>();
  private readonly listeners = new Set<StatusListener>();

  constructor(private readonly opts: QemuBackendOptions) {
    this.host = probeHost(opts.host);
    const virtiofsOk = this.host.root && !!this.host.virtiofsd && !!this.host.unshare && !!this.host.nsenter;
    this.fsDriver = opts.fsDriver === '9p' || (opts.fsDriver !== 'virtiofs' && !virtiofsOk) ? '9p' : 'virtiofs';
    this.accel = opts.accel === 'tcg' || (opts.accel !== 'kvm' && !this.host.kvm) ? 'tcg' : 'kvm';
    if (opts.netns !== undefined) {
      try {
        checkNetnsName(opts.netns);
      } catch (e: any) {
        throw new HalError('Invalid', e.message);
      }
      if (!this.host.ip || !this.host.root)
        throw new HalError('Invalid', `netns ${opts.netns}: running VMs in a network namespace needs root and the ip command (iproute2)`);
    }
    this.netns = opts.netns;
    const caps: Capability[] = [
      'lifecycle',
      'pause',
      'adopt',
      'serial-console',
      'direct-kernel-boot',
      'cloud-init-nocloud',
      'disk-qcow2',
      'disk-raw',
      'network-user',
      'port-forward',
      'filesystem',
      'hotplug-disk',
      'hotplug-nic',
    ];
    if (this.host.passt) caps.push('network-pod');
    if (this.host.root && this.host.ip) caps.push('network-bridge');
    if (this.fsDriver === 'virtiofs') caps.push('hotplug-filesystem');
    if (this.accel === 'kvm') caps.push('accel-kvm');
    caps.push('live-migration', 'block-migration', 'nic-retarget');
    caps.push('backup-cbt'); // qemu-img and QMP bitmaps; offline backup also needs qemu-storage-daemon
    this.caps = caps;
    fs.mkdirSync(opts.runRoot, { recursive: true, mode: 0o711 });
  }

  capabilities(): readonly Capability[] {
    return this.caps;
  }

  // ---------------------------------------------------------------- lifecycle

  async start(input: VmSpec): Promise<VmStatus> {
    return this.launch(input);
  }

  /** start(), and with `incoming` the target of a live migration (prepareIncoming in migration.ts). */
  private async launch(input: VmSpec, incoming?: migration.IncomingLaunch): Promise<VmStatus> {
    validateSpec(input);
    const missing = missingCapabilities(this, input);
    if (missing.length) throw new HalError('Unsupported', missing.join('; '));
    const known = this.vms.get(input.uid);
    if (known)
      throw new HalError(
        'AlreadyExists',
        this.ended(known)
          ? `VM ${input.uid} has ended; cleanup() it before starting that uid again`
          : `VM ${input.uid} is already running`,
      );
    let l: Layout;
    try {
      l = layoutFor(this.opts.runRoot, input.uid);
    } catch (e: any) {
      throw new HalError('Invalid', e.message);
    }
    if (this.netns && !netnsExists(this.netns))
      throw new HalError('Failed', `network namespace ${this.netns} does not exist (create it with: ip netns add ${this.netns})`);
    const old = readState(l);
    if (old?.qemu && isSameProcess(old.qemu))
      throw new HalError('AlreadyExists', `VM ${input.uid} is already running (pid ${old.qemu.pid}); adopt it instead`);

    // Resolve share paths now: QEMU/virtiofsd get the real path that was checked.
    const spec: VmSpec = structuredClone(input);
    for (const [i, f] of spec.filesystems.entries()) {
      try {
        f.hostPath = confinePath(f.hostPath, { allowedRoots: this.opts.allowedRoots ?? [] });
      } catch (e: any) {
        throw new HalError('Invalid', `spec.filesystems[${i}].hostPath: ${e.message}`);
      }
    }

    // A stale run directory of an ended incarnation holds only our own files
    // (read-only binds live in private namespaces, never under it).
    if (old) await this.stopHelpers(old);
    fs.rmSync(l.dir, { recursive: true, force: true });
    fs.mkdirSync(l.dir, { recursive: true, mode: 0o711 });
    const macs = Object.fromEntries(spec.nics.map((n) => [n.name, (n.mac ?? defaultMac(spec.uid, n.name)).toLowerCase()]));
    const taps = Object.fromEntries(
      // A migration target's taps must not collide with the source's (both may be on this machine).
      spec.nics
        .filter((n) => n.network === 'bridge')
        .map((n) => [n.name, tapName(incoming ? `${spec.uid}@${this.opts.runRoot}` : spec.uid, n.name)]),
    );
    const nicPlumbing: Record<string, NicPlumbing> | undefined =
      this.opts.nicPlumbing === 'direct' ? undefined : Object.fromEntries(spec.nics.map((n, i) => [n.name, { hub: i, gen: 0 }]));
    const seed = needsSeed(spec);
    if (seed) writeSeed(l.seedDir, seedFiles(spec, this.fsDriver));
    if (seed && incoming?.seedMtimeMs) migration.setSeedMtime(l.seedDir, incoming.seedMtimeMs);
    // A raw disk with changeTracking opens through its metadata overlay (qemu/cbt.ts).
    const cmd = buildQemuCommand(await specForQemu(spec), l, {
      qemu: this.host.qemu,
      accel: this.accel,
      fsDriver: this.fsDriver,
      hotplugPorts: spec.hotplugSlots ?? this.opts.hotplugPorts ?? DEFAULT_HOTPLUG_PORTS,
      ...(nicPlumbing ? { nicPlumbing } : {}),
      ...(incoming ? { incoming: true, placement: incoming.placement } : {}),
      seed,
      macs,
      taps,
      ...(this.netns ? { launcher: [this.host.ip!, 'netns', 'exec', this.netns] } : {}),
    });
    const state: VmState = {
      version: 1,
      spec,
      argv: cmd.argv,
      sidecars: [],
      ports: cmd.ports,
      macs,
      taps,
      ...(this.netns ? { netns: this.netns } : {}),
      accel: this.accel,
      fsDriver: this.fsDriver,
      createdAt: Date.now(),
      ...(nicPlumbing ? { nicPlumbing } : {}),
      ...(incoming ? { incoming: incoming.state } : {}),
      ...(incoming?.guest?.readyAt ? { guestReadyAt: incoming.guest.readyAt } : {}),
    };
    const vm = this.track(state, l);
    vm.status.consoleLog = l.consoleLog;
    vm.status.consoleSocket = l.consoleSocket;
    if (incoming?.guest) {
      // The target's console starts empty: what the guest reported on the source carries over.
      // An address passt leased there is the one the guest holds (until it renews its lease here).
      vm.status.guestHostname = incoming.guest.hostname;
      for (const i of vm.status.interfaces) {
        i.ip = incoming.guest.interfaces.find((x) => x.mac === i.mac)?.ip;
        if (i.ip) i.ipSource = 'guest';
      }
    }
    this.emit(vm, 'created');

    try {
      // Helpers first: QEMU connects to their sockets while it starts.
      if (spec.nics.some((n) => n.network === 'pod')) prepareNetDir(l, this.host);
      for (const n of spec.nics) {
        if (n.network === 'pod') state.sidecars.push(await (incoming ? incoming.startPasst(l, n) : startPasst(this.host, l, n)));
        if (n.network === 'bridge') await createTap(this.host, taps[n.name], n.bridge!, this.netns);
      }
      if (this.fsDriver === 'virtiofs')
        for (const f of spec.filesystems) state.sidecars.push(await startVirtiofsd(this.host, l, f));
      writeState(l, state);
      for (const n of spec.nics) syncNicStatus(vm, n.name); // pod NICs: passt's lease

      const p = spawnDetached(cmd.argv, { logPath: l.qemuLog, cwd: l.dir, env: qemuEnv() });
      // -pidfile's argument is verbatim in argv (no keyval escaping): a reliable marker.
      state.qemu = recordOf(p.pid, l.pidFile);
      writeState(l, state);
      vm.status.pid = p.pid;
      let exited = false;
      p.exited.then((r) => {
        exited = true;
        if (!vm.detached) void this.onExit(vm, r.code, r.signal);
      });

      const qmp = await QmpClient.connect(l.qmpSocket, { timeoutMs: this.opts.startTimeoutMs ?? 30_000, alive: () => !exited });
      await this.attachQmp(vm, qmp);
      if (incoming) await incoming.afterQmp(vm);
      state.qmpReadyAt = vm.status.qmpReadyAt = Date.now();
      writeState(l, state);
      this.followConsole(vm);
      this.emit(vm, incoming ? 'incoming-ready' : 'qmp-ready');
      return { ...vm.status };
    } catch (e: any) {
      // Leave nothing running; the run directory stays for inspection until cleanup().
      const why = `${e?.message ?? e}${tail(l.qemuLog, 800) ? `; qemu.log: ${tail(l.qemuLog, 800)}` : ''}`;
      if (!this.ended(vm)) {
        // Before the kill, so onExit sees an ended VM and keeps this reason.
        vm.status.phase = 'Failed';
        vm.status.reason = 'StartFailed';
        vm.status.message = why;
        vm.markEnded();
        this.emit(vm, 'start-failed');
      }
      if (state.qemu) signalRecorded(state.qemu, 'SIGKILL');
      await this.stopHelpers(state);
      throw new HalError('Failed', `starting VM ${spec.name} (${spec.uid}) failed: ${why}`);
    }
  }

  async stop(uid: string, opts: StopOptions = {}): Promise<VmStatus> {
    const vm = this.get(uid);
    if (this.ended(vm)) return { ...vm.status };
    const graceMs = opts.graceMs ?? this.opts.stopGraceMs ?? 30_000;
    const paused = vm.status.phase === 'Paused';
    this.requestStop(vm, 'stop');
    const ended = vm.ended.then(() => true);
    const within = (ms: number) => Promise.race([ended, new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    // A paused guest cannot see the power button: skip straight to quit.
    if (!paused && graceMs > 0) {
      await vm.qmp?.execute('system_powerdown').catch(() => undefined);
      if (await within(graceMs)) return { ...vm.status };
    }
    await vm.qmp?.execute('quit').catch(() => undefined);
    if (await within(5_000)) return { ...vm.status };
    return this.kill(uid);
  }

  async kill(uid: string): Promise<VmStatus> {
    const vm = this.get(uid);
    if (this.ended(vm)) return { ...vm.status };
    if (!vm.state.stopRequested) this.requestStop(vm, 'kill');
    if (vm.state.qemu) signalRecorded(vm.state.qemu, 'SIGKILL');
    await vm.ended;
    return { ...vm.status };
  }

  async pause(uid: string): Promise<VmStatus> {
    const vm = this.running(uid);
    await vm.qmp!.execute('stop');
    this.setPhase(vm, 'Paused', 'Paused', 'paused');
    return { ...vm.status };
  }

  async resume(uid: string): Promise<VmStatus> {
    const vm = this.running(uid);
    await vm.qmp!.execute('cont');
    this.setPhase(vm, 'Running', undefined, 'resumed');
    return { ...vm.status };
  }

  status(uid: string): VmStatus | undefined {
    const vm = this.vms.get(uid);
    return vm && { ...vm.status, interfaces: vm.status.interfaces.map((i) => ({ ...i })) };
  }

  list(): VmStatus[] {
    return [...this.vms.keys()].map((u) => this.status(u)!);
  }

  observe(listener: StatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runs a QMP command on a VM (for callers that need more than the HAL offers, and tests). */
  qmp<T = any>(uid: string, command: string, args?: Record<string, unknown>): Promise<T> {
    const vm = this.get(uid);
    if (!vm.qmp || vm.qmp.closed) throw new HalError('WrongState', `VM ${uid} has no QMP connection`);
    return vm.qmp.execute<T>(command, args);
  }

  // ---------------------------------------------------------------- live migration and NIC re-targeting
  // (migration.ts, retarget.ts; the API summary is at the top of migration.ts)

  migrationSource(uid: string): Promise<MigrationSource> {
    return migration.migrationSource(this.internals(), uid);
  }

  prepareIncoming(spec: VmSpec, opts: IncomingOptions = {}): Promise<IncomingMigration> {
    return migration.prepareIncoming(this.internals(), spec, opts);
  }

  migrate(uid: string, opts: MigrateOptions): Promise<MigrationResult> {
    return migration.migrate(this.internals(), uid, opts);
  }

  cancelMigration(uid: string): Promise<void> {
    return migration.cancelMigration(this.internals(), uid);
  }

  abortIncoming(uid: string): Promise<void> {
    return migration.abortIncoming(this.internals(), uid);
  }

  retargetNic(uid: string, nicName: string, nic: NicSpec): Promise<RetargetResult> {
    return retarget.retargetNic(this.internals(), uid, nicName, nic);
  }

  private internals(): QemuInternals {
    return {
      backend: this,
      host: this.host,
      runRoot: this.opts.runRoot,
      vms: this.vms,
      get: (uid) => this.get(uid),
      running: (uid) => this.running(uid),
      ended: (vm) => this.ended(vm),
      launch: (spec, incoming) => this.launch(spec, incoming),
      emit: (vm, change) => this.emit(vm, change),
      setPhase: (vm, phase, reason, change) => this.setPhase(vm, phase, reason, change),
      unplug: (vm, id, timeoutMs) => this.unplug(vm, id, timeoutMs),
      nicChanged: (vm, name) => syncNicStatus(vm, name),
    };
  }

  // ---------------------------------------------------------------- hotplug

  async attachDisk(uid: string, disk: DiskSpec): Promise<void> {
    const vm = this.running(uid);
    validateDisk(disk, 'disk');
    if (disk.bus !== 'virtio')
      throw new HalError('Unsupported', `disk ${disk.name}: only bus virtio can be hotplugged (got ${disk.bus})`);
    if (vm.state.spec.disks.some((d) => d.name === disk.name))
      throw new HalError('AlreadyExists', `disk ${disk.name} is already attached`);
    const port = this.takePort(vm, diskDevice(disk.name));
    try {
      await vm.qmp!.execute('blockdev-add', blockdevJson(await diskForQemu(disk)));
      try {
        await vm.qmp!.execute('device_add', diskDeviceJson(disk, port));
      } catch (e) {
        await vm.qmp!.execute('blockdev-del', { 'node-name': diskNode(disk.name) }).catch(() => undefined);
        throw e;
      }
    } catch (e) {
      this.freePort(vm, diskDevice(disk.name));
      throw new HalError('Failed', `attaching disk ${disk.name}: ${(e as Error).message}`);
    }
    vm.state.spec.disks.push(disk);
    writeState(vm.layout, vm.state);
  }

  async detachDisk(uid: string, name: string): Promise<void> {
    const vm = this.running(uid);
    const disk = vm.state.spec.disks.find((d) => d.name === name);
    if (!disk) throw new HalError('NotFound', `disk ${name} is not attached to VM ${uid}`);
    if (disk.bus !== 'virtio') throw new HalError('Unsupported', `disk ${name}: only bus virtio can be unplugged`);
    await this.unplug(vm, diskDevice(name));
    await vm.qmp!.execute('blockdev-del', { 'node-name': diskNode(name) });
    this.freePort(vm, diskDevice(name));
    vm.state.spec.disks = vm.state.spec.disks.filter((d) => d.name !== name);
    writeState(vm.layout, vm.state);
  }

  async attachNic(uid: string, nic: NicSpec): Promise<void> {
    const vm = this.running(uid);
    validateNic(nic, 'nic');
    if (vm.state.spec.nics.some((n) => n.name === nic.name))
      throw new HalError('AlreadyExists', `NIC ${nic.name} is already attached`);
    const missing = missingCapabilities(this, { ...vm.state.spec, nics: [nic], disks: [], filesystems: [] });
    if (missing.length) throw new HalError('Unsupported', missing.join('; '));
    const mac = (nic.mac ?? defaultMac(uid, nic.name)).toLowerCase();
    const l = vm.layout;
    const port = this.takePort(vm, nicDevice(nic.name));
    const hubs = Object.values(vm.state.nicPlumbing ?? {}).map((p) => p.hub);
    const plumbing: NicPlumbing | undefined = vm.state.nicPlumbing ? { hub: Math.max(-1, ...hubs) + 1, gen: 0 } : undefined;
    let sidecar: SidecarRecord | undefined;
    try {
      if (nic.network === 'pod') {
        prepareNetDir(l, this.host);
        sidecar = await startPasst(this.host, l, nic);
      }
      if (nic.network === 'bridge') {
        vm.state.taps[nic.name] = tapName(uid, nic.name);
        await createTap(this.host, vm.state.taps[nic.name], nic.bridge!, vm.state.netns);
      }
      const added: string[] = [];
      try {
        for (const nd of nicNetdevsJson(nic, l, vm.state.taps, plumbing)) {
          await vm.qmp!.execute('netdev_add', nd);
          added.unshift(String(nd.id));
        }
        await vm.qmp!.execute('device_add', nicDeviceJson(nic, mac, port));
      } catch (e) {
        for (const id of added) await vm.qmp!.execute('netdev_del', { id }).catch(() => undefined);
        throw e;
      }
    } catch (e) {
      this.freePort(vm, nicDevice(nic.name));
      if (sidecar) await stopSidecar(sidecar);
      if (vm.state.taps[nic.name]) await deleteTap(this.host, vm.state.taps[nic.name], vm.state.netns);
      delete vm.state.taps[nic.name];
      throw new HalError('Failed', `attaching NIC ${nic.name}: ${(e as Error).message}`);
    }
    if (sidecar) vm.state.sidecars.push(sidecar);
    if (plumbing) vm.state.nicPlumbing![nic.name] = plumbing;
    vm.state.macs[nic.name] = mac;
    vm.state.spec.nics.push(nic);
    vm.status.interfaces.push({ name: nic.name, mac });
    delete vm.state.passtSupervision?.[nic.name]; // a NIC of an earlier name starts afresh
    syncNicStatus(vm, nic.name);
    writeState(l, vm.state);
    this.emit(vm, 'nic-attached');
  }

  async detachNic(uid: string, name: string): Promise<void> {
    const vm = this.running(uid);
    const nic = vm.state.spec.nics.find((n) => n.name === name);
    if (!nic) throw new HalError('NotFound', `NIC ${name} is not attached to VM ${uid}`);
    await this.unplug(vm, nicDevice(name));
    for (const id of nicNetdevIds(name, vm.state.nicPlumbing?.[name])) await vm.qmp!.execute('netdev_del', { id });
    delete vm.state.nicPlumbing?.[name];
    this.freePort(vm, nicDevice(name));
    for (const s of vm.state.sidecars.filter((s) => s.kind === 'passt' && s.key === name)) await stopSidecar(s);
    vm.state.sidecars = vm.state.sidecars.filter((s) => !(s.kind === 'passt' && s.key === name));
    if (vm.state.taps[name]) await deleteTap(this.host, vm.state.taps[name], vm.state.netns);
    delete vm.state.taps[name];
    delete vm.state.passtSupervision?.[name];
    vm.state.spec.nics = vm.state.spec.nics.filter((n) => n.name !== name);
    vm.status.interfaces = vm.status.interfaces.filter((i) => i.name !== name);
    writeState(vm.layout, vm.state);
    this.emit(vm, 'nic-detached');
  }

  async mountPath(uid: string, f: FilesystemSpec): Promise<void> {
    const vm = this.running(uid);
    validateFilesystem(f, 'filesystem');
    if (this.fsDriver !== 'virtiofs')
      throw new HalError(
        'Unsupported',
        `backend "qemu" lacks capability "hotplug-filesystem": 9p shares cannot be added to a running VM (QEMU 7.2 has no fsdev_add); virtiofs needs root and virtiofsd`,
      );
    if (vm.state.spec.filesystems.some((x) => x.tag === f.tag))
      throw new HalError('AlreadyExists', `a filesystem with tag ${f.tag} is already shared`);
    let real: string;
    try {
      real = confinePath(f.hostPath, { allowedRoots: this.opts.allowedRoots ?? [] });
    } catch (e: any) {
      throw new HalError('Invalid', `filesystem.hostPath: ${e.message}`);
    }
    const share = { ...f, hostPath: real };
    const port = this.takePort(vm, fsDevice(f.tag));
    let sidecar: SidecarRecord | undefined;
    try {
      sidecar = await startVirtiofsd(this.host, vm.layout, share);
      await vm.qmp!.execute('chardev-add', {
        id: fsChardev(f.tag),
        backend: {
          type: 'socket',
          data: { addr: { type: 'unix', data: { path: virtiofsSocket(vm.layout, f.tag) } }, server: false },
        },
      });
      try {
        await vm.qmp!.execute('device_add', virtiofsDeviceJson(share, port));
      } catch (e) {
        await vm.qmp!.execute('chardev-remove', { id: fsChardev(f.tag) }).catch(() => undefined);
        throw e;
      }
    } catch (e) {
      this.freePort(vm, fsDevice(f.tag));
      if (sidecar) await stopSidecar(sidecar);
      throw new HalError('Failed', `sharing ${f.tag}: ${(e as Error).message}`);
    }
    vm.state.sidecars.push(sidecar);
    vm.state.spec.filesystems.push(share);
    writeState(vm.layout, vm.state);
  }

  /** Removes a share added by mountPath (the guest must have unmounted it to release the device). */
  async unmountPath(uid: string, tag: string): Promise<void> {
    const vm = this.running(uid);
    if (!vm.state.spec.filesystems.some((f) => f.tag === tag))
      throw new HalError('NotFound', `no filesystem with tag ${tag} on VM ${uid}`);
    if (vm.state.fsDriver !== 'virtiofs') throw new HalError('Unsupported', '9p shares cannot be removed from a running VM');
    await this.unplug(vm, fsDevice(tag));
    await vm.qmp!.execute('chardev-remove', { id: fsChardev(tag) }).catch(() => undefined);
    this.freePort(vm, fsDevice(tag));
    for (const s of vm.state.sidecars.filter((s) => s.kind === 'virtiofsd' && s.key === tag)) await stopSidecar(s);
    vm.state.sidecars = vm.state.sidecars.filter((s) => !(s.kind === 'virtiofsd' && s.key === tag));
    vm.state.spec.filesystems = vm.state.spec.filesystems.filter((f) => f.tag !== tag);
    writeState(vm.layout, vm.state);
  }

  /** device_del completes only when the guest lets go (DEVICE_DELETED); wait for it. */
  private async unplug(vm: Vm, id: string, timeoutMs = 15_000): Promise<void> {
    const gone = vm.qmp!.waitEvent('DEVICE_DELETED', (e) => e.data?.device === id, timeoutMs);
    gone.catch(() => undefined);
    await vm.qmp!.execute('device_del', { id });
    try {
      await gone;
    } catch {
      throw new HalError('Timeout', `the guest did not release ${id} within ${timeoutMs} ms (is the device still in use?)`);
    }
  }

  private takePort(vm: Vm, device: string): string {
    const p = vm.state.ports.find((x) => x.device === null);
    if (!p)
      throw new HalError(
        'Unsupported',
        `VM ${vm.state.spec.uid} has no free hotplug slot (all ${vm.state.ports.length} pcie-root-ports in use; hotplugPorts sets how many are reserved at start)`,
      );
    p.device = device;
    return p.id;
  }

  private freePort(vm: Vm, device: string): void {
    for (const p of vm.state.ports) if (p.device === device) p.device = null;
  }

  // ---------------------------------------------------------------- backup (qemu/backup.ts)

  private readonly backups = new QemuBackups({
    live: (uid) => {
      const vm = this.running(uid);
      return { uid, name: vm.state.spec.name, qmp: vm.qmp!, disks: vm.state.spec.disks };
    },
  });

  backup(source: BackupSource, req: BackupRequest): Promise<BackupResult> {
    return this.backups.backup(source, req);
  }

  restore(req: RestoreRequest): Promise<RestoreResult> {
    return this.backups.restore(req);
  }

  verifyBackup(point: string): Promise<VerifyResult> {
    return this.backups.verify(point);
  }

  mergeBackup(req: MergeRequest): Promise<MergeResult> {
    return this.backups.merge(req);
  }

  changeTracking(source: BackupSource): Promise<DiskTracking[]> {
    return this.backups.changeTracking(source);
  }

  dropChangeTracking(source: BackupSource, disks?: string[]): Promise<void> {
    return this.backups.dropChangeTracking(source, disks);
  }

  // ---------------------------------------------------------------- adoption

  async discover(): Promise<string[]> {
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.opts.runRoot);
    } catch {
      return [];
    }
    return names.filter((n) => fs.existsSync(path.join(this.opts.runRoot, n, 'state.json'))).sort();
  }

  async adopt(uid: string): Promise<VmStatus | undefined> {
    const have = this.vms.get(uid);
    if (have) return { ...have.status };
    const l = layoutFor(this.opts.runRoot, uid);
    const state = readState(l);
    // Same pid, same start time, and its argv names this VM's QMP socket: only
    // then is it our QEMU and not a process that inherited a recycled pid.
    if (!state?.qemu || !isSameProcess(state.qemu)) return undefined;
    const vm = this.track(state, l);
    vm.status.pid = state.qemu.pid;
    vm.status.adopted = true;
    vm.status.qmpReadyAt = state.qmpReadyAt;
    vm.status.consoleLog = l.consoleLog;
    vm.status.consoleSocket = l.consoleSocket;
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(l.qmpSocket, { timeoutMs: 5_000, alive: () => isAlive(state.qemu!.pid) });
    } catch (e: any) {
      this.vms.delete(uid);
      throw new HalError('Failed', `adopting VM ${uid} (pid ${state.qemu.pid}): ${e.message}`);
    }
    // Not our child: learn about its end from the QMP socket closing.
    qmp.once('close', () => {
      if (vm.detached) return;
      void waitGone(state.qemu!.pid, 5_000).then(() => this.onExit(vm, null, null));
    });
    await this.attachQmp(vm, qmp);
    this.followConsole(vm);
    for (const n of state.spec.nics) syncNicStatus(vm, n.name);
    // Supervision goes on: a passt that ended while no agent listened is restarted now.
    if (!state.stopRequested && !state.incoming) checkPassts(this.internals(), vm, this.opts.passtRestart);
    if (state.stopRequested)
      this.setPhase(vm, 'Stopping', state.stopRequested === 'kill' ? 'ForceStopping' : 'Stopping', 'adopted');
    else this.emit(vm, 'adopted');
    return { ...vm.status };
  }

  async cleanup(uid: string): Promise<void> {
    const vm = this.vms.get(uid);
    if (vm && !this.ended(vm))
      throw new HalError('WrongState', `VM ${uid} is ${vm.status.phase}; stop it before removing its files`);
    const l = layoutFor(this.opts.runRoot, uid);
    const state = vm?.state ?? readState(l);
    if (state?.qemu && isSameProcess(state.qemu))
      throw new HalError('WrongState', `VM ${uid} is still running (pid ${state.qemu.pid}); adopt and stop it first`);
    if (state) await this.stopHelpers(state);
    // The copies an unfinished incoming migration created hold nothing of value.
    if (state?.incoming) migration.removeCreatedDisks(state.incoming);
    this.vms.delete(uid);
    fs.rmSync(l.dir, { recursive: true, force: true });
  }

  async close(): Promise<void> {
    for (const vm of this.vms.values()) {
      vm.detached = true;
      vm.console?.close();
      vm.qmp?.close();
    }
    this.vms.clear();
  }

  // ---------------------------------------------------------------- internals

  private track(state: VmState, l: Layout): Vm {
    let markEnded!: () => void;
    const ended = new Promise<void>((r) => (markEnded = r));
    const vm: Vm = {
      state,
      layout: l,
      ended,
      markEnded,
      detached: false,
      status: {
        uid: state.spec.uid,
        name: state.spec.name,
        phase: 'Starting',
        createdAt: state.createdAt,
        accel: state.accel,
        interfaces: state.spec.nics.map((n) => ({ name: n.name, mac: state.macs[n.name] })),
      },
    };
    this.vms.set(state.spec.uid, vm);
    return vm;
  }

  private async attachQmp(vm: Vm, qmp: QmpClient): Promise<void> {
    vm.qmp = qmp;
    qmp.on('event', (e) => this.onEvent(vm, e));
    const [st, kvm] = await Promise.all([qmp.execute('query-status'), qmp.execute('query-kvm').catch(() => undefined)]);
    vm.status.accel = kvm?.enabled ? 'kvm' : 'tcg';
    if (st.status === 'inmigrate') {
      // The target of a live migration: it runs once the migration completes (migration.ts).
      vm.status.phase = 'Starting';
      vm.status.reason = 'IncomingMigration';
    } else if (vm.status.phase === 'Starting' || vm.status.phase === 'Running' || vm.status.phase === 'Paused')
      vm.status.phase = st.status === 'paused' ? 'Paused' : 'Running';
  }

  /** Reads the console log from its start: on adoption that recovers what the guest reported. */
  private followConsole(vm: Vm): void {
    vm.status.guestReadyAt = vm.state.guestReadyAt;
    vm.console = new ConsoleFollower(vm.layout.consoleLog, (line) => {
      const ready = parseReadyMarker(line);
      if (ready) {
        if (vm.state.guestReadyAt === undefined) {
          vm.state.guestReadyAt = vm.status.guestReadyAt = Date.now();
          writeStateQuietly(vm);
        }
        vm.status.guestHostname = ready.hostname;
        for (const i of vm.status.interfaces) {
          if (!ready.ips[i.mac]) continue;
          i.ip = ready.ips[i.mac];
          i.ipSource = 'guest';
        }
        this.emit(vm, 'guest-ready');
        return;
      }
      const nic = parseNicMarker(line);
      if (nic) {
        const i = vm.status.interfaces.find((x) => x.mac === nic.mac);
        if (i) {
          i.ip = nic.ip;
          i.ipSource = 'guest';
          this.emit(vm, 'guest-nic');
        }
      }
    });
  }

  private onEvent(vm: Vm, e: QmpEvent): void {
    switch (e.event) {
      case 'SHUTDOWN':
        vm.shutdown = { guest: !!e.data?.guest, reason: String(e.data?.reason ?? '') };
        break;
      case 'STOP':
        // The switch-over of an outgoing migration pauses the guest: not a Paused VM.
        if (vm.status.phase === 'Running' && !vm.outgoing) this.setPhase(vm, 'Paused', 'Paused', 'qmp:STOP');
        break;
      case 'MIGRATION':
      case 'BLOCK_JOB_READY':
        migration.onMigrationEvent(this.internals(), vm, e);
        break;
      case 'RESUME':
        if (vm.status.phase === 'Paused') this.setPhase(vm, 'Running', undefined, 'qmp:RESUME');
        break;
      case 'NETDEV_STREAM_DISCONNECTED':
        // A passt went away; 7.2 cannot reconnect a stream netdev, so a new passt is plugged in (supervise.ts).
        onStreamDisconnected(this.internals(), vm, String(e.data?.['netdev-id'] ?? ''), this.opts.passtRestart);
        break;
    }
  }

  private requestStop(vm: Vm, kind: 'stop' | 'kill'): void {
    vm.state.stopRequested = kind;
    writeStateQuietly(vm);
    this.setPhase(vm, 'Stopping', kind === 'kill' ? 'ForceStopping' : 'Stopping', `${kind}-requested`);
  }

  /** Classifies the end of a VM: asked for, guest poweroff, or a failure. */
  private async onExit(vm: Vm, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (this.ended(vm)) return;
    vm.console?.close();
    vm.qmp?.close();
    await this.stopHelpers(vm.state);
    const s = vm.status;
    s.exit = { code, signal };
    const requested = vm.state.stopRequested;
    if (vm.state.migratedTo) {
      s.phase = 'Succeeded';
      s.reason = 'Migrated';
      s.message = `the guest runs on the migration target (${vm.state.migratedTo})`;
    } else if (vm.state.incoming) {
      s.phase = 'Failed';
      s.reason = vm.state.incoming.aborted ? 'MigrationAborted' : 'MigrationFailed';
      s.message = vm.state.incoming.aborted
        ? 'the incoming migration was aborted'
        : `the incoming migration failed: ${tail(vm.layout.qemuLog, 500)}`;
    } else if (requested === 'kill') {
      s.phase = 'Succeeded';
      s.reason = 'ForceStopped';
      s.message = 'stopped at once (SIGKILL) on request';
    } else if (requested === 'stop') {
      s.phase = 'Succeeded';
      s.reason = vm.shutdown?.guest ? 'GuestShutdown' : 'Stopped';
      s.message = vm.shutdown?.guest
        ? 'the guest powered off after the ACPI power button'
        : 'stopped on request (hard stop after the grace period)';
    } else if (vm.shutdown?.guest && (code === 0 || code === null)) {
      s.phase = 'Succeeded';
      s.reason = 'GuestShutdown';
      s.message = 'the guest powered itself off';
    } else if (signal) {
      s.phase = 'Failed';
      s.reason = 'Killed';
      s.message = `QEMU was killed by ${signal}`;
    } else if (vm.shutdown) {
      s.phase = 'Failed';
      s.reason = 'HostShutdown';
      s.message = `QEMU shut down (${vm.shutdown.reason}) without being asked to`;
    } else {
      s.phase = 'Failed';
      s.reason = code === null ? 'ProcessGone' : 'ProcessExited';
      s.message =
        code === null
          ? 'QEMU ended without a shutdown event (exit status unknown: the process was adopted)'
          : `QEMU exited with status ${code}: ${tail(vm.layout.qemuLog, 500)}`;
    }
    vm.markEnded();
    this.emit(vm, 'ended');
  }

  private async stopHelpers(state: VmState): Promise<void> {
    await Promise.all(state.sidecars.map((s) => stopSidecar(s)));
    for (const tap of Object.values(state.taps)) await deleteTap(this.host, tap, state.netns);
  }

  private setPhase(vm: Vm, phase: VmStatus['phase'], reason: string | undefined, change: string): void {
    vm.status.phase = phase;
    vm.status.reason = reason;
    this.emit(vm, change);
  }

  private emit(vm: Vm, change: string): void {
    const snapshot = { ...vm.status, interfaces: vm.status.interfaces.map((i) => ({ ...i })) };
    for (const l of this.listeners) {
      try {
        l(snapshot, change);
      } catch {
        /* a listener's bug must not break the backend */
      }
    }
  }

  private ended(vm: Vm): boolean {
    return vm.status.phase === 'Succeeded' || vm.status.phase === 'Failed';
  }

  private get(uid: string): Vm {
    const vm = this.vms.get(uid);
    if (!vm) throw new HalError('NotFound', `VM ${uid} is not managed by this backend (adopt it first?)`);
    return vm;
  }

  private running(uid: string): Vm {
    const vm = this.get(uid);
    if (vm.status.phase !== 'Running' && vm.status.phase !== 'Paused')
      throw new HalError('WrongState', `VM ${uid} is ${vm.status.phase}; the operation needs it running`);
    if (!vm.qmp || vm.qmp.closed) throw new HalError('WrongState', `VM ${uid} has no QMP connection`);
    return vm;
  }
}
