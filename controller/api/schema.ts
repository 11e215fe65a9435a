/**
 * The kubevm.dev/v1alpha1 API, written once. Each kind's fields are an
 * OpenAPI v3 structural schema; the CRDs (controller/manifests/crds.yaml), the
 * TypeScript types (types.generated.ts) and the field tables of the docs are
 * generated from here by `npm run gen` (scripts/gen-api.ts), and a test fails
 * when a generated file is stale.
 *
 * `x-kubevm-update` classifies every VirtualMachine spec field: `live` (applied
 * to a running VM), `restart` (takes effect at the next start; the VM gets
 * RestartRequired) or `replace` (cannot change). Adding or removing a disk,
 * an interface or a ContainerPath filesystem is live.
 */
export const GROUP = 'kubevm.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

type Schema = Record<string, any>;

const str = (description: string, extra: Schema = {}): Schema => ({ type: 'string', description, ...extra });
const int = (description: string, extra: Schema = {}): Schema => ({ type: 'integer', description, ...extra });
const bool = (description: string, extra: Schema = {}): Schema => ({ type: 'boolean', description, ...extra });
const obj = (description: string, properties: Record<string, Schema>, extra: Schema = {}): Schema => ({
  type: 'object',
  description,
  properties,
  ...extra,
});
const mapList = (description: string, items: Schema, key = 'name', extra: Schema = {}): Schema => ({
  type: 'array',
  description,
  items,
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': [key],
  ...extra,
});
const live = (s: Schema): Schema => ({ ...s, 'x-kubevm-update': 'live' });
const restart = (s: Schema): Schema => ({ ...s, 'x-kubevm-update': 'restart' });
/** Cannot change in place: the provider replaces the object (the API server does not enforce it). */
const replace = (s: Schema): Schema => ({ ...s, 'x-kubevm-update': 'replace' });

/** Kubernetes-style names and quantities. */
export const NAME_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
export const QUANTITY_PATTERN = '^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$';
const MAC_PATTERN = '^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$';

const condition = obj(
  'A condition in the Kubernetes shape.',
  {
    type: str('Condition type, e.g. Ready.'),
    status: str('True, False or Unknown.', { enum: ['True', 'False', 'Unknown'] }),
    reason: str('One-word CamelCase reason.'),
    message: str('Human-readable detail.'),
    lastTransitionTime: str('When the status last changed.', { format: 'date-time' }),
    lastProbeTime: str('When the condition was last checked.', { format: 'date-time' }),
  },
  { required: ['type', 'status'] },
);
const conditions = mapList('Current conditions.', condition, 'type');

const secretKeyRef = obj(
  'A key of a Secret in the same namespace.',
  { name: str('Secret name.', { pattern: NAME_PATTERN }), key: str('Key in the Secret.', { default: 'userdata' }) },
  { required: ['name'] },
);

const disk = obj(
  'A disk of the VM, backed by a Volume in the same namespace.',
  {
    name: str('Disk name, unique in the VM; also the device serial the guest sees.', { pattern: NAME_PATTERN, maxLength: 20 }),
    volume: str('Name of the Volume that backs this disk.', { pattern: NAME_PATTERN }),
    bus: str('Device bus. virtio disks can be attached and detached while the VM runs.', {
      enum: ['virtio', 'sata', 'scsi'],
      default: 'virtio',
    }),
    bootOrder: int('Boot priority; lower boots first.', { minimum: 1 }),
    readOnly: bool('Attach the disk read-only.', { default: false }),
  },
  { required: ['name', 'volume'] },
);

const port = obj(
  'A port forwarded from the node to the guest (pod networks).',
  {
    name: str('Port name.'),
    port: int('Guest port (and node port when nodePort is not set).', { minimum: 1, maximum: 65535 }),
    nodePort: int('Port on the node (loopback) that forwards to the guest port.', { minimum: 1, maximum: 65535 }),
    protocol: str('Protocol.', { enum: ['TCP', 'UDP'], default: 'TCP' }),
  },
  { required: ['port'] },
);

const iface = obj(
  'A network interface of the VM, attached to a Network in the same namespace.',
  {
    name: str('Interface name, unique in the VM.', { pattern: NAME_PATTERN, maxLength: 15 }),
    network: str('Name of the Network this interface attaches to. Changing it on a running VM re-targets the NIC live where the backend can.', {
      pattern: NAME_PATTERN,
    }),
    model: str('NIC model presented to the guest.', { enum: ['virtio', 'e1000e', 'e1000', 'rtl8139'], default: 'virtio' }),
    macAddress: str('MAC address; generated from the VM uid when empty.', { pattern: MAC_PATTERN }),
    ports: mapList('Ports forwarded to the guest (pod networks only).', port, 'port'),
  },
  { required: ['name', 'network'] },
);

