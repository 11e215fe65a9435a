import * as os from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import type { Backend, VmSpec, VmStatus } from '../hal/types';
import { missingCapabilities } from '../hal/capabilities';
import { GVR, Kube, isConflict, isNotFound } from '../runtime/kube';
import { WorkQueue, type Result } from '../runtime/queue';
import { Store, key } from '../controller/caches';
import { AGENT_FINALIZER } from '../controller/vm';
import { recordEvent } from '../controller/events';
import { parseQuantity } from '../controller/scheduler';
import { confinePath } from '../hal/common/paths';
import { VolumeProvisioner } from './volumes';
import { FilesystemShares } from './filesystems';
import { BackupRunner } from './backups';
import { MigrationAgent } from './migrations';
import type { BridgeSpec, NodeBridges } from './bridges';
import { iso, withoutConditionTimes as stripTimes, ignoreGone, setCondition, removeCondition } from '../runtime/status';

/**
 * The node agent: registers its Node (capacity, labels, the backend's
 * capabilities), heartbeats with a Lease, runs the instances bound to its
 * node through the HAL, reports their status, applies live changes
 * (hot-plug), adopts VMs a previous agent process left running, removes
 * orphans, and provisions the Volumes placed on its node.
 */
export interface AgentOptions {
  nodeName: string;
  backend: Backend;
  /** Where Volumes' files live on this node. */
  volumeDir: string;
  /** Directories ContainerPath shares and image imports may come from. */
  allowedRoots: string[];
  cpu?: number;
  memoryBytes?: number;
  labels?: Record<string, string>;
  leaseSeconds?: number;
  /**
   * The node's Linux bridges for `type: bridge` Networks (see ./bridges.ts),
   * created in the same network namespace the backend runs its VMs in. Unset:
   * the agent leaves bridges alone (the sim backend, or bridges an operator manages).
   */
  bridges?: NodeBridges;
  /** Run Backups and Restores on this node (default: when the backend has the backup-cbt capability). */
  backups?: boolean;
  /** Default directory for backup points. */
  backupDir?: string;
  /** Send and receive live migrations (default: when the backend has the live-migration capability). */
  migration?: boolean;
  log?: (line: string) => void;
}

const NODE_LEASE_NS = 'kube-node-lease';

export class Agent {
  readonly vmis: Store;
  readonly volumes: Store;
  readonly queue: WorkQueue;
  /** One key: brings the node's bridges in line with the instances on it. */
  private readonly bridgeQueue?: WorkQueue;
  private wantedBridges = '';
  private readonly provisioner: VolumeProvisioner;
  readonly backups?: BackupRunner;
  readonly migrations?: MigrationAgent;
  /** Instances migrating away: their source process ends without the instance ending. */
  private readonly leaving = new Set<string>();
  private readonly uidToKey = new Map<string, string>();
  /** The spec each running VM was started with plus what was hot-plugged since. */
  private readonly applied = new Map<string, VmSpec>();
  /** Disks and NICs hot-plugged into each running instance since it started (VMI status.attached). */
  private readonly attached = new Map<string, { disks: string[]; interfaces: string[] }>();
  /** Consecutive passes in which a hotplug failed, per instance (the back-off of the next try). */
  private readonly hotplugRetries = new Map<string, number>();
  /** Warnings already recorded per instance (see warnOnce). */
  private readonly warned = new Map<string, Set<string>>();
  /** ContainerPath shares of the running guests and what the status reports about them. */
  private readonly shares: FilesystemShares;
  private heartbeat?: NodeJS.Timeout;
  private adopted = false;
  private unobserve: () => void = () => {};
  private readonly log: (line: string) => void;

