import { blake3 } from '@napi-rs/blake-hash';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QemuBackend, type DiskSpec } from '../../controller/hal';
import { imageChecksum, type ChecksumAlgorithm } from '../../controller/hal/common/checksum';
import { createEmptyQcow2, readQcow2Map } from '../../controller/hal/common/qcow2';
import { imageMap } from '../../controller/hal/common/qemuimg';
import { qemuEnv, qemuTunables } from '../../controller/hal/qemu/malloc';
import { ensureQemu } from '../guest';

/**
 * The pieces of the backup data path that replaced qemu-img runs and
 * single-threaded sha256 (docs/benchmarks.md, backup), each checked against an
 * independent reference: QEMU's own tools for qcow2, digests computed here from
 * raw bytes for the checksums, /proc for the environment QEMU runs with.
 */
const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 64 * KiB;

let tmp: string;
beforeAll(() => {
  ensureQemu();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvdp-'));
});
afterAll(() => {
  delete process.env.KUBEVM_CHECKSUM_THREADS;
  delete process.env.KUBEVM_BACKUP_CHECKSUM;
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function img(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}
function qio(file: string, fmt: string, ...cmds: string[]): void {
  execFileSync('qemu-io', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });
}

/** The chunked checksum of raw bytes, computed here without the code under test. */
function reference(raw: Buffer, algo: ChecksumAlgorithm): string {
  const h = (b: Buffer) => (algo === 'blake3' ? blake3(b) : createHash('sha256').update(b).digest());
  const digests: Buffer[] = [];
  for (let o = 0; o < raw.length; o += CHUNK) digests.push(h(raw.subarray(o, Math.min(o + CHUNK, raw.length))));
  return `chunked-${algo}:${h(Buffer.concat(digests)).toString('hex')}`;
}

function rawOf(image: string, fmt: string): Buffer {
  const out = path.join(tmp, `raw-${randomBytes(3).toString('hex')}`);
  img('convert', '-f', fmt, '-O', 'raw', image, out);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

describe('qcow2 without qemu-img (common/qcow2.ts)', () => {
  test('an empty image, with and without a backing file, passes qemu-img check and reads as its backing', () => {
    const base = path.join(tmp, 'base.qcow2');
    img('create', '-q', '-f', 'qcow2', base, String(3 * 1024 * MiB));
    qio(base, 'qcow2', 'write -P 0x5a 0 128k');
    const top = path.join(tmp, 'top.qcow2');
    createEmptyQcow2(top, 3 * 1024 * MiB, 'base.qcow2');
    expect(img('check', top)).toContain('No errors were found on the image.');
    const info = JSON.parse(img('info', '--output=json', top));
    expect(info).toMatchObject({ 'virtual-size': 3 * 1024 * MiB, 'cluster-size': 65536, 'backing-filename': 'base.qcow2', 'backing-filename-format': 'qcow2' });
    expect(img('compare', top, base)).toContain('Images are identical.');
    // An odd size (not a multiple of a cluster) without a backing file.
    const odd = path.join(tmp, 'odd.qcow2');
    createEmptyQcow2(odd, 7 * MiB + 512);
    expect(img('check', odd)).toContain('No errors were found on the image.');
    expect(JSON.parse(img('info', '--output=json', odd))['virtual-size']).toBe(7 * MiB + 512);
    // It is created exclusively: an existing file is never overwritten.
    expect(() => createEmptyQcow2(odd, MiB)).toThrow(/EEXIST/);
  });

  test("the map of the image's own clusters equals qemu-img map (data offsets and zero clusters)", async () => {
    const base = path.join(tmp, 'mbase.qcow2');
    img('create', '-q', '-f', 'qcow2', base, String(1024 * MiB));
    qio(base, 'qcow2', 'write -P 0x11 0 1M');
    const top = path.join(tmp, 'mtop.qcow2');
    createEmptyQcow2(top, 1024 * MiB, 'mbase.qcow2');
    // Data, a zero range, a write that ends inside a cluster, data in the second L2 table.
    qio(top, 'qcow2', 'write -P 0x22 64k 128k', 'write -z 512k 64k', 'write -P 0x33 600M 200k', 'write -P 0x44 1023M 64k');
    const m = readQcow2Map(top);
    expect(m.backing).toBe('mbase.qcow2');
    const mine = new Map<number, number | 'zero'>();
    for (const r of m.runs) for (let k = 0; k < r.count; k++) mine.set(r.index + k, r.zero ? 'zero' : r.offset! + k * CHUNK);
    // qemu-img map splits a cluster where its content changes (a write ending inside it): per cluster,
    // the host offset is where its first extent with data says the cluster starts.
    const own = new Map<number, number | 'zero'>();
    for (const e of await imageMap(top)) {
      if (e.depth !== 0 || !e.present) continue;
      for (let c = Math.floor(e.start / CHUNK); c * CHUNK < e.start + e.length; c++) {
        if (e.data && typeof own.get(c) !== 'number') own.set(c, e.offset! + (c * CHUNK - e.start));
        else if (!e.data && !own.has(c)) own.set(c, 'zero');
      }
    }
    expect([...mine].sort((a, b) => a[0] - b[0])).toEqual([...own].sort((a, b) => a[0] - b[0]));
    expect(mine.size).toBe(2 + 1 + 4 + 1);
    // Runs: the two 0x22 clusters are contiguous on the host and make one run.
    expect(m.runs.length).toBeLessThan(mine.size);
  });

  test('anything it does not expect is refused, not misread', () => {
    const comp = path.join(tmp, 'comp.qcow2');
    const src = path.join(tmp, 'comp-src.qcow2');
    img('create', '-q', '-f', 'qcow2', src, String(4 * MiB));
    qio(src, 'qcow2', 'write -P 0x61 0 1M');
    img('convert', '-c', '-f', 'qcow2', '-O', 'qcow2', src, comp);
    expect(() => readQcow2Map(comp)).toThrow(/compressed cluster/);
    const v2 = path.join(tmp, 'v2.qcow2');
    img('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', v2, String(MiB));
    expect(() => readQcow2Map(v2)).toThrow(/version 2/);
    const raw = path.join(tmp, 'plain.raw');
    fs.writeFileSync(raw, Buffer.alloc(4096));
    expect(() => readQcow2Map(raw)).toThrow(/not a qcow2 image/);
  });
});

describe('checksums: BLAKE3 or sha256, one thread or a pool', () => {
  let chainTop: string;
  let content: Buffer;
  beforeAll(() => {
    // 96 MiB + 4 KiB (a last partial chunk), over a backing file: data in both layers, zeros, holes.
    const size = 96 * MiB + 4 * KiB;
    const base = path.join(tmp, 'cbase.qcow2');
    img('create', '-q', '-f', 'qcow2', base, String(size));
    qio(base, 'qcow2', 'write -P 0x71 0 40M', `write -P 0x72 ${size - 4 * KiB} 4k`);
    chainTop = path.join(tmp, 'ctop.qcow2');
    img('create', '-q', '-f', 'qcow2', '-b', 'cbase.qcow2', '-F', 'qcow2', chainTop);
    qio(chainTop, 'qcow2', 'write -P 0x73 1M 3M', 'write -z 10M 2M', 'write -P 0x74 70M 100k');
    content = rawOf(chainTop, 'qcow2');
    expect(content.length).toBe(size);
  });
  afterEach(() => delete process.env.KUBEVM_CHECKSUM_THREADS);

  test.each([
    ['blake3', '0'],
    ['blake3', '2'],
    ['sha256', '0'],
    ['sha256', '3'],
  ] as const)('%s with KUBEVM_CHECKSUM_THREADS=%s equals the checksum computed from the raw bytes', async (algo, threads) => {
    process.env.KUBEVM_CHECKSUM_THREADS = threads;
    const sums = path.join(tmp, `sums-${algo}-${threads}`);
    const r = await imageChecksum(chainTop, 'qcow2', sums, algo);
    expect(r.checksum).toBe(reference(content, algo));
    expect(r.virtualSize).toBe(content.length);
    // The digests file holds one digest per chunk, the same whichever path made it.
    expect(fs.statSync(sums).size).toBe(Math.ceil(content.length / CHUNK) * 32);
    // A raw copy of the same content has the same checksum (format-independent).
    const raw = path.join(tmp, `copy-${algo}-${threads}.raw`);
    fs.writeFileSync(raw, content);
    expect((await imageChecksum(raw, 'raw', undefined, algo)).checksum).toBe(r.checksum);
  });

  test('a truncated image fails on the pool and on one thread alike, naming the file', async () => {
    const t = path.join(tmp, 'trunc.qcow2');
    img('convert', '-f', 'qcow2', '-O', 'qcow2', chainTop, t);
    const m = readQcow2Map(t);
    const lastData = Math.max(...m.runs.filter((r) => !r.zero).map((r) => r.offset! + (r.count - 1) * CHUNK));
    fs.truncateSync(t, lastData); // the last data cluster is gone
    for (const threads of ['0', '2']) {
      process.env.KUBEVM_CHECKSUM_THREADS = threads;
      await expect(imageChecksum(t, 'qcow2', undefined, 'blake3', { point: true })).rejects.toThrow(/trunc\.qcow2.*truncated image/);
    }
  });
});

describe('a chain keeps its checksum algorithm', () => {
  test('a sha256 Full (KUBEVM_BACKUP_CHECKSUM=sha256) is continued in sha256 by a default backend; restore and verify check it', async () => {
    const disk = path.join(tmp, 'alg.qcow2');
    img('create', '-q', '-f', 'qcow2', disk, String(32 * MiB));
    qio(disk, 'qcow2', 'write -P 0x41 0 4M');
    const d: DiskSpec = { name: 'data', path: disk, format: 'qcow2', bus: 'virtio' };
    // The bitmap the incremental needs: made by a first (blake3) Full, whose chain is another directory.
    const target = path.join(tmp, 'alg-target');

    process.env.KUBEVM_BACKUP_CHECKSUM = 'sha256';
    const fips = new QemuBackend({ runRoot: path.join(tmp, 'run-sha'), stopGraceMs: 0 });
    delete process.env.KUBEVM_BACKUP_CHECKSUM;
    const plain = new QemuBackend({ runRoot: path.join(tmp, 'run-b3'), stopGraceMs: 0 });
    try {
      const full = (await fips.backup({ offline: { disks: [d] } }, { targetDir: target, type: 'Full', pointId: 'f1' })).disks[0];
      expect(full.checksum).toMatch(/^chunked-sha256:[0-9a-f]{64}$/);
      expect(full.checksum).toBe(reference(rawOf(disk, 'qcow2'), 'sha256'));
      qio(disk, 'qcow2', 'write -P 0x42 8M 1M');
      const inc = (await plain.backup({ offline: { disks: [d] } }, { targetDir: target, type: 'Incremental', pointId: 'i1' })).disks[0];
      expect(inc).toMatchObject({ type: 'Incremental', base: full.point });
      expect(inc.checksum).toMatch(/^chunked-sha256:/);
      expect(inc.checksum).toBe(reference(rawOf(disk, 'qcow2'), 'sha256'));
      const dest = path.join(tmp, 'alg-restored.raw');
      const r = await plain.restore({ point: inc.point, dest, format: 'raw' });
      expect(r.checksum).toBe(inc.checksum);
      expect(img('compare', '-f', 'raw', '-F', 'qcow2', dest, disk)).toContain('Images are identical.');
      expect(await plain.verifyBackup(inc.point)).toMatchObject({ ok: true, problems: [] });
      // A new chain from the default backend is BLAKE3.
      const f2 = (await plain.backup({ offline: { disks: [d] } }, { targetDir: path.join(tmp, 'alg-b3'), type: 'Full' })).disks[0];
      expect(f2.checksum).toBe(reference(rawOf(disk, 'qcow2'), 'blake3'));
    } finally {
      await fips.close();
      await plain.close();
    }
    process.env.KUBEVM_BACKUP_CHECKSUM = 'md5';
    expect(() => new QemuBackend({ runRoot: path.join(tmp, 'run-bad'), stopGraceMs: 0 })).toThrow(
      /KUBEVM_BACKUP_CHECKSUM: "md5" must be blake3 or sha256/,
    );
    delete process.env.KUBEVM_BACKUP_CHECKSUM;
  });
});

describe('QEMU runs with malloc tuned for block jobs (qemu/malloc.ts)', () => {
  test('tunables are added, an operator’s own win, and KUBEVM_QEMU_MALLOC=default turns them off', () => {
    expect(qemuTunables(undefined)).toBe('glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=8388608');
    expect(qemuTunables('glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=2')).toBe(
      'glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=4194304',
    );
    expect(qemuEnv({ PATH: '/bin', KUBEVM_QEMU_MALLOC: 'default' })).toEqual({ PATH: '/bin', KUBEVM_QEMU_MALLOC: 'default' });
    expect(qemuEnv({ PATH: '/bin' }).GLIBC_TUNABLES).toContain('glibc.malloc.mmap_threshold=4194304');
  });

  test('a VM’s QEMU process has them in its environment', async () => {
    const b = new QemuBackend({ runRoot: path.join(tmp, 'run-env'), stopGraceMs: 0 });
    const uid = `env-${process.pid}`;
    try {
      const disk = path.join(tmp, 'env.qcow2');
      img('create', '-q', '-f', 'qcow2', disk, String(16 * MiB));
      const st = await b.start({
        name: 'env',
        uid,
        cpu: { cores: 1 },
        memoryMiB: 64,
        disks: [{ name: 'data', path: disk, format: 'qcow2', bus: 'virtio' }],
        nics: [],
        filesystems: [],
      });
      // glibc parses GLIBC_TUNABLES in place (':' becomes NUL), so /proc shows the first tunable only.
      const env = fs.readFileSync(`/proc/${st.pid}/environ`, 'utf8').split('\0');
      expect(env).toContain('GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304');
    } finally {
      await b.kill(uid).catch(() => undefined);
      await b.close();
    }
  });
});

describe('merging points (retention with mergeIncrementals)', () => {
  test('folding incrementals into a kept point, then making it self-contained: every kept point restores to its moment', async () => {
    const disk = path.join(tmp, 'merge.qcow2');
    img('create', '-q', '-f', 'qcow2', disk, String(64 * MiB));
    const d: DiskSpec = { name: 'data', path: disk, format: 'qcow2', bus: 'virtio' };
    const b = new QemuBackend({ runRoot: path.join(tmp, 'run-merge'), stopGraceMs: 0 });
    const target = path.join(tmp, 'merge-target');
    const at: Record<string, Buffer> = {};
    const points: Record<string, string> = {};
    const writes: Record<string, string[]> = {
      m1: ['write -P 0x11 0 8M', 'write -P 0x12 40M 1M'],
      m2: ['write -P 0x21 1M 2M', 'write -P 0x22 50M 64k'],
      m3: ['write -P 0x31 2M 64k', 'write -z 40M 512k'],
      m4: ['write -P 0x41 60M 3M'],
    };
    try {
      for (const [id, cmds] of Object.entries(writes)) {
        qio(disk, 'qcow2', ...cmds);
        at[id] = rawOf(disk, 'qcow2');
        const r = (await b.backup({ offline: { disks: [d] } }, { targetDir: target, type: id === 'm1' ? 'Full' : 'Incremental', pointId: id })).disks[0];
        points[id] = r.point;
      }
      const restoresTo = async (id: string) => {
        const dest = path.join(tmp, `merge-${id}-${randomBytes(2).toString('hex')}.raw`);
        await b.restore({ point: points[id], dest, format: 'raw' });
        return fs.readFileSync(dest).equals(at[id]);
      };
      const before = JSON.parse(fs.readFileSync(points.m3, 'utf8'));

      // m3 onto m1: m2 folded in.
      const r1 = await b.mergeBackup({ point: points.m3, onto: points.m1 });
      expect(r1).toMatchObject({ type: 'Incremental', base: points.m1, chain: ['m1', 'm3'], mergedFrom: ['m2'], checksum: before.checksum });
      expect(JSON.parse(img('info', '--output=json', path.join(path.dirname(points.m3), 'm3.qcow2')))['backing-filename']).toBe('m1.qcow2');
      for (const f of ['m2.qcow2', 'm2.sums', 'm2.json']) fs.rmSync(path.join(path.dirname(points.m2), f));
      expect(await restoresTo('m3')).toBe(true);
      // m4, built on m3, now chains m1 → m3 → m4 and restores as before.
      expect(await b.verifyBackup(points.m4)).toMatchObject({ ok: true, chain: ['m1', 'm3', 'm4'] });
      expect(await restoresTo('m4')).toBe(true);
      // Repeating a finished merge changes nothing.
      expect(await b.mergeBackup({ point: points.m3, onto: points.m1 })).toMatchObject({ chain: ['m1', 'm3'], mergedFrom: ['m2'] });

      // m3 self-contained: m1 folded in; it is a Full now and restores on its own.
      const r2 = await b.mergeBackup({ point: points.m3 });
      expect(r2).toMatchObject({ type: 'Full', chain: ['m3'], mergedFrom: ['m2', 'm1'], checksum: before.checksum });
      expect(r2.base).toBeUndefined();
      for (const f of ['m1.qcow2', 'm1.sums', 'm1.json']) fs.rmSync(path.join(path.dirname(points.m1), f));
      expect(await restoresTo('m3')).toBe(true);
      expect(await b.verifyBackup(points.m3)).toMatchObject({ ok: true, problems: [] });
      expect(await b.verifyBackup(points.m4)).toMatchObject({ ok: true, chain: ['m3', 'm4'] });
      expect(await restoresTo('m4')).toBe(true);

      // Bad requests name the field; a damaged chain is not merged.
      await expect(b.mergeBackup({ point: points.m3, onto: '/nowhere/p.json' })).rejects.toThrow(/^onto: \/nowhere\/p\.json is not a point of the chain of m3 \(m3\)$/);
      await expect(b.mergeBackup({ point: 'rel.json' } as any)).rejects.toThrow(/^point: "rel\.json" must be the absolute path/);
    } finally {
      await b.close();
    }
  });
});