/** A ContainerPath directory on the node (VM filesystems and ContainerPathMounts share these rules). */
const containerPathPath = str('Absolute path on the node; must lie under one of the agent\'s allowed roots, without `..` or symlink escapes.', {
  maxLength: 4096,
  pattern: '^/',
  // No `..` segment (RE2-compatible, so a real kube-apiserver accepts the schema too).
  not: { pattern: '(^|/)\\.\\.(/|$)' },
});
const containerPathReadOnly = bool('Must be true: write access is not supported.', { default: true, enum: [true] });
/** Mount tags: DNS labels of at most 31 characters (the 9p limit; virtiofs allows 36). */
const MOUNT_TAG_MAX = 31;

const filesystem = obj(
  'A directory of the node shared read-only into the guest (KubeVirt ContainerPath). The guest mounts it by its name as the tag.',
  {
    name: str('Filesystem name; the mount tag in the guest.', { pattern: NAME_PATTERN, maxLength: MOUNT_TAG_MAX }),
    containerPath: obj(
      'Where the files come from.',
      {
        path: containerPathPath,
        readOnly: containerPathReadOnly,
      },
      { required: ['path'] },
    ),
  },
  { required: ['name', 'containerPath'] },
);

const cloudInit = obj('cloud-init NoCloud data for the guest.', {
  userData: str('Inline user data (a #cloud-config document or a script). Stored in the VM object: use userDataSecretRef for secrets.'),
  userDataSecretRef: secretKeyRef,
  networkData: str('Inline network-config (v1 or v2).'),
  networkDataSecretRef: secretKeyRef,
  hostname: str('Guest hostname; defaults to the VM name.'),
});

/** The part of a VM spec that describes the machine; a VirtualMachineInstance carries a copy. */
const vmTemplateProperties: Record<string, Schema> = {
  backend: restart(str('HAL backend that runs the VM (qemu or sim).', { enum: ['qemu', 'sim'], default: 'qemu' })),
  cpu: restart(
    obj('Virtual CPU topology.', {
      sockets: int('Sockets.', { minimum: 1, maximum: 16, default: 1 }),
      cores: int('Cores per socket.', { minimum: 1, maximum: 64, default: 1 }),
      threads: int('Threads per core.', { minimum: 1, maximum: 2, default: 1 }),
    }),
  ),
  memory: restart(str('Guest memory, a Kubernetes quantity such as 256Mi or 2Gi.', { pattern: QUANTITY_PATTERN, default: '128Mi' })),
  machine: restart(str('QEMU machine type.', { enum: ['q35', 'pc'], default: 'q35' })),
  firmware: restart(
    obj('How the guest boots.', {
      bootloader: str('Firmware.', { enum: ['bios', 'efi'], default: 'bios' }),
      kernel: obj(
        'Direct kernel boot: paths on the node, under the agent\'s allowed roots.',
        {
          kernelPath: str('Kernel image.', { pattern: '^/' }),
          initrdPath: str('Initial ramdisk.', { pattern: '^/' }),
          cmdline: str('Kernel command line.'),
        },
        { required: ['kernelPath'] },
      ),
    }),
  ),
  disks: live(mapList('Disks. Adding or removing a virtio disk is applied live.', disk)),
  interfaces: live(mapList('Network interfaces. Adding or removing one, or changing its network, is applied live.', iface)),
  filesystems: live(mapList('ContainerPath filesystems. Adding one is applied live where the backend can add a share to a running VM (hotplug-filesystem: qemu with virtiofs), removing one where it can unplug it; otherwise the change waits for the next start (RestartRequired). ContainerPathMounts add more (docs/containerpathmount.md).', filesystem)),
  cloudInit: restart(cloudInit),
  nodeSelector: restart({
    type: 'object',
    description: 'Labels a Node must carry to run the VM.',
    additionalProperties: { type: 'string' },
  }),
  terminationGracePeriodSeconds: live(int('Seconds the guest gets to shut down after an ACPI power-off before it is stopped hard.', { minimum: 0, default: 30 })),
  evictionStrategy: live(str('What a node drain does with the running VM: LiveMigrate moves it to another node; None stops it (it starts again elsewhere by its run strategy).', { enum: ['LiveMigrate', 'None'], default: 'LiveMigrate' })),
  hotplugSlots: restart(int('Spare hotplug slots reserved at start (qemu: empty PCIe root ports, which q35 cannot add later): at most this many disks and interfaces can be added to the running VM at once.', { minimum: 0, maximum: 32, default: 4 })),
};

