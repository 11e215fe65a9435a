import { isDeepStrictEqual } from 'node:util';
import { GVR, Kube, isNotFound, isConflict } from '../runtime/kube';
import { Result } from '../runtime/queue';
import { KINDS } from '../api/schema';
import { Caches } from './caches';
import { pickNode, memoryBytes } from './scheduler';
import { mergedFilesystems, filesystemsAwaitRestart } from './mounts';

/** The smallest guest the HAL backends accept. */
const MIN_MEMORY = 16 * 1024 * 1024;
import { recordEvent } from './events';
import { iso, setCondition, removeCondition, withoutConditionTimes as stripTimes, ignoreNotFound } from '../runtime/status';

/**
 * The VirtualMachine reconciler: one VirtualMachineInstance per run, created
 * and deleted according to the run strategy, scheduled onto a Node, with
 * live changes passed down to the running instance and changes that need a
 * restart reported (RestartRequired) rather than acted on, unless the VM's
 * updatePolicy says Restart. Status is folded from the instance.
 */
export const REQUEST_ANNOTATION = 'kubevm.dev/request';
export const ONCE_ANNOTATION = 'kubevm.dev/once-started';
export const AGENT_FINALIZER = 'kubevm.dev/agent';

const VM_KIND = KINDS.find((k) => k.kind === 'VirtualMachine')!;
const LIVE_FIELDS = Object.entries<any>(VM_KIND.spec.properties)
  .filter(([, s]) => s['x-kubevm-update'] === 'live')
  .map(([f]) => f)
  .filter((f) => f !== 'runStrategy' && f !== 'updatePolicy');
const RESTART_FIELDS = Object.entries<any>(VM_KIND.spec.properties)
  .filter(([, s]) => s['x-kubevm-update'] === 'restart')
  .map(([f]) => f);

const FINISHED = new Set(['Succeeded', 'Failed']);

export function backoffMs(failures: number): number {
  // The first failure restarts at once (as KubeVirt); then 5 s, 10 s, 20 s … up to 5 minutes.
  if (failures <= 1) return 0;
  return Math.min(5000 * 2 ** (failures - 2), 300_000);
}