  constructor(
    private readonly kube: Kube,
    private readonly opts: AgentOptions,
  ) {
    this.log = opts.log ?? (() => {});
    this.vmis = new Store(kube.informer(GVR.vmi));
    this.volumes = new Store(kube.informer(GVR.volume));
    this.queue = new WorkQueue(`agent/${opts.nodeName}`, (k) => this.reconcile(k), 4, this.log);
    this.provisioner = new VolumeProvisioner(kube, opts.nodeName, opts.volumeDir, opts.allowedRoots, this.volumes, this.log);
    this.shares = new FilesystemShares(opts.backend, opts.allowedRoots);
    if (opts.backups ?? opts.backend.capabilities().includes('backup-cbt')) {
      const backend = opts.backend;
      this.backups = new BackupRunner(
        kube,
        {
          nodeName: opts.nodeName,
          backupDir: opts.backupDir ?? `${opts.volumeDir}/.backups`,
          allowedRoots: opts.allowedRoots,
          backend,
          log: this.log,
          onTargetChanged: (k) => this.provisioner.queue.add(k),
        },
        this.vmis,
        this.volumes,
        (uid) => {
          const s = opts.backend.status(uid);
          return !!s && (s.phase === 'Running' || s.phase === 'Paused');
        },
      );
      this.provisioner.restoreFrom = async (v, file, format) => {
        const src = v.spec.source.fromBackup;
        const b = this.backups!.backups.get(`${v.metadata.namespace}/${src.backup}`);
        if (!b || b.status?.phase !== 'Succeeded') throw new Error(`source.fromBackup: Backup ${src.backup} is not Succeeded`);
        const disks: any[] = b.status.disks ?? [];
        const point = src.disk ? disks.find((d) => d.name === src.disk) : disks.length === 1 ? disks[0] : undefined;
        if (!point) throw new Error(`source.fromBackup.disk: ${src.disk ? `Backup ${src.backup} has no disk ${src.disk}` : `required: Backup ${src.backup} has ${disks.length} disks`}`);
        await backend.restore({ point: point.manifest, dest: file, format });
      };
    }
    if (opts.migration ?? opts.backend.capabilities().includes('live-migration')) {
      this.migrations = new MigrationAgent(
        kube,
        {
          nodeName: opts.nodeName,
          backend: opts.backend,
          leaving: this.leaving,
          adoptIncoming: () => undefined,
          prepareNode: async (vmi) => {
            for (const br of bridgesOf(vmi)) await this.opts.bridges?.ensure(br);
          },
          releaseInstance: async (uid) => {
            this.applied.delete(uid);
            this.attached.delete(uid);
            this.hotplugRetries.delete(uid);
            this.warned.delete(uid);
            const b = opts.backend;
            for (let i = 0; i < 100 && b.status(uid) && !ended(b.status(uid)!); i++) await new Promise((r) => setTimeout(r, 100));
            await b.cleanup(uid).catch((e) => this.log(`cleanup after migration ${uid}: ${e.message}`));
            this.leaving.delete(uid);
          },
          log: this.log,
        },
        this.vmis,
      );
    }
    if (opts.bridges) this.bridgeQueue = new WorkQueue(`agent/${opts.nodeName}/bridges`, () => this.syncBridges(), 1, this.log);
    for (const ev of ['add', 'update', 'delete'] as const) {
      this.vmis.inf.on(ev, (o: any) => {
        if (o.spec?.nodeName !== opts.nodeName) return;
        this.uidToKey.set(o.metadata.uid, key(o));
        this.queue.add(key(o));
        this.bridgesMayHaveChanged();
      });
      this.volumes.inf.on(ev, (o: any) => {
        if (o.status?.nodeName === opts.nodeName) this.provisioner.queue.add(key(o));
      });
    }
  }

  get nodeName(): string {
    return this.opts.nodeName;
  }

  async start(): Promise<void> {
    await this.register();
    await this.renewLease();
    this.heartbeat = setInterval(() => void this.renewLease().catch((e) => this.log(`lease: ${e.message}`)), ((this.opts.leaseSeconds ?? 40) * 1000) / 4);
    this.heartbeat.unref();
    this.unobserve = this.opts.backend.observe((s) => {
      const k = this.uidToKey.get(s.uid);
      if (k) this.queue.add(k);
    });
    await this.vmis.inf.start();
    await this.volumes.inf.start();
    await this.backups?.start();
    await this.migrations?.start();
    await this.adoptOrRemove();
  }

  /**
   * Stops reconciling. By default the VMs keep running and a later agent adopts
   * them (an agent restart); with stopVms they are shut down (ACPI, then hard
   * after graceMs) and their run state removed, as when the whole node goes down.
   */
  async stop(opts: { stopVms?: boolean; graceMs?: number } = {}): Promise<void> {
    clearInterval(this.heartbeat);
    this.unobserve();
    this.queue.stop();
    this.bridgeQueue?.stop();
    this.provisioner.queue.stop();
    await this.backups?.stop();
    await this.migrations?.stop();
    await this.vmis.inf.stop();
    await this.volumes.inf.stop();
    const b = this.opts.backend;
    if (opts.stopVms) {
      await Promise.all(
        b.list().map(async (s) => {
          if (!ended(s)) await b.stop(s.uid, { graceMs: opts.graceMs ?? 10_000 }).catch((e) => this.log(`stop ${s.name}: ${e.message}`));
          await b.cleanup(s.uid).catch(() => undefined);
        }),
      );
      // The node goes down with its VMs: its bridges go too (best effort).
      await this.opts.bridges?.prune(this.opts.nodeName, () => new Set()).catch((e) => this.log(`bridges: ${e.message}`));
    }
    await b.close();
  }

