import { createHash } from 'node:crypto';
import type { DiskSpec, FilesystemSpec, NicSpec, VmSpec } from '../types';
import { passtSocket, virtiofsSocket, type Layout, type NicPlumbing, type PortSlot } from './layout';

/**
 * Builds the QEMU command line for a VM spec. Pure: no files, no processes,
 * so it is unit-tested on its own. Devices are given as JSON (-device,
 * -blockdev, -netdev, -object accept it since QEMU 6.2/7.1), which sidesteps
 * QEMU's comma escaping for user-supplied paths; the few keyval-only options
 * (-chardev, -fsdev) go through `kv()`, which escapes commas.
 */
export interface QemuBuildOptions {
  qemu: string;
  accel: 'kvm' | 'tcg';
  fsDriver: 'virtiofs' | '9p';
  /** Spare pcie-root-ports kept free for hotplug (q35 cannot hot-add a root port). */
  hotplugPorts: number;
  /** Whether a NoCloud seed directory is attached (layout.seedDir). */
  seed: boolean;
  /** Resolved MAC per NIC name. */
  macs: Record<string, string>;
  /** Tap device name per bridge NIC. */
  taps: Record<string, string>;
  /**
   * Argument prefix that runs QEMU, e.g. `ip netns exec NS` for a node network
   * namespace. It must exec (not fork) QEMU, so the spawned pid is QEMU's pid.
   */
  launcher?: string[];
  /**
   * NICs plumbed through a hub each (NIC name → hub id and backend generation):
   * the device peers a hub port that never changes, so the backend behind the
   * hub can be swapped while the VM runs (qemu/retarget.ts). NICs not listed
   * peer their backend directly.
   */
  nicPlumbing?: Record<string, NicPlumbing>;
  /**
   * Root port of every device, from the source of a migration: the target must
   * put each device where the guest saw it (hotplugged ones sit in former spares).
   * When given, it also fixes the number of ports (hotplugPorts is ignored).
   */
  placement?: PortSlot[];
  /** Start waiting for an incoming migration (`-incoming defer`; migrate-incoming over QMP names the address). */
  incoming?: boolean;
}

export interface QemuCommand {
  argv: string[];
  ports: PortSlot[];
}

/** Escapes a value for QEMU's keyval syntax (a comma is written twice). */
export function kv(value: string): string {
  return value.replace(/,/g, ',,');
}

function h(s: string, n: number): string {
  return createHash('sha256').update(s).digest('hex').slice(0, n);
}

/**
 * Stable locally administered MAC for a NIC: the same VM and NIC name get the
 * same MAC on every start, so DHCP leases and guest udev names stay put.
 */
export function defaultMac(uid: string, nic: string): string {
  const x = h(`${uid}/${nic}`, 6);
  return `52:54:00:${x.slice(0, 2)}:${x.slice(2, 4)}:${x.slice(4, 6)}`;
}

/** Tap device name for a bridge NIC: ≤ 15 characters (IFNAMSIZ), stable per VM and NIC. */
export function tapName(uid: string, nic: string): string {
  return `kv${h(`${uid}/${nic}`, 11)}`;
}

// Block node names are limited to 31 characters; derive them from the disk name.
export const diskNode = (name: string): string => `dk${h(name, 12)}`;
export const diskDevice = (name: string): string => `disk-${name}`;
export const nicNetdev = (name: string): string => `net-${name}`;
export const nicDevice = (name: string): string => `nic-${name}`;
export const fsDevice = (tag: string): string => `fs-${tag}`;
export const fsChardev = (tag: string): string => `fsc-${tag}`;

/** Root port i: libvirt's layout, eight functions per pcie.0 slot starting at slot 2. */
function rootPort(i: number): string {
  const slot = 2 + Math.floor(i / 8);
  const fn = i % 8;
  return JSON.stringify({
    driver: 'pcie-root-port',
    id: `rp${i}`,
    bus: 'pcie.0',
    chassis: i + 1,
    port: 0x10 + i,
    addr: `0x${slot.toString(16)}.0x${fn}`,
    ...(fn === 0 ? { multifunction: true } : {}),
  });
}

export function blockdevJson(d: DiskSpec): Record<string, unknown> {
  const ro = d.readOnly === true;
  return {
    driver: d.format,
    'node-name': diskNode(d.name),
    'read-only': ro,
    // blockdev defaults to discard=ignore; pass guest TRIM through so images shrink.
    discard: 'unmap',
    file: { driver: 'file', filename: d.path, 'node-name': `${diskNode(d.name)}f`, 'read-only': ro, discard: 'unmap' },
  };
}

export function diskDeviceJson(d: DiskSpec, bus: string): Record<string, unknown> {
  return {
    driver: d.bus === 'sata' ? 'ide-hd' : 'virtio-blk-pci',
    id: diskDevice(d.name),
    drive: diskNode(d.name),
    bus,
    // The guest finds a disk by its name: /sys/block/vdX/serial (virtio) or the ATA serial.
    serial: d.name.slice(0, 20),
    ...(d.bootOrder !== undefined ? { bootindex: d.bootOrder } : {}),
  };
}

