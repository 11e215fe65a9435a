import { GVR, Kube } from '../runtime/kube';
import { WorkQueue, type Result } from '../runtime/queue';
import { Store, key } from '../controller/caches';
import { recordEvent } from '../controller/events';
import { iso, ignoreGone, patchStatus } from '../runtime/status';
import type { Backend } from '../hal/types';
import type { MigrationSource } from '../hal/migration-types';
import { migratable } from '../hal/capabilities';

/**
 * The agents' half of live migration (docs/migration.md), coordinated only
 * through the Migration's status:
 *  - source agent (status.sourceNode), PreparingTarget: publishes the running
 *    instance as the target must recreate it (status.sourceState: spec with
 *    hot-plugged devices, device slots, disks, guest state), or fails a VM that
 *    cannot migrate, with the reason.
 *  - target agent (status.targetNode): PreparingTarget with sourceState → starts
 *    an incoming instance listening on a TCP port → TargetReady with
 *    status.targetAddress (the migration URI). When the migration fails or is cancelled, it removes
 *    the incoming instance.
 *  - source agent (status.sourceNode): TargetReady → Running: migrates, reports
 *    progress, and on success rebinds the instance (VMI spec.nodeName and
 *    status) to the target, then Succeeded with duration, downtime and bytes.
 *    Deleting the Migration while it runs cancels it (the VM keeps running on
 *    the source). Refuses a VM that cannot migrate, with the reason.
 */
export interface MigrationAgentHooks {
  nodeName: string;
  /** The node's backend (capability live-migration). */
  backend: Backend;
  /** The source agent stops treating the instance as its own (its process ends after the switch-over). */
  releaseInstance(uid: string): Promise<void>;
  /** Marks an instance as leaving (its status must not turn Succeeded when the source process ends). */
  leaving: Set<string>;
  /** The target agent takes the running incoming instance as its own. */
  adoptIncoming(uid: string): void;
  /** Readies this node for an incoming instance before its QEMU starts (the bridges of its Networks). */
  prepareNode?(vmi: any): Promise<void>;
  log?: (line: string) => void;
}

const FINAL = new Set(['Succeeded', 'Failed']);

export class MigrationAgent {
  readonly migrations: Store;
  readonly queue: WorkQueue;
  /** Migration keys with work running in this process (incoming instance prepared, or outgoing migration). */
  private readonly incoming = new Map<string, string>(); // migration key → uid
  private readonly outgoing = new Map<string, string>();
  private readonly log: (line: string) => void;

  constructor(
    private readonly kube: Kube,
    private readonly hooks: MigrationAgentHooks,
    private readonly vmis: Store,
  ) {
    this.log = hooks.log ?? (() => {});
    this.migrations = new Store(kube.informer(GVR.migration));
    this.queue = new WorkQueue(`migrations/${hooks.nodeName}`, (k) => this.reconcile(k), 4, this.log);
    for (const ev of ['add', 'update', 'delete'] as const)
      this.migrations.inf.on(ev, (o: any) => {
        if (o.status?.sourceNode !== hooks.nodeName && o.status?.targetNode !== hooks.nodeName) return;
        // A cancel must reach the running migrate() now: the queue holds the key until it returns.
        const uid = this.outgoing.get(key(o));
        if (uid && (o.metadata.deletionTimestamp || ev === 'delete'))
          void hooks.backend.cancelMigration(uid).catch((e) => this.log(`cancel ${key(o)}: ${(e as Error).message}`));
        this.queue.add(key(o));
      });
  }

  async start(): Promise<void> {
    await this.migrations.inf.start();
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await this.migrations.inf.stop();
  }

  /** Is a migration of this instance in flight here (as source or target)? */
  involved(uid: string): boolean {
    return [...this.incoming.values(), ...this.outgoing.values()].includes(uid);
  }

  private get node(): string {
    return this.hooks.nodeName;
  }

