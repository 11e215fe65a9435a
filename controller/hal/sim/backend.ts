import { missingCapabilities } from '../capabilities';
import { confinePath } from '../common/paths';
import {
  HalError,
  type Backend,
  type Capability,
  type DiskSpec,
  type FilesystemSpec,
  type NicSpec,
  type Phase,
  type StatusListener,
  type StopOptions,
  type VmSpec,
  type VmStatus,
} from '../types';
import { validateDisk, validateFilesystem, validateNic, validateSpec } from '../validate';
import { migratable } from '../capabilities';
import type {
  IncomingMigration,
  IncomingOptions,
  MigrateOptions,
  MigrationResult,
  MigrationSource,
  RetargetResult,
} from '../migration-types';
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
import { SimBackups, type SimDiskState } from './backup';

/**
 * The sim backend: no processes, only status that moves through the phases a
 * real VM would, after configurable delays. For scale tests of the controller
 * and agent (thousands of VMs on one machine), so per-VM state is kept small.
 */
export interface SimDelays {
  /** start() → Running ("QMP ready"). Default 150 ms (a TCG QEMU measures ~120-200). */
  startMs: number;
  /** Running → guest ready marker. Default 6000 ms (the test guest under TCG). */
  guestReadyMs: number;
  /** stop() → Succeeded. Default 300 ms. */
  stopMs: number;
  /** Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]. Default 0.2. */
  jitter: number;
  /** backup() → done (no data is copied). Default 100 ms. */
  backupMs: number;
  /** migrate() → done, plus 1 ms per MiB of guest memory (1 GiB/s). Default 300 ms. */
  migrateMs: number;
}

/**
 * Where simulated VMs "run": outlives backend instances, the way QEMU processes
 * outlive an agent, so adopt() can be exercised. One world per simulated node.
 */
export class SimWorld {
  readonly vms = new Map<string, SimVm>();
  /** Backup state per disk path (bitmaps, simulated content): see ./backup.ts. */
  readonly disks = new Map<string, SimDiskState>();
  /** Names this node in migration uris (`sim:ID/UID`). */
  readonly id = `w${++worldSeq}`;
}

let worldSeq = 0;
/** Prepared incoming migrations of every sim node in this process, by uri (without the +nbd part). */
const incomingSims = new Map<string, { backend: SimBackend; vm: SimVm }>();

interface SimVm {
  spec: VmSpec;
  status: VmStatus;
  /** Target of a migration: its uri. */
  incoming?: string;
  /** Source of a migration in progress. */
  outgoing?: { cancel: boolean; settled: Promise<void> };
  timer?: NodeJS.Timeout;
  /** The backend instance currently driving it. */
  owner?: SimBackend;
  /** Resolves waiters for the end of the VM. */
  waiters: (() => void)[];
}

export interface SimBackendOptions {
  delays?: Partial<SimDelays>;
  /** Defaults to everything the qemu backend can do, with kvm. */
  capabilities?: Capability[];
  world?: SimWorld;
  /** When set, share paths are confined to these roots as on a real node. */
  allowedRoots?: string[];
  /** Failure injection: return a message to make migrate() of that VM fail halfway. */
  failMigration?: (spec: VmSpec) => string | undefined;
  /** Failure injection: return a message to make start() of that spec fail. */
  failStart?: (spec: VmSpec) => string | undefined;
}

export const SIM_CAPABILITIES: readonly Capability[] = [
  'lifecycle',
  'pause',
  'adopt',
  'serial-console',
  'direct-kernel-boot',
  'cloud-init-nocloud',
  'disk-qcow2',
  'disk-raw',
  'network-pod',
  'network-user',
  'network-bridge',
  'port-forward',
  'filesystem',
  'hotplug-disk',
  'hotplug-nic',
  'hotplug-filesystem',
  'live-migration',
  'block-migration',
  'nic-retarget',
  'backup-cbt',
  'accel-kvm',
];

export class SimBackend implements Backend {
  readonly name = 'sim' as const;
  readonly world: SimWorld;
  private readonly delays: SimDelays;
  private readonly caps: readonly Capability[];
  private readonly listeners = new Set<StatusListener>();

