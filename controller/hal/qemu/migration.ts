/**
 * Live migration for the qemu backend: QEMU migration over TCP between two
 * backend instances (two node agents; on one machine, two run roots), with
 * shared storage or with node-local disks copied by block mirroring over NBD.
 *
 * API (methods of every Backend; types in ../migration-types.ts):
 *
 *   source.migrationSource(uid) → MigrationSource
 *       The running VM's current shape: spec with hotplugged devices and MACs,
 *       PCIe placement, disk sizes, what the guest reported. JSON; hand it to the target.
 *   target.prepareIncoming(spec, { listen?: {address, port}, source?, blockMirror? }) → { uid, uri, status }
 *       Starts QEMU with the same devices and `-incoming defer`, then
 *       `migrate-incoming tcp:ADDR:PORT` (port 0 = any free port). Phase Starting,
 *       reason IncomingMigration. blockMirror: the target creates empty images of the
 *       source's size where the spec's disks do not exist yet and exports them
 *       writable over NBD; `uri` then reads `tcp:H:P+nbd:H:P:disk1,disk2`.
 *   source.migrate(uid, { uri, bandwidth?, downtimeLimitMs?, completionTimeoutPerGiB?,
 *                         progressTimeout?, autoConverge?, blockMirror?, onProgress? }) → MigrationResult
 *       { totalMs, downtimeMs (QEMU's `downtime`), wallMs, bytes, memoryBytes, diskBytes, mirrorMs? }.
 *       Resolves when the guest runs on the target; the source VM has then ended
 *       (Succeeded, reason Migrated) and the target is Running (change `migrated-in`).
 *       Rejects with HalError: Cancelled (cancelMigration), Timeout (completion or
 *       progress timeout), Failed (QEMU's error), Unsupported (migratable() says no),
 *       WrongState, Invalid. The source keeps running in every failure case.
 *   source.cancelMigration(uid)
 *       migrate_cancel; resolves when the source runs on its own again. The target's
 *       QEMU then fails its incoming migration and exits (Failed, MigrationFailed).
 *   target.abortIncoming(uid)
 *       Ends an incoming VM that will not be used, removes its run directory and the
 *       disk images it created. Idempotent; call it after any failure or cancel.
 *   migratable(spec) (../capabilities.ts) → { ok: true } | { ok: false, reason }
 *
 * How (QEMU 7.2; research: qemu-feasibility.md §6):
 *  - capabilities `events` on both sides; `pause-before-switchover` on the source
 *    with block mirroring (the mirror jobs are completed while the guest is
 *    paused, before the device state moves); `auto-converge` on request.
 *  - Block mirroring: target `nbd-server-start` + `block-export-add writable` on
 *    the still-inactive disk nodes; source `blockdev-add` NBD clients and
 *    `blockdev-mirror sync=full copy-mode=write-blocking`; once every job is READY,
 *    `migrate`; at `pre-switchover`, `block-job-cancel` (a READY mirror then
 *    completes with the copy in sync), `blockdev-del` the clients,
 *    `migrate-continue`. The target stops its NBD server when it runs.
 *  - pod NICs: the target starts its own passt (one per VM). If the source's
 *    passt still holds the forwarded host ports (both nodes on one machine), the
 *    target's passt starts without them and, once the source has let go after
 *    the switch-over, a passt with the forwards replaces it behind the NIC's hub
 *    (retarget.ts). passt hands out the node's address, so the guest's DHCP
 *    address stays valid on the same node; on another node passt NATs whatever
 *    address the guest keeps using.
 *  - bridge NICs: the target's taps get names of their own (the source's still
 *    exist on the same machine); QEMU's self-announce after the switch-over
 *    moves the guest's MAC to the new tap in the bridge's forwarding table.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { migratable } from '../capabilities';
import { isSameProcess, runChecked, signalRecorded, sleep, waitGone } from '../common/process';
import type { QmpClient, QmpEvent } from '../common/qmp';
import type {
  BlockMirrorIncoming,
  IncomingMigration,
  IncomingOptions,
  MigrateOptions,
  MigrationProgress,
  MigrationResult,
  MigrationSource,
} from '../migration-types';
import { HalError, type DiskSpec, type NicSpec, type VmSpec } from '../types';
import { validateSpec } from '../validate';
import { diskNode } from './args';
import type { QemuInternals, Vm } from './backend';
import { layoutFor, readState, writeState, type IncomingState, type Layout, type PortSlot, type SidecarRecord } from './layout';
import { completeForwards } from './retarget';
import { startPasst } from './sidecars';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** QEMU's defaults (7.2), set explicitly for every migration. */
const DEFAULT_BANDWIDTH = 128 * MiB;
const DEFAULT_DOWNTIME_LIMIT_MS = 300;
/** What `max-bandwidth` gets for "unlimited" (bandwidth 0): 1 TiB/s. */
const UNLIMITED = 1024 * GiB;
/** QEMU migration states in which a migration is still under way. */
const RUNNING = new Set(['setup', 'active', 'pre-switchover', 'device', 'cancelling', 'wait-unplug', 'postcopy-active']);

