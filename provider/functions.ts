import { NAME_PATTERN } from '../controller/api/schema';
import { GVR } from '../controller/runtime/kube';
import type { OpContext } from './resources/common';
import { RESOURCES } from './resources';
import { plain, UNKNOWN, type Json } from './values';

/**
 * The provider's functions (Invoke): lookups in the cluster, read-only, so they
 * run the same way in previews. Bad arguments come back as check failures (the
 * SDK reports them as `Invoke of '<token>' failed: <reason> (<property>)`);
 * a lookup that finds nothing is an error that names what was looked for.
 */
export interface FunctionResult {
  /** The return value in wire form (secrets wrapped). */
  value?: Record<string, Json>;
  failures: { property: string; reason: string }[];
}

interface ArgDef {
  required: boolean;
  /** The naming rule a value must follow. */
  rule: 'label' | 'subdomain';
}

interface FunctionDef {
  args: Record<string, ArgDef>;
  run(ctx: OpContext, args: Record<string, string>): Promise<Record<string, Json>>;
}

const NAME_RE = new RegExp(NAME_PATTERN);
const SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const RULES = {
  label: {
    test: (v: string) => NAME_RE.test(v) && v.length <= 63,
    text: "a DNS label (lower-case letters, digits and '-', at most 63 characters)",
  },
  subdomain: {
    test: (v: string) => SUBDOMAIN_RE.test(v) && v.length <= 253,
    text: "a DNS subdomain (DNS labels joined by '.', at most 253 characters)",
  },
};

const FUNCTIONS: Record<string, FunctionDef> = {
  /** A VirtualMachine as the resource would read it on import: inputs normalised, status outputs, cloudInit secret. */
  'kubevm:index:getVirtualMachine': {
    args: { name: { required: true, rule: 'label' }, namespace: { required: false, rule: 'label' } },
    async run(ctx, args) {
      const namespace = args.namespace ?? ctx.defaultNamespace;
      const vm = RESOURCES.get('kubevm:index:VirtualMachine')!;
      const got = await vm.read(ctx, `${namespace}/${args.name}`, undefined);
      if (!got) throw new Error(`VirtualMachine ${namespace}/${args.name} not found`);
      return got.props;
    },
  },
  /** Nodes registered by kubevm agents, with what their backend offers (the agent's Node labels and annotations). */
  'kubevm:index:getNodeCapabilities': {
    args: { node: { required: false, rule: 'subdomain' } },
    async run(ctx, args) {
      const nodes = { group: '', version: 'v1', plural: 'nodes', namespaced: false };
      let items: any[];
      if (args.node !== undefined) {
        const n = await ctx.kube.tryGet(nodes, undefined, args.node);
        if (!n) throw new Error(`Node ${args.node} not found`);
        if (n.metadata.labels?.['kubevm.dev/node'] !== 'true')
          throw new Error(`Node ${args.node} does not run a kubevm agent (it has no kubevm.dev/node=true label)`);
        items = [n];
      } else items = await ctx.kube.list(nodes, undefined, 'kubevm.dev/node=true');
      const list = (s: unknown) =>
        String(s ?? '')
          .split(',')
          .filter(Boolean);
      return {
        nodes: items
          .map((n) => ({
            name: n.metadata.name,
            backends: list(n.metadata.annotations?.['kubevm.dev/backends']),
            capabilities: list(n.metadata.annotations?.['kubevm.dev/capabilities']),
          }))
          .sort((a, b) => a.name.localeCompare(b.name)),
      };
    },
  },
  /**
   * The Backups of a VM, oldest first (by their point in time, else creation).
   * Backups outlive their VM, so a VM that is not there is no error: the list is
   * what the cluster holds for that name.
   */
  'kubevm:index:listBackups': {
    args: { vm: { required: true, rule: 'label' }, namespace: { required: false, rule: 'label' } },
    async run(ctx, args) {
      const namespace = args.namespace ?? ctx.defaultNamespace;
      // By spec, not by the kubevm.dev/vm label: the controller adds that label a moment after creation.
      const items = (await ctx.kube.list(GVR.backup, namespace)).filter((b: any) => b.spec?.vm === args.vm && !b.metadata.deletionTimestamp);
      const at = (b: any) => Date.parse(b.status?.startTime ?? b.metadata.creationTimestamp);
      items.sort((a: any, b: any) => at(a) - at(b) || a.metadata.name.localeCompare(b.metadata.name));
      const backups = items.map((b: any) => {
        const s = b.status ?? {};
        const out: Record<string, Json> = { name: b.metadata.name, phase: s.phase ?? 'Pending', type: s.type ?? b.spec.type ?? 'Incremental' };
        if (b.spec.policy) out.policy = b.spec.policy;
        for (const k of ['reason', 'startTime', 'completionTime']) if (s[k] !== undefined) out[k] = s[k];
        out.disks = (s.disks ?? []).map((d: any) => {
          const disk: Record<string, Json> = { name: d.name };
          if (d.checksum !== undefined) disk.checksum = d.checksum;
          if (d.size !== undefined) disk.size = d.size;
          return disk;
        });
        return out;
      });
      return { backups };
    },
  },
};

export const FUNCTION_TOKENS = Object.keys(FUNCTIONS);

/** Checks the arguments: failures name the argument, the value and the rule. */
export function checkArgs(
  token: string,
  raw: Record<string, Json>,
): { args: Record<string, string>; failures: FunctionResult['failures'] } {
  const def = FUNCTIONS[token];
  const p = plain(raw ?? {});
  const failures: FunctionResult['failures'] = [];
  const args: Record<string, string> = {};
  for (const k of Object.keys(p)) {
    if (p[k] === undefined || p[k] === null) continue;
    if (!def.args[k])
      failures.push({ property: k, reason: `${k}: unknown argument of ${token} (known: ${Object.keys(def.args).join(', ')})` });
  }
  for (const [k, a] of Object.entries(def.args)) {
    const v = p[k];
    if (v === undefined || v === null || v === '') {
      if (a.required) failures.push({ property: k, reason: `${k}: required` });
      continue;
    }
    if (v === UNKNOWN)
      failures.push({ property: k, reason: `${k}: not known yet (it depends on a value computed during this update)` });
    else if (typeof v !== 'string') failures.push({ property: k, reason: `${k}: value ${JSON.stringify(v)} must be a string` });
    else if (!RULES[a.rule].test(v))
      failures.push({ property: k, reason: `${k}: value ${JSON.stringify(v)} must be ${RULES[a.rule].text}` });
    else args[k] = v;
  }
  return { args, failures };
}

export async function invoke(ctx: () => OpContext, token: string, raw: Record<string, Json>): Promise<FunctionResult> {
  const def = FUNCTIONS[token];
  if (!def) throw new Error(`unknown function ${token} (kubevm offers ${FUNCTION_TOKENS.join(', ')})`);
  const { args, failures } = checkArgs(token, raw);
  if (failures.length) return { failures };
  return { value: await def.run(ctx(), args), failures: [] };
}
