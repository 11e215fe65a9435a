import * as pulumi from '@pulumi/pulumi';
import * as kubevm from '@kubevm/pulumi';

/**
 * The quick start fleet: three VMs of the kubevm test guest, generated from a typed
 * list with shared defaults. Each VM gets a blank data Volume, a NIC on one pod
 * Network (passt), the host directory `sharePath` as a read-only ContainerPath
 * filesystem (mounted at /mnt/share in the guest) and a cloud-init user-data script.
 *
 * The boot files and the share are paths on the node and differ per machine, so
 * they come from config: kernelPath, initrdPath, cmdline, sharePath.
 */
const config = new pulumi.Config();
const kernelPath = config.require('kernelPath');
const initrdPath = config.require('initrdPath');
const cmdline = config.get('cmdline') ?? 'console=ttyS0';
const sharePath = config.require('sharePath');
const prefix = config.get('prefix') ?? 'qs';

/** One entry per VM; anything left out comes from `defaults`. */
interface VmSpec {
  name: string;
  role: 'web' | 'worker';
  memory?: string;
  cores?: number;
  diskSize?: string;
}

// The test guest powers off within a second of the ACPI button: a short grace keeps `destroy` quick.
const defaults = {
  memory: '128Mi',
  cores: 1,
  diskSize: '16Mi',
  runStrategy: 'Always',
  terminationGracePeriodSeconds: 10,
} as const;

const fleet: VmSpec[] = [
  { name: 'web-1', role: 'web' },
  { name: 'web-2', role: 'web' },
  { name: 'worker-1', role: 'worker', memory: '160Mi', diskSize: '32Mi' },
];

const net = new kubevm.Network(`${prefix}-net`, { name: `${prefix}-net`, type: 'pod' });

/** A script: the test guest runs a `#!` user-data once after boot, output on the serial console. */
const userData = (vm: VmSpec): string => `#!/bin/sh
echo "quickstart: $(hostname) role=${vm.role} data=$(ls /sys/block | tr '\\n' ' ')"
echo "quickstart: share says: $(cat /mnt/share/motd.txt 2>/dev/null || echo '(no motd.txt)')"
`;

const vms = fleet.map((spec) => {
  const s = { ...defaults, ...spec };
  const name = `${prefix}-${s.name}`;
  const data = new kubevm.Volume(`${name}-data`, { name: `${name}-data`, size: s.diskSize, source: { blank: {} } });
  return new kubevm.VirtualMachine(name, {
    name,
    runStrategy: s.runStrategy,
    terminationGracePeriodSeconds: s.terminationGracePeriodSeconds,
    memory: s.memory,
    cpu: { cores: s.cores },
    labels: { app: 'quickstart', role: s.role },
    firmware: { kernel: { kernelPath, initrdPath, cmdline } },
    disks: [{ name: 'data', volume: data.name }],
    interfaces: [{ name: 'eth0', network: net.name }],
    filesystems: [{ name: 'share', containerPath: { path: sharePath, readOnly: true } }],
    cloudInit: { userData: userData(s) },
  });
});

/** VM name → guest IP (the first interface's), known once the guest reported ready. */
export const ips = pulumi
  .all(vms.map((vm) => pulumi.all([vm.name, vm.ipAddress])))
  .apply((pairs) => Object.fromEntries(pairs.map(([n, ip]) => [n, ip ?? ''])));
/** VM name → node running it. */
export const nodes = pulumi
  .all(vms.map((vm) => pulumi.all([vm.name, vm.node])))
  .apply((pairs) => Object.fromEntries(pairs.map(([n, node]) => [n, node ?? ''])));
