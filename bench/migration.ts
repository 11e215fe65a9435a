import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QemuBackend, type MigrationProgress, type MigrationResult, type VmSpec } from '../controller/hal';
import { ensureGuest } from '../tests/guest';

/**
 * Live migration between two qemu backend instances on this machine (two run
 * roots, as two node agents on one machine), shared storage, TCP on 127.0.0.1,
 * QEMU's default parameters (128 MiB/s, downtime limit 300 ms):
 *   idle   the test guest after boot (counting on its console, nothing else)
 *   busy   a guest process rewriting a quarter of guest memory (a tmpfs file)
 *          in a loop with `yes | dd`, so pages are dirtied during the migration
 * for 128 MiB and 512 MiB guests. Each guest is migrated A → B and back
 * (BENCH_MIGRATION_ROUNDS round trips, default 2: 4 samples per case); the
 * figures are medians of QEMU's total-time and downtime, and of the bytes sent.
 */
const ROUNDS = Number(process.env.BENCH_MIGRATION_ROUNDS ?? 2);
const CASES = (process.env.BENCH_MIGRATION_CASES ?? 'idle128,busy128,idle512,busy512').split(',');
const BOOT_TIMEOUT_MS = 180_000;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : Math.round((s[s.length / 2 - 1] + s[s.length / 2]) / 2);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function consoleOf(b: QemuBackend, uid: string): string {
  try {
    return fs.readFileSync(b.status(uid)!.consoleLog!, 'utf8');
  } catch {
    return '';
  }
}

async function main(): Promise<void> {
  const guest = ensureGuest();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvbm-'));
  fs.chmodSync(tmp, 0o711);
  const nodes = [
    new QemuBackend({ runRoot: path.join(tmp, 'a'), stopGraceMs: 5_000 }),
    new QemuBackend({ runRoot: path.join(tmp, 'b'), stopGraceMs: 5_000 }),
  ];
  console.log(
    `migration: accel=${nodes[0].accel} cores=${os.cpus().length} rounds=${ROUNDS} (A → B → A per round, shared storage, 127.0.0.1)`,
  );
  const summary: Record<string, { total: number; downtime: number }> = {};
  let seq = 0;
  try {
    for (const name of CASES) {
      const m = /^(idle|busy)(\d+)$/.exec(name);
      if (!m) throw new Error(`BENCH_MIGRATION_CASES: ${name} is not idleN or busyN`);
      const [busy, mem] = [m[1] === 'busy', Number(m[2])];
      const uid = `bm${process.pid}-${seq++}`;
      const spec: VmSpec = {
        name: `bench-${name}`,
        uid,
        cpu: { cores: 1 },
        memoryMiB: mem,
        disks: [],
        nics: [{ name: 'default', network: 'pod' }],
        filesystems: [],
        cloudInit: {
          userData: `#!/bin/sh
( i=0; while :; do i=$((i+1)); echo "COUNT=$i"; sleep 1; done ) &
${busy ? `( while :; do yes kubevm-dirties-guest-memory | dd of=/tmp/dirty bs=1M count=${mem / 4} iflag=fullblock conv=notrunc 2>/dev/null; done ) &\necho DIRTYING` : 'echo IDLE'}
`,
        },
        kernel: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
      };
      await nodes[0].start(spec);
      const end = Date.now() + BOOT_TIMEOUT_MS;
      while (!/COUNT=3\r?\n/.test(consoleOf(nodes[0], uid))) {
        if (Date.now() > end) throw new Error(`${name}: the guest did not come up: ${consoleOf(nodes[0], uid).slice(-400)}`);
        await sleep(200);
      }
      const results: (MigrationResult & { dirty: number; passes: number })[] = [];
      let at = 0;
      for (let i = 0; i < ROUNDS * 2; i++) {
        const [src, dst] = [nodes[at], nodes[1 - at]];
        await dst.cleanup(uid).catch(() => undefined); // the previous incarnation there
        const source = await src.migrationSource(uid);
        const inc = await dst.prepareIncoming(source.spec, { source });
        let dirty = 0;
        let passes = 0;
        const r = await src.migrate(uid, {
          uri: inc.uri,
          onProgress: (p: MigrationProgress) => {
            dirty = Math.max(dirty, p.dirtyRateBytesPerSec);
            passes = Math.max(passes, p.iterations);
          },
        });
        results.push({ ...r, dirty, passes });
        at = 1 - at;
        await sleep(1_000); // let the guest run on its new node a moment
      }
      await nodes[at].kill(uid);
      for (const n of nodes) await n.cleanup(uid).catch(() => undefined);
      const total = median(results.map((r) => r.totalMs));
      const downtime = median(results.map((r) => r.downtimeMs));
      summary[name] = { total, downtime };
      const mib = (b: number) => (b / 1024 / 1024).toFixed(1);
      console.log(
        `  ${name.padEnd(8)} total p50=${total} ms (${results.map((r) => r.totalMs).join('/')})  downtime p50=${downtime} ms (${results
          .map((r) => r.downtimeMs)
          .join(
            '/',
          )})  sent p50=${mib(median(results.map((r) => r.bytes)))} MiB  dirty rate max=${mib(Math.max(...results.map((r) => r.dirty)))} MiB/s  passes max=${Math.max(...results.map((r) => r.passes))}`,
      );
    }
  } finally {
    for (const b of nodes) {
      for (const s of b.list()) if (s.phase !== 'Succeeded' && s.phase !== 'Failed') await b.kill(s.uid).catch(() => undefined);
      await b.close();
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const f = (k: string, f: 'total' | 'downtime') => summary[k]?.[f] ?? 'NA';
  console.log(
    `migration: idle128_total_ms=${f('idle128', 'total')} idle128_downtime_ms=${f('idle128', 'downtime')} busy512_total_ms=${f('busy512', 'total')} busy512_downtime_ms=${f('busy512', 'downtime')}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