export function netdevJson(n: NicSpec, l: Layout, taps: Record<string, string>): Record<string, unknown> {
  return nicBackendJson(n, nicNetdev(n.name), { passtSocket: passtSocket(l, n.name), tap: taps[n.name] });
}

// Hub plumbing (see QemuBuildOptions.nicPlumbing). The NIC peers hub port net-NAME;
// the backend of generation G is netdev nb-NAME-G on hub port np-NAME-G.
export const nicBackendId = (name: string, gen: number): string => `nb-${name}-${gen}`;
export const nicHubPortId = (name: string, gen: number): string => `np-${name}-${gen}`;

/** The hub port the NIC device peers (it carries the NIC's netdev id, so nicDeviceJson is unchanged). */
export function nicHubJson(name: string, hub: number): Record<string, unknown> {
  return { type: 'hubport', id: nicNetdev(name), hubid: hub };
}

/** The hub port that connects backend generation `gen` to the NIC's hub. */
export function nicHubPortJson(name: string, p: NicPlumbing): Record<string, unknown> {
  return { type: 'hubport', id: nicHubPortId(name, p.gen), hubid: p.hub, netdev: nicBackendId(name, p.gen) };
}

/** The netdevs of a NIC in creation order: its backend, or hub port + backend + backend's hub port. */
export function nicNetdevsJson(
  n: NicSpec,
  l: Layout,
  taps: Record<string, string>,
  hub?: NicPlumbing,
): Record<string, unknown>[] {
  if (!hub) return [netdevJson(n, l, taps)];
  return [
    nicHubJson(n.name, hub.hub),
    nicBackendJson(n, nicBackendId(n.name, hub.gen), { passtSocket: passtSocket(l, n.name), tap: taps[n.name] }),
    nicHubPortJson(n.name, hub),
  ];
}

/** The netdev ids of a NIC in deletion order (backend first; the device's own peer last, once the device is gone). */
export function nicNetdevIds(name: string, hub?: NicPlumbing): string[] {
  return hub ? [nicBackendId(name, hub.gen), nicHubPortId(name, hub.gen), nicNetdev(name)] : [nicNetdev(name)];
}

/** The host side of a NIC under netdev id `id`: passt's socket (pod), slirp (user) or a tap (bridge). */
export function nicBackendJson(n: NicSpec, id: string, via: { passtSocket: string; tap?: string }): Record<string, unknown> {
  switch (n.network) {
    case 'pod':
      return { type: 'stream', id, server: false, addr: { type: 'unix', path: via.passtSocket } };
    case 'user':
      return {
        type: 'user',
        id,
        ...(n.portForwards?.length
          ? {
              hostfwd: n.portForwards.map((p) => ({
                str: `${p.protocol}:${p.hostAddress ?? '127.0.0.1'}:${p.hostPort ?? p.port}-:${p.port}`,
              })),
            }
          : {}),
      };
    case 'bridge':
      return { type: 'tap', id, ifname: via.tap, script: 'no', downscript: 'no' };
  }
}

export function nicDeviceJson(n: NicSpec, mac: string, bus: string): Record<string, unknown> {
  return {
    driver: n.model === 'e1000e' ? 'e1000e' : 'virtio-net-pci',
    id: nicDevice(n.name),
    netdev: nicNetdev(n.name),
    mac,
    bus,
  };
}

export function virtiofsDeviceJson(f: FilesystemSpec, bus: string): Record<string, unknown> {
  return { driver: 'vhost-user-fs-pci', id: fsDevice(f.tag), chardev: fsChardev(f.tag), tag: f.tag, bus };
}

export function virtiofsChardevArg(f: FilesystemSpec, l: Layout): string {
  return `socket,id=${fsChardev(f.tag)},path=${kv(virtiofsSocket(l, f.tag))}`;
}

