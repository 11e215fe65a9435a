import * as path from 'node:path';
import { API_VERSION, NAME_PATTERN } from '../controller/api/schema';
import { GVR, Gvr, Kube, isConflict } from '../controller/runtime/kube';

/**
 * `kubevm backup VM`, `kubevm backups VM` and `kubevm restore BACKUP`: on-demand
 * Backups and Restores (docs/backup.md) from the command line. Each command
 * creates one object, as a user would with kubectl, and follows it until it
 * finishes, printing what it waits for; the controller and the node agent do
 * the work and write the outcome into the object's status.
 *
 * Parsing (parseBackupArgs) is separate from running (backupCommand,
 * listBackupsCommand, restoreCommand) so flag errors never need a cluster.
 */

/** A mistake on the command line: kubevm exits 2 with the message. */
export class UsageError extends Error {}

export const BACKUP_USAGE =
  'usage: kubevm backup VM [-n NS] [--full] [--target-volume NAME | --target-path DIR] [--bandwidth MIBPS] [--name NAME] [--no-wait] [--timeout SECONDS]';
export const BACKUPS_USAGE = 'usage: kubevm backups VM [-n NS]';
export const RESTORE_USAGE =
  'usage: kubevm restore BACKUP (--to VOLUME | --in-place) [-n NS] [--disk D] [--name NAME] [--no-wait] [--timeout SECONDS]';

const LABEL_VM = 'kubevm.dev/vm';
const LABEL_POLICY = 'kubevm.dev/backup-policy';
const ANN_SCHEDULED = 'kubevm.dev/scheduled-time';
const NAME = new RegExp(NAME_PATTERN);
const FINISHED = new Set(['Succeeded', 'Failed']);

export interface Output {
  /** Progress and results (stdout). */
  out: (line: string) => void;
  /** Why a command failed (stderr); defaults to out. */
  err?: (line: string) => void;
}

interface Follow {
  /** Return right after creating the object. */
  noWait: boolean;
  timeoutMs: number;
  pollMs?: number;
}

export interface BackupArgs extends Follow {
  namespace: string;
  vm: string;
  full: boolean;
  targetVolume?: string;
  targetPath?: string;
  bandwidthMiBps?: number;
  /** Default: `<vm>-<UTC yyyymmdd-hhmmss>`. */
  name?: string;
}

export interface RestoreArgs extends Follow {
  namespace: string;
  backup: string;
  /** A new Volume; or inPlace. */
  to?: string;
  inPlace: boolean;
  disk?: string;
  /** Default: `restore-<backup>`. */
  name?: string;
}

export type BackupCli =
  | { cmd: 'backup'; args: BackupArgs }
  | { cmd: 'backups'; args: { namespace: string; vm: string } }
  | { cmd: 'restore'; args: RestoreArgs };

// ---- names --------------------------------------------------------------------------

/** A DNS label of at most `max` characters: the head of `s`, without a trailing dash. */
function clip(s: string, max: number): string {
  return s.slice(0, Math.max(0, max)).replace(/-+$/, '');
}

function stamp(now: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
}

/** `<vm>-<UTC yyyymmdd-hhmmss>[-N]`, the VM part shortened so the whole stays a DNS label of ≤ 63 characters. */
export function defaultBackupName(vm: string, now: Date, attempt = 1): string {
  const suffix = `-${stamp(now)}${attempt > 1 ? `-${attempt}` : ''}`;
  return clip(vm, 63 - suffix.length) + suffix;
}

/** `restore-<backup>`, cut to 63 characters. */
export function defaultRestoreName(backup: string): string {
  return clip(`restore-${backup}`, 63);
}

// ---- parsing ------------------------------------------------------------------------

/** A name as the API takes it (NAME_PATTERN); at most 63 characters, or 253 for names of Backups a policy made. */
function checkName(flag: string, v: string, max = 63): string {
  if (v.length > max || !NAME.test(v))
    throw new UsageError(
      `${flag}: ${JSON.stringify(v)} must be ${max === 63 ? 'a DNS label: ' : ''}at most ${max} lowercase letters, digits and '-', starting and ending with a letter or digit`,
    );
  return v;
}

function checkTimeout(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0))
    throw new UsageError(`--timeout: ${JSON.stringify(v)} must be a positive number of seconds`);
  return n * 1000;
}

