import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  cmdline,
  isAlive,
  recordOf,
  run,
  runChecked,
  signalRecorded,
  sleep,
  spawnDetached,
  tail,
  waitForPath,
  waitGone,
} from '../common/process';
import { ipArgv, linkInfo } from '../common/iplink';
import type { FilesystemSpec, NicSpec } from '../types';
import type { HostInfo } from './host';
import { passtSocket, shortName, virtiofsSocket, type Layout, type SidecarRecord } from './layout';

/**
 * Helper processes a VM needs besides QEMU: one passt per pod NIC, one
 * virtiofsd per virtiofs share, and a tap device per bridge NIC. Each is
 * started before QEMU (QEMU connects to their sockets at start) and recorded in
 * the VM state so a restarted agent can still stop them.
 */

const NOBODY = 65534;
const READY_MS = 5_000;

/**
 * passt drops to `nobody` before binding its socket, so its directory must be
 * nobody's and every directory above it searchable by others. passt still logs
 * "socket bound" when bind() failed, so check here and say what is wrong.
 */
export function prepareNetDir(l: Layout, host: HostInfo): void {
  fs.mkdirSync(l.netDir, { recursive: true, mode: 0o700 });
  if (!host.root) return;
  fs.chownSync(l.netDir, NOBODY, NOBODY);
  for (let d = path.dirname(l.netDir); ; d = path.dirname(d)) {
    const st = fs.statSync(d);
    if (!(st.mode & 0o001) && st.uid !== NOBODY)
      throw new Error(
        `passt runs as nobody and cannot reach ${l.netDir}: ${d} is not searchable by others (mode ${(st.mode & 0o777).toString(8)}); chmod o+x it or pick another runRoot`,
      );
    if (d === '/') break;
  }
}

/** passt's log without its "Failed to send N bytes to syslog" chatter (no syslog in containers). */
function passtLog(file: string): string {
  return tail(file, 2000)
    .split('\n')
    .filter((x) => !x.startsWith('Failed to send'))
    .join('\n')
    .slice(-600);
}

export async function startPasst(host: HostInfo, l: Layout, nic: NicSpec): Promise<SidecarRecord> {
  if (!host.passt) throw new Error('passt is not installed (apt-get install passt)');
  const sock = passtSocket(l, nic.name);
  const log = path.join(l.dir, `passt-${shortName(nic.name)}.log`);
  fs.rmSync(sock, { force: true });
  const argv = [host.passt, '--foreground', '--stderr', '--socket', sock];
  for (const p of nic.portForwards ?? []) {
    const spec = `${p.hostAddress ? `${p.hostAddress}/` : ''}${p.hostPort ?? p.port}:${p.port}`;
    argv.push(p.protocol === 'tcp' ? '-t' : '-u', spec);
  }
  // Default: no ports forwarded. The guest can still reach the node's loopback
  // through the gateway address (passt maps it; --no-map-gw would turn that off).
  const p = spawnDetached(argv, { logPath: log });
  try {
    await waitForPath(sock, READY_MS, () => isAlive(p.pid), `passt for NIC ${nic.name}`);
  } catch (e: any) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    throw new Error(`${e.message}: ${passtLog(log)}`);
  }
  const lease = passtLease(tail(log, 8000));
  return { kind: 'passt', key: nic.name, process: recordOf(p.pid, sock), ...(lease ? { lease } : {}) };
}

/**
 * The IPv4 address passt's DHCP hands out, from its start-up log:
 * ```
 * DHCP:
 *     assign: 192.0.2.2
 * ```
 * (the node's address on its default-route interface, unless `-a` says
 * otherwise). passt leases nothing else, so it is the guest's address once the
 * guest runs DHCP. passt logs before the socket is bound, so it is there when
 * startPasst returns. The `NDP/DHCPv6:` block's assign line is IPv6 and ignored.
 */
export function passtLease(log: string): string | undefined {
  const text = log
    .split('\n')
    .filter((x) => !x.startsWith('Failed to send'))
    .join('\n');
  // The last start in the log counts (a re-plugged NIC's passt appends to the same file).
  const all = [...text.matchAll(/^DHCP:\r?\n(?:[ \t]+\S.*\r?\n)*?[ \t]+assign:[ \t]*(\d{1,3}(?:\.\d{1,3}){3})[ \t]*\r?$/gm)];
  return all.at(-1)?.[1];
}

/**
 * virtiofsd for one share. The C virtiofsd of QEMU 7.2 has no read-only mode,
 * so a read-only share runs virtiofsd in a private mount namespace where the
 * source is bind-mounted read-only over itself. The namespace lives exactly as
 * long as virtiofsd: nothing is mounted on the host, nothing to clean up.
 */