  constructor(private readonly opts: SimBackendOptions = {}) {
    this.world = opts.world ?? new SimWorld();
    this.delays = { startMs: 150, guestReadyMs: 6000, stopMs: 300, jitter: 0.2, backupMs: 100, migrateMs: 300, ...opts.delays };
    this.caps = opts.capabilities ?? SIM_CAPABILITIES;
  }

  capabilities(): readonly Capability[] {
    return this.caps;
  }

  private delay(ms: number): number {
    const j = this.delays.jitter;
    return Math.max(0, ms * (1 - j + Math.random() * 2 * j));
  }

  private later(vm: SimVm, ms: number, fn: () => void): void {
    if (vm.timer) clearTimeout(vm.timer);
    vm.timer = setTimeout(() => {
      vm.timer = undefined;
      fn();
    }, this.delay(ms));
    vm.timer.unref();
  }

  async start(spec: VmSpec): Promise<VmStatus> {
    validateSpec(spec);
    const missing = missingCapabilities(this, spec);
    if (missing.length) throw new HalError('Unsupported', missing.join('; '));
    const prev = this.world.vms.get(spec.uid);
    if (prev && !ended(prev.status)) throw new HalError('AlreadyExists', `VM ${spec.uid} is already running`);
    if (this.opts.allowedRoots)
      spec.filesystems.forEach((f, i) => {
        try {
          confinePath(f.hostPath, { allowedRoots: this.opts.allowedRoots! });
        } catch (e: any) {
          throw new HalError('Invalid', `spec.filesystems[${i}].hostPath: ${e.message}`);
        }
      });
    const vm: SimVm = {
      spec: structuredClone(spec),
      owner: this,
      waiters: [],
      status: {
        uid: spec.uid,
        name: spec.name,
        phase: 'Starting',
        createdAt: Date.now(),
        accel: this.caps.includes('accel-kvm') ? 'kvm' : 'tcg',
        interfaces: spec.nics.map((n, i) => ({ name: n.name, mac: n.mac ?? simMac(spec.uid, i) })),
      },
    };
    this.world.vms.set(spec.uid, vm);
    this.emit(vm, 'created');
    const failure = this.opts.failStart?.(spec);
    await new Promise<void>((r) => this.later(vm, this.delays.startMs, r));
    if (failure) {
      this.end(vm, 'Failed', 'StartFailed', failure);
      throw new HalError('Failed', `starting VM ${spec.name} (${spec.uid}) failed: ${failure}`);
    }
    vm.status.qmpReadyAt = Date.now();
    this.set(vm, 'Running', undefined, 'qmp-ready');
    this.later(vm, this.delays.guestReadyMs, () => this.guestReady(vm));
    return { ...vm.status };
  }

  private guestReady(vm: SimVm): void {
    if (vm.status.phase !== 'Running' || vm.status.guestReadyAt) return;
    vm.status.guestReadyAt = Date.now();
    vm.status.guestHostname = vm.spec.cloudInit?.hostname ?? vm.spec.name;
    vm.status.interfaces.forEach((i, n) => (i.ip = simIp(vm.spec.uid, n)));
    this.emit(vm, 'guest-ready');
  }

  async stop(uid: string, _opts: StopOptions = {}): Promise<VmStatus> {
    const vm = this.get(uid);
    if (ended(vm.status)) return { ...vm.status };
    this.set(vm, 'Stopping', 'Stopping', 'stop-requested');
    const done = this.waitEnd(vm);
    this.later(vm, this.delays.stopMs, () =>
      this.end(vm, 'Succeeded', 'GuestShutdown', 'the guest powered off after the ACPI power button'),
    );
    await done;
    return { ...vm.status };
  }

  async kill(uid: string): Promise<VmStatus> {
    const vm = this.get(uid);
    if (!ended(vm.status)) this.end(vm, 'Succeeded', 'ForceStopped', 'stopped at once on request');
    return { ...vm.status };
  }

  /** Test hook: the simulated process dies on its own (like kill -9 from outside). */
  crash(uid: string, signal: NodeJS.Signals = 'SIGKILL'): void {
    const vm = this.get(uid);
    if (ended(vm.status)) return;
    vm.status.exit = { code: null, signal };
    this.backups.crashed(vm.spec.disks);
    this.end(vm, 'Failed', 'Killed', `QEMU was killed by ${signal}`);
  }