const vmSpec = obj(
  'Desired state of a virtual machine.',
  {
    runStrategy: live(
      str('When the VM runs: Always, Halted, Manual (started and stopped by request), RerunOnFailure, Once.', {
        enum: ['Always', 'Halted', 'Manual', 'RerunOnFailure', 'Once'],
        default: 'Always',
      }),
    ),
    updatePolicy: live(
      str('What happens when a change needs a restart: Manual leaves the VM running with RestartRequired; Restart restarts it.', {
        enum: ['Manual', 'Restart'],
        default: 'Manual',
      }),
    ),
    ...vmTemplateProperties,
  },
);

const ifaceStatus = obj('An interface as the guest and the node see it.', {
  name: str('Interface name.'),
  network: str('Network it is attached to.'),
  macAddress: str('MAC address.'),
  ipAddress: str('Guest IPv4 address, when known.'),
}, { required: ['name'] });

const vmStatus = obj('Observed state of a virtual machine.', {
  printableStatus: str('KubeVirt-style summary.', {
    enum: ['Stopped', 'Provisioning', 'Starting', 'Running', 'Paused', 'Stopping', 'Terminating', 'CrashLoopBackOff', 'Migrating', 'Unknown', 'ErrorUnschedulable', 'WaitingForVolume'],
  }),
  conditions,
  ready: bool('The guest is running and ready.'),
  created: bool('An instance exists.'),
  node: str('Node running the current instance.'),
  instanceUID: str('uid of the current VirtualMachineInstance.'),
  interfaces: mapList('Interfaces of the running instance.', ifaceStatus),
  observedGeneration: int('The spec generation this status reflects.'),
  startFailure: obj('Consecutive start failures (RerunOnFailure and Always back off).', {
    consecutiveFailCount: int('Failures in a row.'),
    lastFailedAt: str('Time of the last failure.', { format: 'date-time' }),
    retryAfter: str('No new instance before this time.', { format: 'date-time' }),
    lastInstance: str('uid of the failed instance counted last.'),
  }),
  restartRequiredFields: { type: 'array', items: { type: 'string' }, description: 'Spec fields changed since the instance started that need a restart.' },
  runStrategy: str('The run strategy the controller acted on.'),
});

const vmiSpec = obj(
  'One run of a VM: a copy of the VM spec at start, plus where it runs.',
  {
    ...vmTemplateProperties,
    filesystems: live(
      mapList(
        'ContainerPath filesystems: the VM\'s own, then those of the ContainerPathMounts that target the VM (merged by the controller).',
        obj(filesystem.description, { ...filesystem.properties, mount: str('The ContainerPathMount this filesystem comes from; absent for the VM\'s own.') }, { required: filesystem.required }),
      ),
    ),
    nodeName: str('Node the instance is scheduled to.'),
    volumes: mapList(
      'Resolved volumes: the disk files on the node.',
      obj('A resolved disk.', { name: str('Disk name.'), path: str('File on the node.'), format: str('qcow2 or raw.') }, { required: ['name'] }),
    ),
    networks: mapList(
      'Resolved networks.',
      obj('A resolved network.', { name: str('Network name.'), type: str('pod, bridge or user.'), bridge: str('Linux bridge on the node.'), vlan: int('VLAN id.') }, { required: ['name'] }),
    ),
  },
);

const vmiStatus = obj('Observed state of an instance, written by the node agent.', {
  phase: str('Instance phase.', { enum: ['Pending', 'Scheduling', 'Scheduled', 'Running', 'Succeeded', 'Failed', 'Unknown'] }),
  reason: str('Why the instance is in this phase.'),
  message: str('Detail.'),
  nodeName: str('Node running the instance.'),
  conditions,
  interfaces: mapList('Interfaces as seen from the node and guest.', ifaceStatus),
  pid: int('Hypervisor process id on the node.'),
  startedAt: str('When the hypervisor started.', { format: 'date-time' }),
  guestReadyAt: str('When the guest reported ready.', { format: 'date-time' }),
  consoleLog: str('Serial console log file on the node.'),
  migrationState: obj('The last live migration of this instance.', {
    migration: str('Migration object.'),
    sourceNode: str('Node it left.'),
    targetNode: str('Node it moved to.'),
    completed: bool('The instance runs on the target.'),
    failed: bool('The migration failed; the instance stayed on the source.'),
    startTime: str('Start.', { format: 'date-time' }),
    endTime: str('End.', { format: 'date-time' }),
    downtimeMs: int('Time the guest was paused for the switch-over, in milliseconds.'),
  }),
  attached: obj('Devices attached live since start.', {
    disks: { type: 'array', items: { type: 'string' }, description: 'Disk names.' },
    interfaces: { type: 'array', items: { type: 'string' }, description: 'Interface names.' },
    filesystems: { type: 'array', items: { type: 'string' }, description: 'Filesystem names.' },
  }),
  filesystems: mapList(
    'Filesystems as the node agent applied them to the running guest.',
    obj(
      'One filesystem of the running guest.',
      {
        name: str('Filesystem name (the mount tag).'),
        mount: str('The ContainerPathMount it comes from; absent for the VM\'s own.'),
        path: str('Directory on the node.'),
        phase: str('Attached: shared with the guest. Pending: in the spec, shared at the next start (the backend cannot add it live, or its tag is still held by a removed share). DetachPending: removed from the spec, shared until the next start (the backend cannot unplug it live). Failed: cannot be shared (see message).', {
          enum: ['Attached', 'Pending', 'DetachPending', 'Failed'],
        }),
        message: str('Detail.'),
      },
      { required: ['name'] },
    ),
  ),
});