  private async register(): Promise<void> {
    const b = this.opts.backend;
    const cpu = this.opts.cpu ?? os.cpus().length;
    const mem = this.opts.memoryBytes ?? os.totalmem();
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const labels = {
      'kubernetes.io/hostname': this.opts.nodeName,
      'kubernetes.io/os': 'linux',
      'kubernetes.io/arch': process.arch === 'x64' ? 'amd64' : process.arch,
      'kubevm.dev/node': 'true',
      [`kubevm.dev/backend-${b.name}`]: 'true',
      ...(this.opts.labels ?? {}),
    };
    const annotations = { 'kubevm.dev/backends': b.name, 'kubevm.dev/capabilities': b.capabilities().join(',') };
    const existing = await this.kube.tryGet(GVR.node, undefined, this.opts.nodeName);
    if (!existing) {
      await this.kube.create(GVR.node, undefined, { apiVersion: 'v1', kind: 'Node', metadata: { name: this.opts.nodeName, labels, annotations } });
    } else {
      await this.kube.mergePatch(GVR.node, undefined, this.opts.nodeName, { metadata: { labels, annotations } });
    }
    const quantity = { cpu: String(cpu), memory: `${Math.floor(mem / 1024 / 1024)}Mi`, pods: '110' };
    await this.kube.mergePatch(
      GVR.node,
      undefined,
      this.opts.nodeName,
      {
        status: {
          capacity: quantity,
          allocatable: quantity,
          conditions: [{ type: 'Ready', status: 'True', reason: 'KubevmAgentReady', message: `kubevm agent with the ${b.name} backend is ready`, lastHeartbeatTime: now, lastTransitionTime: now }],
          nodeInfo: { kubeletVersion: 'kubevm-agent', osImage: os.version(), kernelVersion: os.release(), operatingSystem: 'linux', architecture: labels['kubernetes.io/arch'], containerRuntimeVersion: `kubevm-${b.name}` },
          addresses: [{ type: 'Hostname', address: this.opts.nodeName }, { type: 'InternalIP', address: '127.0.0.1' }],
        },
      },
      'status',
    );
  }