/** What the backend's launch() needs to start the target of a migration. */
export interface IncomingLaunch {
  placement?: PortSlot[];
  /** mtime of the source's seed files: vvfat shows it to the guest, which may have it cached. */
  seedMtimeMs?: number;
  guest?: MigrationSource['guest'];
  state: IncomingState;
  startPasst(l: Layout, nic: NicSpec): Promise<SidecarRecord>;
  afterQmp(vm: Vm): Promise<void>;
}

/** The qemu-specific part of MigrationSource.placement. */
interface QemuPlacement {
  ports: PortSlot[];
  seedMtimeMs?: number;
}

/** The controls of an outgoing migration (Vm.outgoing while migrate() runs). */
export class OutgoingMigration {
  cancelRequested = false;
  /** Why we cancelled it ourselves (a timeout), if we did. */
  abortReason?: HalError;
  /** NBD client nodes and mirror jobs this migration made on the source. */
  readonly clients: string[] = [];
  readonly jobs: string[] = [];
  settled: Promise<unknown> = Promise.resolve();
  private wakeUp?: () => void;

  wake(): void {
    this.wakeUp?.();
  }

  /** Sleeps up to ms; QMP events and cancel requests end it early. */
  nap(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.wakeUp = undefined;
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wakeUp = done;
    });
  }
}

// ---------------------------------------------------------------- addresses

function fail(field: string, value: unknown, rule: string): never {
  throw new HalError('Invalid', `${field}: ${JSON.stringify(value)} ${rule}`);
}

function checkHost(h: unknown, field: string): string {
  if (typeof h !== 'string' || net.isIP(h) === 0) fail(field, h, 'must be an IP address');
  return h;
}

function checkPort(p: unknown, field: string, allowZero: boolean): number {
  if (typeof p !== 'number' || !Number.isInteger(p) || p < (allowZero ? 0 : 1) || p > 65535)
    fail(field, p, `must be an integer from ${allowZero ? 0 : 1} to 65535`);
  return p;
}

const hostPart = (h: string): string => (h.includes(':') ? `[${h}]` : h);

interface TargetAddress {
  host: string;
  port: number;
  nbd?: { host: string; port: number; disks: string[] };
}

/** `tcp:H:P` or `tcp:H:P+nbd:H:P:disk1,disk2` (IPv6 hosts in brackets). */
export function formatUri(t: TargetAddress): string {
  const base = `tcp:${hostPart(t.host)}:${t.port}`;
  return t.nbd ? `${base}+nbd:${hostPart(t.nbd.host)}:${t.nbd.port}:${t.nbd.disks.join(',')}` : base;
}

const URI = /^tcp:(\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d{1,5})(?:\+nbd:(\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d{1,5}):([a-z0-9,-]+))?$/;

export function parseUri(uri: unknown): TargetAddress {
  const m = typeof uri === 'string' ? URI.exec(uri) : null;
  if (!m) fail('uri', uri, 'must be a target address from prepareIncoming (tcp:HOST:PORT[+nbd:HOST:PORT:DISKS])');
  const unb = (h: string) => (h.startsWith('[') ? h.slice(1, -1) : h);
  const t: TargetAddress = { host: checkHost(unb(m[1]), 'uri host'), port: checkPort(Number(m[2]), 'uri port', false) };
  if (m[3])
    t.nbd = {
      host: checkHost(unb(m[3]), 'uri nbd host'),
      port: checkPort(Number(m[4]), 'uri nbd port', false),
      disks: m[5].split(',').filter(Boolean),
    };
  return t;
}

