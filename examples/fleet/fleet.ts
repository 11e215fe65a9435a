import * as kubevm from '@kubevm/pulumi';

/**
 * A small typed layer over kubevm for fleets: one list of VMs, each with a role;
 * every setting comes from the fleet's defaults, overridden by the role, overridden
 * by the VM itself. Labels merge (fleet ← role ← VM, plus `fleet` and `role`); the
 * other settings replace. Every VM gets a NIC on the fleet's one Network and, when
 * `dataDiskSize` is set, its own blank Volume as a virtio disk named `data`.
 */
export type RunStrategy = 'Always' | 'Halted' | 'Manual' | 'RerunOnFailure' | 'Once';

/** Direct kernel boot: paths on the node (under the node agent's allowed roots). */
export interface KernelBoot {
  kernelPath: string;
  initrdPath: string;
  cmdline?: string;
}

/** Everything a VM of the fleet can set. */
export interface VmSettings {
  memory: string;
  cores: number;
  runStrategy: RunStrategy;
  backend: 'qemu' | 'sim';
  labels: Record<string, string>;
  /** Size of the VM's own blank data Volume (a Kubernetes quantity); no Volume when unset. */
  dataDiskSize?: string;
  /** cloud-init user data (a #cloud-config document or a script). */
  userData?: string;
  /** Required by the qemu backend; ignored by sim. */
  boot?: KernelBoot;
}

/** One entry of the list: a name, a role, and whatever this VM does differently. */
export type VmEntry<Role extends string> = { name: string; role: Role } & Partial<VmSettings>;

export interface Fleet<Role extends string> {
  /** Prefix of every object name: `<name>-<vm>`, `<name>-<vm>-data`, `<name>-net`. */
  name: string;
  namespace?: string;
  defaults: VmSettings;
  /** Every role must be listed here (an empty object when it changes nothing). */
  roles: Record<Role, Partial<VmSettings>>;
  vms: VmEntry<Role>[];
}

/** The settings one VM ends up with: defaults ← role ← VM; labels merged, plus `fleet` and `role`. */
export function settingsFor<Role extends string>(fleet: Fleet<Role>, vm: VmEntry<Role>): VmSettings {
  const role = fleet.roles[vm.role];
  if (!role)
    throw new Error(
      `fleet ${fleet.name}: VM ${vm.name} has role ${JSON.stringify(vm.role)}, which is not in roles (${Object.keys(fleet.roles).join(', ')})`,
    );
  const { name: _name, role: _role, ...own } = vm;
  return {
    ...fleet.defaults,
    ...role,
    ...own,
    labels: { ...fleet.defaults.labels, ...role.labels, ...own.labels, fleet: fleet.name, role: vm.role },
  };
}

/** Checks what the types cannot: unique VM names. */
export function validateFleet<Role extends string>(fleet: Fleet<Role>): void {
  const seen = new Set<string>();
  for (const vm of fleet.vms) {
    if (seen.has(vm.name)) throw new Error(`fleet ${fleet.name}: VM name ${JSON.stringify(vm.name)} is listed twice`);
    seen.add(vm.name);
  }
}

export interface DeployedVm {
  settings: VmSettings;
  vm: kubevm.VirtualMachine;
  volume?: kubevm.Volume;
}

export interface DeployedFleet {
  network: kubevm.Network;
  vms: Record<string, DeployedVm>;
}

/** Declares the fleet's Network, and a VirtualMachine (and its Volume) per entry. */
export function deployFleet<Role extends string>(fleet: Fleet<Role>): DeployedFleet {
  validateFleet(fleet);
  const namespace = fleet.namespace;
  const netName = `${fleet.name}-net`;
  const network = new kubevm.Network(netName, { name: netName, namespace, type: 'pod', labels: { fleet: fleet.name } });
  const vms: Record<string, DeployedVm> = {};
  for (const entry of fleet.vms) {
    const s = settingsFor(fleet, entry);
    const name = `${fleet.name}-${entry.name}`;
    const volume = s.dataDiskSize
      ? new kubevm.Volume(`${name}-data`, {
          name: `${name}-data`,
          namespace,
          size: s.dataDiskSize,
          source: { blank: {} },
          labels: s.labels,
        })
      : undefined;
    const vm = new kubevm.VirtualMachine(name, {
      name,
      namespace,
      backend: s.backend,
      runStrategy: s.runStrategy,
      memory: s.memory,
      cpu: { cores: s.cores },
      labels: s.labels,
      firmware:
        s.boot && s.backend === 'qemu'
          ? {
              kernel: {
                kernelPath: s.boot.kernelPath,
                initrdPath: s.boot.initrdPath,
                cmdline: s.boot.cmdline ?? 'console=ttyS0',
              },
            }
          : undefined,
      disks: volume ? [{ name: 'data', volume: volume.name }] : undefined,
      interfaces: [{ name: 'eth0', network: network.name }],
      cloudInit: s.userData ? { userData: s.userData } : undefined,
    });
    vms[entry.name] = { settings: s, vm, volume };
  }
  return { network, vms };
}
