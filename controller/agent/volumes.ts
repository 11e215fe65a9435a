import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { GVR, Kube, isConflict } from '../runtime/kube';
import { WorkQueue } from '../runtime/queue';
import { Store } from '../controller/caches';
import { confinePath } from '../hal/common/paths';
import { cbtOverlayPath } from '../hal/qemu/cbt';
import { parseQuantity } from '../controller/scheduler';
import { VOLUME_PROTECTION, VOLUME_STORAGE, isFilesystem } from '../controller/storage';
import { ignoreGone } from '../runtime/status';

/**
 * The agent's half of Volumes: creates the image file for each Volume placed
 * on this node (blank, imported from an allowed path, or cloned from another
 * Volume), reports its sizes, and removes the file once the Volume is deleted
 * and no VM protects it. qemu-img runs with an argument array.
 */
export class VolumeProvisioner {
  readonly queue: WorkQueue;
  /** Restores a `source.fromBackup` Volume into file (set by the agent when it has a backup data path). */
  restoreFrom?: (v: any, file: string, format: 'qcow2' | 'raw') => Promise<void>;

  constructor(
    private readonly kube: Kube,
    private readonly nodeName: string,
    private readonly dir: string,
    private readonly allowedRoots: string[],
    private readonly volumes: Store,
    log: (line: string) => void,
  ) {
    this.queue = new WorkQueue(`volumes/${nodeName}`, (k) => this.reconcile(k), 2, log);
  }

  /** The volume's file, or directory for a Filesystem volume. */
  fileFor(v: any): string {
    const stem = `${v.metadata.name}-${v.metadata.uid.slice(0, 8)}`;
    if (isFilesystem(v)) return path.join(this.dir, v.metadata.namespace, `${stem}.d`);
    return path.join(this.dir, v.metadata.namespace, `${stem}.${v.spec.format ?? 'qcow2'}`);
  }

  private async reconcile(k: string): Promise<void> {
    const v = this.volumes.get(k);
    if (!v || v.status?.nodeName !== this.nodeName) return;
    const file = this.fileFor(v);
    if (v.metadata.deletionTimestamp) {
      const fin: string[] = v.metadata.finalizers ?? [];
      if (fin.includes(VOLUME_PROTECTION) || !fin.includes(VOLUME_STORAGE)) return; // still in use, or not ours
      if (isFilesystem(v)) fs.rmSync(file, { recursive: true, force: true });
      else {
        fs.rmSync(file, { force: true });
        fs.rmSync(cbtOverlayPath(file), { force: true }); // a raw disk's change-tracking overlay, if it had one
      }
      await this.kube
        .mergePatch(GVR.volume, v.metadata.namespace, v.metadata.name, { metadata: { finalizers: fin.filter((f) => f !== VOLUME_STORAGE), resourceVersion: v.metadata.resourceVersion } })
        .catch(ignoreGone);
      return;
    }
    if (isFilesystem(v) && v.status?.phase === 'Ready') {
      // Usage changes with every backup written or deleted: the runner requeues the volume then.
      const used = dirUsage(file);
      if (used !== v.status.actualSize) await this.setStatus(v, { actualSize: used });
      return;
    }
    if (v.status?.phase === 'Ready' || v.status?.phase === 'Failed') return;
    if (isFilesystem(v)) {
      try {
        fs.mkdirSync(file, { recursive: true, mode: 0o700 });
        await this.setStatus(v, { phase: 'Ready', path: file, actualSize: dirUsage(file), virtualSize: Math.ceil(parseQuantity(v.spec.size)), message: undefined });
      } catch (e) {
        await this.setStatus(v, { phase: 'Failed', message: (e as Error).message });
      }
      return;
    }
    try {
      await this.provision(v, file);
      const info = JSON.parse(await qemuImg(['info', '--output=json', file]));
      await this.setStatus(v, { phase: 'Ready', path: file, actualSize: info['actual-size'], virtualSize: info['virtual-size'], message: undefined });
    } catch (e) {
      fs.rmSync(file, { force: true });
      await this.setStatus(v, { phase: 'Failed', message: (e as Error).message });
    }
  }

  private async provision(v: any, file: string): Promise<void> {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const fmt = v.spec.format ?? 'qcow2';
    const size = v.spec.size ? String(Math.ceil(parseQuantity(v.spec.size))) : undefined;
    const src = v.spec.source ?? { blank: {} };
    if (src.image) {
      // Imports only from directories the node operator allowed, resolved without symlink escapes.
      const real = confinePath(src.image.path, { allowedRoots: this.allowedRoots, mustBeDirectory: false });
      const args = ['convert', '-O', fmt];
      if (src.image.format) args.push('-f', src.image.format);
      await qemuImg([...args, real, file]);
      if (size) await qemuImg(['resize', ...(fmt === 'raw' ? ['-f', 'raw'] : []), file, size]).catch(() => undefined);
      return;
    }
    if (src.fromBackup) {
      if (!this.restoreFrom) throw new Error('source.fromBackup: this node agent has no backup data path');
      await this.restoreFrom(v, file, fmt);
      return;
    }
    if (src.clone) {
      const from = this.volumes.get(`${v.metadata.namespace}/${src.clone.volume}`);
      if (!from || from.status?.phase !== 'Ready') throw new Error(`source Volume ${src.clone.volume} is not Ready`);
      if (from.status.nodeName !== this.nodeName) throw new Error(`source Volume ${src.clone.volume} is on node ${from.status.nodeName}`);
      await qemuImg(['convert', '-O', fmt, from.status.path, file]);
      return;
    }
    if (!size) throw new Error('spec.size is required for a blank volume');
    await qemuImg(['create', '-f', fmt, file, size]);
  }

  private async setStatus(v: any, patch: any): Promise<void> {
    const status = { ...(v.status ?? {}), ...patch };
    for (const k of Object.keys(status)) if (status[k] === undefined) delete status[k];
    try {
      await this.kube.updateStatus(GVR.volume, { ...v, status });
    } catch (e) {
      if (isConflict(e)) this.queue.addAfter(`${v.metadata.namespace}/${v.metadata.name}`, 50);
      else ignoreGone(e);
    }
  }
}

function qemuImg(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('qemu-img', args, { timeout: 120_000, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`qemu-img ${args[0]} failed: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    }),
  );
}


/** Bytes a directory tree takes on disk (allocated blocks, so sparse files count what they hold). */
export function dirUsage(dir: string): number {
  let total = 0;
  const walk = (d: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return; // gone meanwhile
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile())
        try {
          total += fs.lstatSync(p).blocks * 512;
        } catch {
          /* gone meanwhile */
        }
    }
  };
  walk(dir);
  return total;
}
