import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QemuBackend, type VmSpec } from '../controller/hal';
import { ensureGuest } from '../tests/guest';

/**
 * VM start latency through the qemu backend with the test guest and a pod
 * (passt) NIC plus a NoCloud seed:
 *   qmp_ready   start() called → QEMU answers QMP (what the agent waits for)
 *   guest_ready start() called → the guest's ready marker on its console
 *                (kernel booted, modules loaded, DHCP lease, shares mounted)
 * at 1, 2, 4 and 8 VMs started at once (BENCH_VM_CONCURRENCY="1,2,4" to change).
 * Each level runs rounds until it has about BENCH_VM_SAMPLES samples (default 8).
 * The last line is for one VM at a time.
 */
const LEVELS = (process.env.BENCH_VM_CONCURRENCY ?? '1,2,4,8').split(',').map(Number);
const SAMPLES = Number(process.env.BENCH_VM_SAMPLES ?? 8);
const READY_TIMEOUT_MS = 180_000;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function main(): Promise<void> {
  const guest = ensureGuest();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvb-'));
  fs.chmodSync(tmp, 0o711); // passt runs as nobody and must reach its socket
  const b = new QemuBackend({ runRoot: path.join(tmp, 'run'), stopGraceMs: 10_000 });
  console.log(
    `vm-start: accel=${b.accel} cores=${os.cpus().length} guest=${path.basename(guest.kernel)} (1 vCPU, 256 MiB, pod NIC via passt, NoCloud seed)`,
  );
  const spec = (uid: string): VmSpec => ({
    name: `bench-${uid}`,
    uid,
    cpu: { cores: 1 },
    memoryMiB: 256,
    disks: [],
    nics: [{ name: 'default', network: 'pod' }],
    filesystems: [],
    cloudInit: { hostname: `bench-${uid}` },
    kernel: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
  });

  const results: { n: number; qmp: number[]; guest: number[]; wallMs: number[] }[] = [];
  let seq = 0;
  try {
    for (const n of LEVELS) {
      const r = { n, qmp: [] as number[], guest: [] as number[], wallMs: [] as number[] };
      const rounds = Math.max(1, Math.ceil(SAMPLES / n));
      for (let round = 0; round < rounds; round++) {
        const uids = Array.from({ length: n }, () => `b${process.pid}-${seq++}`);
        const t0 = Date.now();
        const starts = uids.map(async (uid) => {
          const t = Date.now();
          const s = await b.start(spec(uid));
          r.qmp.push(s.qmpReadyAt! - t);
          const end = t + READY_TIMEOUT_MS;
          for (;;) {
            const st = b.status(uid)!;
            if (st.guestReadyAt) {
              r.guest.push(st.guestReadyAt - t);
              return;
            }
            if (st.phase === 'Failed' || Date.now() > end) throw new Error(`VM ${uid} not ready: ${JSON.stringify(st)}`);
            await new Promise((res) => setTimeout(res, 20));
          }
        });
        await Promise.all(starts);
        r.wallMs.push(Date.now() - t0);
        await Promise.all(uids.map((u) => b.stop(u)));
        await Promise.all(uids.map((u) => b.cleanup(u)));
      }
      results.push(r);
      console.log(
        `  ${String(n).padStart(2)} at once: qmp_ready p50=${pct(r.qmp, 50)} p95=${pct(r.qmp, 95)} ms  ` +
          `guest_ready p50=${pct(r.guest, 50)} p95=${pct(r.guest, 95)} ms  (samples=${r.guest.length}, all ready after ${Math.max(...r.wallMs)} ms)`,
      );
    }
  } finally {
    for (const s of b.list()) if (s.phase !== 'Succeeded' && s.phase !== 'Failed') await b.kill(s.uid).catch(() => undefined);
    await b.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const one = results.find((r) => r.n === 1) ?? results[0];
  console.log(
    `vm-start: qmp_ready_p50_ms=${pct(one.qmp, 50)} qmp_ready_p95_ms=${pct(one.qmp, 95)} guest_ready_p50_ms=${pct(one.guest, 50)} guest_ready_p95_ms=${pct(one.guest, 95)}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