const volumeSpec = obj('A disk image on node storage (volumeMode Block), or a directory for backups (volumeMode Filesystem).', {
  volumeMode: replace(str('Block: a disk image VM disks attach. Filesystem: an empty directory of capacity spec.size, which BackupPolicies and Backups name as spec.target.volume; VM disks cannot use it. An unplaced Filesystem volume is placed on the node of the first Backup that targets it.', { enum: ['Block', 'Filesystem'], default: 'Block' })),
  size: replace(str('Size of a blank volume, or the minimum size of an imported or cloned one; the capacity of a Filesystem volume (required there).', { pattern: QUANTITY_PATTERN })),
  format: replace(str('Image format on the node.', { enum: ['qcow2', 'raw'], default: 'qcow2' })),
  source: replace(obj('Where the content comes from; exactly one of blank, image, clone, fromBackup.', {
    blank: obj('An empty disk of spec.size.', {}),
    image: obj('Import an image file from the node.', { path: str('Absolute path on the node, under the agent\'s allowed roots.', { pattern: '^/' }), format: str('Source format.', { enum: ['qcow2', 'raw'] }) }, { required: ['path'] }),
    clone: obj('Copy another Volume in the same namespace.', { volume: str('Source Volume name.', { pattern: NAME_PATTERN }) }, { required: ['volume'] }),
    fromBackup: obj('Restore a backup point (verified against its checksum).', { backup: str('Backup name in the same namespace.', { pattern: NAME_PATTERN }), disk: str('Disk of the backup; may be omitted when it has one disk.', { pattern: NAME_PATTERN }) }, { required: ['backup'] }),
  })),
  nodeName: replace(str('Node that holds the volume; chosen by the controller when empty.')),
});

const volumeStatus = obj('Observed state of a volume.', {
  phase: str('Volume phase.', { enum: ['Pending', 'Provisioning', 'Ready', 'Failed'] }),
  message: str('Detail when Failed.'),
  path: str('File on the node.'),
  nodeName: str('Node holding the file.'),
  actualSize: int('Bytes used on the node (for a Filesystem volume: by the files in it, refreshed after each backup).'),
  virtualSize: int('Size the guest sees, in bytes; the capacity of a Filesystem volume.'),
  usedBy: { type: 'array', items: { type: 'string' }, description: 'VMs using the volume; for a Filesystem volume, the Backups whose points it holds (Backup/<name>).' },
  conditions,
});

const networkSpec = obj('A network VMs attach to.', {
  type: replace(str('pod: user-space NAT through passt (no privileges); bridge: a Linux bridge per Network on each node that runs an instance on it, without a node address, isolated from other Networks (guests address themselves: static or their own DHCP); user: QEMU user networking.', {
    enum: ['pod', 'bridge', 'user'],
    default: 'pod',
  })),
  bridge: replace(obj('Settings for type bridge (a change replaces the Network: the VLAN defines what instances are wired to).', {
    vlan: int('VLAN id: the bridge filters VLANs and every VM port is an untagged access port of this VLAN (the node kernel needs bridge VLAN filtering; an uplink is the operator\'s to add, as a trunk).', { minimum: 1, maximum: 4094 }),
    cidr: str('Address range for the guests (informational; guests get addresses from their own DHCP or cloud-init).'),
  })),
});

const networkStatus = obj('Observed state of a network.', {
  phase: str('Network phase.', { enum: ['Pending', 'Ready', 'Failed'] }),
  bridgeName: str('Linux bridge for this Network on each node (type bridge): created by the node agent while an instance on that node uses the Network (in the node network namespace, if the agent has one), removed afterwards.'),
  attachedInterfaces: int('Interfaces attached across the cluster.'),
  conditions,
});