  // Backup (./backup.ts): the bookkeeping of the qemu backend, with placeholder files.
  private readonly backups = new SimBackups({
    disks: () => this.world.disks,
    live: (uid) => {
      const vm = this.running(uid);
      return { uid, name: vm.spec.name, disks: vm.spec.disks };
    },
    inUse: (p) => [...this.world.vms.values()].some((v) => !ended(v.status) && v.spec.disks.some((d) => d.path === p)),
    backupMs: () => this.delay(this.delays.backupMs),
  });

  /** Test hook: the guest writes to a disk, so the next point's content differs. */
  writeDisk(uid: string, disk: string): void {
    const d = this.get(uid).spec.disks.find((x) => x.name === disk);
    if (!d) throw new HalError('NotFound', `disk ${disk} is not attached to VM ${uid}`);
    this.backups.write(d.path);
  }

  backup(source: BackupSource, req: BackupRequest): Promise<BackupResult> {
    return this.backups.backup(source, req);
  }

  restore(req: RestoreRequest): Promise<RestoreResult> {
    return this.backups.restore(req);
  }

  mergeBackup(req: MergeRequest): Promise<MergeResult> {
    return this.backups.merge(req);
  }

  verifyBackup(point: string): Promise<VerifyResult> {
    return this.backups.verify(point);
  }

  changeTracking(source: BackupSource): Promise<DiskTracking[]> {
    return this.backups.changeTracking(source);
  }

  dropChangeTracking(source: BackupSource, disks?: string[]): Promise<void> {
    return this.backups.dropChangeTracking(source, disks);
  }

  async pause(uid: string): Promise<VmStatus> {
    const vm = this.running(uid);
    this.set(vm, 'Paused', 'Paused', 'paused');
    return { ...vm.status };
  }

  async resume(uid: string): Promise<VmStatus> {
    const vm = this.running(uid);
    this.set(vm, 'Running', undefined, 'resumed');
    if (!vm.status.guestReadyAt) this.later(vm, this.delays.guestReadyMs, () => this.guestReady(vm));
    return { ...vm.status };
  }

  status(uid: string): VmStatus | undefined {
    const vm = this.world.vms.get(uid);
    return vm && vm.owner === this ? { ...vm.status } : undefined;
  }

  list(): VmStatus[] {
    return [...this.world.vms.values()].filter((v) => v.owner === this).map((v) => ({ ...v.status }));
  }