  private async renewLease(): Promise<void> {
    const now = new Date().toISOString().replace('Z', '000Z');
    const spec = { holderIdentity: this.opts.nodeName, leaseDurationSeconds: this.opts.leaseSeconds ?? 40, renewTime: now };
    try {
      await this.kube.mergePatch(GVR.lease, NODE_LEASE_NS, this.opts.nodeName, { spec });
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await this.kube.create(GVR.lease, NODE_LEASE_NS, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.opts.nodeName }, spec: { ...spec, acquireTime: now } });
    }
  }

  /** After a restart: VMs the backend knows and a VMI still wants are adopted; the rest are orphans. */
  private async adoptOrRemove(): Promise<void> {
    const wanted = new Map<string, any>();
    for (const v of this.vmis.list()) if (v.spec?.nodeName === this.opts.nodeName) wanted.set(v.metadata.uid, v);
    for (const uid of await this.opts.backend.discover()) {
      const vmi = wanted.get(uid);
      if (vmi && !vmi.metadata.deletionTimestamp && !['Succeeded', 'Failed'].includes(vmi.status?.phase)) {
        const s = await this.opts.backend.adopt(uid).catch((e) => {
          this.log(`adopt ${uid}: ${e.message}`);
          return undefined;
        });
        if (s) {
          this.log(`adopted ${key(vmi)} (pid ${s.pid})`);
          continue;
        }
      }
      this.log(`removing orphan VM state ${uid}`);
      await this.opts.backend.kill(uid).catch(() => undefined);
      await this.opts.backend.cleanup(uid).catch((e) => this.log(`cleanup ${uid}: ${e.message}`));
    }
    this.adopted = true;
    for (const k of new Set(this.uidToKey.values())) this.queue.add(k);
    this.bridgeQueue?.add('bridges');
  }

  /** Bridges the instances on this node need: those not finished (a deleting one may still run). */
  private neededBridges(): Map<string, BridgeSpec> {
    const out = new Map<string, BridgeSpec>();
    for (const vmi of this.vmis.list()) {
      // An instance migrating in is not bound here yet, but its QEMU is (or is about to be) on the bridges.
      const here = vmi.spec?.nodeName === this.opts.nodeName || !!this.migrations?.involved(vmi.metadata.uid);
      if (!here || ['Succeeded', 'Failed'].includes(vmi.status?.phase)) continue;
      for (const b of bridgesOf(vmi)) out.set(b.name, b);
    }
    return out;
  }

  /** Queues a bridge sync when the set of needed bridges changed (VMI updates are frequent; syncs spawn `ip`). */
  private bridgesMayHaveChanged(): void {
    if (!this.bridgeQueue || !this.adopted) return;
    const wanted = JSON.stringify([...this.neededBridges().values()].sort((a, b) => (a.name < b.name ? -1 : 1)));
    if (wanted === this.wantedBridges) return;
    this.wantedBridges = wanted;
    this.bridgeQueue.add('bridges');
  }

  /** Level-triggered: every needed bridge exists as its Network says; unneeded ones this agent made are removed. */
  private async syncBridges(): Promise<Result | void> {
    const bridges = this.opts.bridges;
    if (!bridges || !this.adopted) return;
    for (const b of this.neededBridges().values()) await bridges.ensure(b).catch((e) => this.log(`bridge ${b.name}: ${e.message}`));
    // Needed again at prune time: an instance that started meanwhile keeps its bridge.
    const { removed, busy } = await bridges.prune(this.opts.nodeName, () => new Set(this.neededBridges().keys()));
    if (removed.length) this.log(`removed bridges no instance uses any more: ${removed.join(', ')}`);
    if (busy.length) return { requeueAfterMs: 5_000 };
  }

  private async reconcile(k: string): Promise<void> {
    // Nothing is started, failed or cleaned up before running VMs were adopted.
    if (!this.adopted) return;
    const vmi = this.vmis.get(k);
    if (!vmi || vmi.spec?.nodeName !== this.opts.nodeName) return;
    const b = this.opts.backend;
    const uid = vmi.metadata.uid;
    // Migrating away: the migration agent owns the instance until it is rebound to the target.
    if (this.leaving.has(uid)) return;
    let s = b.status(uid);
    // Rebound here by a migration whose switch-over this node's QEMU has not reported yet: the next event brings it.
    if (s?.phase === 'Starting' && s.reason === 'IncomingMigration' && !vmi.metadata.deletionTimestamp) return;
    if (vmi.metadata.deletionTimestamp) {
      if (s && !ended(s)) {
        await recordEvent(this.kube, vmi, 'Normal', 'Stopping', 'stopping the guest', `kubevm-agent/${this.opts.nodeName}`);
        await b.stop(uid, { graceMs: (vmi.spec.terminationGracePeriodSeconds ?? 30) * 1000 });
      }
      if (b.status(uid)) await b.cleanup(uid);
      this.applied.delete(uid);
      this.attached.delete(uid);
      this.hotplugRetries.delete(uid);
      this.warned.delete(uid);
      this.shares.forget(uid);
      const fin = (vmi.metadata.finalizers ?? []).filter((f: string) => f !== AGENT_FINALIZER);
      if (fin.length !== (vmi.metadata.finalizers ?? []).length)
        await this.kube.mergePatch(GVR.vmi, vmi.metadata.namespace, vmi.metadata.name, { metadata: { finalizers: fin.length ? fin : null, resourceVersion: vmi.metadata.resourceVersion } }).catch(ignoreGone);
      return;
    }
    const phase = vmi.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return;
    if (!s) {
      const holder = phase !== 'Running' && this.backups?.busy(k);
      if (holder) {
        // An offline backup or an in-place restore has the disks: start afterwards.
        this.queue.addAfter(k, 1000);
        return this.writeStatus(vmi, { phase: 'Scheduled', nodeName: this.opts.nodeName, reason: 'WaitingForBackup', message: `waiting: ${holder} holds the VM's disks` });
      }
      if (phase === 'Running') return this.writeStatus(vmi, { phase: 'Failed', reason: 'Lost', message: 'the node agent has no record of this VM (it was not adoptable after an agent restart)' });
      let spec: VmSpec;
      try {
        spec = await this.toHalSpec(vmi);
      } catch (e) {
        return this.writeStatus(vmi, { phase: 'Failed', reason: 'InvalidSpec', message: (e as Error).message });
      }
      const missing = missingCapabilities(b, spec);
      if (missing.length) return this.writeStatus(vmi, { phase: 'Failed', reason: 'Unsupported', message: missing.join('; ') });
      await this.writeStatus(vmi, { phase: 'Scheduled', nodeName: this.opts.nodeName });
      try {
        for (const br of bridgesOf(vmi)) await this.opts.bridges?.ensure(br);
        s = await b.start(spec);
        this.applied.set(uid, spec);
        this.attached.set(uid, { disks: [], interfaces: [] });
        this.shares.started(vmi, spec.filesystems);
        await recordEvent(this.kube, vmi, 'Normal', 'Started', `started on ${this.opts.nodeName}${s.pid ? ` (pid ${s.pid})` : ''}`, `kubevm-agent/${this.opts.nodeName}`);
      } catch (e) {
        await recordEvent(this.kube, vmi, 'Warning', 'StartFailed', (e as Error).message, `kubevm-agent/${this.opts.nodeName}`);
        const after = b.status(uid);
        if (after) await b.cleanup(uid).catch(() => undefined);
        return this.writeStatus(vmi, { phase: 'Failed', reason: 'StartFailed', message: (e as Error).message });
      }
    } else if (!ended(s)) {
      await this.applyLiveChanges(vmi, s);
      s = b.status(uid) ?? s;
    }
    await this.writeStatus(vmi, this.statusFrom(vmi, s));
  }

  /** Hot-plug: disks, NICs and filesystems in the spec but not in the running VM, and the reverse. */
  private async applyLiveChanges(vmi: any, s: VmStatus): Promise<void> {
    const b = this.opts.backend;
    const want = await this.toHalSpec(vmi);
    let have = this.applied.get(s.uid);
    // Adopted or migrated in: what was hot-plugged is what the previous agent (or the source's) reported.
    if (!this.attached.has(s.uid)) this.attached.set(s.uid, { disks: [...(vmi.status?.attached?.disks ?? [])], interfaces: [...(vmi.status?.attached?.interfaces ?? [])] });
    const plugged = this.attached.get(s.uid)!;
    if (!have) {
      // Adopted: it runs what its spec says, with the shares the previous agent reported.
      const shared = this.shares.adopted(vmi);
      this.applied.set(s.uid, shared ? { ...want, filesystems: shared } : want);
      if (!shared) return;
      have = this.applied.get(s.uid)!;
    }
    const component = `kubevm-agent/${this.opts.nodeName}`;
    const note = (list: string[], name: string, on: boolean) => {
      const i = list.indexOf(name);
      if (on && i < 0) list.push(name);
      if (!on && i >= 0) list.splice(i, 1);
    };
    // One device that cannot be (un)plugged (no free slot, a sata disk, a guest that holds on) does not hold up
    // the others: it stays as it is, a Warning says why (once per message), and it is tried again with back-off.
    const failed = { attach: new Set<string>(), detach: [] as { kind: 'disk' | 'nic'; spec: any }[] };
    const attempt = async (what: string, name: string, fn: () => Promise<void>): Promise<boolean> => {
      try {
        await fn();
        return true;
      } catch (e) {
        const msg = (e as Error).message;
        await this.warnOnce(vmi, 'HotplugFailed', msg.includes(name) ? msg : `${what} ${name}: ${msg}`);
        return false;
      }
    };
    for (const d of want.disks)
      if (!have.disks.some((x) => x.name === d.name)) {
        if (!(await attempt('attaching disk', d.name, () => b.attachDisk(s.uid, d)))) {
          failed.attach.add(`disk/${d.name}`);
          continue;
        }
        note(plugged.disks, d.name, true);
        await recordEvent(this.kube, vmi, 'Normal', 'DiskAttached', `disk ${d.name} hot-plugged`, component);
      }
    for (const d of have.disks)
      if (!want.disks.some((x) => x.name === d.name)) {
        if (!(await attempt('detaching disk', d.name, () => b.detachDisk(s.uid, d.name)))) {
          failed.detach.push({ kind: 'disk', spec: d });
          continue;
        }
        note(plugged.disks, d.name, false);
        await recordEvent(this.kube, vmi, 'Normal', 'DiskDetached', `disk ${d.name} unplugged`, component);
      }
    const added = want.nics.filter((n) => !have.nics.some((x) => x.name === n.name));
    if (added.some((n) => n.network === 'bridge')) for (const br of bridgesOf(vmi)) await this.opts.bridges?.ensure(br);
    for (const n of added) {
      if (!(await attempt('attaching interface', n.name, () => b.attachNic(s.uid, n)))) {
        failed.attach.add(`nic/${n.name}`);
        continue;
      }
      note(plugged.interfaces, n.name, true);
      await recordEvent(this.kube, vmi, 'Normal', 'InterfaceAttached', `interface ${n.name} hot-plugged`, component);
    }
    for (const n of have.nics)
      if (!want.nics.some((x) => x.name === n.name)) {
        if (!(await attempt('detaching interface', n.name, () => b.detachNic(s.uid, n.name)))) {
          failed.detach.push({ kind: 'nic', spec: n });
          continue;
        }
        note(plugged.interfaces, n.name, false);
        await recordEvent(this.kube, vmi, 'Normal', 'InterfaceDetached', `interface ${n.name} unplugged`, component);
      }
    const retries = failed.attach.size || failed.detach.length ? (this.hotplugRetries.get(s.uid) ?? 0) + 1 : 0;
    if (retries) {
      this.hotplugRetries.set(s.uid, retries);
      this.queue.addAfter(key(vmi), Math.min(1000 * 2 ** (retries - 1), 60_000));
    } else this.hotplugRetries.delete(s.uid);
    // An interface moved to another Network: re-plumb the NIC in place (same MAC, no restart) where the backend can.
    const nics = [...want.nics];
    for (const [i, n] of want.nics.entries()) {
      const h = have.nics.find((x) => x.name === n.name);
      if (!h || (h.network === n.network && (h.bridge ?? '') === (n.bridge ?? ''))) continue;
      if (!b.capabilities().includes('nic-retarget')) {
        nics[i] = h; // stays where it is until the next start
        await this.warnOnce(vmi, 'RetargetUnsupported', `interface ${n.name}: the ${b.name} backend cannot move a running NIC; the change applies at the next start`);
        continue;
      }
      if (n.network === 'bridge') for (const br of bridgesOf(vmi)) await this.opts.bridges?.ensure(br);
      try {
        const r = await b.retargetNic(s.uid, n.name, { ...n, mac: n.mac ?? h.mac });
        nics[i] = { ...n, mac: r.mac };
        const net = (vmi.spec.interfaces ?? []).find((x: any) => x.name === n.name)?.network;
        await recordEvent(this.kube, vmi, 'Normal', 'InterfaceRetargeted', `interface ${n.name} now on Network ${net} (${r.method}: ${r.detail}), MAC ${r.mac} kept, no restart`, component);
      } catch (e) {
        nics[i] = h;
        await this.warnOnce(vmi, 'RetargetFailed', `interface ${n.name}: ${(e as Error).message}`);
      }
    }
    // A pod interface's ports changed on the same Network: a passt with the new forwards takes over behind the NIC (no restart).
    for (const [i, n] of want.nics.entries()) {
      const h = have.nics.find((x) => x.name === n.name);
      if (!h || h.network !== n.network || (h.bridge ?? '') !== (n.bridge ?? '') || isDeepStrictEqual(h.portForwards ?? [], n.portForwards ?? [])) continue;
      const component = `kubevm-agent/${this.opts.nodeName}`;
      const ports = (n.portForwards ?? []).map((f) => `${f.protocol} ${f.hostPort ?? f.port}→${f.port}`).join(', ') || 'none';
      nics[i] = h; // until applied
      if (!b.capabilities().includes('nic-retarget')) {
        await recordEvent(this.kube, vmi, 'Warning', 'PortsUnsupported', `interface ${n.name}: the ${b.name} backend cannot change a running NIC's port forwards; they apply at the next start`, component);
        continue;
      }
      try {
        const r = await b.retargetNic(s.uid, n.name, { ...n, mac: n.mac ?? h.mac });
        nics[i] = { ...n, mac: r.mac };
        await recordEvent(this.kube, vmi, 'Normal', 'PortsUpdated', `interface ${n.name}: port forwards now ${ports}, applied live (${r.detail})`, component);
      } catch (e) {
        await recordEvent(this.kube, vmi, 'Warning', 'PortsUpdateFailed', `interface ${n.name}: port forwards ${ports}: ${(e as Error).message}`, component);
      }
    }
    // Shares: hot-added, removed where the backend can unplug, else pending until the next start (see ./filesystems.ts).
    // What failed stays as the guest has it: not attached, or still attached.
    const kept = (kind: 'disk' | 'nic') => failed.detach.filter((f) => f.kind === kind).map((f) => f.spec);
    this.applied.set(s.uid, {
      ...want,
      disks: [...want.disks.filter((d) => !failed.attach.has(`disk/${d.name}`)), ...kept('disk')],
      nics: [...nics.filter((n) => !failed.attach.has(`nic/${n.name}`)), ...kept('nic')],
      filesystems: await this.shares.apply(vmi, have.filesystems, want.filesystems),
    });
  }

  /** A Warning event about an instance, recorded once per distinct message (reconciles repeat often). */
  private async warnOnce(vmi: any, reason: string, message: string): Promise<void> {
    const uid = vmi.metadata.uid;
    const seen = this.warned.get(uid) ?? new Set<string>();
    this.warned.set(uid, seen);
    if (seen.has(`${reason}: ${message}`)) return;
    seen.add(`${reason}: ${message}`);
    await recordEvent(this.kube, vmi, 'Warning', reason, message, `kubevm-agent/${this.opts.nodeName}`);
  }

  private statusFrom(vmi: any, s: VmStatus): any {
    const phase = s.phase === 'Succeeded' ? 'Succeeded' : s.phase === 'Failed' ? 'Failed' : s.phase === 'Starting' ? 'Scheduled' : 'Running';
    const status: any = {
      phase,
      nodeName: this.opts.nodeName,
      reason: s.reason,
      message: s.message,
      pid: s.pid,
      startedAt: s.qmpReadyAt ? iso(s.qmpReadyAt) : iso(s.createdAt),
      guestReadyAt: s.guestReadyAt ? iso(s.guestReadyAt) : undefined,
      consoleLog: s.consoleLog,
      filesystems: this.shares.report(s.uid),
      interfaces: s.interfaces.map((i) => ({
        name: i.name,
        network: (vmi.spec.interfaces ?? []).find((x: any) => x.name === i.name)?.network,
        macAddress: i.mac,
        ...(i.ip ? { ipAddress: i.ip } : {}),
      })),
      conditions: vmi.status?.conditions ?? [],
    };
    // Reported once anything was hot-plugged (then also when it is all unplugged again).
    const plugged = this.attached.get(s.uid);
    if (plugged && (plugged.disks.length || plugged.interfaces.length || vmi.status?.attached)) status.attached = { disks: [...plugged.disks], interfaces: [...plugged.interfaces] };
    const now = Date.now();
    const ready = phase === 'Running' && !!s.guestReadyAt && s.phase !== 'Paused';
    setCondition(status, 'Ready', ready ? 'True' : 'False', ready ? 'GuestReady' : s.phase === 'Paused' ? 'Paused' : phase === 'Running' ? 'GuestBooting' : phase, '', now);
    setCondition(status, 'Paused', s.phase === 'Paused' ? 'True' : 'False', s.phase === 'Paused' ? 'PausedByUser' : 'NotPaused', '', now);
    // pod interfaces: their passt as the backend supervises it (restarted when it dies; docs/networking.md).
    const pod = phase === 'Running' ? s.interfaces.filter((i) => i.passt) : [];
    const down = pod.find((i) => i.passt !== 'Running');
    const restarted = pod.filter((i) => i.passtRestarts).map((i) => `interface ${i.name}: passt restarted ${i.passtRestarts} time(s)`);
    if (!pod.length) removeCondition(status, 'PasstReady');
    else if (down) setCondition(status, 'PasstReady', 'False', down.passt === 'Failed' ? 'PasstFailed' : 'PasstRestarting', s.message ?? `interface ${down.name}: passt ${down.passt}`, now);
    else setCondition(status, 'PasstReady', 'True', restarted.length ? 'PasstRestarted' : 'PasstRunning', restarted.join('; '), now);
    for (const k of Object.keys(status)) if (status[k] === undefined) delete status[k];
    return status;
  }

  private async writeStatus(vmi: any, status: any): Promise<void> {
    const merged = { ...(vmi.status ?? {}), ...status };
    if (status.phase === 'Failed' && !status.conditions) setCondition(merged, 'Ready', 'False', status.reason ?? 'Failed', status.message ?? '', Date.now());
    if (isDeepStrictEqual(stripTimes(merged), stripTimes(vmi.status ?? {}))) return;
    try {
      await this.kube.updateStatus(GVR.vmi, { ...vmi, status: merged });
    } catch (e) {
      if (isConflict(e)) {
        this.queue.addAfter(key(vmi), 50);
        return;
      }
      ignoreGone(e);
    }
  }

  /** Maps a VirtualMachineInstance onto the HAL's plain spec, resolving Secrets for cloud-init. */
  async toHalSpec(vmi: any): Promise<VmSpec> {
    const s = vmi.spec;
    const ns = vmi.metadata.namespace;
    const vols = new Map<string, any>((s.volumes ?? []).map((v: any) => [v.name, v]));
    const nets = new Map<string, any>((s.networks ?? []).map((n: any) => [n.name, n]));
    const spec: VmSpec = {
      name: vmi.metadata.name,
      uid: vmi.metadata.uid,
      cpu: { sockets: s.cpu?.sockets ?? 1, cores: s.cpu?.cores ?? 1, threads: s.cpu?.threads ?? 1 },
      memoryMiB: Math.round(parseQuantity(s.memory ?? '128Mi') / 1024 / 1024),
      disks: (s.disks ?? []).map((d: any) => {
        const v = vols.get(d.name);
        if (!v?.path) throw new Error(`disk ${d.name}: volume ${d.volume} has no file on this node yet`);
        // Raw disks keep incremental backups possible through a qcow2 metadata overlay (docs/hal.md, Backup).
        const cbt = v.format === 'raw' && !d.readOnly && this.opts.backend.capabilities().includes('backup-cbt');
        return { name: d.name, path: v.path, format: v.format ?? 'qcow2', bus: d.bus === 'sata' ? 'sata' : 'virtio', readOnly: !!d.readOnly, ...(d.bootOrder ? { bootOrder: d.bootOrder } : {}), ...(cbt ? { changeTracking: true } : {}) };
      }),
      nics: (s.interfaces ?? []).map((i: any) => {
        const n = nets.get(i.network);
        if (!n) throw new Error(`interface ${i.name}: network ${i.network} is not resolved`);
        return {
          name: i.name,
          network: n.type,
          ...(n.bridge ? { bridge: n.bridge } : {}),
          ...(i.macAddress ? { mac: i.macAddress } : {}),
          model: i.model === 'e1000e' ? 'e1000e' : 'virtio',
          // On the node's loopback, as the API documents nodePort (passt would bind every address of the node).
          portForwards: (i.ports ?? []).map((p: any) => ({ protocol: (p.protocol ?? 'TCP').toLowerCase(), port: p.port, ...(p.nodePort ? { hostPort: p.nodePort } : {}), hostAddress: '127.0.0.1' })),
        };
      }),
      filesystems: this.shares.specsOf(vmi),
    };
    if (s.hotplugSlots !== undefined) spec.hotplugSlots = s.hotplugSlots;
    if (s.firmware?.kernel) {
      // Boot files come from the node: only from the operator's allowed roots, without symlink escapes.
      const file = (p: string, field: string) => {
        try {
          return confinePath(p, { allowedRoots: this.opts.allowedRoots, mustBeDirectory: false });
        } catch (e) {
          throw new Error(`spec.firmware.kernel.${field}: ${(e as Error).message}`);
        }
      };
      const k = s.firmware.kernel;
      spec.kernel = { kernel: file(k.kernelPath, 'kernelPath'), ...(k.initrdPath ? { initrd: file(k.initrdPath, 'initrdPath') } : {}), cmdline: k.cmdline };
    }
    if (s.cloudInit) {
      const ci = s.cloudInit;
      spec.cloudInit = {
        hostname: ci.hostname ?? vmi.metadata.name,
        userData: ci.userData ?? (ci.userDataSecretRef ? await this.secretValue(ns, ci.userDataSecretRef) : undefined),
        networkData: ci.networkData ?? (ci.networkDataSecretRef ? await this.secretValue(ns, ci.networkDataSecretRef) : undefined),
      };
    }
    return spec;
  }

  private async secretValue(ns: string, ref: { name: string; key?: string }): Promise<string> {
    const secret = await this.kube.tryGet(GVR.secret, ns, ref.name);
    const k = ref.key ?? 'userdata';
    if (!secret) throw new Error(`Secret ${ref.name} not found`);
    if (secret.stringData?.[k] !== undefined) return secret.stringData[k];
    if (secret.data?.[k] === undefined) throw new Error(`Secret ${ref.name} has no key ${k}`);
    return Buffer.from(secret.data[k], 'base64').toString('utf8');
  }
}

/** The bridges of an instance's `type: bridge` networks (resolved by the controller into spec.networks). */
export function bridgesOf(vmi: any): BridgeSpec[] {
  return (vmi.spec?.networks ?? [])
    .filter((n: any) => n.type === 'bridge' && n.bridge)
    .map((n: any) => ({ name: n.bridge, network: `${vmi.metadata.namespace}/${n.name}`, ...(n.vlan ? { vlan: n.vlan } : {}) }));
}

function ended(s: VmStatus): boolean {
  return s.phase === 'Succeeded' || s.phase === 'Failed';
}