// ---- Backups (see docs/backup.md) ------------------------------------------------

const DURATION_PATTERN = '^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+$';

const backupTarget = obj('Where backup points are written: a directory on the node that backs the VM up (path), or a Filesystem Volume (volume); one of the two. Default: the agent\'s backup directory.', {
  path: str('Absolute directory on the node, under the agent\'s allowed roots; points go to <path>/<namespace>/<vm>/<policy|on-demand>/<disk>/.', {
    pattern: '^/',
    maxLength: 4096,
    not: { pattern: '(^|/)\\.\\.(/|$)' },
  }),
  volume: str('A Volume with volumeMode Filesystem in the same namespace, on the node that backs the VM up (an unplaced one is placed there by its first Backup); its spec.size caps what backups may store in it.', { pattern: NAME_PATTERN }),
}, { not: { required: ['path', 'volume'] } });

const retention = obj('Which points to keep (restic/borg semantics: in each bucket, the newest point of each period, counted back from now in the policy\'s time zone). A point a kept incremental depends on is kept, or merged into it (mergeIncrementals). Unset: keep everything.', {
  keepLast: int('Keep the newest N points.', { minimum: 1 }),
  hourly: int('Keep the newest point of each of the last N hours that have one.', { minimum: 1 }),
  daily: int('… of each of the last N days.', { minimum: 1 }),
  weekly: int('… of each of the last N ISO weeks.', { minimum: 1 }),
  monthly: int('… of each of the last N months.', { minimum: 1 }),
  yearly: int('… of each of the last N years.', { minimum: 1 }),
  mergeIncrementals: bool('Instead of keeping the points a kept incremental depends on but no rule keeps, fold them into it (its file is rebased onto the nearest kept point, or made self-contained) and delete them: storage stays bounded by what the rules keep. The kept point\'s content and checksum do not change. Default: keep them.', { default: false }),
});

const backupPolicySpec = obj('Scheduled full and incremental backups of a set of VMs, with retention.', {
  vms: live({ type: 'array', items: { type: 'string', pattern: NAME_PATTERN }, description: 'VM names in this namespace. Set vms or selector (or both: the union).' }),
  selector: live(obj('VMs whose labels match all of these.', { matchLabels: { type: 'object', additionalProperties: { type: 'string' }, description: 'Label key → value.' } })),
  schedule: live(str('Cron expression (5 fields, or @hourly/@daily/@weekly/@monthly/@yearly) in timeZone.', { maxLength: 200 })),
  timeZone: live(str('IANA time zone of the schedule and of the retention buckets.', { default: 'UTC' })),
  retention: live(retention),
  full: live(obj('When a run is a full backup instead of an incremental. A run is full anyway when there is no valid base (first run, lost or inconsistent bitmap, base deleted).', {
    every: int('A full backup after every N incrementals.', { minimum: 0 }),
    interval: str('A full backup when the newest full one is older than this (e.g. 168h, 7d).', { pattern: DURATION_PATTERN }),
  })),
  disks: live({ type: 'array', items: { type: 'string', pattern: NAME_PATTERN }, description: 'Disk names to back up; all writable disks when empty.' }),
  target: replace(backupTarget),
  bandwidthMiBps: live(int('Copy each disk at most this fast, in MiB/s (QEMU\'s block job speed limit), so backups leave the VM\'s storage bandwidth alone; unlimited when unset. Applies from the next run.', { minimum: 1 })),
  paused: live(bool('Skip scheduled runs while true (retention still applies).', { default: false })),
}, { required: ['schedule'] });

const chainStatus = obj('The backup chain of one VM.', {
  vm: str('VM name.'),
  points: int('Succeeded points kept.'),
  fulls: int('Full points among them.'),
  lastPoint: str('Newest Succeeded Backup.'),
  lastPointTime: str('Its completion time.', { format: 'date-time' }),
  bytes: int('Bytes the kept points take on the node.'),
}, { required: ['vm'] });

const backupPolicyStatus = obj('Observed state of a backup policy.', {
  lastScheduleTime: str('When the last run was started.', { format: 'date-time' }),
  nextScheduleTime: str('When the next run starts (absent while paused).', { format: 'date-time' }),
  lastResult: str('Result of the last finished run.', { enum: ['Succeeded', 'Failed', 'PartiallyFailed'] }),
  lastMessage: str('Detail of the last result.'),
  chains: mapList('Backup chains per VM.', chainStatus, 'vm'),
  observedGeneration: int('The spec generation this status reflects.'),
  conditions,
});

