import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tail, waitGone } from '../common/process';
import { QmpClient } from '../common/qmp';
import { HalError } from '../types';
import { qemuEnv } from './malloc';

/**
 * qemu-storage-daemon: QEMU's block layer without a VM. The backup data path
 * uses it for disks of stopped VMs (the same QMP block jobs and persistent
 * bitmaps as a running VM, so offline backup is the live code path with a
 * different QMP peer) and to create the metadata overlay of a raw disk
 * (blockdev-create, which unlike `qemu-img create` leaves an existing data
 * file's content alone). It ships in Debian's qemu-system-common.
 */
export interface StorageDaemon {
  qmp: QmpClient;
  pid: number;
  /** Quits cleanly (persistent bitmaps are written on close) and removes its temp dir. */
  close(): Promise<void>;
  /** SIGKILL, for failure paths. */
  kill(): Promise<void>;
}

function which(name: string): string | undefined {
  for (const d of [...(process.env.PATH ?? '').split(':'), '/usr/bin', '/usr/local/bin']) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

export function storageDaemonPath(): string | undefined {
  return process.env.KUBEVM_QEMU_STORAGE_DAEMON ?? which('qemu-storage-daemon');
}

/**
 * Starts a daemon with the given -blockdev definitions (JSON) and connects QMP.
 * `what` names the job in errors. A disk another process holds open fails here
 * with HalError('WrongState') naming the lock.
 */
export async function startStorageDaemon(blockdevs: Record<string, unknown>[], what: string): Promise<StorageDaemon> {
  const bin = storageDaemonPath();
  if (!bin)
    throw new HalError(
      'Unsupported',
      `${what}: qemu-storage-daemon is not installed (Debian package qemu-system-common); offline backup and raw-disk change tracking need it`,
    );
  // Unix socket paths are short-limited: a private directory under the system temp dir.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvqsd-'));
  const sock = path.join(dir, 'qmp.sock');
  const log = path.join(dir, 'qsd.log');
  const argv = [
    ...blockdevs.flatMap((b) => ['--blockdev', JSON.stringify(b)]),
    '--chardev',
    `socket,id=qmp,path=${sock},server=on,wait=off`,
    '--monitor',
    'chardev=qmp',
  ];
  const out = fs.openSync(log, 'a');
  const child = spawn(bin, argv, { stdio: ['ignore', out, out], shell: false, env: qemuEnv() });
  fs.closeSync(out);
  let exited = false;
  const gone = new Promise<void>((r) => {
    child.once('exit', () => ((exited = true), r()));
    child.once('error', () => ((exited = true), r()));
  });
  const cleanupDir = () => fs.rmSync(dir, { recursive: true, force: true });
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(sock, { timeoutMs: 15_000, alive: () => !exited, commandTimeoutMs: 60_000 });
  } catch (e: any) {
    if (!exited) child.kill('SIGKILL');
    await gone;
    const why = tail(log, 800);
    cleanupDir();
    if (/lock/i.test(why))
      throw new HalError('WrongState', `${what}: the disk is in use by another process (is the VM still running?): ${why}`);
    throw new HalError('Failed', `${what}: qemu-storage-daemon did not start: ${why || e.message}`);
  }
  const pid = child.pid!;
  return {
    qmp,
    pid,
    async close() {
      if (!exited) {
        await qmp.execute('quit').catch(() => undefined);
        await Promise.race([gone, new Promise((r) => setTimeout(r, 30_000).unref())]);
        if (!exited) {
          child.kill('SIGKILL');
          await gone;
        }
      }
      qmp.close();
      cleanupDir();
    },
    async kill() {
      if (!exited) child.kill('SIGKILL');
      await Promise.race([gone, waitGone(pid, 5_000)]);
      qmp.close();
      cleanupDir();
    },
  };
}
