/**
 * glibc malloc tuning for QEMU processes (VMs and qemu-storage-daemon).
 *
 * QEMU's block jobs (backup, mirror, stream) copy through bounce buffers of up
 * to 1 MiB that they allocate and free per request. With glibc's defaults each
 * such buffer is a fresh mmap (or grows and trims the heap), so every copied
 * page is faulted in anew: measured on QEMU 7.2 here, a backup job reading
 * 512 MiB from page cache into a null target took 430-530 ms with the defaults
 * and 40-60 ms with buffers served from the heap (docs/benchmarks.md, backup).
 *
 * mmap_threshold=4 MiB keeps those buffers on the heap; trim_threshold=8 MiB
 * lets the heap keep up to 8 MiB free at its top instead of returning it after
 * each request. The cost is resident memory: a VM's QEMU keeps ~20 MiB more
 * after a backup with the backup's default 8 copy workers (measured: RSS 9 →
 * 30 MiB in a storage daemon), instead of returning it.
 *
 * An operator's own GLIBC_TUNABLES win per tunable; KUBEVM_QEMU_MALLOC=default
 * turns this off.
 */
const QEMU_MALLOC_TUNABLES: Record<string, string> = {
  'glibc.malloc.mmap_threshold': String(4 << 20),
  'glibc.malloc.trim_threshold': String(8 << 20),
};

/** GLIBC_TUNABLES for a QEMU process: ours, with any already set in `base` kept as they are. */
export function qemuTunables(base: string | undefined): string | undefined {
  const given = (base ?? '').split(':').filter(Boolean);
  const names = new Set(given.map((t) => t.split('=')[0]));
  const ours = Object.entries(QEMU_MALLOC_TUNABLES)
    .filter(([k]) => !names.has(k))
    .map(([k, v]) => `${k}=${v}`);
  const all = [...given, ...ours];
  return all.length ? all.join(':') : undefined;
}

/** The environment QEMU processes are started with. */
export function qemuEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (env.KUBEVM_QEMU_MALLOC === 'default') return env;
  const t = qemuTunables(env.GLIBC_TUNABLES);
  return t ? { ...env, GLIBC_TUNABLES: t } : env;
}
