/**
 * The Hypervisor Abstraction Layer: what a backend can do (capabilities), the VM
 * spec it consumes and the status it reports. Shaped after KubeVirt's
 * pkg/hypervisor: one small interface, a folder per backend, picked by name.
 *
 * The spec here is deliberately plain (no Kubernetes types): the CRD layer maps
 * VirtualMachineInstance objects onto it, and the sim backend needs nothing more.
 */

import type { LiveOps } from './migration-types';
import type {
  BackupRequest,
  BackupResult,
  BackupSource,
  DiskTracking,
  MergeRequest,
  MergeResult,
  RestoreRequest,
  RestoreResult,
  VerifyResult,
} from './backup-types';

/** Backends selectable by name (see ./index.ts). */
export type BackendName = 'qemu' | 'sim';

/**
 * One thing a backend can do. Admission compares the capabilities a spec needs
 * (requiredCapabilities in ./capabilities.ts) with the chosen backend's list.
 */
export type Capability =
  | 'lifecycle' // start, graceful stop (ACPI power button), kill
  | 'pause' // pause/resume the vCPUs
  | 'adopt' // take over VMs left running by a previous agent process
  | 'serial-console' // console log + attachable console socket
  | 'direct-kernel-boot' // spec.kernel (kernel + initrd + cmdline)
  | 'cloud-init-nocloud' // spec.cloudInit as a NoCloud seed disk
  | 'disk-qcow2'
  | 'disk-raw'
  | 'network-pod' // passt: user-space NAT, port forwards, no privileges
  | 'network-user' // QEMU's built-in user network (slirp)
  | 'network-bridge' // tap device enslaved to an existing Linux bridge
  | 'port-forward'
  | 'filesystem' // spec.filesystems shared at start (virtiofs or 9p)
  | 'hotplug-disk'
  | 'hotplug-nic'
  | 'hotplug-filesystem' // mountPath on a running VM (virtiofs only)
  | 'live-migration' // migrate/prepareIncoming between two backend instances (shared storage)
  | 'block-migration' // live migration that copies node-local disks (NBD mirror)
  | 'nic-retarget' // retargetNic: a running NIC onto another network, no restart
  | 'backup-cbt' // backup/restore with persistent dirty bitmaps; disks[].changeTracking (see backup-types.ts)
  | 'accel-kvm'; // hardware acceleration is in use (else software emulation)

export interface CpuSpec {
  /** Cores per socket. vCPUs = sockets × cores × threads. */
  cores: number;
  sockets?: number;
  threads?: number;
  /** QEMU CPU model; default `host` under KVM, `max` under TCG. */
  model?: string;
}

export interface DiskSpec {
  /** DNS label, unique in the VM; the device id is derived from it. */
  name: string;
  /** Image path on the node (Volumes live on node storage the agent controls). */
  path: string;
  format: 'qcow2' | 'raw';
  bus: 'virtio' | 'sata';
  readOnly?: boolean;
  /** Lower boots first; disks without one are not bootable. */
  bootOrder?: number;
  /**
   * Keep changed-block tracking possible for incremental backups. qcow2 disks
   * carry their bitmaps themselves; a raw disk then runs through a qcow2
   * metadata overlay `<path>.cbt.qcow2` made at start (docs/hal.md, Backup).
   */
  changeTracking?: boolean;
}

export type NetworkKind = 'pod' | 'user' | 'bridge';

export interface PortForward {
  protocol: 'tcp' | 'udp';
  /** Port in the guest. */
  port: number;
  /** Port on the node; defaults to `port`. */
  hostPort?: number;
  /** Node address to bind; defaults to all (passt) or 127.0.0.1 (user net). */
  hostAddress?: string;
}

