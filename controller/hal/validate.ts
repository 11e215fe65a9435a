import { HalError, type DiskSpec, type FilesystemSpec, type NicSpec, type VmSpec } from './types';

/**
 * Structural checks every backend applies before doing anything, so a bad spec
 * fails with a message naming the field, the value and the rule. Admission
 * should have caught these already; the HAL re-checks because it builds
 * command lines and file names from these values.
 */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
// Mount tags end up in QEMU options and guest mount commands: keep them plain.
const TAG = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
// uids key run directories and socket paths: no separators, no dots at the start.
const UID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

function fail(field: string, value: unknown, rule: string): never {
  throw new HalError('Invalid', `spec.${field}: ${JSON.stringify(value)} ${rule}`);
}

function positiveInt(field: string, v: unknown, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) fail(field, v, `must be an integer from 1 to ${max}`);
}

function unique(field: string, names: string[]): void {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) fail(field, n, 'is used twice; names must be unique');
    seen.add(n);
  }
}

export function validateDisk(d: DiskSpec, field: string): void {
  if (!DNS_LABEL.test(d.name)) fail(`${field}.name`, d.name, 'must be a DNS label (lower-case letters, digits, "-")');
  if (typeof d.path !== 'string' || !d.path.startsWith('/')) fail(`${field}.path`, d.path, 'must be an absolute path');
  if (d.format !== 'qcow2' && d.format !== 'raw') fail(`${field}.format`, d.format, 'must be qcow2 or raw');
  if (d.bus !== 'virtio' && d.bus !== 'sata') fail(`${field}.bus`, d.bus, 'must be virtio or sata');
  // QEMU's ide-hd refuses read-only drives; say so here rather than as a QEMU start error.
  if (d.bus === 'sata' && d.readOnly) fail(`${field}.readOnly`, true, 'is not supported on bus sata (use virtio)');
  if (d.bootOrder !== undefined) positiveInt(`${field}.bootOrder`, d.bootOrder, 999);
}

export function validateNic(n: NicSpec, field: string): void {
  if (!DNS_LABEL.test(n.name)) fail(`${field}.name`, n.name, 'must be a DNS label (lower-case letters, digits, "-")');
  if (!['pod', 'user', 'bridge'].includes(n.network)) fail(`${field}.network`, n.network, 'must be pod, user or bridge');
  if (n.network === 'bridge' && !(n.bridge && /^[A-Za-z0-9_.-]{1,15}$/.test(n.bridge)))
    fail(`${field}.bridge`, n.bridge, 'must name a Linux bridge (1-15 characters) for network bridge');
  if (n.mac !== undefined && !MAC.test(n.mac)) fail(`${field}.mac`, n.mac, 'must be a MAC address like 52:54:00:12:34:56');
  // The low bit of the first octet marks multicast; such a MAC never gets a lease.
  if (n.mac !== undefined && parseInt(n.mac.slice(0, 2), 16) & 1)
    fail(`${field}.mac`, n.mac, 'must be a unicast MAC (first octet even)');
  if (n.model !== undefined && n.model !== 'virtio' && n.model !== 'e1000e')
    fail(`${field}.model`, n.model, 'must be virtio or e1000e');
  (n.portForwards ?? []).forEach((p, i) => {
    const f = `${field}.portForwards[${i}]`;
    if (p.protocol !== 'tcp' && p.protocol !== 'udp') fail(`${f}.protocol`, p.protocol, 'must be tcp or udp');
    positiveInt(`${f}.port`, p.port, 65535);
    if (p.hostPort !== undefined) positiveInt(`${f}.hostPort`, p.hostPort, 65535);
    if (p.hostAddress !== undefined && !/^[0-9a-fA-F.:]+$/.test(p.hostAddress))
      fail(`${f}.hostAddress`, p.hostAddress, 'must be an IP address');
    if (n.network === 'bridge') fail(`${f}`, p, 'port forwards need network pod or user');
  });
}

export function validateFilesystem(f: FilesystemSpec, field: string): void {
  if (typeof f.tag !== 'string' || !TAG.test(f.tag) || Buffer.byteLength(f.tag) > 31)
    fail(`${field}.tag`, f.tag, 'must be 1-31 characters of letters, digits, ".", "_", "-"');
  if (typeof f.hostPath !== 'string' || f.hostPath === '') fail(`${field}.hostPath`, f.hostPath, 'must be a path');
  if (typeof f.readOnly !== 'boolean') fail(`${field}.readOnly`, f.readOnly, 'must be true or false');
}

export function validateSpec(spec: VmSpec): void {
  if (!DNS_LABEL.test(spec.name)) fail('name', spec.name, 'must be a DNS label (lower-case letters, digits, "-")');
  if (typeof spec.uid !== 'string' || !UID.test(spec.uid)) fail('uid', spec.uid, 'must be 1-64 letters, digits, "-" or "_"');
  positiveInt('cpu.cores', spec.cpu?.cores, 256);
  if (spec.cpu.sockets !== undefined) positiveInt('cpu.sockets', spec.cpu.sockets, 16);
  if (spec.cpu.threads !== undefined) positiveInt('cpu.threads', spec.cpu.threads, 8);
  if (spec.cpu.model !== undefined && !/^[A-Za-z0-9_.-]+$/.test(spec.cpu.model))
    fail('cpu.model', spec.cpu.model, 'must be a QEMU CPU model name');
  positiveInt('memoryMiB', spec.memoryMiB, 4 * 1024 * 1024);
  if (spec.memoryMiB < 16) fail('memoryMiB', spec.memoryMiB, 'must be at least 16');
  spec.disks.forEach((d, i) => validateDisk(d, `disks[${i}]`));
  spec.nics.forEach((n, i) => validateNic(n, `nics[${i}]`));
  spec.filesystems.forEach((f, i) => validateFilesystem(f, `filesystems[${i}]`));
  unique(
    'disks[].name',
    spec.disks.map((d) => d.name),
  );
  unique(
    'nics[].name',
    spec.nics.map((n) => n.name),
  );
  unique(
    'filesystems[].tag',
    spec.filesystems.map((f) => f.tag),
  );
  unique(
    'nics[].mac',
    spec.nics.flatMap((n) => (n.mac ? [n.mac.toLowerCase()] : [])),
  );
  if (spec.kernel && (typeof spec.kernel.kernel !== 'string' || !spec.kernel.kernel.startsWith('/')))
    fail('kernel.kernel', spec.kernel.kernel, 'must be an absolute path');
  if (spec.kernel?.initrd !== undefined && !spec.kernel.initrd.startsWith('/'))
    fail('kernel.initrd', spec.kernel.initrd, 'must be an absolute path');
  if (
    spec.hotplugSlots !== undefined &&
    (typeof spec.hotplugSlots !== 'number' ||
      !Number.isInteger(spec.hotplugSlots) ||
      spec.hotplugSlots < 0 ||
      spec.hotplugSlots > 32)
  )
    fail('hotplugSlots', spec.hotplugSlots, 'must be an integer from 0 to 32');
  if (spec.cloudInit?.hostname !== undefined && !DNS_LABEL.test(spec.cloudInit.hostname))
    fail('cloudInit.hostname', spec.cloudInit.hostname, 'must be a DNS label');
}
