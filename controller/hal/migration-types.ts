/**
 * Live-operation types of the HAL: live migration between two backend
 * instances (two node agents) and re-targeting a running NIC. Plain data only
 * (JSON-serialisable), so agents can pass them through resource status. The
 * qemu backend implements them in qemu/migration.ts and qemu/retarget.ts, the
 * sim backend in sim/backend.ts. See docs/hal.md, "Migration" and "Re-targeting".
 */
import type { InterfaceStatus, NicSpec, VmSpec, VmStatus } from './types';

/** Whether a spec can be live-migrated (see migratable() in capabilities.ts). */
export type Migratability = { ok: true } | { ok: false; reason: string };

/** Where the target of a migration listens. */
export interface ListenAddress {
  /** IP address to listen on; default 127.0.0.1 (two agents on one machine). */
  address?: string;
  /** TCP port; 0 or absent = any free port. */
  port?: number;
}

/**
 * The running VM as the target must recreate it, from `migrationSource(uid)` on
 * the source: the current spec (hotplugged devices included, MACs filled in),
 * where each device sits (the guest sees PCI addresses, so they must match), disk
 * sizes for block mirroring, and what the guest reported (the target's console
 * starts empty, so it cannot learn it again).
 */
export interface MigrationSource {
  spec: VmSpec;
  /** Backend-specific device placement (qemu: the PCIe root port of each device); pass it on unchanged. */
  placement?: unknown;
  disks: { name: string; path: string; format: 'qcow2' | 'raw'; virtualSize: number }[];
  guest: { readyAt?: number; hostname?: string; interfaces: InterfaceStatus[] };
}

export interface BlockMirrorIncoming {
  /** Disks the source copies into this node's images (default: all of spec.disks). Others are shared storage. */
  disks?: string[];
  /**
   * Virtual size per disk name for images that do not exist yet on this node: they
   * are created empty (and removed again if the migration does not succeed).
   * Existing images are used as they are; their size must equal the source's.
   * Defaults to the sizes in `source`.
   */
  sizes?: Record<string, number>;
  /** Where the NBD server for the copies listens; default: the migration address, any free port. */
  listen?: ListenAddress;
}

export interface IncomingOptions {
  listen?: ListenAddress;
  /** From the source's migrationSource(uid); without it the device layout of a fresh start is assumed. */
  source?: MigrationSource;
  /** Copy node-local disks over NBD (the source mirrors them into this node's images before the switch-over). */
  blockMirror?: boolean | BlockMirrorIncoming;
}

export interface IncomingMigration {
  uid: string;
  /**
   * What the source passes to migrate() as `uri`: `tcp:HOST:PORT`, and with block
   * mirroring `tcp:HOST:PORT+nbd:HOST:PORT:disk1,disk2` (the NBD server and the
   * exported disks). One string, so it fits one status field.
   */
  uri: string;
  status: VmStatus;
}

export interface MigrationProgress {
  /** `mirroring` (block copy before the memory), then QEMU's migration status (`setup`, `active`, `pre-switchover`, `device`, …). */
  status: string;
  elapsedMs: number;
  /** Memory bytes sent so far and still to send (QEMU's estimate for the current pass). */
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  /** Guest memory dirtied per second (bytes), as QEMU measures it (0 until the first pass completes). */
  dirtyRateBytesPerSec: number;
  /** Completed dirty-memory passes. */
  iterations: number;
  mbps?: number;
  expectedDowntimeMs?: number;
  /** Block mirroring: bytes copied and to copy, summed over the disks. */
  disk?: { copiedBytes: number; totalBytes: number; ready: boolean };
}

export interface MigrateOptions {
  /** IncomingMigration.uri of the prepared target. */
  uri: string;
  /** Bytes per second; 0 = unlimited; default QEMU's 128 MiB/s. */
  bandwidth?: number;
  /** Longest pause of the guest QEMU may plan for the switch-over (default 300 ms). */
  downtimeLimitMs?: number;
  /** Give up after this many seconds per GiB of memory (plus mirrored disk); default 150 (KubeVirt's). */
  completionTimeoutPerGiB?: number;
  /** Give up when the data left to send has not reached a new low for this many seconds; default 150. */
  progressTimeout?: number;
  /** Throttle the guest's vCPUs when it dirties memory faster than it can be sent. */
  autoConverge?: boolean;
  /** Must be true when (and only when) the target was prepared with blockMirror; default: follow the uri. */
  blockMirror?: boolean;
  onProgress?: (p: MigrationProgress) => void;
  /** How often progress is polled (default 250 ms). */
  progressIntervalMs?: number;
}

export interface MigrationResult {
  /** QEMU's total-time: from the migrate command to completion (ms), block mirroring excluded. */
  totalMs: number;
  /** QEMU's downtime: how long the guest was paused for the switch-over (ms). */
  downtimeMs: number;
  /** Wall clock of migrate(), block mirroring included (ms). */
  wallMs: number;
  /** Bytes moved: memory plus mirrored disk. */
  bytes: number;
  memoryBytes: number;
  diskBytes: number;
  /** Wall clock spent mirroring disks before the memory migration started (ms). */
  mirrorMs?: number;
}

/**
 * How a NIC was re-targeted:
 *  - `in-place`: the device stayed; only its backend changed (a tap moved to the
 *    new bridge, or a new backend behind the NIC's hub). The guest sees a link flap.
 *  - `replug`: the device was unplugged and plugged again with the same MAC in the
 *    same slot (a VM whose NICs peer their backend directly). The guest sees a hotplug.
 */
export interface RetargetResult {
  nic: string;
  mac: string;
  method: 'in-place' | 'replug';
  /** What was done, for events and logs. */
  detail: string;
}

/** The live-operation methods every Backend has (see Backend in types.ts). */
export interface LiveOps {
  /** The running VM's current shape, for prepareIncoming on the target. */
  migrationSource(uid: string): Promise<MigrationSource>;
  /**
   * Target side: starts the VM waiting for an incoming migration (phase Starting,
   * reason IncomingMigration). Becomes Running when the migration completes; Failed
   * (reason MigrationFailed) if it fails. Refuses non-migratable specs.
   */
  prepareIncoming(spec: VmSpec, opts?: IncomingOptions): Promise<IncomingMigration>;
  /**
   * Source side: migrates to a prepared target. Resolves once the target runs the
   * guest and the source VM has ended (phase Succeeded, reason Migrated). Rejects
   * with HalError Cancelled / Timeout / Failed / Unsupported; the source then keeps running.
   */
  migrate(uid: string, opts: MigrateOptions): Promise<MigrationResult>;
  /** Cancels a running outgoing migration; resolves once the source runs on its own again. */
  cancelMigration(uid: string): Promise<void>;
  /** Target side: ends an incoming VM that will not be used and removes its state and created disk copies. */
  abortIncoming(uid: string): Promise<void>;
  /** Re-plumbs a running NIC onto another network without a restart; the MAC stays. */
  retargetNic(uid: string, nicName: string, nic: NicSpec): Promise<RetargetResult>;
}