/** vCPU topology: sockets × cores × threads. */
export function vcpus(spec: VmSpec): number {
  return (spec.cpu.sockets ?? 1) * spec.cpu.cores * (spec.cpu.threads ?? 1);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function buildQemuCommand(spec: VmSpec, l: Layout, o: QemuBuildOptions): QemuCommand {
  const a: string[] = [...(o.launcher ?? []), o.qemu];
  const push = (...xs: string[]) => a.push(...xs);
  const json = (x: unknown) => JSON.stringify(x);

  push('-name', `guest=${kv(spec.name)},debug-threads=on`);
  if (UUID.test(spec.uid)) push('-uuid', spec.uid); // SMBIOS system uuid = VMI uid, as KubeVirt does
  push('-nodefaults', '-no-user-config', '-display', 'none', '-msg', 'timestamp=on');
  // seccomp: QEMU never needs to spawn, gain privileges or use obsolete syscalls.
  push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  // Guest RAM is a shared memfd from the start: vhost-user (virtiofs) needs it,
  // also for shares hotplugged later, and it cannot be switched at runtime.
  push('-machine', 'q35,memory-backend=mem', '-accel', o.accel);
  push('-object', json({ 'qom-type': 'memory-backend-memfd', id: 'mem', size: spec.memoryMiB * 1024 * 1024, share: true }));
  push('-m', `${spec.memoryMiB}M`);
  push('-cpu', spec.cpu.model ?? (o.accel === 'kvm' ? 'host' : 'max'));
  const s = spec.cpu.sockets ?? 1;
  const t = spec.cpu.threads ?? 1;
  push('-smp', `${vcpus(spec)},sockets=${s},cores=${spec.cpu.cores},threads=${t}`);

  push('-pidfile', l.pidFile);
  push('-chardev', `socket,id=qmp,path=${kv(l.qmpSocket)},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control');
  // The console is a socket (attach for an interactive session) that also logs
  // everything the guest prints, so `kubevm console` can follow the log.
  push('-chardev', `socket,id=serial0,path=${kv(l.consoleSocket)},server=on,wait=off,logfile=${kv(l.consoleLog)},logappend=on`);
  push('-serial', 'chardev:serial0');

  if (spec.kernel) {
    push('-kernel', spec.kernel.kernel);
    if (spec.kernel.initrd) push('-initrd', spec.kernel.initrd);
    if (spec.kernel.cmdline) push('-append', spec.kernel.cmdline);
  }

  // One root port per PCIe device (so each can be unplugged later) plus spares;
  // or, for the target of a migration, exactly the source's ports.
  const ports: PortSlot[] = o.placement ? o.placement.map((p) => ({ ...p })) : [];
  const placed = new Set<string>();
  const portFor = (device: string): string => {
    if (o.placement) {
      const p = ports.find((x) => x.device === device);
      if (!p) throw new Error(`placement: the source has no root port for device ${device}`);
      placed.add(device);
      return p.id;
    }
    const id = `rp${ports.length}`;
    ports.push({ id, device });
    return id;
  };
  const devices: string[] = [];

  let sata = 0;
  for (const d of spec.disks) {
    devices.push('-blockdev', json(blockdevJson(d)));
    const bus = d.bus === 'sata' ? `ide.${sata++}` : portFor(diskDevice(d.name));
    devices.push('-device', json(diskDeviceJson(d, bus)));
  }
  if (sata > 6) throw new Error(`spec.disks: ${sata} sata disks, but q35 has 6 sata ports`);

  if (o.seed) {
    // NoCloud seed: QEMU presents the seed directory as a read-only FAT disk
    // labelled "cidata" (vvfat), which cloud-init and the test guest both read.
    devices.push(
      '-blockdev',
      json({ driver: 'vvfat', 'node-name': 'cidata', dir: l.seedDir, label: 'cidata', 'read-only': true }),
    );
    devices.push('-device', json({ driver: 'virtio-blk-pci', id: 'cloudinit', drive: 'cidata', bus: portFor('cloudinit') }));
  }

  for (const n of spec.nics) {
    for (const nd of nicNetdevsJson(n, l, o.taps, o.nicPlumbing?.[n.name])) devices.push('-netdev', json(nd));
    devices.push('-device', json(nicDeviceJson(n, o.macs[n.name], portFor(nicDevice(n.name)))));
  }

  for (const f of spec.filesystems) {
    if (o.fsDriver === 'virtiofs') {
      devices.push('-chardev', virtiofsChardevArg(f, l));
      devices.push('-device', json(virtiofsDeviceJson(f, portFor(fsDevice(f.tag)))));
    } else {
      // 9p: QEMU itself enforces read-only; security_model=none keeps host ownership as is.
      const ro = f.readOnly ? ',readonly=on' : '';
      devices.push('-fsdev', `local,id=fsdev-${f.tag},path=${kv(f.hostPath)},security_model=none${ro}`);
      devices.push(
        '-device',
        json({
          driver: 'virtio-9p-pci',
          id: fsDevice(f.tag),
          fsdev: `fsdev-${f.tag}`,
          mount_tag: f.tag,
          bus: portFor(fsDevice(f.tag)),
        }),
      );
    }
  }

  if (o.placement) {
    const missing = ports.filter((p) => p.device !== null && !placed.has(p.device)).map((p) => p.device);
    if (missing.length) throw new Error(`placement: the source has devices this spec lacks: ${missing.join(', ')}`);
  } else for (let i = 0; i < o.hotplugPorts; i++) ports.push({ id: `rp${ports.length}`, device: null });
  ports.forEach((_p, i) => push('-device', rootPort(i)));
  a.push(...devices);
  if (o.incoming) push('-incoming', 'defer');
  return { argv: a, ports };
}