const backupSpec = obj('One backup run of one VM. Created by a BackupPolicy on its schedule, or by hand for an on-demand backup.', {
  vm: replace(str('VM name in this namespace.', { pattern: NAME_PATTERN })),
  type: replace(str('Full, or Incremental on the newest Succeeded point of the same chain (policy, or none for on-demand). An Incremental without a valid base runs as Full; status.type says what ran and status.reason why.', { enum: ['Full', 'Incremental'], default: 'Incremental' })),
  policy: replace(str('The BackupPolicy that made this run; empty for on-demand backups.')),
  disks: replace({ type: 'array', items: { type: 'string', pattern: NAME_PATTERN }, description: 'Disk names; all writable disks when empty.' }),
  target: replace(backupTarget),
  bandwidthMiBps: replace(int('Copy each disk at most this fast, in MiB/s (QEMU\'s block job speed limit); unlimited when unset. A policy\'s runs get the policy\'s.', { minimum: 1 })),
}, { required: ['vm'] });

const pointStatus = obj('One disk\'s backup point.', {
  name: str('Disk name.'),
  volume: str('Volume backing the disk.'),
  path: str('qcow2 file on the node.'),
  manifest: str('The point\'s manifest on the node (what a restore reads; written last).'),
  base: str('Backup whose point this one builds on (Incremental).'),
  baseManifest: str('Manifest of the base point.'),
  size: int('Bytes of the point file.'),
  virtualSize: int('Disk size in bytes.'),
  checksum: str('sha256 of the disk content the point restores to.'),
}, { required: ['name'] });

const backupStatus = obj('Observed state of a backup run.', {
  phase: str('Run phase. Succeeded only once every point and its manifest are complete.', { enum: ['Pending', 'Running', 'Succeeded', 'Failed'] }),
  type: str('What ran.', { enum: ['Full', 'Incremental'] }),
  reason: str('Why the run is what it is (e.g. why Full).'),
  message: str('Detail.'),
  node: str('Node that ran it.'),
  online: bool('The VM was running (point-in-time through QEMU) rather than stopped (offline).'),
  startTime: str('Start.', { format: 'date-time' }),
  completionTime: str('End.', { format: 'date-time' }),
  durationSeconds: { type: 'number', description: 'Run time in seconds.' },
  disks: mapList('Points per disk.', pointStatus),
  mergedFrom: { type: 'array', items: { type: 'string' }, description: 'Backups folded into this point by retention (mergeIncrementals); its type is Full when it became self-contained.' },
  conditions,
});

const restoreSpec = obj('Restores a backup point: into a new Volume, or in place onto a stopped VM\'s disk.', {
  backup: replace(str('Backup to restore.', { pattern: NAME_PATTERN })),
  disk: replace(str('Disk of the backup; may be omitted when the backup has one disk.', { pattern: NAME_PATTERN })),
  volume: replace(str('New Volume to create from the point (same node as the backup).', { pattern: NAME_PATTERN })),
  inPlace: replace(bool('Overwrite the disk\'s own Volume; the VM must be stopped and stays stopped until the restore finishes.', { default: false })),
}, { required: ['backup'] });

const restoreStatus = obj('Observed state of a restore.', {
  phase: str('Restore phase.', { enum: ['Pending', 'Running', 'Succeeded', 'Failed'] }),
  message: str('Detail.'),
  volume: str('Volume written.'),
  node: str('Node that does the restore.'),
  checksum: str('Verified sha256 of the restored content.'),
  startTime: str('Start.', { format: 'date-time' }),
  completionTime: str('End.', { format: 'date-time' }),
  conditions,
});

// ---- Live migration ----------------------------------------------------------------

const migrationSpec = obj('Moves a running VM to another node without stopping it.', {
  vm: replace(str('VM name in this namespace; it must be running.', { pattern: NAME_PATTERN })),
  targetNode: replace(str('Node to move to; chosen by the scheduler when empty.')),
  blockMigration: replace(bool('Copy the disks to the target over NBD while the VM runs (node-local disks). Default: off, the disks are on storage both nodes see (embedded clusters).')),
  completionTimeoutPerGiB: replace(int('Give up when the migration takes longer than this many seconds per GiB of guest memory (and disk, with blockMigration).', { minimum: 1, default: 150 })),
  progressTimeout: replace(int('Give up when no progress was made for this many seconds.', { minimum: 1, default: 150 })),
  bandwidthMiBps: replace(int('Bandwidth limit in MiB/s; unlimited when unset.', { minimum: 1 })),
}, { required: ['vm'] });