/** A port nothing listens on right now (the kernel's pick), for the NBD server. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- source description

function placementOf(source: MigrationSource | undefined): QemuPlacement | undefined {
  const p = source?.placement as QemuPlacement | undefined;
  if (p === undefined) return undefined;
  const ok =
    typeof p === 'object' &&
    Array.isArray(p.ports) &&
    p.ports.every((x, i) => x && x.id === `rp${i}` && (x.device === null || typeof x.device === 'string'));
  if (!ok) fail('source.placement', p, 'is not a qemu placement (pass migrationSource() of a qemu backend unchanged)');
  return p;
}

export async function migrationSource(ctx: QemuInternals, uid: string): Promise<MigrationSource> {
  const vm = ctx.running(uid);
  const spec: VmSpec = JSON.parse(JSON.stringify(vm.state.spec));
  for (const n of spec.nics) n.mac = vm.state.macs[n.name];
  const nodes: any[] = await vm.qmp!.execute('query-named-block-nodes', { flat: true });
  const disks = spec.disks.map((d) => ({
    name: d.name,
    path: d.path,
    format: d.format,
    virtualSize: Number(nodes.find((n) => n['node-name'] === diskNode(d.name))?.image?.['virtual-size'] ?? 0),
  }));
  let seedMtimeMs: number | undefined;
  try {
    seedMtimeMs = fs.statSync(path.join(vm.layout.seedDir, 'meta-data')).mtimeMs;
  } catch {
    /* no seed */
  }
  const placement: QemuPlacement = { ports: vm.state.ports.map((p) => ({ ...p })), ...(seedMtimeMs ? { seedMtimeMs } : {}) };
  return {
    spec,
    placement,
    disks,
    guest: {
      readyAt: vm.status.guestReadyAt,
      hostname: vm.status.guestHostname,
      interfaces: vm.status.interfaces.map((i) => ({ ...i })),
    },
  };
}

// ---------------------------------------------------------------- target side

interface MirrorPlan {
  disks: DiskSpec[];
  sizes: Record<string, number>;
  host: string;
  port: number;
}

function mirrorPlan(spec: VmSpec, bm: true | BlockMirrorIncoming, source: MigrationSource | undefined, host: string): MirrorPlan {
  const o: BlockMirrorIncoming = bm === true ? {} : bm;
  const names = o.disks ?? spec.disks.map((d) => d.name);
  if (!Array.isArray(names) || names.length === 0)
    fail('blockMirror.disks', names, 'must name at least one disk of the spec (block mirroring copies disks)');
  const disks = names.map(
    (n, i) => spec.disks.find((d) => d.name === n) ?? fail(`blockMirror.disks[${i}]`, n, 'is not a disk of the spec'),
  );
  const sizes: Record<string, number> = {};
  for (const d of source?.disks ?? []) if (d.virtualSize > 0) sizes[d.name] = d.virtualSize;
  for (const [k, v] of Object.entries(o.sizes ?? {})) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      fail(`blockMirror.sizes.${k}`, v, 'must be a positive integer (bytes)');
    sizes[k] = v;
  }
  return {
    disks,
    sizes,
    host: o.listen?.address !== undefined ? checkHost(o.listen.address, 'blockMirror.listen.address') : host,
    port: checkPort(o.listen?.port ?? 0, 'blockMirror.listen.port', true),
  };
}

/** Creates the images the copies go into (where none exist yet); returns the paths created. */
async function createCopies(plan: MirrorPlan, created: string[]): Promise<void> {
  for (const d of plan.disks) {
    const want = plan.sizes[d.name];
    if (fs.existsSync(d.path)) {
      const info = await runChecked(['qemu-img', 'info', '--output=json', '-U', '-f', d.format, '--', d.path], 60_000);
      const have = Number(JSON.parse(info)['virtual-size']);
      if (want !== undefined && have !== want)
        throw new HalError(
          'Invalid',
          `blockMirror: ${d.path} (disk ${d.name}) exists with virtual size ${have}, but the source's disk has ${want} bytes`,
        );
      continue;
    }
    if (want === undefined)
      throw new HalError(
        'Invalid',
        `blockMirror.sizes.${d.name}: needed to create ${d.path} (pass source from migrationSource(), or the size in bytes)`,
      );
    fs.mkdirSync(path.dirname(d.path), { recursive: true });
    await runChecked(['qemu-img', 'create', '-q', '-f', d.format, '--', d.path, String(want)], 60_000);
    created.push(d.path);
  }
}

