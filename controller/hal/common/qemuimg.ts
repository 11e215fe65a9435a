import { runChecked } from './process';

/**
 * The few qemu-img calls the backup data path makes, with their JSON parsed.
 * Argument arrays only; file names are passed as separate arguments after the
 * options, so a name that looks like an option is still a file name.
 */
export const QEMU_IMG = process.env.KUBEVM_QEMU_IMG ?? 'qemu-img';

/** One extent of `qemu-img map --output=json`. */
export interface MapExtent {
  start: number;
  length: number;
  /** Layer of the backing chain the data comes from (0 = the image itself). */
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  compressed?: boolean;
  /** Host offset in the file of that layer (or its data file), when the data is there as is. */
  offset?: number;
}

export interface ImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: {
    type: string;
    data: {
      bitmaps?: { name: string; flags: string[]; granularity: number }[];
      'data-file'?: string;
      'data-file-raw'?: boolean;
      [k: string]: unknown;
    };
  };
}

const LONG = 3_600_000; // converts of big disks: bounded by the caller's patience, not ours

function fmtArgs(format?: string): string[] {
  return format ? ['-f', format] : [];
}

/** `qemu-img info`; `shareLock` (-U) reads an image another process has open. */
export async function imageInfo(p: string, o: { format?: string; shareLock?: boolean } = {}): Promise<ImageInfo> {
  const out = await runChecked(
    [QEMU_IMG, 'info', '--output=json', ...fmtArgs(o.format), ...(o.shareLock ? ['-U'] : []), '--', p],
    60_000,
  );
  return JSON.parse(out);
}

/** The backing chain, top image first. */
export async function imageChain(p: string, o: { format?: string } = {}): Promise<ImageInfo[]> {
  const out = await runChecked([QEMU_IMG, 'info', '--output=json', '--backing-chain', ...fmtArgs(o.format), '--', p], 60_000);
  return JSON.parse(out);
}

export async function imageMap(p: string, o: { format?: string } = {}): Promise<MapExtent[]> {
  const out = await runChecked([QEMU_IMG, 'map', '--output=json', ...fmtArgs(o.format), '--', p], 600_000);
  return JSON.parse(out);
}

/** Flattens an image (with its backing chain) into a new one. */
export async function convertImage(src: string, srcFormat: string, dest: string, destFormat: 'qcow2' | 'raw'): Promise<void> {
  await runChecked([QEMU_IMG, 'convert', '-f', srcFormat, '-O', destFormat, '--', src, dest], LONG);
}

/**
 * `qemu-img rebase` in safe mode: `p` keeps its content while its backing
 * file becomes `backing` (relative to p's directory), or none (''): the
 * clusters where the old and new backing differ are copied into p first.
 */
export async function rebaseImage(p: string, backing: string): Promise<void> {
  await runChecked([QEMU_IMG, 'rebase', '-f', 'qcow2', ...(backing ? ['-F', 'qcow2'] : []), '-b', backing, '--', p], 24 * 3600_000);
}

/** `qemu-img bitmap --remove` (offline; the image must not be open elsewhere). */
export async function removeBitmap(p: string, name: string, format = 'qcow2'): Promise<void> {
  await runChecked([QEMU_IMG, 'bitmap', '--remove', '-f', format, '--', p, name], 60_000);
}

/**
 * True if some process holds the image open for writing (a running QEMU or
 * qemu-storage-daemon): qemu-img info without -U then fails on the lock.
 */
export async function imageInUse(p: string, format?: string): Promise<boolean> {
  try {
    await imageInfo(p, { format });
    return false;
  } catch (e: any) {
    if (/lock/i.test(String(e?.message))) return true;
    throw e;
  }
}