const migrationStatus = obj('Observed state of a migration.', {
  phase: str('KubeVirt\'s migration phases.', { enum: ['Pending', 'Scheduling', 'PreparingTarget', 'TargetReady', 'Running', 'Succeeded', 'Failed'] }),
  reason: str('Why it failed or waits.'),
  message: str('Detail.'),
  sourceNode: str('Node the VM runs on.'),
  targetNode: str('Node it moves to.'),
  targetAddress: str('Where the target listens (the migration URI the source uses).'),
  sourceState: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true, description: 'The running instance as the target must recreate it (devices and their slots, disks, what the guest reported), published by the source agent.' },
  instanceUID: str('uid of the migrated instance.'),
  startTime: str('Start.', { format: 'date-time' }),
  endTime: str('End.', { format: 'date-time' }),
  durationMs: int('Total time in milliseconds.'),
  downtimeMs: int('Time the guest was paused for the switch-over, in milliseconds.'),
  bytesTransferred: int('Bytes sent to the target.'),
  conditions,
});

export interface KindDef {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  categories: string[];
  description: string;
  spec: Schema;
  status: Schema;
  printerColumns: { name: string; type: string; jsonPath: string; priority?: number; description?: string }[];
  /** Fields whose change needs a new object. */
  required?: string[];
}

const age = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

// ---- ContainerPathMount (see docs/containerpathmount.md) ----------------------------