  private async reconcile(k: string): Promise<Result | void> {
    const m = this.migrations.get(k);
    if (!m) {
      const uid = this.incoming.get(k);
      if (uid) await this.dropIncoming(k, uid);
      return;
    }
    const phase = m.status?.phase;
    const deleting = !!m.metadata.deletionTimestamp;
    const b = this.hooks.backend;
    if (m.status?.sourceNode === this.node) {
      if (phase === 'PreparingTarget' && !deleting && !m.status.sourceState) return this.publishSource(m);
      if (phase === 'TargetReady' && !deleting && !this.outgoing.has(k)) return this.migrateOut(m, k);
      if (phase === 'TargetReady' && deleting) await this.setStatus(m, { phase: 'Failed', reason: 'Cancelled', message: 'cancelled before the migration started', endTime: iso(Date.now()) });
      if (phase === 'Running' && deleting && this.outgoing.has(k)) await b.cancelMigration(this.outgoing.get(k)!).catch((e) => this.log(`cancel ${k}: ${e.message}`));
      if (phase === 'Running' && !this.outgoing.has(k)) {
        // Left Running by a previous agent process: the source QEMU may still be mid-migration; stop it there.
        await b.cancelMigration(m.status.instanceUID).catch(() => undefined);
        await this.setStatus(m, { phase: 'Failed', reason: 'Interrupted', message: 'the source node agent restarted during the migration; the VM stays on the source', endTime: iso(Date.now()) });
      }
    }
    if (m.status?.targetNode === this.node) {
      if (phase === 'PreparingTarget' && !deleting && m.status.sourceState && !this.incoming.has(k)) return this.prepareTarget(m, k);
      if ((phase === 'Failed' || deleting) && this.incoming.has(k)) await this.dropIncoming(k, this.incoming.get(k)!);
      if (phase === 'Succeeded' && this.incoming.has(k)) this.incoming.delete(k);
      if (phase === 'PreparingTarget' && deleting) await this.setStatus(m, { phase: 'Failed', reason: 'Cancelled', message: 'cancelled before the target was ready', endTime: iso(Date.now()) });
    }
  }

  /** Source: what the target must recreate, or why the VM cannot move. */
  private async publishSource(m: any): Promise<void> {
    const uid = m.status.instanceUID;
    const s = this.hooks.backend.status(uid);
    if (!s || !['Running', 'Paused'].includes(s.phase)) {
      await this.fail(m, 'NotRunning', `the instance is not running on ${this.node}`);
      return;
    }
    try {
      const source: MigrationSource = await this.hooks.backend.migrationSource(uid);
      const ok = migratable(source.spec);
      if (!ok.ok) {
        await this.fail(m, 'NotMigratable', `VirtualMachine ${m.spec.vm} cannot be live-migrated: ${ok.reason}`);
        return;
      }
      await this.setStatus(m, { sourceState: JSON.parse(JSON.stringify(source)), message: `starting the target instance on ${m.status.targetNode}` });
    } catch (e) {
      await this.fail(m, 'NotMigratable', `VirtualMachine ${m.spec.vm}: ${(e as Error).message}`);
    }
  }

  private async prepareTarget(m: any, k: string): Promise<void> {
    const vmi = this.vmis.get(`${m.metadata.namespace}/${m.spec.vm}`);
    if (!vmi || vmi.metadata.uid !== m.status.instanceUID) {
      await this.fail(m, 'NotRunning', 'the instance ended before the target was prepared');
      return;
    }
    const source = m.status.sourceState as MigrationSource;
    try {
      // This node may still hold an ended run of the same instance (it left here earlier): clear it first.
      const old = this.hooks.backend.status(vmi.metadata.uid);
      if (old && ['Succeeded', 'Failed'].includes(old.phase)) await this.hooks.backend.cleanup(vmi.metadata.uid);
      this.incoming.set(k, vmi.metadata.uid);
      await this.hooks.prepareNode?.(vmi);
      const inc = await this.hooks.backend.prepareIncoming(source.spec, { listen: { address: '127.0.0.1' }, source, blockMirror: !!m.spec.blockMigration });
      if (!(await this.setStatus(m, { phase: 'TargetReady', targetAddress: inc.uri, message: `target instance on ${this.node} waits at ${inc.uri}` }))) await this.dropIncoming(k, vmi.metadata.uid);
    } catch (e) {
      const uid = this.incoming.get(k);
      if (uid) await this.dropIncoming(k, uid);
      await this.fail(m, 'TargetFailed', `preparing the target on ${this.node}: ${(e as Error).message}`);
    }
  }

  private async dropIncoming(k: string, uid: string): Promise<void> {
    this.incoming.delete(k);
    await this.hooks.backend.abortIncoming(uid).catch((e) => this.log(`abort incoming ${uid}: ${e.message}`));
  }

