import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * What this node offers the QEMU backend, probed once per backend instance.
 * Capabilities follow from it (a node without passt cannot run pod networks).
 */
export interface HostInfo {
  qemu: string;
  passt?: string;
  virtiofsd?: string;
  /** `unshare` and `nsenter` (util-linux): read-only virtiofs shares need both. */
  unshare?: string;
  nsenter?: string;
  ip?: string;
  /** Hardware acceleration usable (not merely present: see kvmUsable). */
  kvm: boolean;
  root: boolean;
}

function which(name: string, extra: string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin', ...extra];
  for (const d of dirs) {
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

/**
 * /dev/kvm can exist and open yet be useless: in nested setups without VT-x
 * passed through (seen on Firecracker hosts) QEMU aborts setting MSRs or the
 * guest never runs. So require the CPU flag as well as a read-write /dev/kvm.
 */
export function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return false;
  }
  try {
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

export function probeHost(overrides: Partial<HostInfo> = {}): HostInfo {
  const accel = process.env.KUBEVM_ACCEL; // operator override: kvm | tcg
  return {
    qemu: which('qemu-system-x86_64') ?? 'qemu-system-x86_64',
    passt: which('passt'),
    virtiofsd: ['/usr/lib/qemu/virtiofsd', '/usr/libexec/virtiofsd'].find((p) => fs.existsSync(p)) ?? which('virtiofsd'),
    unshare: which('unshare'),
    nsenter: which('nsenter'),
    ip: which('ip'),
    kvm: accel === 'tcg' ? false : accel === 'kvm' ? true : kvmUsable(),
    root: process.getuid?.() === 0,
    ...overrides,
  };
}