export async function startVirtiofsd(host: HostInfo, l: Layout, f: FilesystemSpec): Promise<SidecarRecord> {
  if (!host.virtiofsd) throw new Error('virtiofsd is not installed (qemu-system-common ships /usr/lib/qemu/virtiofsd)');
  fs.mkdirSync(l.fsDir, { recursive: true, mode: 0o700 });
  const sock = virtiofsSocket(l, f.tag);
  const log = path.join(l.dir, `virtiofsd-${shortName(f.tag)}.log`);
  fs.rmSync(sock, { force: true });
  const daemon = [
    host.virtiofsd,
    `--socket-path=${sock}`,
    '-o',
    `source=${f.hostPath}`,
    '-o',
    'cache=none',
    '-o',
    'log_level=warn',
  ];

  let argv = daemon;
  let holder: number | undefined;
  if (f.readOnly) {
    if (!host.unshare || !host.nsenter) throw new Error('read-only virtiofs needs unshare and nsenter (util-linux)');
    holder = await startNamespaceHolder(host, l);
    const ns = ['-t', String(holder), '-m'];
    await runChecked([host.nsenter, ...ns, 'mount', '--bind', f.hostPath, f.hostPath]);
    await runChecked([host.nsenter, ...ns, 'mount', '-o', 'remount,ro,bind', f.hostPath]);
    // nsenter only setns()es into the mount namespace and execs: the pid is virtiofsd's.
    argv = [host.nsenter, ...ns, ...daemon];
  }
  try {
    const p = spawnDetached(argv, { logPath: log });
    try {
      await waitForPath(sock, READY_MS, () => isAlive(p.pid), `virtiofsd for ${f.tag}`);
    } catch (e: any) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      throw new Error(`${e.message}: ${tail(log, 600)}`);
    }
    return { kind: 'virtiofsd', key: f.tag, process: recordOf(p.pid, sock) };
  } finally {
    // virtiofsd now holds the namespace; the placeholder can go.
    if (holder !== undefined) {
      try {
        process.kill(holder, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

/**
 * A `sleep` in a new private mount namespace. We only nsenter into it once it
 * has exec'd sleep (after unshare): entering earlier would mean entering the
 * host's namespace, and the read-only remount would then hit the host.
 */
async function startNamespaceHolder(host: HostInfo, l: Layout): Promise<number> {
  const p = spawnDetached([host.unshare!, '--mount', '--propagation', 'private', 'sleep', 'infinity'], {
    logPath: path.join(l.dir, 'unshare.log'),
  });
  const ours = fs.readlinkSync('/proc/self/ns/mnt');
  const end = Date.now() + READY_MS;
  while (Date.now() < end) {
    const argv0 = cmdline(p.pid)?.[0] ?? '';
    let theirs = '';
    try {
      theirs = fs.readlinkSync(`/proc/${p.pid}/ns/mnt`);
    } catch {
      /* not yet */
    }
    if (path.basename(argv0) === 'sleep' && theirs && theirs !== ours) return p.pid;
    if (!isAlive(p.pid)) break;
    await sleep(5);
  }
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  throw new Error(`could not create a private mount namespace: ${tail(path.join(l.dir, 'unshare.log'), 400)}`);
}

/** Stops a recorded sidecar (only if it is still that process), SIGKILL after a grace period. */
export async function stopSidecar(r: SidecarRecord): Promise<void> {
  if (!signalRecorded(r.process, 'SIGTERM')) return;
  if (!(await waitGone(r.process.pid, 1_000))) signalRecorded(r.process, 'SIGKILL');
}

/**
 * Creates the tap for a bridge NIC and enslaves it to the (existing) bridge, in
 * the node's network namespace when one is configured (QEMU runs in the same
 * one and opens the tap by name).
 */
export async function createTap(host: HostInfo, tap: string, bridge: string, netns?: string): Promise<void> {
  if (!host.ip) throw new Error('the ip command (iproute2) is not installed');
  const where = netns ? ` in network namespace ${netns}` : '';
  const br = await linkInfo(host.ip, netns, bridge);
  if (!br) throw new Error(`bridge ${bridge} does not exist on this node${where}`);
  if (br.kind !== 'bridge') throw new Error(`${bridge}${where} is a ${br.kind ?? 'plain'} interface, not a bridge`);
  await deleteTap(host, tap, netns);
  await runChecked(ipArgv(host.ip, netns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap'));
  await runChecked(ipArgv(host.ip, netns, 'link', 'set', 'dev', tap, 'master', bridge));
  await runChecked(ipArgv(host.ip, netns, 'link', 'set', 'dev', tap, 'up'));
}

/** Removes a tap if it exists (best effort: a VM's end must not fail on it). */
export async function deleteTap(host: HostInfo, tap: string, netns?: string): Promise<void> {
  if (!host.ip) return;
  if (!netns && !fs.existsSync(`/sys/class/net/${tap}`)) return; // cheap check where sysfs shows the namespace
  await run(ipArgv(host.ip, netns, 'link', 'del', 'dev', tap)).catch(() => undefined);
}
