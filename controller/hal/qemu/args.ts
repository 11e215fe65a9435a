import { createHash } from 'node:crypto';
import type { DiskSpec, FilesystemSpec, NicSpec, VmSpec } from '../types';
import { passtSocket, virtiofsSocket, type Layout, type PortSlot } from './layout';

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
  switch (n.network) {
    case 'pod':
      return { type: 'stream', id: nicNetdev(n.name), server: false, addr: { type: 'unix', path: passtSocket(l, n.name) } };
    case 'user':
      return {
        type: 'user',
        id: nicNetdev(n.name),
        ...(n.portForwards?.length
          ? {
              hostfwd: n.portForwards.map((p) => ({
                str: `${p.protocol}:${p.hostAddress ?? '127.0.0.1'}:${p.hostPort ?? p.port}-:${p.port}`,
              })),
            }
          : {}),
      };
    case 'bridge':
      return { type: 'tap', id: nicNetdev(n.name), ifname: taps[n.name], script: 'no', downscript: 'no' };
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

  // One root port per PCIe device (so each can be unplugged later) plus spares.
  const ports: PortSlot[] = [];
  const portFor = (device: string): string => {
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
    devices.push('-netdev', json(netdevJson(n, l, o.taps)));
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

  for (let i = 0; i < o.hotplugPorts; i++) ports.push({ id: `rp${ports.length}`, device: null });
  ports.forEach((_p, i) => push('-device', rootPort(i)));
  a.push(...devices);
  return { argv: a, ports };
}