  private async migrateOut(m: any, k: string): Promise<void> {
    const ns = m.metadata.namespace;
    const vmi = this.vmis.get(`${ns}/${m.spec.vm}`);
    const uid = m.status.instanceUID;
    if (!vmi || vmi.metadata.uid !== uid) {
      await this.fail(m, 'NotRunning', 'the instance ended before the migration started');
      return;
    }
    const start = Date.now();
    if (!(await this.setStatus(m, { phase: 'Running', message: `migrating to ${m.status.targetNode}` }))) return;
    this.outgoing.set(k, uid);
    this.hooks.leaving.add(uid);
    await this.patchVmiStatus(vmi, { migrationState: { migration: m.metadata.name, sourceNode: this.node, targetNode: m.status.targetNode, startTime: iso(start) } });
    let lastWrite = 0;
    try {
      const res = await this.hooks.backend.migrate(uid, {
        uri: m.status.targetAddress,
        blockMirror: !!m.spec.blockMigration,
        bandwidth: m.spec.bandwidthMiBps ? m.spec.bandwidthMiBps * 1024 * 1024 : 0,
        completionTimeoutPerGiB: m.spec.completionTimeoutPerGiB ?? 150,
        progressTimeout: m.spec.progressTimeout ?? 150,
        onProgress: (p) => {
          if (Date.now() - lastWrite < 1000) return;
          lastWrite = Date.now();
          const cur = this.migrations.get(k);
          if (cur) void this.setStatus(cur, { bytesTransferred: p.transferredBytes + (p.disk?.copiedBytes ?? 0), message: `migrating to ${m.status.targetNode}: ${p.status}` }).catch(() => undefined);
        },
      });
      // The guest runs on the target now: hand the instance over.
      const now = Date.now();
      await this.kube.mergePatch(GVR.vmi, ns, m.spec.vm, { spec: { nodeName: m.status.targetNode } });
      const state = { migration: m.metadata.name, sourceNode: this.node, targetNode: m.status.targetNode, completed: true, startTime: iso(start), endTime: iso(now), downtimeMs: Math.round(res.downtimeMs) };
      await this.kube.mergePatch(GVR.vmi, ns, m.spec.vm, { status: { nodeName: m.status.targetNode, migrationState: state } }, 'status').catch(ignoreGone);
      await this.hooks.releaseInstance(uid);
      const cur = this.migrations.get(k) ?? m;
      await this.setStatus(cur, {
        phase: 'Succeeded',
        reason: undefined,
        message: `migrated to ${m.status.targetNode} in ${Math.round(res.wallMs)} ms (downtime ${Math.round(res.downtimeMs)} ms)`,
        endTime: iso(now),
        durationMs: Math.round(res.wallMs),
        downtimeMs: Math.round(res.downtimeMs),
        bytesTransferred: res.bytes,
      });
      await recordEvent(this.kube, cur, 'Normal', 'Migrated', `from ${this.node} to ${m.status.targetNode}, downtime ${Math.round(res.downtimeMs)} ms`, `kubevm-agent/${this.node}`);
    } catch (e) {
      this.hooks.leaving.delete(uid);
      const cur = this.migrations.get(k) ?? m;
      const cancelled = !!cur.metadata.deletionTimestamp;
      await this.patchVmiStatus(vmi, { migrationState: { migration: m.metadata.name, sourceNode: this.node, targetNode: m.status.targetNode, failed: true, startTime: iso(start), endTime: iso(Date.now()) } });
      // The HAL's message may already say where the VM stayed ("… keeps running here"): name the node once.
      const why = (e as Error).message.replace(/[;,.]?\s*the VM keeps running here\.?$/, '');
      await this.fail(cur, cancelled ? 'Cancelled' : 'MigrationFailed', cancelled ? `cancelled; the VM keeps running on ${this.node}` : `${why}; the VM keeps running on ${this.node}`);
    } finally {
      this.outgoing.delete(k);
    }
  }

  private async patchVmiStatus(vmi: any, status: any): Promise<void> {
    await this.kube.mergePatch(GVR.vmi, vmi.metadata.namespace, vmi.metadata.name, { status }, 'status').catch(ignoreGone);
  }

  private async fail(m: any, reason: string, message: string): Promise<void> {
    await this.setStatus(m, { phase: 'Failed', reason, message, endTime: iso(Date.now()) });
    await recordEvent(this.kube, m, 'Warning', reason, message, `kubevm-agent/${this.node}`);
  }

  /** Status write, retried on conflicts; a phase change is dropped once another writer has ended the migration. */
  private setStatus(m: any, patch: any): Promise<boolean> {
    return patchStatus(this.kube, GVR.migration, m, patch, { giveUp: (cur) => !!patch.phase && FINAL.has(cur.status?.phase) });
  }
}