const containerPathMountKind: KindDef = {
  kind: 'ContainerPathMount',
  plural: 'containerpathmounts',
  singular: 'containerpathmount',
  shortNames: ['cpm'],
  categories: ['kubevm'],
  description:
    'Attaches a directory of the node to a VM in the same namespace, like a volume attachment: the node agent hot-adds it to a running VM (virtiofs) or shares it at the next start; deleting the mount detaches it (live where the backend can unplug a share, else at the next restart). See docs/containerpathmount.md.',
  spec: obj(
    'Which directory to share with which VM, under which mount tag.',
    {
      vm: replace(str('Name of the VirtualMachine in this namespace.', { pattern: NAME_PATTERN, maxLength: 63 })),
      path: replace(containerPathPath),
      tag: replace(
        str('Mount tag the guest mounts the share by (`mount -t virtiofs TAG DIR`); unique among the VM\'s filesystems (its own and other mounts\'). A DNS label of at most 31 characters (the 9p limit; virtiofs allows 36).', {
          pattern: NAME_PATTERN,
          maxLength: MOUNT_TAG_MAX,
        }),
      ),
      readOnly: replace(containerPathReadOnly),
    },
    { required: ['vm', 'path', 'tag'] },
  ),
  status: obj('Observed state of a mount, written by the controller from what the node agent reports.', {
    phase: str('Pending: not shared with a running guest (the VM is stopped or starting, or the share waits for the next start); Attached: the node agent shared it with the running instance; Failed: it cannot be shared (see message).', {
      enum: ['Pending', 'Attached', 'Failed'],
    }),
    reason: str('VMNotFound, VMNotRunning, Attaching, AttachAtNextStart, Attached, TagConflict or AttachFailed.'),
    message: str('Detail.'),
    node: str('Node of the instance it is attached to.'),
    instanceUID: str('uid of the VirtualMachineInstance it is attached to.'),
    observedGeneration: int('The spec generation this status reflects.'),
    conditions,
  }),
  printerColumns: [
    { name: 'VM', type: 'string', jsonPath: '.spec.vm' },
    { name: 'Tag', type: 'string', jsonPath: '.spec.tag' },
    { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
    { name: 'Node', type: 'string', jsonPath: '.status.node' },
    { name: 'Path', type: 'string', jsonPath: '.spec.path', priority: 1 },
    { name: 'Reason', type: 'string', jsonPath: '.status.reason', priority: 1 },
    age,
  ],
};

export const KINDS: KindDef[] = [
  {
    kind: 'VirtualMachine',
    plural: 'virtualmachines',
    singular: 'virtualmachine',
    shortNames: ['vm', 'vms'],
    categories: ['all', 'kubevm'],
    description: 'A virtual machine: what to run and when. The controller creates a VirtualMachineInstance for each run.',
    spec: vmSpec,
    status: vmStatus,
    printerColumns: [
      age,
      { name: 'Status', type: 'string', jsonPath: '.status.printableStatus' },
      { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: 'Node', type: 'string', jsonPath: '.status.node' },
      { name: 'IP', type: 'string', jsonPath: '.status.interfaces[0].ipAddress' },
      { name: 'Restart', type: 'string', jsonPath: '.status.conditions[?(@.type=="RestartRequired")].status', priority: 1 },
    ],
  },
  {
    kind: 'VirtualMachineInstance',
    plural: 'virtualmachineinstances',
    singular: 'virtualmachineinstance',
    shortNames: ['vmi', 'vmis'],
    categories: ['all', 'kubevm'],
    description: 'One running incarnation of a VirtualMachine, created and deleted by the controller and run by a node agent.',
    spec: vmiSpec,
    status: vmiStatus,
    printerColumns: [
      age,
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'IP', type: 'string', jsonPath: '.status.interfaces[0].ipAddress' },
      { name: 'NodeName', type: 'string', jsonPath: '.status.nodeName' },
      { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: 'PID', type: 'integer', jsonPath: '.status.pid', priority: 1 },
    ],
  },
  {
    kind: 'Volume',
    plural: 'volumes',
    singular: 'volume',
    shortNames: ['vol'],
    categories: ['kubevm'],
    description: 'A disk on node storage: blank, imported from an image file, or cloned from another Volume.',
    spec: volumeSpec,
    status: volumeStatus,
    printerColumns: [
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'Size', type: 'string', jsonPath: '.spec.size' },
      { name: 'Format', type: 'string', jsonPath: '.spec.format' },
      { name: 'Node', type: 'string', jsonPath: '.status.nodeName' },
      age,
    ],
  },
  {
    kind: 'Network',
    plural: 'networks',
    singular: 'network',
    shortNames: ['vmnet'],
    categories: ['kubevm'],
    description: 'A network for VM interfaces: pod (passt), bridge, or user.',
    spec: networkSpec,
    status: networkStatus,
    printerColumns: [
      { name: 'Type', type: 'string', jsonPath: '.spec.type' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'Bridge', type: 'string', jsonPath: '.status.bridgeName' },
      age,
    ],
  },
  containerPathMountKind,
  {
    kind: 'Migration',
    plural: 'migrations',
    singular: 'migration',
    shortNames: ['vmim'],
    categories: ['kubevm'],
    description: 'A live migration of a running VM to another node (KubeVirt VirtualMachineInstanceMigration). Deleting a running migration cancels it.',
    spec: migrationSpec,
    status: migrationStatus,
    printerColumns: [
      { name: 'VM', type: 'string', jsonPath: '.spec.vm' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'Source', type: 'string', jsonPath: '.status.sourceNode' },
      { name: 'Target', type: 'string', jsonPath: '.status.targetNode' },
      { name: 'Downtime', type: 'integer', jsonPath: '.status.downtimeMs', priority: 1 },
      age,
    ],
  },
  {
    kind: 'BackupPolicy',
    plural: 'backuppolicies',
    singular: 'backuppolicy',
    shortNames: ['bp'],
    categories: ['kubevm'],
    description: 'Scheduled full and incremental backups (changed block tracking) of a set of VMs, with retention.',
    spec: backupPolicySpec,
    status: backupPolicyStatus,
    printerColumns: [
      { name: 'Schedule', type: 'string', jsonPath: '.spec.schedule' },
      { name: 'Paused', type: 'boolean', jsonPath: '.spec.paused' },
      { name: 'Last', type: 'date', jsonPath: '.status.lastScheduleTime' },
      { name: 'Result', type: 'string', jsonPath: '.status.lastResult' },
      { name: 'Next', type: 'string', jsonPath: '.status.nextScheduleTime', priority: 1 },
      age,
    ],
  },
  {
    kind: 'Backup',
    plural: 'backups',
    singular: 'backup',
    shortNames: ['vmbackup'],
    categories: ['kubevm'],
    description: 'One backup run of one VM: a full or incremental point per disk, with checksums.',
    spec: backupSpec,
    status: backupStatus,
    printerColumns: [
      { name: 'VM', type: 'string', jsonPath: '.spec.vm' },
      { name: 'Type', type: 'string', jsonPath: '.status.type' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'Duration', type: 'number', jsonPath: '.status.durationSeconds' },
      { name: 'Reason', type: 'string', jsonPath: '.status.reason', priority: 1 },
      age,
    ],
  },
  {
    kind: 'Restore',
    plural: 'restores',
    singular: 'restore',
    shortNames: ['vmrestore'],
    categories: ['kubevm'],
    description: 'Restores a backup point into a new Volume or in place onto a stopped VM\'s disk.',
    spec: restoreSpec,
    status: restoreStatus,
    printerColumns: [
      { name: 'Backup', type: 'string', jsonPath: '.spec.backup' },
      { name: 'Volume', type: 'string', jsonPath: '.status.volume' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      age,
    ],
  },
];