/** Gives the seed files the source's mtime: vvfat shows it to the guest, which may have the directory cached. */
export function setSeedMtime(dir: string, mtimeMs: number): void {
  const t = new Date(mtimeMs);
  for (const f of fs.readdirSync(dir)) fs.utimesSync(path.join(dir, f), t, t);
}

export function removeCreatedDisks(inc: IncomingState): void {
  for (const p of inc.createdDisks) fs.rmSync(p, { force: true });
}

/** passt with the NIC's port forwards, or without them when the source's passt still holds the ports. */
async function startIncomingPasst(ctx: QemuInternals, l: Layout, nic: NicSpec, state: IncomingState): Promise<SidecarRecord> {
  try {
    return await startPasst(ctx.host, l, nic);
  } catch (e) {
    if (!nic.portForwards?.length || !/bind/i.test((e as Error).message)) throw e;
    const rec = await startPasst(ctx.host, l, { ...nic, portForwards: [] });
    state.pendingForwards.push(nic.name);
    return rec;
  }
}

export async function prepareIncoming(ctx: QemuInternals, input: VmSpec, opts: IncomingOptions = {}): Promise<IncomingMigration> {
  validateSpec(input);
  const m = migratable(input);
  if (!m.ok) throw new HalError('Unsupported', `VM ${input.name} cannot be live-migrated: ${m.reason}`);
  const host = checkHost(opts.listen?.address ?? '127.0.0.1', 'listen.address');
  const port = checkPort(opts.listen?.port ?? 0, 'listen.port', true);
  const source = opts.source;
  if (source && source.spec?.uid !== input.uid)
    fail('source.spec.uid', source.spec?.uid, `must be the uid of the VM being migrated (${input.uid})`);
  const placement = placementOf(source);
  const spec: VmSpec = JSON.parse(JSON.stringify(input));
  // The guest keeps its NICs' identity: the source's MACs win over derived ones.
  for (const n of spec.nics) n.mac ??= source?.spec.nics.find((x) => x.name === n.name)?.mac;
  const plan = opts.blockMirror ? mirrorPlan(spec, opts.blockMirror, source, host) : undefined;
  if (!ctx.backend.capabilities().includes(plan ? 'block-migration' : 'live-migration'))
    throw new HalError('Unsupported', `backend "qemu" lacks capability "${plan ? 'block-migration' : 'live-migration'}"`);

  const state: IncomingState = { uri: '', since: Date.now(), createdDisks: [], pendingForwards: [] };
  try {
    if (plan) await createCopies(plan, state.createdDisks);
    const status = await ctx.launch(spec, {
      placement: placement?.ports,
      seedMtimeMs: placement?.seedMtimeMs,
      guest: source?.guest,
      state,
      startPasst: (l, nic) => startIncomingPasst(ctx, l, nic, state),
      afterQmp: async (vm) => {
        const qmp = vm.qmp!;
        await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
        let nbd: TargetAddress['nbd'];
        if (plan) {
          nbd = { host: plan.host, port: await startNbd(qmp, plan), disks: plan.disks.map((d) => d.name) };
          for (const d of plan.disks)
            await qmp.execute('block-export-add', {
              type: 'nbd',
              id: `mig-${d.name}`,
              'node-name': diskNode(d.name),
              name: d.name,
              writable: true,
            });
        }
        await qmp.execute('migrate-incoming', { uri: `tcp:${hostPart(host)}:${port}` });
        const info: any = await qmp.execute('query-migrate');
        const real = Number(info?.['socket-address']?.[0]?.port ?? port);
        state.uri = formatUri({ host, port: real, nbd });
        if (nbd) state.nbd = nbd;
        writeState(vm.layout, vm.state);
      },
    });
    return { uid: spec.uid, uri: state.uri, status };
  } catch (e) {
    removeCreatedDisks(state);
    if (e instanceof HalError) throw e;
    throw new HalError('Failed', `preparing the migration target of ${spec.name}: ${(e as Error).message}`);
  }
}