export class VmReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
    private readonly now: () => number = Date.now,
  ) {}

  async reconcile(vmKey: string): Promise<Result | void> {
    const vm = this.caches.vms.get(vmKey);
    if (!vm) return;
    const ns = vm.metadata.namespace;
    const name = vm.metadata.name;
    let vmi = this.caches.vmis.get(vmKey);
    if (vmi && !isOwnedBy(vmi, vm)) vmi = undefined; // a stale instance of an older VM with the same name
    const status: any = { ...(vm.status ?? {}) };
    let requeue: number | undefined;

    if (vm.metadata.deletionTimestamp) {
      if (vmi && !vmi.metadata.deletionTimestamp) await this.kube.delete(GVR.vmi, ns, name);
      return;
    }

    const strategy: string = vm.spec.runStrategy ?? 'Always';
    const request: string | undefined = vm.metadata.annotations?.[REQUEST_ANNOTATION];
    const phase: string | undefined = vmi?.status?.phase;
    const finished = phase !== undefined && FINISHED.has(phase);

    // Count failures of finished instances once, by instance uid.
    if (vmi && finished && status.startFailure?.lastInstance !== vmi.metadata.uid && phase === 'Failed') {
      const n = (status.startFailure?.consecutiveFailCount ?? 0) + 1;
      status.startFailure = {
        consecutiveFailCount: n,
        lastFailedAt: iso(this.now()),
        retryAfter: iso(this.now() + backoffMs(n)),
        lastInstance: vmi.metadata.uid,
      };
    }
    if (vmi && isReady(vmi) && status.startFailure) delete status.startFailure;

    let wantRunning: boolean;
    switch (strategy) {
      case 'Halted':
        wantRunning = false;
        break;
      case 'Manual':
        wantRunning = request === 'start' || request === 'restart' ? true : request === 'stop' ? false : !!vmi && !finished;
        break;
      case 'RerunOnFailure':
        wantRunning = !(finished && phase === 'Succeeded') || request === 'start' || request === 'restart';
        if (request === 'stop') wantRunning = false;
        break;
      case 'Once':
        wantRunning = !vm.metadata.annotations?.[ONCE_ANNOTATION] || (!!vmi && !finished);
        break;
      default:
        wantRunning = true;
    }

    // A restart request, or a restart-class change under updatePolicy Restart, ends the current instance first.
    const restartFields = vmi && !finished ? changedRestartFields(vm, vmi) : [];
    // Shares the backend could not add or remove live (ContainerPathMounts included) wait for the next start.
    if (vmi && !finished && filesystemsAwaitRestart(vmi)) restartFields.push('filesystems');
    const restartNow = request === 'restart' || (restartFields.length > 0 && vm.spec.updatePolicy === 'Restart');

    if (vmi && !vmi.metadata.deletionTimestamp) {
      if ((!wantRunning && !finished) || (restartNow && !finished)) {
        await this.kube.delete(GVR.vmi, ns, name);
        await recordEvent(this.kube, vm, 'Normal', restartNow ? 'Restarting' : 'Stopping', restartNow ? `restarting for ${restartFields.join(', ') || 'a restart request'}` : 'stopping the instance');
      } else if (finished && wantRunning && strategy !== 'Once') {
        // Always / RerunOnFailure / Manual start: the finished instance makes way for a new one.
        await this.kube.delete(GVR.vmi, ns, name);
      } else if (!finished) {
        await this.passLiveChanges(vm, vmi);
      }
    }

    if (wantRunning && !vmi) {
      const retryAfter = status.startFailure?.retryAfter ? Date.parse(status.startFailure.retryAfter) : 0;
      if (retryAfter > this.now()) {
        status.printableStatus = 'CrashLoopBackOff';
        requeue = retryAfter - this.now();
      } else {
        const outcome = await this.startInstance(vm);
        if (outcome.created) {
          status.printableStatus = 'Starting';
          if (strategy === 'Once') await this.kube.mergePatch(GVR.vm, ns, name, { metadata: { annotations: { [ONCE_ANNOTATION]: iso(this.now()) } } });
        } else {
          status.printableStatus = outcome.printable;
          setCondition(status, 'Failure', 'True', outcome.reason, outcome.message, this.now());
          requeue = 5000;
        }
      }
    }

    // Requests are one-shot: clear them once acted upon.
    if (request && ((request === 'start' && (vmi || wantRunning)) || request === 'stop' || (request === 'restart' && (!vmi || vmi.metadata.deletionTimestamp || restartNow)))) {
      await this.kube.mergePatch(GVR.vm, ns, name, { metadata: { annotations: { [REQUEST_ANNOTATION]: null } } }).catch(ignoreNotFound);
    }

    this.fold(vm, this.caches.vmis.get(vmKey), status, wantRunning, restartFields);
    if (!isDeepStrictEqual(stripTimes(status), stripTimes(vm.status ?? {}))) {
      try {
        await this.kube.updateStatus(GVR.vm, { ...vm, status });
      } catch (e) {
        if (!isConflict(e) && !isNotFound(e)) throw e;
        return { requeueAfterMs: 100 }; // the cache was behind; try again with the newer object
      }
    }
    return requeue !== undefined ? { requeueAfterMs: Math.max(requeue, 50) } : undefined;
  }

  /** Live fields (disks, interfaces, filesystems, grace period) go to the running instance; the agent hot-plugs. */
  private async passLiveChanges(vm: any, vmi: any): Promise<void> {
    const resolved = this.resolve(vm);
    const patch: any = {};
    const desired = this.templateOf(vm);
    for (const f of LIVE_FIELDS) if (!isDeepStrictEqual(desired[f], vmi.spec[f])) patch[f] = desired[f] ?? null;
    if (!resolved.error) {
      if (!isDeepStrictEqual(resolved.volumes, vmi.spec.volumes ?? [])) patch.volumes = resolved.volumes;
      if (!isDeepStrictEqual(resolved.networks, vmi.spec.networks ?? [])) patch.networks = resolved.networks;
    }
    if (Object.keys(patch).length) await this.kube.mergePatch(GVR.vmi, vmi.metadata.namespace, vmi.metadata.name, { spec: patch });
  }

  /** Volumes and Networks behind the VM's disks and interfaces, as the agent needs them. */
  resolve(vm: any): { volumes: any[]; networks: any[]; nodes: Set<string>; error?: { printable: string; reason: string; message: string } } {
    const ns = vm.metadata.namespace;
    const volumes: any[] = [];
    const nodes = new Set<string>();
    for (const d of vm.spec.disks ?? []) {
      const v = this.caches.volumes.get(`${ns}/${d.volume}`);
      if (!v) return { volumes, networks: [], nodes, error: { printable: 'WaitingForVolume', reason: 'VolumeNotFound', message: `disk ${d.name}: Volume ${d.volume} not found` } };
      if (v.spec?.volumeMode === 'Filesystem')
        return { volumes, networks: [], nodes, error: { printable: 'WaitingForVolume', reason: 'VolumeNotBlock', message: `disk ${d.name}: Volume ${d.volume} has volumeMode Filesystem (a directory for backups); VM disks need a Block volume` } };
      if (v.status?.phase !== 'Ready')
        return { volumes, networks: [], nodes, error: { printable: 'WaitingForVolume', reason: 'VolumeNotReady', message: `disk ${d.name}: Volume ${d.volume} is ${v.status?.phase ?? 'Pending'}` } };
      volumes.push({ name: d.name, path: v.status.path, format: v.spec.format ?? 'qcow2' });
      if (v.status.nodeName) nodes.add(v.status.nodeName);
    }
    const networks: any[] = [];
    for (const i of vm.spec.interfaces ?? []) {
      const n = this.caches.networks.get(`${ns}/${i.network}`);
      if (!n)
        return { volumes, networks, nodes, error: { printable: 'ErrorUnschedulable', reason: 'NetworkNotFound', message: `interface ${i.name}: Network ${i.network} not found` } };
      if ((n.spec.type ?? 'pod') === 'bridge' && !n.status?.bridgeName)
        // The Network reconciler names the bridge; its status update requeues this VM.
        return { volumes, networks, nodes, error: { printable: 'Starting', reason: 'NetworkNotReady', message: `interface ${i.name}: Network ${i.network} has no bridge name yet` } };
      if (!networks.some((x) => x.name === n.metadata.name))
        networks.push({ name: n.metadata.name, type: n.spec.type ?? 'pod', bridge: n.status?.bridgeName, ...(n.spec.bridge?.vlan ? { vlan: n.spec.bridge.vlan } : {}) });
    }
    return { volumes, networks, nodes };
  }

  private async startInstance(vm: any): Promise<{ created: true } | { created: false; printable: string; reason: string; message: string }> {
    // Rules a CRD schema cannot state (quantities are strings there): refuse before anything starts.
    const mem = memoryBytes(vm.spec);
    if (!(mem >= MIN_MEMORY))
      return { created: false, printable: 'ErrorUnschedulable', reason: 'InvalidSpec', message: `spec.memory: ${JSON.stringify(vm.spec.memory)} is below the minimum of 16Mi` };
    const r = this.resolve(vm);
    if (r.error) return { created: false, ...r.error };
    const placed = pickNode(vm, [...this.caches.nodes.list()], (n) => this.caches.usedOn(n), r.nodes, r.networks);
    if ('error' in placed) return { created: false, printable: 'ErrorUnschedulable', reason: 'Unschedulable', message: placed.error };
    const template = this.templateOf(vm);
    const vmi = {
      apiVersion: 'kubevm.dev/v1alpha1',
      kind: 'VirtualMachineInstance',
      metadata: {
        name: vm.metadata.name,
        namespace: vm.metadata.namespace,
        labels: { ...(vm.metadata.labels ?? {}), 'kubevm.dev/vm': vm.metadata.name },
        finalizers: [AGENT_FINALIZER],
        ownerReferences: [{ apiVersion: vm.apiVersion, kind: 'VirtualMachine', name: vm.metadata.name, uid: vm.metadata.uid, controller: true, blockOwnerDeletion: true }],
      },
      spec: { ...template, nodeName: placed.node, volumes: r.volumes, networks: r.networks },
    };
    try {
      await this.kube.create(GVR.vmi, vm.metadata.namespace, vmi);
    } catch (e) {
      if ((e as any).code === 409) return { created: true }; // already there: the cache is behind
      throw e;
    }
    await recordEvent(this.kube, vm, 'Normal', 'SuccessfulCreate', `created instance on node ${placed.node}`);
    return { created: true };
  }

  /** The machine part of the VM spec an instance runs, with the filesystems of its ContainerPathMounts merged in. */
  private templateOf(vm: any): any {
    const template: any = {};
    for (const f of Object.keys(VM_KIND.spec.properties)) if (f !== 'runStrategy' && f !== 'updatePolicy' && vm.spec[f] !== undefined) template[f] = vm.spec[f];
    const fs = mergedFilesystems(this.caches, vm).filesystems;
    if (fs.length) template.filesystems = fs;
    else delete template.filesystems;
    return template;
  }

  /** Folds the instance into the VM status: printable status, conditions, node, interfaces. */
  private fold(vm: any, vmi: any | undefined, status: any, wantRunning: boolean, restartFields: string[]): void {
    const now = this.now();
    status.observedGeneration = vm.metadata.generation;
    status.runStrategy = vm.spec.runStrategy ?? 'Always';
    status.created = !!vmi;
    const phase = vmi?.status?.phase;
    const ready = !!vmi && isReady(vmi) && !vmi.metadata.deletionTimestamp;
    status.ready = ready;
    if (vmi) {
      status.node = vmi.spec.nodeName;
      status.instanceUID = vmi.metadata.uid;
      status.interfaces = vmi.status?.interfaces ?? [];
    } else {
      delete status.node;
      delete status.instanceUID;
      delete status.interfaces;
    }
    if (status.printableStatus !== 'CrashLoopBackOff' || (vmi && !FINISHED.has(phase))) {
      if (!vmi) {
        if (!['ErrorUnschedulable', 'WaitingForVolume', 'Starting'].includes(status.printableStatus) || !wantRunning) status.printableStatus = 'Stopped';
      } else if (vmi.metadata.deletionTimestamp) status.printableStatus = vm.metadata.deletionTimestamp ? 'Terminating' : 'Stopping';
      else if (phase === 'Running' && vmi.status?.migrationState && !vmi.status.migrationState.completed && !vmi.status.migrationState.failed) status.printableStatus = 'Migrating';
      else if (phase === 'Running') status.printableStatus = vmi.status?.conditions?.some((c: any) => c.type === 'Paused' && c.status === 'True') ? 'Paused' : 'Running';
      else if (phase && FINISHED.has(phase)) status.printableStatus = wantRunning ? 'Starting' : 'Stopped';
      else status.printableStatus = 'Starting';
    }
    if (vmi || status.printableStatus === 'Stopped') removeCondition(status, 'Failure');
    if (vmi?.status?.phase === 'Failed' && vmi.status.reason) setCondition(status, 'Failure', 'True', vmi.status.reason, vmi.status.message ?? '', now);
    setCondition(status, 'Ready', ready ? 'True' : 'False', ready ? 'GuestReady' : vmi ? 'InstanceNotReady' : 'NoInstance', ready ? '' : vmi ? `instance is ${phase ?? 'Pending'}` : 'no instance is running', now);
    if (restartFields.length) {
      status.restartRequiredFields = restartFields.map((f) => `spec.${f}`);
      setCondition(status, 'RestartRequired', 'True', 'SpecChanged', `changes to ${status.restartRequiredFields.join(', ')} take effect at the next start`, now);
    } else {
      delete status.restartRequiredFields;
      removeCondition(status, 'RestartRequired');
    }
  }
}

/** Restart-class fields whose VM value differs from what the instance was started with. */
export function changedRestartFields(vm: any, vmi: any): string[] {
  return RESTART_FIELDS.filter((f) => !isDeepStrictEqual(vm.spec[f], vmi.spec[f]));
}

function isOwnedBy(vmi: any, vm: any): boolean {
  return (vmi.metadata.ownerReferences ?? []).some((o: any) => o.uid === vm.metadata.uid);
}

function isReady(vmi: any): boolean {
  return vmi.status?.phase === 'Running' && (vmi.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True');
}






