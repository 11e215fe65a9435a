import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * For tests and benchmarks that boot the test guest: makes sure QEMU, passt and
 * the guest image exist (installing/building them on a fresh machine), then
 * says where the kernel and initrd are.
 */
export interface TestGuest {
  kernel: string;
  initrd: string;
  cmdline: string;
  dir: string;
}

const REPO = path.resolve(__dirname, '..', '..');

function have(bin: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => d && fs.existsSync(path.join(d, bin)));
}

/** Installs the QEMU packages when missing (scripts/setup.sh --qemu: apt-get as root). */
export function ensureQemu(): void {
  if (have('qemu-system-x86_64') && have('qemu-img') && have('passt')) return;
  execFileSync('bash', [path.join(REPO, 'scripts', 'setup.sh'), '--qemu'], { stdio: 'inherit', cwd: REPO });
}

/** Builds the guest (a no-op when the cache is current) and returns its boot files. */
export function ensureGuest(): TestGuest {
  ensureQemu();
  const dir = process.env.KUBEVM_GUEST_DIR ?? path.join(REPO, '.cache', 'guest');
  execFileSync('bash', [path.join(__dirname, 'build.sh')], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, KUBEVM_GUEST_DIR: dir },
  });
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'guest.json'), 'utf8'));
  return { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'), cmdline: info.cmdline, dir };
}