async function startNbd(qmp: QmpClient, plan: MirrorPlan): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = plan.port || (await freePort(plan.host));
    try {
      await qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: plan.host, port: String(port) } } });
      return port;
    } catch (e) {
      // A free port we picked may be taken before QEMU binds it: pick again.
      if (plan.port || attempt >= 4 || !/in use/i.test((e as Error).message)) throw e;
    }
  }
}

/** Events of any VM of the backend (backend.ts onEvent): the target's completion, the source's wake-ups. */
export function onMigrationEvent(ctx: QemuInternals, vm: Vm, e: QmpEvent): void {
  if (e.event === 'MIGRATION' && vm.state.incoming && e.data?.status === 'completed') void finishIncoming(ctx, vm);
  vm.outgoing?.wake();
}

async function finishIncoming(ctx: QemuInternals, vm: Vm): Promise<void> {
  const inc = vm.state.incoming;
  if (!inc) return;
  // QEMU resumed the guest before it reported `completed` (autostart): it runs here now.
  delete vm.state.incoming;
  writeState(vm.layout, vm.state);
  if (!ctx.ended(vm)) ctx.setPhase(vm, 'Running', undefined, 'migrated-in');
  if (inc.nbd) await vm.qmp?.execute('nbd-server-stop').catch(() => undefined);
  for (const name of inc.pendingForwards) void completeForwards(ctx, vm, name);
}

export async function abortIncoming(ctx: QemuInternals, uid: string): Promise<void> {
  const vm = ctx.vms.get(uid);
  let l: Layout;
  try {
    l = layoutFor(ctx.runRoot, uid);
  } catch (e: any) {
    throw new HalError('Invalid', e.message);
  }
  const state = vm?.state ?? readState(l);
  if (!state) return; // nothing left: aborted before, or never prepared
  if (!state.incoming)
    throw new HalError(
      'WrongState',
      `VM ${uid} is not waiting for an incoming migration (it completed, or was started normally); stop it instead`,
    );
  state.incoming.aborted = true;
  if (vm && !ctx.ended(vm)) {
    writeState(vm.layout, vm.state);
    await ctx.backend.kill(uid);
  } else if (!vm && state.qemu && isSameProcess(state.qemu)) {
    signalRecorded(state.qemu, 'SIGKILL');
    await waitGone(state.qemu.pid, 5_000);
  }
  removeCreatedDisks(state.incoming);
  await ctx.backend.cleanup(uid);
}

// ---------------------------------------------------------------- source side

function num(field: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)
    fail(field, v, `must be a number from ${min} to ${max}`);
  return v;
}

function progressOf(info: any, t0: number, disk?: MigrationProgress['disk']): MigrationProgress {
  const ram = info?.ram ?? {};
  return {
    status: String(info?.status ?? 'none'),
    elapsedMs: Date.now() - t0,
    transferredBytes: Number(ram.transferred ?? 0),
    remainingBytes: Number(ram.remaining ?? 0),
    totalBytes: Number(ram.total ?? 0),
    dirtyRateBytesPerSec: Number(ram['dirty-pages-rate'] ?? 0) * Number(ram['page-size'] ?? 4096),
    iterations: Number(ram['dirty-sync-count'] ?? 0),
    ...(ram.mbps !== undefined ? { mbps: Number(ram.mbps) } : {}),
    ...(info?.['expected-downtime'] !== undefined ? { expectedDowntimeMs: Number(info['expected-downtime']) } : {}),
    ...(disk ? { disk } : {}),
  };
}

const jobId = (disk: string) => `mig-${disk}`;
const clientNode = (disk: string) => `mg${diskNode(disk)}`;

