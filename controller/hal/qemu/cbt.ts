import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TrackingBitmap } from '../backup-types';
import { bitmapPoint } from '../common/points';
import { imageInfo } from '../common/qemuimg';
import type { QmpClient } from '../common/qmp';
import { HalError, type DiskSpec, type VmSpec } from '../types';
import { startStorageDaemon } from './storage-daemon';

/**
 * Changed block tracking (CBT) of disks: persistent dirty bitmaps.
 *
 * qcow2 disks carry their bitmaps themselves. A raw file cannot, so a raw disk
 * with `changeTracking: true` runs through a qcow2 *metadata overlay*: a qcow2
 * whose external data file is the raw file itself (`data-file`, with
 * `data-file-raw=on`: every guest write lands in the raw file at its own offset,
 * the raw file stays a valid raw image, and the overlay holds only the qcow2
 * header, a 1:1 mapping and the bitmaps). The overlay is `<raw path>.cbt.qcow2`,
 * next to the disk, so it lives and moves with the volume; it is made when the
 * VM starts (or an offline backup first runs) and is removed by
 * dropChangeTracking() and by an in-place restore (its bitmaps would lie about
 * the new content). It is also remade, without bitmaps, when the raw file was
 * modified after the overlay was last closed (written without it). Whoever
 * deletes the volume should delete it too (cbtOverlayPath()).
 */
export const OVERLAY_SUFFIX = '.cbt.qcow2';

export function cbtOverlayPath(rawPath: string): string {
  return `${rawPath}${OVERLAY_SUFFIX}`;
}

export function checkChangeTrackingField(d: DiskSpec, field: string): void {
  if (d.changeTracking !== undefined && typeof d.changeTracking !== 'boolean')
    throw new HalError('Invalid', `spec.${field}.changeTracking: ${JSON.stringify(d.changeTracking)} must be true or false`);
}

/** Does the raw disk's overlay exist and describe this raw file (path, raw mode, size)? */
async function overlayMatches(rawPath: string, size: number): Promise<boolean> {
  const ov = cbtOverlayPath(rawPath);
  if (!fs.existsSync(ov)) return false;
  try {
    const info = await imageInfo(ov, { format: 'qcow2' });
    const d = info['format-specific']?.data;
    if (d?.['data-file'] !== rawPath || d?.['data-file-raw'] !== true || info['virtual-size'] !== size) return false;
    // Written behind the overlay's back? A QEMU using the overlay stores its bitmaps
    // on close, after its last data write, so a raw file newer than its overlay was
    // changed by something else (a run without the overlay, a copy, a restore): the
    // bitmaps would miss those changes. Bitmaps still flagged in-use are kept: QEMU
    // reports them inconsistent, which names the real cause (a crash).
    const inUse = (d.bitmaps ?? []).some((b) => b.flags.includes('in-use'));
    return inUse || fs.statSync(rawPath).mtimeMs <= fs.statSync(ov).mtimeMs;
  } catch (e: any) {
    // Open elsewhere: a live migration's target starts while its source still runs on
    // it. Keep it; a real conflict fails on QEMU's own image lock with a clear error.
    if (/lock/i.test(String(e?.message))) return true;
    return false; // damaged or pointing elsewhere: replace it
  }
}

/**
 * Makes sure a raw disk has its metadata overlay. Returns 'created' when it was
 * (re)made, which means no bitmap survived: the next backup is Full.
 */
