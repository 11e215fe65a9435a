import * as pulumi from '@pulumi/pulumi';
import { deployFleet, type Fleet, type KernelBoot } from './fleet';

/**
 * A shop's VMs as one typed list: web, worker and db roles share the fleet's
 * defaults; each role overrides what it needs, and a VM may override its role.
 * Add a line to `vms` to add a VM; change `defaults` to change them all.
 */
const config = new pulumi.Config();
const backend = config.get('backend') === 'qemu' ? 'qemu' : 'sim';
const kernelPath = config.get('kernelPath');
const boot: KernelBoot | undefined = kernelPath
  ? { kernelPath, initrdPath: config.require('initrdPath'), cmdline: config.get('cmdline') }
  : undefined;

type Role = 'web' | 'worker' | 'db';

const fleet: Fleet<Role> = {
  name: config.get('prefix') ?? 'fleet',
  defaults: {
    memory: '128Mi',
    cores: 1,
    runStrategy: 'Always',
    backend,
    boot,
    labels: { app: 'shop' },
    dataDiskSize: '16Mi',
  },
  roles: {
    web: { labels: { tier: 'frontend' } },
    worker: { memory: '192Mi', dataDiskSize: '32Mi', labels: { tier: 'backend' } },
    db: { memory: '256Mi', cores: 2, dataDiskSize: '64Mi', labels: { tier: 'data' } },
  },
  vms: [
    { name: 'web-1', role: 'web' },
    { name: 'web-2', role: 'web' },
    { name: 'worker-1', role: 'worker' },
    // Kept defined but not running: started later by flipping runStrategy.
    { name: 'worker-2', role: 'worker', runStrategy: 'Halted' },
    { name: 'db-1', role: 'db', memory: '384Mi', labels: { backup: 'daily' } },
  ],
};

const deployed = deployFleet(fleet);

export const network = deployed.network.name;
/** VM name → role, memory, cores, status and node, as the cluster reports them. */
export const vms = pulumi.all(
  Object.values(deployed.vms).map(({ vm, settings }) =>
    pulumi.all([vm.name, vm.memory, vm.printableStatus, vm.node]).apply(([name, memory, status, node]) => ({
      name,
      role: settings.labels.role,
      memory,
      cores: settings.cores,
      status,
      node: node ?? '',
    })),
  ),
);
