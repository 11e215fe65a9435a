import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ProcessRecord } from '../common/process';
import type { VmSpec } from '../types';

/**
 * Per-VM run directory: every file a VM needs lives in `<runRoot>/<uid>/`, so
 * removing a VM is removing one directory, and an agent restart finds each VM
 * (its QMP socket, pid and spec) there again.
 */
export interface Layout {
  dir: string;
  qmpSocket: string;
  consoleSocket: string;
  consoleLog: string;
  qemuLog: string;
  pidFile: string;
  stateFile: string;
  seedDir: string;
  /** passt sockets; owned by `nobody` when we are root (passt drops to it before bind). */
  netDir: string;
  /** virtiofsd sockets. */
  fsDir: string;
}

// sun_path is 108 bytes including the NUL.
const MAX_SOCKET_PATH = 107;

export function layoutFor(runRoot: string, uid: string): Layout {
  const dir = path.join(runRoot, uid);
  const l: Layout = {
    dir,
    qmpSocket: path.join(dir, 'qmp.sock'),
    consoleSocket: path.join(dir, 'console.sock'),
    consoleLog: path.join(dir, 'console.log'),
    qemuLog: path.join(dir, 'qemu.log'),
    pidFile: path.join(dir, 'qemu.pid'),
    stateFile: path.join(dir, 'state.json'),
    seedDir: path.join(dir, 'seed'),
    netDir: path.join(dir, 'net'),
    fsDir: path.join(dir, 'fs'),
  };
  // Check the longest socket path we create (see shortName) early, so the error
  // names the cause rather than surfacing as a QEMU bind failure.
  const longest = path.join(l.netDir, `${shortName('x'.repeat(63))}.sock`);
  if (Buffer.byteLength(longest) > MAX_SOCKET_PATH)
    throw new Error(
      `run directory ${dir} is too long for unix sockets (${Buffer.byteLength(longest)} > ${MAX_SOCKET_PATH} bytes); use a shorter runRoot`,
    );
  return l;
}

/**
 * A file-name-safe short form of a NIC name or tag: readable prefix plus a hash
 * of the whole, so two long names with one prefix cannot collide. Keeps socket
 * paths within sun_path.
 */
export function shortName(name: string): string {
  if (name.length <= 16) return name;
  return `${name.slice(0, 9)}-${createHash('sha256').update(name).digest('hex').slice(0, 6)}`;
}

/** Socket path of a pod NIC's passt. */
export function passtSocket(l: Layout, nic: string): string {
  return path.join(l.netDir, `${shortName(nic)}.sock`);
}

/** Socket path of a virtiofs share's virtiofsd. */
export function virtiofsSocket(l: Layout, tag: string): string {
  return path.join(l.fsDir, `${shortName(tag)}.sock`);
}

export interface PortSlot {
  id: string;
  /** Device id occupying it, or null when free for hotplug. */
  device: string | null;
}

export interface SidecarRecord {
  kind: 'passt' | 'virtiofsd';
  /** NIC name or filesystem tag. */
  key: string;
  process: ProcessRecord;
  /** passt: the IPv4 address its DHCP hands out (from its start-up log), if it printed one. */
  lease?: string;
}

/** Supervision of a pod NIC's passt (qemu/supervise.ts): kept in the state so an adopting agent continues it. */
export interface PasstSupervision {
  /** Restarts after passt ended unexpectedly, over the NIC's life. */
  restarts: number;
  /** When the recent restarts happened (ms), for the back-off and the bound. */
  recent: number[];
  /** Set when the backend gave up restarting it: why. */
  failed?: string;
}

/**
 * A NIC plumbed through a QEMU hub (args.ts nicHubJson): the device peers the
 * hub port `net-NAME` and never changes; the backend behind the hub (netdev
 * `nb-NAME-GEN` on hub port `np-NAME-GEN`) can be swapped while the VM runs.
 */
export interface NicPlumbing {
  /** QEMU hub id, unique in the VM. */
  hub: number;
  /** Generation of the backend behind the hub (bumped by each swap). */
  gen: number;
}

/** The target side of a live migration, until it completes (qemu/migration.ts). */
export interface IncomingState {
  uri: string;
  since: number;
  /** Block mirroring: the NBD server and the disks it exports. */
  nbd?: { host: string; port: number; disks: string[] };
  /** Disk images this node created for the copies: removed when the migration does not succeed. */
  createdDisks: string[];
  /** pod NICs whose passt runs without port forwards (the source still held the ports): completed after the switch-over. */
  pendingForwards: string[];
  /** Set by abortIncoming before the process is ended. */
  aborted?: boolean;
}

/** What the agent needs to find and drive a VM again after a restart. */
export interface VmState {
  version: 1;
  spec: VmSpec;
  argv: string[];
  qemu?: ProcessRecord;
  sidecars: SidecarRecord[];
  ports: PortSlot[];
  macs: Record<string, string>;
  taps: Record<string, string>;
  /** Network namespace QEMU and the taps live in (the backend's `netns` at start). */
  netns?: string;
  accel: 'kvm' | 'tcg';
  fsDriver: 'virtiofs' | '9p';
  createdAt: number;
  qmpReadyAt?: number;
  guestReadyAt?: number;
  /** Set once a stop was requested, so an adopting agent classifies the exit correctly. */
  stopRequested?: 'stop' | 'kill';
  /** Per-NIC hub plumbing; absent for VMs whose NICs peer their backend directly. */
  nicPlumbing?: Record<string, NicPlumbing>;
  /** Set while this VM is the target of a live migration. */
  incoming?: IncomingState;
  /** Set on the source once the guest runs on the target: the exit that follows is the migration's. */
  migratedTo?: string;
  /** pod NICs whose passt ended unexpectedly at least once (NIC name → supervision record). */
  passtSupervision?: Record<string, PasstSupervision>;
}

export function writeState(l: Layout, s: VmState): void {
  // Write-then-rename: a crash mid-write must not leave a torn state file.
  const tmp = `${l.stateFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(s, null, 1));
  fs.renameSync(tmp, l.stateFile);
}

export function readState(l: Layout): VmState | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(l.stateFile, 'utf8'));
    return s?.version === 1 ? s : undefined;
  } catch {
    return undefined;
  }
}