/** Parses the arguments after `kubevm backup|backups|restore`. Throws UsageError. */
export function parseBackupArgs(cmd: 'backup' | 'backups' | 'restore', argv: string[]): BackupCli {
  const usage = cmd === 'backup' ? BACKUP_USAGE : cmd === 'backups' ? BACKUPS_USAGE : RESTORE_USAGE;
  const allowed: Record<string, string[]> = {
    backup: [
      '-n',
      '--namespace',
      '--full',
      '--target-volume',
      '--target-path',
      '--bandwidth',
      '--name',
      '--no-wait',
      '--timeout',
    ],
    backups: ['-n', '--namespace'],
    restore: ['-n', '--namespace', '--to', '--in-place', '--disk', '--name', '--no-wait', '--timeout'],
  };
  const boolFlags = new Set(['--full', '--no-wait', '--in-place']);
  const seen = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!allowed[cmd].includes(flag)) throw new UsageError(`unknown flag ${JSON.stringify(a)}\n${usage}`);
    const key = flag === '--namespace' ? '-n' : flag;
    if (seen.has(key)) throw new UsageError(`${flag} given twice`);
    if (boolFlags.has(flag)) {
      if (eq > 0) throw new UsageError(`${flag} takes no value`);
      seen.set(key, '');
      continue;
    }
    const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined || v === '') throw new UsageError(`${flag} needs a value`);
    seen.set(key, v);
  }
  const what = cmd === 'restore' ? 'a Backup name' : 'a VirtualMachine name';
  if (positional.length === 0) throw new UsageError(`${cmd} needs ${what}\n${usage}`);
  if (positional.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positional[1])}\n${usage}`);
  const namespace = checkName('-n', seen.get('-n') ?? 'default');
  const name = seen.has('--name') ? checkName('--name', seen.get('--name')!) : undefined;
  const follow: Follow = {
    noWait: seen.has('--no-wait'),
    timeoutMs: seen.has('--timeout') ? checkTimeout(seen.get('--timeout')!) : 600_000,
  };

  if (cmd === 'backups') return { cmd, args: { namespace, vm: checkName('VirtualMachine name', positional[0]) } };

  if (cmd === 'backup') {
    const vm = checkName('VirtualMachine name', positional[0]);
    const targetVolume = seen.has('--target-volume') ? checkName('--target-volume', seen.get('--target-volume')!) : undefined;
    let targetPath = seen.get('--target-path');
    if (targetVolume && targetPath !== undefined) throw new UsageError('--target-volume and --target-path exclude each other');
    if (targetPath !== undefined) {
      if (!path.isAbsolute(targetPath))
        throw new UsageError(`--target-path: ${JSON.stringify(targetPath)} must be an absolute directory on the node`);
      if (targetPath.split('/').includes('..'))
        throw new UsageError(`--target-path: ${JSON.stringify(targetPath)} must not contain ".."`);
      if (targetPath.length > 4096) throw new UsageError('--target-path: must be at most 4096 characters');
      targetPath = path.posix.normalize(targetPath);
    }
    let bandwidthMiBps: number | undefined;
    if (seen.has('--bandwidth')) {
      const v = seen.get('--bandwidth')!;
      bandwidthMiBps = Number(v);
      if (!/^\d+$/.test(v) || !Number.isSafeInteger(bandwidthMiBps) || bandwidthMiBps < 1)
        throw new UsageError(`--bandwidth: ${JSON.stringify(v)} must be a whole number ≥ 1 (MiB/s)`);
    }
    return { cmd, args: { ...follow, namespace, vm, full: seen.has('--full'), targetVolume, targetPath, bandwidthMiBps, name } };
  }

  const backup = checkName('Backup name', positional[0], 253);
  const to = seen.has('--to') ? checkName('--to', seen.get('--to')!) : undefined;
  const inPlace = seen.has('--in-place');
  if (to && inPlace) throw new UsageError('--to and --in-place exclude each other');
  if (!to && !inPlace)
    throw new UsageError(`restore needs --to VOLUME (a new Volume) or --in-place (the disk's own Volume)\n${usage}`);
  const disk = seen.has('--disk') ? checkName('--disk', seen.get('--disk')!) : undefined;
  return { cmd, args: { ...follow, namespace, backup, to, inPlace, disk, name } };
}

// ---- formatting ---------------------------------------------------------------------

/** Bytes in binary units: `512 B`, `4.0 KiB`, `16 MiB`, `1.0 GiB`. */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  if (u === 0) return `${n} B`;
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

