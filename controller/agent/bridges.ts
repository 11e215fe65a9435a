import { checkNetnsName, ipArgv, linkInfo, listLinks, type LinkInfo } from '../hal/common/iplink';
import { run, runChecked } from '../hal/common/process';

/**
 * The node side of `type: bridge` Networks: one Linux bridge per Network
 * (named by the Network's status.bridgeName), created by the agent when an
 * instance on its node needs it and removed when none does any more.
 *
 * Isolation comes from the layout, not from filters: every Network has its own
 * bridge, a bridge has no address (IPv4 or IPv6 link-local) and no uplink, so
 * the node neither routes nor bridges between two Networks; the guests on one
 * bridge share one Ethernet segment and nothing else. With `spec.bridge.vlan`
 * the bridge filters VLANs and every port (the VMs' taps) is an untagged access
 * port of that VLAN (`vlan_default_pvid`); an uplink the operator enslaves must
 * be configured as a trunk for it (`bridge vlan add dev UPLINK vid N`).
 *
 * Bridges the agent created carry an alias `kubevm.dev/network=NS/NAME`; only
 * those are ever changed or removed. A bridge of that name the operator made
 * (no alias) is used as it is.
 */
export interface BridgeSpec {
  /** Interface name (the Network's status.bridgeName, ≤ 15 characters). */
  name: string;
  /** `namespace/name` of the Network, recorded on the bridge. */
  network: string;
  vlan?: number;
}

/** What the agent needs from the node's bridge plumbing (a fake in tests, none for the sim backend). */
export interface NodeBridges {
  /** Makes sure the bridge exists, is up and has the Network's VLAN setting. Idempotent. */
  ensure(b: BridgeSpec): Promise<void>;
  /**
   * Records what `holder` (a node agent) needs from now on, then removes the
   * bridges kubevm created that no holder needs and that have no ports left (a
   * tap still attached means a VM still uses it). `needs` is read when the call
   * has its turn, after any ensure() queued before it. Several agents may share
   * one manager (embedded mode runs N nodes in one network namespace): a bridge
   * stays while any of them needs it.
   */
  prune(holder: string, needs: () => ReadonlySet<string>): Promise<PruneResult>;
}

export interface PruneResult {
  removed: string[];
  /** Unneeded bridges that still had ports: try again later. */
  busy: string[];
}

export const BRIDGE_ALIAS_PREFIX = 'kubevm.dev/network=';

export interface LinuxBridgesOptions {
  /** Named network namespace to work in (`ip -n NS`); default: the agent's own. */
  netns?: string;
  /** Path of `ip` (default: found on PATH). */
  ip?: string;
}

export class LinuxBridges implements NodeBridges {
  private readonly ip: string;
  readonly netns?: string;
  /** Bridge operations run one at a time: two instances starting at once must not both create one bridge. */
  private lock: Promise<unknown> = Promise.resolve();
  private readonly holders = new Map<string, () => ReadonlySet<string>>();

  constructor(opts: LinuxBridgesOptions = {}) {
    if (opts.netns !== undefined) checkNetnsName(opts.netns);
    this.netns = opts.netns;
    this.ip = opts.ip ?? 'ip';
  }

  ensure(b: BridgeSpec): Promise<void> {
    return this.serial(() => this.ensureNow(b));
  }

  prune(holder: string, needs: () => ReadonlySet<string>): Promise<PruneResult> {
    this.holders.set(holder, needs);
    return this.serial(() => this.pruneNow(new Set([...this.holders.values()].flatMap((f) => [...f()]))));
  }

  /** Bridges this agent created (by their alias), with the Network each belongs to. */
  async owned(): Promise<LinkInfo[]> {
    return (await listLinks(this.ip, this.netns, ['type', 'bridge'])).filter((l) => l.alias?.startsWith(BRIDGE_ALIAS_PREFIX));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lock.then(fn, fn);
    this.lock = next.catch(() => undefined);
    return next;
  }

  private where(): string {
    return this.netns ? ` in network namespace ${this.netns}` : '';
  }

  private async ensureNow(b: BridgeSpec): Promise<void> {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(b.name)) throw new Error(`bridge name ${JSON.stringify(b.name)} is not a Linux interface name (1-15 characters)`);
    const ip = (...args: string[]) => runChecked(ipArgv(this.ip, this.netns, ...args));
    let link = await linkInfo(this.ip, this.netns, b.name);
    if (link && link.kind !== 'bridge')
      throw new Error(`Network ${b.network}: interface ${b.name}${this.where()} exists and is a ${link.kind ?? 'plain'} device, not a bridge`);
    if (link && !link.alias?.startsWith(BRIDGE_ALIAS_PREFIX)) return; // the operator's bridge: used as it is
    const vlanArgs = b.vlan ? ['vlan_filtering', '1', 'vlan_default_pvid', String(b.vlan)] : ['vlan_filtering', '0'];
    const vlanError = (e: Error) =>
      b.vlan
        ? new Error(
            `Network ${b.network}: VLAN ${b.vlan} needs bridge VLAN filtering, which this node's kernel lacks (CONFIG_BRIDGE_VLAN_FILTERING): ${e.message}`,
          )
        : e;
    if (!link) {
      try {
        await ip('link', 'add', 'name', b.name, 'type', 'bridge', ...(b.vlan ? vlanArgs : []));
      } catch (e) {
        throw vlanError(e as Error);
      }
      await ip('link', 'set', 'dev', b.name, 'alias', `${BRIDGE_ALIAS_PREFIX}${b.network}`);
      // No IPv6 link-local address either: the node has no presence on a Network's segment.
      await run(ipArgv(this.ip, this.netns, 'link', 'set', 'dev', b.name, 'addrgenmode', 'none')).catch(() => undefined);
      link = await linkInfo(this.ip, this.netns, b.name);
      if (!link) throw new Error(`bridge ${b.name}${this.where()} vanished right after it was created`);
    } else if (link.vlanFiltering !== !!b.vlan || (b.vlan && link.vlanDefaultPvid !== b.vlan)) {
      try {
        await ip('link', 'set', 'dev', b.name, 'type', 'bridge', ...vlanArgs);
      } catch (e) {
        throw vlanError(e as Error);
      }
    }
    if (!link.up) await ip('link', 'set', 'dev', b.name, 'up');
  }

  private async pruneNow(keep: ReadonlySet<string>): Promise<PruneResult> {
    const out: PruneResult = { removed: [], busy: [] };
    for (const br of await this.owned()) {
      if (keep.has(br.name)) continue;
      const r = (await listLinks(this.ip, this.netns, ['master', br.name])).length
        ? undefined // still has taps: next time
        : await run(ipArgv(this.ip, this.netns, 'link', 'del', 'dev', br.name));
      (r?.code === 0 ? out.removed : out.busy).push(br.name);
    }
    return out;
  }
}