export interface NicSpec {
  /** DNS label, unique in the VM. */
  name: string;
  network: NetworkKind;
  /** Existing Linux bridge on the node, for network 'bridge'. */
  bridge?: string;
  /** Defaults to a stable MAC derived from the VM uid and NIC name. */
  mac?: string;
  model?: 'virtio' | 'e1000e';
  portForwards?: PortForward[];
}

export interface FilesystemSpec {
  /** Mount tag the guest uses (virtiofs: ≤ 36 bytes; 9p: ≤ 31). */
  tag: string;
  /** Host directory; must lie under the backend's allowed roots (see common/paths.ts). */
  hostPath: string;
  /** Enforced on the host (9p readonly=on, or a read-only bind mount for virtiofs). */
  readOnly: boolean;
}

export interface CloudInitSpec {
  /** user-data as given (a `#!` script or `#cloud-config`). */
  userData?: string;
  /** network-config (v1/v2 YAML), passed through. */
  networkData?: string;
  /** local-hostname in meta-data; defaults to the VM name. */
  hostname?: string;
}

export interface KernelBootSpec {
  kernel: string;
  initrd?: string;
  cmdline?: string;
}

export interface VmSpec {
  /** VM name (DNS label): hostname default, process title, logs. */
  name: string;
  /** Unique per running incarnation (the VMI uid); keys the run directory. */
  uid: string;
  cpu: CpuSpec;
  memoryMiB: number;
  disks: DiskSpec[];
  nics: NicSpec[];
  filesystems: FilesystemSpec[];
  cloudInit?: CloudInitSpec;
  kernel?: KernelBootSpec;
  /**
   * Spare hotplug slots reserved at start (qemu: empty PCIe root ports; q35 cannot
   * add them later). Default: the backend's setting (qemu 4). 0 to 32.
   */
  hotplugSlots?: number;
}

/**
 * HAL phases. The agent maps them onto VMI phases: Starting → Scheduled,
 * Running/Paused → Running, Stopping → Running (with a condition),
 * Succeeded/Failed as they are.
 */
export type Phase = 'Starting' | 'Running' | 'Paused' | 'Stopping' | 'Succeeded' | 'Failed';

export interface InterfaceStatus {
  name: string;
  mac: string;
  /**
   * IPv4 address of the guest on this NIC: what the guest reported (its ready
   * marker), else for a pod NIC the address passt leases by DHCP (see ipSource).
   */
  ip?: string;
  /**
   * Where `ip` comes from: `guest` (the guest reported it), or `passt` (the only
   * address passt's DHCP hands out on a pod NIC: the node's own address, as a
   * pod IP; known from passt's start-up log before the guest asks for it).
   */
  ipSource?: 'guest' | 'passt';
  /**
   * pod NICs: the NIC's passt as the backend supervises it. `Restarting`: it
   * ended while the VM runs and a new one is on its way (with back-off);
   * `Failed`: it kept ending and the backend gave up (a restart of the VM, or a
   * change of the NIC's port forwards, gives it a new passt).
   */
  passt?: 'Running' | 'Restarting' | 'Failed';
  /** pod NICs: how often the NIC's passt ended unexpectedly and was restarted (kept across adoption). */
  passtRestarts?: number;
}

export interface VmStatus {
  uid: string;
  name: string;
  phase: Phase;
  /** CamelCase cause of the current phase, e.g. GuestShutdown, Killed, StartFailed. */
  reason?: string;
  message?: string;
  pid?: number;
  accel?: 'kvm' | 'tcg' | 'none';
  /** Wall-clock milliseconds (Date.now()) of the milestones. */
  createdAt: number;
  qmpReadyAt?: number;
  guestReadyAt?: number;
  /** Hostname the guest reported. */
  guestHostname?: string;
  interfaces: InterfaceStatus[];
  /** True when this backend instance took the VM over from a previous one. */
  adopted?: boolean;
  /** Process exit, when the VM has ended (code null when killed by a signal or unknown). */
  exit?: { code: number | null; signal: string | null };
  consoleLog?: string;
  consoleSocket?: string;
}