function humanSeconds(s: number): string {
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - m * 60)}s`;
}

function shortChecksum(c: string | undefined): string {
  if (!c) return '-';
  return c.length > 22 ? `${c.slice(0, 22)}…` : c;
}

/** Left-aligned columns, three blanks apart (as kubectl prints). */
function table(rows: string[][], indent = ''): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('   '));
}

function describe(st: any): string {
  const phase = st?.phase ?? 'Pending';
  return st?.message ? `${phase}: ${st.message}` : phase;
}

// ---- following ----------------------------------------------------------------------

/**
 * Polls an object until its status.phase is Succeeded or Failed, printing each new
 * phase and message. On timeout `obj` is unset and `last` is the last state seen.
 */
async function follow(
  kube: Kube,
  gvr: Gvr,
  kind: string,
  ns: string,
  name: string,
  f: Follow,
  o: Output,
): Promise<{ obj?: any; last?: any; gone?: boolean }> {
  const deadline = Date.now() + f.timeoutMs;
  let shown = '';
  let last: any;
  for (;;) {
    const obj = await kube.tryGet(gvr, ns, name);
    if (!obj) return { last, gone: true };
    last = obj;
    const line = describe(obj.status);
    if (line !== shown && (obj.status?.phase || obj.status?.message)) {
      o.out(`${kind}/${name}: ${line}`);
      shown = line;
    }
    if (FINISHED.has(obj.status?.phase)) return { obj, last };
    if (Date.now() >= deadline) return { last };
    await new Promise((r) => setTimeout(r, f.pollMs ?? 500));
  }
}

function timedOut(kind: string, short: string, ns: string, name: string, f: Follow, last: any): string {
  return `timed out after ${f.timeoutMs / 1000} s waiting for ${kind} ${ns}/${name} (last seen: ${describe(last?.status)}); it carries on: kubectl get ${short} -n ${ns} ${name}`;
}

/**
 * Follows a Backup or Restore to its end: the Succeeded object, or undefined
 * once it said on stderr why there is none (deleted, timed out, Failed).
 */
async function succeeded(
  kube: Kube,
  kind: 'Backup' | 'Restore',
  ns: string,
  name: string,
  f: Follow,
  o: Output,
  failure: (status: any) => string,
): Promise<any | undefined> {
  const err = o.err ?? o.out;
  const [gvr, short] = kind === 'Backup' ? [GVR.backup, 'vmbackup'] : [GVR.restore, 'vmrestore'];
  const r = await follow(kube, gvr, kind.toLowerCase(), ns, name, f, o);
  if (r.gone) err(`${kind} ${ns}/${name} was deleted before it finished`);
  else if (!r.obj) err(timedOut(kind, short, ns, name, f, r.last));
  else if (r.obj.status.phase === 'Failed') err(`${kind} ${ns}/${name} failed: ${failure(r.obj.status)}`);
  else return r.obj;
  return undefined;
}

// ---- commands -----------------------------------------------------------------------

/** Creates an on-demand Backup and, unless noWait, follows it. Returns the exit code. */
export async function backupCommand(kube: Kube, a: BackupArgs, o: Output, now: () => Date = () => new Date()): Promise<number> {
  const spec: any = { vm: a.vm, type: a.full ? 'Full' : 'Incremental' };
  if (a.targetVolume) spec.target = { volume: a.targetVolume };
  if (a.targetPath) spec.target = { path: a.targetPath };
  if (a.bandwidthMiBps !== undefined) spec.bandwidthMiBps = a.bandwidthMiBps;
  let created: any;
  // A default name is per second: a second backup of the same VM in the same second gets -2, -3, ….
  const at = now();
  for (let attempt = 1; !created; attempt++) {
    const name = a.name ?? defaultBackupName(a.vm, at, attempt);
    try {
      created = await kube.create(GVR.backup, a.namespace, {
        apiVersion: API_VERSION,
        kind: 'Backup',
        metadata: { name, namespace: a.namespace, labels: { [LABEL_VM]: a.vm } },
        spec,
      });
    } catch (e) {
      if (!isConflict(e)) throw e;
      if (a.name) throw new Error(`Backup ${a.namespace}/${name} already exists; choose another --name`);
      if (attempt >= 9)
        throw new Error(`Backup ${a.namespace}/${name} already exists (and ${attempt - 1} more made this second); pass --name`);
    }
  }
  const name: string = created.metadata.name;
  o.out(
    `backup/${name} created (${spec.type} of VirtualMachine ${a.namespace}/${a.vm}${a.bandwidthMiBps ? `, at most ${a.bandwidthMiBps} MiB/s per disk` : ''})`,
  );
  if (a.noWait) return 0;
  const done = await succeeded(kube, 'Backup', a.namespace, name, a, o, (st) => `${st.reason ?? 'Failed'}: ${st.message ?? 'no detail'}`);
  if (!done) return 1;
  for (const l of backupSummary(done)) o.out(l);
  return 0;
}

/** What a finished Backup holds: type and why, node, the point of each disk, duration. */
export function backupSummary(b: any): string[] {
  const st = b.status ?? {};
  const lines = [`Backup ${b.metadata.namespace}/${b.metadata.name} ${st.phase}`];
  lines.push(`  type:     ${st.type ?? b.spec?.type ?? '-'}${st.reason ? ` (${st.reason})` : ''}`);
  if (st.node) lines.push(`  node:     ${st.node} (${st.online ? 'online: the VM was running' : 'offline: the VM was stopped'})`);
  const disks: any[] = st.disks ?? [];
  if (disks.length) {
    lines.push(
      ...table(
        [
          ['DISK', 'SIZE', 'CHECKSUM', 'BASE'],
          ...disks.map((d) => [
            d.name,
            d.size !== undefined ? humanBytes(d.size) : '-',
            shortChecksum(d.checksum),
            d.base ?? '-',
          ]),
        ],
        '  ',
      ),
    );
  }
  const secs =
    st.durationSeconds ??
    (st.startTime && st.completionTime ? (Date.parse(st.completionTime) - Date.parse(st.startTime)) / 1000 : undefined);
  if (secs !== undefined) lines.push(`  duration: ${humanSeconds(secs)}`);
  return lines;
}

function pointTime(b: any): number {
  return Date.parse(b.status?.startTime ?? b.metadata.annotations?.[ANN_SCHEDULED] ?? b.metadata.creationTimestamp);
}

/** The Backups of a VM (label kubevm.dev/vm), oldest first, as a table. Returns the exit code. */
export async function listBackupsCommand(kube: Kube, a: { namespace: string; vm: string }, o: Output): Promise<number> {
  const items = (await kube.list(GVR.backup, a.namespace, `${LABEL_VM}=${a.vm}`)).sort(
    (x, y) => pointTime(x) - pointTime(y) || String(x.metadata.name).localeCompare(y.metadata.name),
  );
  if (!items.length) {
    o.out(`No backups of VirtualMachine ${a.namespace}/${a.vm}.`);
    return 0;
  }
  const rows = items.map((b) => {
    const disks: any[] = b.status?.disks ?? [];
    const sized = disks.filter((d) => typeof d.size === 'number');
    return [
      b.metadata.name,
      b.spec?.policy || b.metadata.labels?.[LABEL_POLICY] || 'on-demand',
      b.status?.type ?? b.spec?.type ?? 'Incremental',
      (b.status?.phase ?? '-') + (b.metadata.deletionTimestamp ? ' (deleting)' : ''),
      disks[0]?.base ?? '-',
      sized.length ? humanBytes(sized.reduce((s, d) => s + d.size, 0)) : '-',
      b.status?.completionTime ?? '-',
    ];
  });
  for (const l of table([['NAME', 'POLICY', 'TYPE', 'PHASE', 'BASE', 'SIZE', 'COMPLETED'], ...rows])) o.out(l);
  return 0;
}

/** Creates a Restore and, unless noWait, follows it. Returns the exit code. */
export async function restoreCommand(kube: Kube, a: RestoreArgs, o: Output): Promise<number> {
  const name = a.name ?? defaultRestoreName(a.backup);
  const spec: any = { backup: a.backup };
  if (a.to) spec.volume = a.to;
  if (a.inPlace) spec.inPlace = true;
  if (a.disk) spec.disk = a.disk;
  try {
    await kube.create(GVR.restore, a.namespace, {
      apiVersion: API_VERSION,
      kind: 'Restore',
      metadata: { name, namespace: a.namespace },
      spec,
    });
  } catch (e) {
    if (!isConflict(e)) throw e;
    // A Restore is a one-shot record: another restore of the same backup needs a name of its own.
    throw new Error(
      `Restore ${a.namespace}/${name} already exists${a.name ? '' : ` (from an earlier restore of ${a.backup})`}; pass --name for a new one`,
    );
  }
  o.out(
    `restore/${name} created (Backup ${a.backup}${a.disk ? ` disk ${a.disk}` : ''} → ${a.to ? `new Volume ${a.to}` : "the disk's own Volume, in place"})`,
  );
  if (a.noWait) return 0;
  const done = await succeeded(kube, 'Restore', a.namespace, name, a, o, (st) => st.message ?? 'no detail');
  if (!done) return 1;
  const st = done.status;
  o.out(`Restore ${a.namespace}/${name} Succeeded${st.message ? `: ${st.message}` : ''}`);
  o.out(`  volume:   ${st.volume ?? a.to ?? '-'}`);
  o.out(`  checksum: ${st.checksum ?? '-'}`);
  return 0;
}

/** Runs a parsed command. Returns the exit code; API errors throw. */
export function runBackupCli(kube: Kube, c: BackupCli, o: Output): Promise<number> {
  if (c.cmd === 'backup') return backupCommand(kube, c.args, o);
  if (c.cmd === 'backups') return listBackupsCommand(kube, c.args, o);
  return restoreCommand(kube, c.args, o);
}