export async function migrate(ctx: QemuInternals, uid: string, o: MigrateOptions): Promise<MigrationResult> {
  const vm = ctx.running(uid);
  if (vm.outgoing) throw new HalError('WrongState', `VM ${uid} is already migrating`);
  if (vm.state.incoming) throw new HalError('WrongState', `VM ${uid} is the target of a migration that has not completed`);
  const m = migratable(vm.state.spec);
  if (!m.ok) throw new HalError('Unsupported', `VM ${vm.state.spec.name} cannot be live-migrated: ${m.reason}`);
  const target = parseUri(o?.uri);
  const bandwidth = num('bandwidth', o.bandwidth, 0);
  const downtimeLimit = num('downtimeLimitMs', o.downtimeLimitMs, 0, 2_000_000);
  const perGiB = num('completionTimeoutPerGiB', o.completionTimeoutPerGiB, 1) ?? 150;
  const progressS = num('progressTimeout', o.progressTimeout, 1) ?? 150;
  const interval = num('progressIntervalMs', o.progressIntervalMs, 10, 60_000) ?? 250;
  if (o.blockMirror === true && !target.nbd)
    fail('blockMirror', true, 'needs a target prepared with blockMirror (its uri has no +nbd: part)');
  if (o.blockMirror === false && target.nbd)
    fail('blockMirror', false, 'contradicts the target, which was prepared for block mirroring (its uri has a +nbd: part)');
  const mirrored = target.nbd?.disks ?? [];
  mirrored.forEach((d, i) => {
    if (!vm.state.spec.disks.some((x) => x.name === d)) fail(`uri nbd disks[${i}]`, d, `is not a disk of VM ${uid}`);
  });

  const qmp = vm.qmp!;
  const out = new OutgoingMigration();
  vm.outgoing = out;
  let settle!: () => void;
  out.settled = new Promise<void>((r) => (settle = r));
  const t0 = Date.now();
  const report = (p: MigrationProgress) => {
    try {
      o.onProgress?.(p);
    } catch {
      /* the caller's bug must not break the migration */
    }
  };
  ctx.emit(vm, 'migration-started');
  let mirrorMs: number | undefined;
  let diskBytes = 0;
  try {
    const nodes: any[] = mirrored.length ? await qmp.execute('query-named-block-nodes', { flat: true }) : [];
    const diskSize = mirrored.reduce(
      (s, d) => s + Number(nodes.find((n) => n['node-name'] === diskNode(d))?.image?.['virtual-size'] ?? 0),
      0,
    );
    const deadline = t0 + (perGiB * 1000 * (vm.state.spec.memoryMiB * MiB + diskSize)) / GiB;
    const progressMs = progressS * 1000;
    const checkTimeouts = (now: number, stalledSince: number) => {
      if (now > deadline)
        return new HalError(
          'Timeout',
          `migration of VM ${uid} did not complete within ${Math.round((deadline - t0) / 1000)} s (completionTimeoutPerGiB ${perGiB} s)`,
        );
      if (now - stalledSince > progressMs)
        return new HalError('Timeout', `migration of VM ${uid} made no progress for ${progressS} s (progressTimeout)`);
      return undefined;
    };

    await qmp.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'events', state: true },
        { capability: 'pause-before-switchover', state: mirrored.length > 0 },
        { capability: 'auto-converge', state: !!o.autoConverge },
      ],
    });
    // Always both: QEMU keeps parameters from an earlier attempt.
    await qmp.execute('migrate-set-parameters', {
      'max-bandwidth': bandwidth === undefined ? DEFAULT_BANDWIDTH : bandwidth === 0 ? UNLIMITED : Math.round(bandwidth),
      'downtime-limit': Math.round(downtimeLimit ?? DEFAULT_DOWNTIME_LIMIT_MS),
    });

    if (mirrored.length) {
      const m0 = Date.now();
      await startMirrors(qmp, out, target.nbd!, mirrored, t0, report, checkTimeouts);
      mirrorMs = Date.now() - m0;
    }

    await qmp.execute('migrate', { uri: `tcp:${hostPart(target.host)}:${target.port}` });
    let lowest = Infinity;
    let lowestAt = Date.now();
    let cancelSent = false;
    let switched = false;
    let info: any;
    for (;;) {
      await out.nap(interval);
      info = await qmp.execute('query-migrate');
      const st = String(info?.status ?? 'none');
      if (st === 'completed') {
        // QEMU reports `completed` a moment before it fills in total-time and downtime.
        for (let i = 0; i < 100 && !(Number(info?.['total-time']) > 0); i++) {
          await sleep(20);
          info = await qmp.execute('query-migrate');
        }
        break;
      }
      if (st === 'failed')
        throw (
          out.abortReason ??
          new HalError(
            'Failed',
            `migration of VM ${uid} failed: ${info['error-desc'] ?? 'QEMU reports failed'}; the VM keeps running here`,
          )
        );
      if (st === 'cancelled')
        throw out.abortReason ?? new HalError('Cancelled', `migration of VM ${uid} was cancelled; the VM keeps running here`);
      if (st === 'pre-switchover' && !switched && !cancelSent) {
        switched = true;
        report(progressOf(info, t0));
        diskBytes = await completeMirrors(qmp, out, mirrored);
        await qmp.execute('migrate-continue', { state: 'pre-switchover' });
        continue;
      }
      report(progressOf(info, t0));
      const now = Date.now();
      const remaining = Number(info?.ram?.remaining ?? 0);
      if (st === 'active' && remaining > 0 && remaining < lowest) {
        lowest = remaining;
        lowestAt = now;
      }
      if (!cancelSent) {
        out.abortReason ??= out.cancelRequested
          ? new HalError('Cancelled', `migration of VM ${uid} was cancelled; the VM keeps running here`)
          : checkTimeouts(now, lowestAt);
        if (out.abortReason) {
          cancelSent = true;
          await qmp.execute('migrate_cancel');
        }
      }
    }

    const memoryBytes = Number(info?.ram?.transferred ?? 0);
    const result: MigrationResult = {
      totalMs: Number(info?.['total-time'] ?? Date.now() - t0),
      downtimeMs: Number(info?.downtime ?? 0),
      wallMs: Date.now() - t0,
      bytes: memoryBytes + diskBytes,
      memoryBytes,
      diskBytes,
      ...(mirrorMs !== undefined ? { mirrorMs } : {}),
    };
    report(progressOf(info, t0));
    // The guest runs on the target now: this QEMU only holds a stale copy.
    vm.state.migratedTo = o.uri;
    writeState(vm.layout, vm.state);
    await endSource(vm);
    result.wallMs = Date.now() - t0;
    return result;
  } catch (e) {
    await rollBack(qmp, out);
    if (e instanceof HalError) throw e;
    throw new HalError('Failed', `migration of VM ${uid} failed: ${(e as Error).message}; the VM keeps running here`);
  } finally {
    vm.outgoing = undefined;
    settle();
  }
}