  observe(listener: StatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async attachDisk(uid: string, disk: DiskSpec): Promise<void> {
    const vm = this.running(uid);
    validateDisk(disk, 'disk');
    if (vm.spec.disks.some((d) => d.name === disk.name))
      throw new HalError('AlreadyExists', `disk ${disk.name} is already attached`);
    vm.spec.disks.push(disk);
  }

  async detachDisk(uid: string, name: string): Promise<void> {
    const vm = this.running(uid);
    if (!vm.spec.disks.some((d) => d.name === name)) throw new HalError('NotFound', `disk ${name} is not attached to VM ${uid}`);
    vm.spec.disks = vm.spec.disks.filter((d) => d.name !== name);
  }

  async attachNic(uid: string, nic: NicSpec): Promise<void> {
    const vm = this.running(uid);
    validateNic(nic, 'nic');
    if (vm.spec.nics.some((n) => n.name === nic.name)) throw new HalError('AlreadyExists', `NIC ${nic.name} is already attached`);
    vm.spec.nics.push(nic);
    const n = vm.status.interfaces.length;
    vm.status.interfaces.push({
      name: nic.name,
      mac: nic.mac ?? simMac(uid, n),
      ip: vm.status.guestReadyAt ? simIp(uid, n) : undefined,
    });
    this.emit(vm, 'nic-attached');
  }

  async detachNic(uid: string, name: string): Promise<void> {
    const vm = this.running(uid);
    if (!vm.spec.nics.some((n) => n.name === name)) throw new HalError('NotFound', `NIC ${name} is not attached to VM ${uid}`);
    vm.spec.nics = vm.spec.nics.filter((n) => n.name !== name);
    vm.status.interfaces = vm.status.interfaces.filter((i) => i.name !== name);
    this.emit(vm, 'nic-detached');
  }

  async mountPath(uid: string, fs: FilesystemSpec): Promise<void> {
    const vm = this.running(uid);
    validateFilesystem(fs, 'filesystem');
    if (!this.caps.includes('hotplug-filesystem'))
      throw new HalError('Unsupported', 'backend "sim" lacks capability "hotplug-filesystem"');
    if (this.opts.allowedRoots) {
      try {
        confinePath(fs.hostPath, { allowedRoots: this.opts.allowedRoots });
      } catch (e: any) {
        throw new HalError('Invalid', `filesystem.hostPath: ${e.message}`);
      }
    }
    vm.spec.filesystems.push(fs);
  }

  async discover(): Promise<string[]> {
    return [...this.world.vms.keys()].sort();
  }

  async adopt(uid: string): Promise<VmStatus | undefined> {
    const vm = this.world.vms.get(uid);
    if (!vm || ended(vm.status)) return undefined;
    vm.owner = this;
    vm.status.adopted = true;
    this.emit(vm, 'adopted');
    return { ...vm.status };
  }

  async cleanup(uid: string): Promise<void> {
    const vm = this.world.vms.get(uid);
    if (vm && !ended(vm.status)) throw new HalError('WrongState', `VM ${uid} is ${vm.status.phase}; stop it before removing it`);
    this.world.vms.delete(uid);
  }

  async close(): Promise<void> {
    // The world keeps the VMs (they keep running); this instance stops reporting them.
    for (const vm of this.world.vms.values()) if (vm.owner === this) vm.owner = undefined;
    this.listeners.clear();
  }

  // ---------------------------------------------------------------- live migration (simulated)
  // Same contract as the qemu backend (migration-types.ts): a target VM waits in
  // Starting/IncomingMigration under a uri `sim:WORLD/UID`; migrate() moves the
  // guest there after migrateMs + 1 ms per MiB, reporting progress on the way.

  async migrationSource(uid: string): Promise<MigrationSource> {
    const vm = this.running(uid);
    const spec: VmSpec = JSON.parse(JSON.stringify(vm.spec));
    for (const n of spec.nics) n.mac = vm.status.interfaces.find((i) => i.name === n.name)?.mac ?? n.mac;
    return {
      spec,
      disks: spec.disks.map((d) => ({ name: d.name, path: d.path, format: d.format, virtualSize: 0 })),
      guest: {
        readyAt: vm.status.guestReadyAt,
        hostname: vm.status.guestHostname,
        interfaces: vm.status.interfaces.map((i) => ({ ...i })),
      },
    };
  }

  async prepareIncoming(spec: VmSpec, opts: IncomingOptions = {}): Promise<IncomingMigration> {
    validateSpec(spec);
    const missing = missingCapabilities(this, spec);
    if (missing.length) throw new HalError('Unsupported', missing.join('; '));
    const m = migratable(spec);
    if (!m.ok) throw new HalError('Unsupported', `VM ${spec.name} cannot be live-migrated: ${m.reason}`);
    const need = opts.blockMirror ? 'block-migration' : 'live-migration';
    if (!this.caps.includes(need)) throw new HalError('Unsupported', `backend "sim" lacks capability "${need}"`);
    const prev = this.world.vms.get(spec.uid);
    if (prev && !ended(prev.status)) throw new HalError('AlreadyExists', `VM ${spec.uid} is already running on this node`);
    const base = `sim:${this.world.id}/${spec.uid}`;
    const disks =
      opts.blockMirror === true
        ? spec.disks.map((d) => d.name)
        : opts.blockMirror
          ? (opts.blockMirror.disks ?? spec.disks.map((d) => d.name))
          : [];
    const uri = opts.blockMirror ? `${base}+nbd:${disks.join(',')}` : base;
    const guest = opts.source?.guest;
    const vm: SimVm = {
      spec: JSON.parse(JSON.stringify(spec)),
      owner: this,
      waiters: [],
      incoming: uri,
      status: {
        uid: spec.uid,
        name: spec.name,
        phase: 'Starting',
        reason: 'IncomingMigration',
        createdAt: Date.now(),
        accel: this.caps.includes('accel-kvm') ? 'kvm' : 'tcg',
        guestReadyAt: guest?.readyAt,
        guestHostname: guest?.hostname,
        interfaces: spec.nics.map((n, i) => {
          const was = guest?.interfaces.find((x) => x.name === n.name);
          return { name: n.name, mac: n.mac ?? was?.mac ?? simMac(spec.uid, i), ...(was?.ip ? { ip: was.ip } : {}) };
        }),
      },
    };
    this.world.vms.set(spec.uid, vm);
    incomingSims.set(base, { backend: this, vm });
    this.emit(vm, 'created');
    await new Promise<void>((r) => this.later(vm, this.delays.startMs, r));
    this.emit(vm, 'incoming-ready');
    return { uid: spec.uid, uri, status: { ...vm.status } };
  }

  async migrate(uid: string, o: MigrateOptions): Promise<MigrationResult> {
    const vm = this.running(uid);
    if (vm.outgoing) throw new HalError('WrongState', `VM ${uid} is already migrating`);
    const m = migratable(vm.spec);
    if (!m.ok) throw new HalError('Unsupported', `VM ${vm.spec.name} cannot be live-migrated: ${m.reason}`);
    const [base, nbd] = String(o?.uri ?? '').split('+');
    const t = incomingSims.get(base);
    if (!t || t.vm.incoming !== o.uri || ended(t.vm.status))
      throw new HalError('Failed', `no migration target is waiting at ${JSON.stringify(o?.uri)}`);
    if (o.blockMirror === true && !nbd)
      throw new HalError('Invalid', 'blockMirror: true needs a target prepared with blockMirror');
    if (o.blockMirror === false && nbd)
      throw new HalError('Invalid', 'blockMirror: false contradicts the target, which was prepared for block mirroring');
    let settle!: () => void;
    const out = { cancel: false, settled: new Promise<void>((r) => (settle = r)) };
    vm.outgoing = out;
    const t0 = Date.now();
    const total = vm.spec.memoryMiB * 1024 * 1024;
    const duration = this.delay(this.delays.migrateMs + vm.spec.memoryMiB);
    const failure = this.opts.failMigration?.(vm.spec);
    const failTarget = (why: string) => {
      if (!ended(t.vm.status)) t.backend.end(t.vm, 'Failed', 'MigrationFailed', `the incoming migration failed: ${why}`);
    };
    try {
      for (let step = 1; step <= 4; step++) {
        await new Promise((r) => setTimeout(r, duration / 4).unref());
        if (out.cancel) {
          failTarget('the source cancelled it');
          throw new HalError('Cancelled', `migration of VM ${uid} was cancelled; the VM keeps running here`);
        }
        if (failure && step === 2) {
          failTarget(failure);
          throw new HalError('Failed', `migration of VM ${uid} failed: ${failure}; the VM keeps running here`);
        }
        const sent = Math.round((total * step) / 4);
        try {
          o.onProgress?.({
            status: step < 4 ? 'active' : 'completed',
            elapsedMs: Date.now() - t0,
            transferredBytes: sent,
            remainingBytes: total - sent,
            totalBytes: total,
            dirtyRateBytesPerSec: 0,
            iterations: step,
          });
        } catch {
          /* the caller's bug */
        }
      }
      // Switch-over: the guest runs on the target, the source process ends.
      const tv = t.vm;
      tv.incoming = undefined;
      incomingSims.delete(base);
      tv.status.guestReadyAt ??= vm.status.guestReadyAt;
      tv.status.guestHostname ??= vm.status.guestHostname;
      t.backend.set(tv, 'Running', undefined, 'migrated-in');
      this.end(vm, 'Succeeded', 'Migrated', `the guest runs on the migration target (${o.uri})`);
      const downtimeMs = Math.round(this.delay(20));
      return { totalMs: Date.now() - t0, downtimeMs, wallMs: Date.now() - t0, bytes: total, memoryBytes: total, diskBytes: 0 };
    } finally {
      vm.outgoing = undefined;
      settle();
    }
  }

  async cancelMigration(uid: string): Promise<void> {
    const vm = this.get(uid);
    if (!vm.outgoing) return;
    vm.outgoing.cancel = true;
    await vm.outgoing.settled;
  }

  async abortIncoming(uid: string): Promise<void> {
    const vm = this.world.vms.get(uid);
    if (!vm) return;
    if (!vm.incoming && !(ended(vm.status) && vm.status.reason?.startsWith('Migration')))
      throw new HalError('WrongState', `VM ${uid} is not waiting for an incoming migration; stop it instead`);
    if (vm.incoming) incomingSims.delete(vm.incoming.split('+')[0]);
    if (!ended(vm.status)) this.end(vm, 'Failed', 'MigrationAborted', 'the incoming migration was aborted');
    this.world.vms.delete(uid);
  }

  async retargetNic(uid: string, nicName: string, nic: NicSpec): Promise<RetargetResult> {
    const vm = this.running(uid);
    if (vm.outgoing || vm.incoming)
      throw new HalError('WrongState', `VM ${uid} is migrating; re-target its NICs before or after the migration`);
    const cur = vm.spec.nics.find((n) => n.name === nicName);
    if (!cur) throw new HalError('NotFound', `NIC ${nicName} is not attached to VM ${uid}`);
    validateNic(nic, 'nic');
    if (nic.name !== nicName)
      throw new HalError('Invalid', `nic.name: ${JSON.stringify(nic.name)} must be ${JSON.stringify(nicName)}`);
    const iface = vm.status.interfaces.find((i) => i.name === nicName)!;
    if (nic.mac !== undefined && nic.mac.toLowerCase() !== iface.mac.toLowerCase())
      throw new HalError('Invalid', `nic.mac: ${JSON.stringify(nic.mac)} must stay ${iface.mac} (re-targeting keeps the MAC)`);
    if ((nic.model ?? 'virtio') !== (cur.model ?? 'virtio'))
      throw new HalError('Unsupported', `nic.model: changing the model of NIC ${nicName} needs a restart`);
    const missing = missingCapabilities(this, { ...vm.spec, nics: [nic], disks: [], filesystems: [] });
    if (missing.length) throw new HalError('Unsupported', missing.join('; '));
    vm.spec.nics = vm.spec.nics.map((n) => (n.name === nicName ? { ...nic, ...(cur.mac ? { mac: cur.mac } : {}) } : n));
    delete iface.ip;
    this.emit(vm, 'nic-retargeted');
    return { nic: nicName, mac: iface.mac, method: 'in-place', detail: `simulated: ${cur.network} → ${nic.network}` };
  }

  private end(vm: SimVm, phase: Phase, reason: string, message: string): void {
    if (vm.timer) clearTimeout(vm.timer);
    vm.timer = undefined;
    vm.status.message = message;
    vm.status.exit ??= { code: phase === 'Succeeded' ? 0 : null, signal: null };
    this.set(vm, phase, reason, 'ended');
    for (const w of vm.waiters.splice(0)) w();
  }

  private waitEnd(vm: SimVm): Promise<void> {
    return new Promise((r) => vm.waiters.push(r));
  }

  private set(vm: SimVm, phase: Phase, reason: string | undefined, change: string): void {
    vm.status.phase = phase;
    vm.status.reason = reason;
    this.emit(vm, change);
  }

  private emit(vm: SimVm, change: string): void {
    if (vm.owner !== this) return;
    const snapshot = { ...vm.status, interfaces: vm.status.interfaces.map((i) => ({ ...i })) };
    for (const l of this.listeners) {
      try {
        l(snapshot, change);
      } catch {
        /* a listener's bug must not break the backend */
      }
    }
  }

  private get(uid: string): SimVm {
    const vm = this.world.vms.get(uid);
    if (!vm || vm.owner !== this) throw new HalError('NotFound', `VM ${uid} is not managed by this backend (adopt it first?)`);
    return vm;
  }

  private running(uid: string): SimVm {
    const vm = this.get(uid);
    if (vm.status.phase !== 'Running' && vm.status.phase !== 'Paused')
      throw new HalError('WrongState', `VM ${uid} is ${vm.status.phase}; the operation needs it running`);
    return vm;
  }
}

function ended(s: VmStatus): boolean {
  return s.phase === 'Succeeded' || s.phase === 'Failed';
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}

function simMac(uid: string, n: number): string {
  const x = hash(`${uid}/${n}`);
  return `52:54:00:${((x >> 16) & 0xff).toString(16).padStart(2, '0')}:${((x >> 8) & 0xff).toString(16).padStart(2, '0')}:${(x & 0xff).toString(16).padStart(2, '0')}`;
}

function simIp(uid: string, n: number): string {
  const x = hash(`${uid}/${n}`);
  return `10.${(x >> 16) & 0xff}.${(x >> 8) & 0xff}.${Math.max(2, x & 0xff)}`;
}
