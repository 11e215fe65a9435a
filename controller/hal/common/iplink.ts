import * as fs from 'node:fs';
import { run, runChecked } from './process';

/**
 * Thin wrappers over iproute2's `ip` for the few link operations kubevm needs
 * (taps, bridges), optionally inside a named network namespace (`ip -n NS`,
 * the namespaces `ip netns add` creates under /run/netns). Argument arrays
 * only; the JSON output (`ip -j`) is parsed, never the human format.
 */

/** A network namespace name as `ip netns` accepts it: a plain file name under /run/netns. */
const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Checks a netns name; throws with the rule when it is not a plain name. */
export function checkNetnsName(name: string, field = 'netns'): void {
  if (!NETNS_NAME.test(name) || name.includes('..'))
    throw new Error(`${field}: ${JSON.stringify(name)} must be a network namespace name (letters, digits, "_", ".", "-"; up to 64 characters)`);
}

/** Whether `ip netns add NAME` has been run (the namespace is pinned under /run/netns). */
export function netnsExists(name: string): boolean {
  return fs.existsSync(`/run/netns/${name}`);
}

/** `ip [-n NS] args…` */
export function ipArgv(ip: string, netns: string | undefined, ...args: string[]): string[] {
  return netns ? [ip, '-n', netns, ...args] : [ip, ...args];
}

/** What kubevm reads about a link. */
export interface LinkInfo {
  name: string;
  /** `bridge`, `tun`, `veth`, … (undefined for plain devices such as lo). */
  kind?: string;
  alias?: string;
  /** The bridge this link is enslaved to. */
  master?: string;
  up: boolean;
  /** Bridges: VLAN filtering on, and the PVID new ports get. */
  vlanFiltering?: boolean;
  vlanDefaultPvid?: number;
}

function toInfo(l: any): LinkInfo {
  const data = l.linkinfo?.info_data ?? {};
  return {
    name: l.ifname,
    kind: l.linkinfo?.info_kind,
    alias: l.ifalias,
    master: l.master,
    up: (l.flags ?? []).includes('UP'),
    ...(l.linkinfo?.info_kind === 'bridge'
      ? { vlanFiltering: !!data.vlan_filtering, ...(data.vlan_default_pvid !== undefined ? { vlanDefaultPvid: data.vlan_default_pvid } : {}) }
      : {}),
  };
}

/** One link by name, or undefined when there is none (in that namespace). */
export async function linkInfo(ip: string, netns: string | undefined, name: string): Promise<LinkInfo | undefined> {
  const r = await run(ipArgv(ip, netns, '-j', '-d', 'link', 'show', 'dev', name));
  if (r.code !== 0) {
    if (/does not exist|Cannot find device/i.test(r.stderr)) return undefined;
    throw new Error(`${ipArgv(ip, netns, 'link', 'show', 'dev', name).join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  const links = JSON.parse(r.stdout || '[]');
  return links.length ? toInfo(links[0]) : undefined;
}

/** All links, or those of one kind (`type bridge`), or the ports of a bridge (`master NAME`). */
export async function listLinks(ip: string, netns: string | undefined, filter: string[] = []): Promise<LinkInfo[]> {
  const out = await runChecked(ipArgv(ip, netns, '-j', '-d', 'link', 'show', ...filter));
  return (JSON.parse(out || '[]') as any[]).map(toInfo);
}
