import * as pulumi from '@pulumi/pulumi';
import * as kubevm from '@kubevm/pulumi';

/**
 * The fleet of `npm run bench -- provider`: one pod Network and `count` VirtualMachines
 * (default 1000) on the sim backend, in the shape of a real fleet program: a typed list,
 * shared defaults, a few roles, labels, a NIC per VM on the shared Network (so every VM
 * depends on it). No disks: the sim backend does not provision volume content, and
 * the benchmark is about the provider and the engine, not storage.
 */
const config = new pulumi.Config();
const count = config.getNumber('count') ?? 1000;
const prefix = config.get('prefix') ?? 'f';
/**
 * 0 (default): every VM is registered at once, as a user would write the program.
 * W > 0: each VM depends on the VM W places before it, so at most W creates are in
 * flight (the local engine, like `pulumi up` by default, does not bound parallelism).
 */
const wave = config.getNumber('wave') ?? 0;

interface VmSpec {
  name: string;
  role: 'web' | 'worker' | 'db';
  memory?: string;
  cores?: number;
}

const defaults = { memory: '16Mi', cores: 1, runStrategy: 'Always', backend: 'sim' } as const;
const roles: VmSpec['role'][] = ['web', 'worker', 'db'];
const fleet: VmSpec[] = Array.from({ length: count }, (_, i) => ({
  name: `${prefix}-${String(i).padStart(4, '0')}`,
  role: roles[i % roles.length],
  ...(i % roles.length === 2 ? { memory: '32Mi' } : {}),
}));

const net = new kubevm.Network(`${prefix}-net`, { name: `${prefix}-net`, type: 'pod' });

const vms: kubevm.VirtualMachine[] = [];
for (const [i, spec] of fleet.entries()) {
  const s = { ...defaults, ...spec };
  const after = wave > 0 && i >= wave ? { dependsOn: [vms[i - wave]] } : {};
  vms.push(
    new kubevm.VirtualMachine(
      s.name,
      {
        name: s.name,
        backend: s.backend,
        runStrategy: s.runStrategy,
        memory: s.memory,
        cpu: { cores: s.cores },
        labels: { app: 'fleet', role: s.role },
        interfaces: [{ name: 'eth0', network: net.name }],
      },
      after,
    ),
  );
}

export const fleetSize = fleet.length;