export type StatusListener = (status: VmStatus, change: string) => void;

export interface StopOptions {
  /** How long the guest gets to power off after the ACPI button before a hard stop. */
  graceMs?: number;
}

/** The backend contract. All methods address a VM by its uid. */
export interface Backend extends LiveOps {
  readonly name: BackendName;
  capabilities(): readonly Capability[];

  /** Starts the VM; resolves once the hypervisor answers (QMP ready) with phase Running. */
  start(spec: VmSpec): Promise<VmStatus>;
  /** ACPI power button, then a hard stop after graceMs; resolves once the VM has ended. */
  stop(uid: string, opts?: StopOptions): Promise<VmStatus>;
  /** Ends the VM at once (SIGKILL for a process). */
  kill(uid: string): Promise<VmStatus>;
  pause(uid: string): Promise<VmStatus>;
  resume(uid: string): Promise<VmStatus>;

  status(uid: string): VmStatus | undefined;
  list(): VmStatus[];
  /** Calls listener on every status change of any VM; returns the unsubscribe function. */
  observe(listener: StatusListener): () => void;

  attachDisk(uid: string, disk: DiskSpec): Promise<void>;
  detachDisk(uid: string, name: string): Promise<void>;
  attachNic(uid: string, nic: NicSpec): Promise<void>;
  detachNic(uid: string, name: string): Promise<void>;
  /** Shares a host directory with a running VM (the guest mounts it by tag). */
  mountPath(uid: string, fs: FilesystemSpec): Promise<void>;
  /**
   * Removes a share from a running VM, where the backend can (qemu with virtiofs);
   * absent or failing: the share stays until the VM's next start.
   */
  unmountPath?(uid: string, tag: string): Promise<void>;

  /** uids of VMs this node has state for (running or not), for adoption and orphan removal. */
  discover(): Promise<string[]>;
  /**
   * Takes over a VM a previous backend instance (or agent process) started:
   * reconnects to it and verifies it is the same process. Resolves undefined
   * when nothing of that uid is running (its state is then stale).
   */
  adopt(uid: string): Promise<VmStatus | undefined>;
  /** Removes the per-VM state of an ended VM. Refuses while it runs. */
  cleanup(uid: string): Promise<void>;
  /** Lets go of every VM without stopping it (agent shutdown); they stay adoptable. */
  close(): Promise<void>;

  // Backup (backup-types.ts; docs/hal.md, Backup). One backup per VM at a time.
  /** Full or incremental point-in-time backup of a running VM's disks, or offline of a stopped VM's. */
  backup(source: BackupSource, req: BackupRequest): Promise<BackupResult>;
  /** Writes a point (its chain flattened) to a new image, or in place onto a stopped VM's disk; verifies the checksum. */
  restore(req: RestoreRequest): Promise<RestoreResult>;
  /** Recomputes a point's checksum from its chain and checks the chain's manifests. */
  verifyBackup(point: string): Promise<VerifyResult>;
  /** Folds the points between a kept point and an older one of its chain into it (retention merges). */
  mergeBackup(req: MergeRequest): Promise<MergeResult>;
  /** Per disk: the bitmaps and whether the next backup can be incremental. */
  changeTracking(source: BackupSource): Promise<DiskTracking[]>;
  /** Removes kubevm's bitmaps (offline also a raw disk's overlay): the next backup is Full. */
  dropChangeTracking(source: BackupSource, disks?: string[]): Promise<void>;
}

/** Raised for requests a backend cannot honour; `code` is stable for callers to branch on. */
export class HalError extends Error {
  constructor(
    readonly code: 'NotFound' | 'AlreadyExists' | 'Invalid' | 'Unsupported' | 'WrongState' | 'Failed' | 'Timeout' | 'Cancelled',
    message: string,
  ) {
    super(message);
    this.name = 'HalError';
  }
}

export type * from './backup-types';