/** NBD clients and mirror jobs for each disk; resolves once every job is READY (in sync, mirroring writes). */
async function startMirrors(
  qmp: QmpClient,
  out: OutgoingMigration,
  nbd: NonNullable<TargetAddress['nbd']>,
  disks: string[],
  t0: number,
  report: (p: MigrationProgress) => void,
  checkTimeouts: (now: number, stalledSince: number) => HalError | undefined,
): Promise<void> {
  const errors = new Map<string, string>();
  const onEvent = (e: QmpEvent) => {
    if ((e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_ERROR') && e.data?.device)
      errors.set(e.data.device, String(e.data.error ?? e.data.operation ?? 'the job ended'));
    if (e.event.startsWith('BLOCK_JOB')) out.wake();
  };
  qmp.on('event', onEvent);
  try {
    for (const d of disks) {
      await qmp.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': clientNode(d),
        server: { type: 'inet', host: nbd.host, port: String(nbd.port) },
        export: d,
      });
      out.clients.push(clientNode(d));
      await qmp.execute('blockdev-mirror', {
        'job-id': jobId(d),
        device: diskNode(d),
        target: clientNode(d),
        sync: 'full',
        'copy-mode': 'write-blocking',
      });
      out.jobs.push(jobId(d));
    }
    let lowest = Infinity;
    let lowestAt = Date.now();
    for (;;) {
      const jobs: any[] = await qmp.execute('query-block-jobs');
      const ours = out.jobs.map((id) => jobs.find((j) => j.device === id));
      const gone = out.jobs.filter((_id, i) => !ours[i]);
      if (gone.length)
        throw new HalError(
          'Failed',
          `block mirroring of ${gone.join(', ')} stopped: ${gone.map((g) => errors.get(g) ?? 'the job ended').join('; ')}`,
        );
      const copied = ours.reduce((s, j) => s + Number(j.offset ?? 0), 0);
      const total = ours.reduce((s, j) => s + Number(j.len ?? 0), 0);
      const ready = ours.every((j) => j.ready);
      report({ ...progressOf({ status: 'mirroring' }, t0), disk: { copiedBytes: copied, totalBytes: total, ready } });
      if (ready) return;
      if (out.cancelRequested) throw new HalError('Cancelled', 'the migration was cancelled while disks were being mirrored');
      const now = Date.now();
      if (total - copied < lowest) {
        lowest = total - copied;
        lowestAt = now;
      }
      const why = checkTimeouts(now, lowestAt);
      if (why) throw why;
      await out.nap(250);
    }
  } finally {
    qmp.off('event', onEvent);
  }
}

