import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QemuBackend, type DiskBackup } from '../controller/hal';
import { ensureQemu } from '../tests/guest';

/**
 * Backup data path of the qemu backend (controller/hal/qemu/backup.ts) on a
 * running VM (no guest: firmware only, so the vCPU stays idle):
 *  - a 1 GiB qcow2 disk, half full (random data in every other 2 MiB block);
 *  - full backup (QMP transaction: new bitmap + blockdev-backup sync=full, then
 *    the chunked sha256 of the point and its manifest) against `qemu-img
 *    convert -O qcow2` of the same disk in the same run (both from page cache;
 *    convert never flushes by default, so it is also timed with -t writeback);
 *  - 1% of the disk changed (164 scattered 64 KiB writes through the virtio
 *    device), then an incremental (sync=bitmap; checksum of the changed chunks).
 * ROUNDS (default 3) of each; medians. BENCH_BACKUP_X_PERF='{"max-workers":N,…}'
 * passes blockdev-backup x-perf options (KUBEVM_BACKUP_X_PERF).
 */
const GiB = 1 << 30;
const MiB = 1 << 20;
const ROUNDS = Number(process.env.BENCH_BACKUP_ROUNDS ?? 3);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1);
}

async function main(): Promise<void> {
  ensureQemu();
  if (process.env.BENCH_BACKUP_X_PERF) process.env.KUBEVM_BACKUP_X_PERF = process.env.BENCH_BACKUP_X_PERF;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvbb-'));
  const b = new QemuBackend({ runRoot: path.join(tmp, 'run'), stopGraceMs: 0 });
  const uid = `bench-backup-${process.pid}`;
  try {
    // The disk: random data in every other 2 MiB block (512 MiB of 1 GiB).
    const raw = path.join(tmp, 'src.raw');
    const fd = fs.openSync(raw, 'w');
    fs.ftruncateSync(fd, GiB);
    const buf = Buffer.alloc(2 * MiB);
    for (let off = 0; off < GiB; off += 4 * MiB) {
      randomFillSync(buf);
      fs.writeSync(fd, buf, 0, buf.length, off);
    }
    fs.closeSync(fd);
    const disk = path.join(tmp, 'disk.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, disk]);
    fs.rmSync(raw);
    const data = 512 * MiB;
    await b.start({
      name: 'bench-backup',
      uid,
      cpu: { cores: 1 },
      memoryMiB: 64,
      disks: [{ name: 'data', path: disk, format: 'qcow2', bus: 'virtio' }],
      nics: [],
      filesystems: [],
    });
    console.log(
      `backup: 1 GiB qcow2 disk with ${mib(data)} MiB of random data, VM running (accel=${b.accel}, no guest), ` +
        `${os.cpus().length} cores, x-perf=${process.env.KUBEVM_BACKUP_X_PERF ?? 'QEMU default'}, ${ROUNDS} rounds`,
    );
    execFileSync('cat', [disk], { stdio: ['ignore', 'ignore', 'inherit'] }); // page cache, for both sides

    // Each timed step starts with no dirty pages left from the one before (sync),
    // or the kernel's writeback of the previous step lands on the next one.
    const settle = () => execFileSync('sync');
    const convertMs: number[] = [];
    const syncedMs: number[] = [];
    const fulls: { r: DiskBackup; ms: number }[] = [];
    let last: DiskBackup | undefined;
    for (let i = 0; i < ROUNDS; i++) {
      const conv = path.join(tmp, 'convert.qcow2');
      settle();
      const t0 = performance.now();
      execFileSync('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'qcow2', disk, conv]);
      convertMs.push(performance.now() - t0);
      fs.rmSync(conv);
      // convert's default output cache mode is "unsafe": nothing is flushed, the copy may
      // still be in page cache only. A backup must be on stable storage: -t writeback flushes.
      settle();
      const t2 = performance.now();
      execFileSync('qemu-img', ['convert', '-U', '-t', 'writeback', '-f', 'qcow2', '-O', 'qcow2', disk, conv]);
      syncedMs.push(performance.now() - t2);
      fs.rmSync(conv);
      const target = path.join(tmp, `full${i}`);
      settle();
      const t1 = performance.now();
      const r = (await b.backup({ uid }, { targetDir: target, type: 'Full' })).disks[0];
      fulls.push({ r, ms: performance.now() - t1 });
      if (last) fs.rmSync(path.dirname(path.dirname(last.point)), { recursive: true, force: true });
      last = r;
      console.log(
        `  full #${i + 1}: ${fulls[i].ms.toFixed(0)} ms (copy ${r.copyMs} ms, checksum ${r.checksumMs} ms, overlapping the copy's fsync), ` +
          `${mib(r.size)} MiB; qemu-img convert ${convertMs[i].toFixed(0)} ms, with -t writeback (flushed) ${syncedMs[i].toFixed(0)} ms`,
      );
    }

    // Changes through the device, 64 KiB at random cluster-aligned offsets:
    // 'disk': 1% of the disk (164 writes anywhere); 'data': 1% of the data (82 writes inside the data blocks).
    const CL = 64 * 1024;
    const pick = (kind: 'disk' | 'data'): Set<number> => {
      const offsets = new Set<number>();
      const n = kind === 'disk' ? 164 : 82;
      while (offsets.size < n) {
        if (kind === 'disk') offsets.add(Math.floor(Math.random() * (GiB / CL)) * CL);
        else offsets.add(Math.floor(Math.random() * (GiB / (4 * MiB))) * 4 * MiB + Math.floor(Math.random() * ((2 * MiB) / CL)) * CL);
      }
      return offsets;
    };
    const incs: Record<'disk' | 'data', { r: DiskBackup; ms: number; changed: number }[]> = { disk: [], data: [] };
    for (let i = 0; i < ROUNDS; i++) {
      for (const kind of ['disk', 'data'] as const) {
        const offsets = pick(kind);
        for (const off of offsets)
          await b.qmp(uid, 'human-monitor-command', {
            'command-line': `qemu-io -d disk-data/virtio-backend "write -P 0x${(0x10 + i).toString(16)} ${off} 64k"`,
          });
        settle();
        const t0 = performance.now();
        const r = (await b.backup({ uid }, { targetDir: path.dirname(path.dirname(last!.point)), type: 'Incremental' })).disks[0];
        if (r.type !== 'Incremental') throw new Error(`expected an incremental, got ${JSON.stringify(r)}`);
        const x = { r, ms: performance.now() - t0, changed: offsets.size * CL };
        incs[kind].push(x);
        console.log(
          `  incremental #${i + 1}, 1% of the ${kind}: ${x.ms.toFixed(0)} ms (copy ${r.copyMs} ms, checksum ${r.checksumMs} ms), ` +
            `${mib(r.size)} MiB for ${mib(x.changed)} MiB changed (${mib(r.copiedBytes)} MiB copied)`,
        );
      }
    }

    const fullMs = median(fulls.map((f) => f.ms));
    const fullCopyMs = median(fulls.map((f) => f.r.copyMs));
    const fullSumMs = median(fulls.map((f) => f.r.checksumMs));
    const fullSize = median(fulls.map((f) => f.r.size));
    const incMs = median(incs.disk.map((x) => x.ms));
    const incSize = median(incs.disk.map((x) => x.r.size));
    const incDataMs = median(incs.data.map((x) => x.ms));
    const incDataSize = median(incs.data.map((x) => x.r.size));
    const convMs = median(convertMs);
    const convSyncedMs = median(syncedMs);
    const rate = (ms: number) => (data / MiB / (ms / 1000)).toFixed(0);
    console.log(
      `  medians: full ${fullMs.toFixed(0)} ms = ${rate(fullMs)} MiB/s of data (copy until fsynced ${fullCopyMs.toFixed(0)} ms, ` +
        `checksum ${fullSumMs.toFixed(0)} ms during it); qemu-img convert ${convMs.toFixed(0)} ms = ${rate(convMs)} MiB/s unflushed, ` +
        `${convSyncedMs.toFixed(0)} ms = ${rate(convSyncedMs)} MiB/s flushed; ` +
        `incremental of 1% of the disk ${incMs.toFixed(0)} ms, ${mib(incSize)} MiB; of 1% of the data ${incDataMs.toFixed(0)} ms, ${mib(incDataSize)} MiB; full ${mib(fullSize)} MiB`,
    );
    console.log(
      `backup: incremental_size_ratio=${(incDataSize / fullSize).toFixed(4)} incremental_size_ratio_disk1pct=${(incSize / fullSize).toFixed(4)} ` +
        `incremental_speedup=${(fullMs / incMs).toFixed(1)} full_vs_convert=${(convSyncedMs / fullMs).toFixed(2)} ` +
        `full_vs_convert_unflushed=${(convMs / fullMs).toFixed(2)}`,
    );
  } finally {
    await b.kill(uid).catch(() => undefined);
    await b.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