export async function ensureOverlay(rawPath: string): Promise<'kept' | 'created'> {
  let size: number;
  try {
    size = fs.statSync(rawPath).size;
  } catch (e: any) {
    throw new HalError('NotFound', `raw disk ${rawPath}: ${e?.code === 'ENOENT' ? 'does not exist' : e?.message}`);
  }
  if (size === 0 || size % 512 !== 0)
    throw new HalError(
      'Invalid',
      `raw disk ${rawPath}: size ${size} must be a positive multiple of 512 bytes for change tracking`,
    );
  if (await overlayMatches(rawPath, size)) return 'kept';
  const ov = cbtOverlayPath(rawPath);
  const tmp = path.join(path.dirname(ov), `.${path.basename(ov)}.${randomBytes(3).toString('hex')}.tmp`);
  fs.writeFileSync(tmp, '');
  const what = `creating the change-tracking overlay of ${rawPath}`;
  try {
    // blockdev-create on already-open nodes: the raw file is opened, never created or truncated.
    const d = await startStorageDaemon(
      [
        { driver: 'file', 'node-name': 'data', filename: rawPath },
        { driver: 'file', 'node-name': 'meta', filename: tmp },
      ],
      what,
    );
    try {
      const done = d.qmp.waitEvent('JOB_STATUS_CHANGE', (e) => e.data?.id === 'create' && e.data?.status === 'concluded', 60_000);
      done.catch(() => undefined);
      await d.qmp.execute('blockdev-create', {
        'job-id': 'create',
        options: { driver: 'qcow2', file: 'meta', 'data-file': 'data', 'data-file-raw': true, size, 'cluster-size': 65536 },
      });
      await done;
      const [job] = (await d.qmp.execute<any[]>('query-jobs')).filter((j) => j.id === 'create');
      if (job?.error) throw new Error(job.error);
      await d.qmp.execute('job-dismiss', { id: 'create' });
    } finally {
      await d.close();
    }
    fs.renameSync(tmp, ov);
  } catch (e: any) {
    fs.rmSync(tmp, { force: true });
    if (e instanceof HalError) throw e;
    throw new HalError('Failed', `${what}: ${e?.message ?? e}`);
  }
  return 'created';
}

/**
 * The disk as QEMU opens it: a writable raw disk with changeTracking becomes its
 * qcow2 overlay (same node name, so the device and the backup code see one disk).
 */
export async function diskForQemu(d: DiskSpec): Promise<DiskSpec> {
  checkChangeTrackingField(d, `disks[${d.name}]`);
  if (d.format !== 'raw' || !d.changeTracking || d.readOnly) return d;
  await ensureOverlay(d.path);
  return { ...d, format: 'qcow2', path: cbtOverlayPath(d.path) };
}

export async function specForQemu(spec: VmSpec): Promise<VmSpec> {
  if (!spec.disks.some((d) => d.changeTracking !== undefined)) return spec;
  const disks: DiskSpec[] = [];
  for (const [i, d] of spec.disks.entries()) {
    try {
      disks.push(await diskForQemu(d));
    } catch (e: any) {
      throw new HalError(e instanceof HalError ? e.code : 'Failed', `spec.disks[${i}] (${d.name}): ${e.message}`);
    }
  }
  return { ...spec, disks };
}

export interface NodeState {
  node: string;
  /** Block driver of the node (qcow2 can carry persistent bitmaps, raw cannot). */
  drv: string;
  virtualSize: number;
  bitmaps: TrackingBitmap[];
}

/** A block node's driver, size and named bitmaps, as QEMU (or the storage daemon) reports them. */
export async function nodeState(qmp: QmpClient, node: string): Promise<NodeState> {
  const nodes = await qmp.execute<any[]>('query-named-block-nodes', { flat: true });
  const n = nodes.find((x) => x['node-name'] === node);
  if (!n) throw new HalError('NotFound', `block node ${node} does not exist`);
  const bitmaps: TrackingBitmap[] = (n['dirty-bitmaps'] ?? [])
    .filter((b: any) => typeof b.name === 'string')
    .map((b: any) => ({
      name: b.name,
      point: bitmapPoint(b.name),
      dirtyBytes: b.count,
      inconsistent: b.inconsistent === true,
    }));
  return { node, drv: n.drv, virtualSize: n.image['virtual-size'], bitmaps };
}

/**
 * Bitmaps stored in an image file of a stopped VM. A bitmap still flagged
 * `in-use` was left by a QEMU that did not close the image (kill -9, host
 * crash): QEMU will load it as inconsistent, so it is reported as such.
 */
export async function fileBitmaps(p: string): Promise<{ virtualSize: number; bitmaps: TrackingBitmap[] }> {
  let info;
  try {
    info = await imageInfo(p, { format: 'qcow2' });
  } catch (e: any) {
    if (/lock/i.test(String(e?.message)))
      throw new HalError('WrongState', `${p} is in use by another process (is the VM still running?)`);
    throw new HalError('Failed', `reading bitmaps of ${p}: ${e.message}`);
  }
  const bitmaps = (info['format-specific']?.data?.bitmaps ?? []).map((b) => ({
    name: b.name,
    point: bitmapPoint(b.name),
    inconsistent: b.flags.includes('in-use'),
  }));
  return { virtualSize: info['virtual-size'], bitmaps };
}