/** At pre-switchover (guest paused): a READY mirror cancelled completes in sync; then drop the NBD clients. */
async function completeMirrors(qmp: QmpClient, out: OutgoingMigration, disks: string[]): Promise<number> {
  let bytes = 0;
  for (const d of disks) {
    const done = qmp.waitEvent('BLOCK_JOB_COMPLETED', (e) => e.data?.device === jobId(d), 120_000);
    done.catch(() => undefined);
    await qmp.execute('block-job-cancel', { device: jobId(d) });
    const ev = await done;
    if (ev.data?.error) throw new HalError('Failed', `completing the block mirror of disk ${d}: ${ev.data.error}`);
    bytes += Number(ev.data?.len ?? 0);
    out.jobs.splice(out.jobs.indexOf(jobId(d)), 1);
  }
  for (const c of [...out.clients]) {
    await qmp.execute('blockdev-del', { 'node-name': c });
    out.clients.splice(out.clients.indexOf(c), 1);
  }
  return bytes;
}

/** After a failure: stop the migration if QEMU still runs it, drop mirror jobs and NBD clients. */
async function rollBack(qmp: QmpClient, out: OutgoingMigration): Promise<void> {
  if (qmp.closed) return;
  const quiet = <T>(p: Promise<T>) => p.catch(() => undefined);
  const info: any = await quiet(qmp.execute('query-migrate'));
  if (RUNNING.has(info?.status)) {
    await quiet(qmp.execute('migrate_cancel'));
    for (let i = 0; i < 200; i++) {
      const st: any = await quiet(qmp.execute('query-migrate'));
      if (!RUNNING.has(st?.status)) break;
      await sleep(50);
    }
  }
  for (const job of out.jobs) {
    const gone = qmp.waitEvent('BLOCK_JOB_CANCELLED', (e) => e.data?.device === job, 10_000);
    gone.catch(() => undefined);
    if (await quiet(qmp.execute('block-job-cancel', { device: job, force: true }).then(() => true))) await quiet(gone);
  }
  for (const c of out.clients) await quiet(qmp.execute('blockdev-del', { 'node-name': c }));
  await quiet(
    qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'pause-before-switchover', state: false }] }),
  );
}

/** The source after a completed migration: QEMU quits; onExit reports Succeeded/Migrated. */
async function endSource(vm: Vm): Promise<void> {
  await vm.qmp?.execute('quit').catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([
    vm.ended.then(() => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000))),
  ]);
  clearTimeout(timer);
  if (!ended && vm.state.qemu) {
    signalRecorded(vm.state.qemu, 'SIGKILL');
    await vm.ended;
  }
}

export async function cancelMigration(ctx: QemuInternals, uid: string): Promise<void> {
  const vm = ctx.get(uid);
  if (vm.outgoing) {
    vm.outgoing.cancelRequested = true;
    vm.outgoing.wake();
    await vm.outgoing.settled;
    return;
  }
  // No migrate() of ours is running (e.g. the agent restarted): stop whatever QEMU still does.
  if (!vm.qmp || vm.qmp.closed || ctx.ended(vm)) return;
  const out = new OutgoingMigration();
  const jobs: any[] = await vm.qmp.execute('query-block-jobs').catch(() => []);
  out.jobs.push(...jobs.map((j) => String(j.device)).filter((d) => d.startsWith('mig-')));
  const nodes: any[] = await vm.qmp.execute('query-named-block-nodes', { flat: true }).catch(() => []);
  out.clients.push(...nodes.map((n) => String(n['node-name'])).filter((n) => /^mgdk[0-9a-f]{12}$/.test(n)));
  await rollBack(vm.qmp, out);
}
