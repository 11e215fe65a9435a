import * as fs from 'node:fs';
import * as os from 'node:os';
import * as k8s from '@kubernetes/client-node';
import { Kube } from '../controller/runtime/kube';
import { plain, UNKNOWN, type Json } from './values';

/**
 * Provider configuration: `kubeconfig` (a path or the YAML itself; a secret),
 * `context` (a context name in it) and `namespace` (the default namespace of
 * resources that do not set one). Without a kubeconfig the usual places apply
 * ($KUBECONFIG, ~/.kube/config, in-cluster).
 */
export interface ProviderConfig {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
}

export const CONFIG_KEYS = ['kubeconfig', 'context', 'namespace'] as const;

/** From Configure's `args` (plain keys) or `variables` (`kubevm:config:key`, or the legacy `kubevm:key`). */
export function readConfig(args: Record<string, Json> | undefined, variables: Map<string, string> | [string, string][]): { config: ProviderConfig; unknown: boolean } {
  const vars = new Map(variables);
  const p = args ? plain(args) : {};
  const config: ProviderConfig = {};
  let unknown = false;
  for (const k of CONFIG_KEYS) {
    const v = p[k] ?? vars.get(`kubevm:config:${k}`) ?? vars.get(`kubevm:${k}`);
    if (v === UNKNOWN) unknown = true;
    else if (typeof v === 'string' && v !== '') config[k] = v;
  }
  return { config, unknown };
}

export function checkConfigFailures(p: Record<string, Json>): { property: string; reason: string }[] {
  const out: { property: string; reason: string }[] = [];
  for (const k of CONFIG_KEYS) {
    const v = p[k];
    if (v !== undefined && v !== UNKNOWN && typeof v !== 'string') out.push({ property: k, reason: `${k}: must be a string` });
  }
  const known = new Set<string>([...CONFIG_KEYS, 'version']);
  for (const k of Object.keys(p)) if (!known.has(k)) out.push({ property: k, reason: `${k}: unknown provider configuration key (known: ${CONFIG_KEYS.join(', ')})` });
  return out;
}

const looksLikeContent = (s: string): boolean => s.includes('\n') || /^\s*(\{|apiVersion\s*:)/.test(s);

export function kubeFromConfig(c: ProviderConfig): Kube {
  const kc = new k8s.KubeConfig();
  if (c.kubeconfig && looksLikeContent(c.kubeconfig)) kc.loadFromString(c.kubeconfig);
  else if (c.kubeconfig) {
    const file = c.kubeconfig.startsWith('~/') ? `${os.homedir()}${c.kubeconfig.slice(1)}` : c.kubeconfig;
    if (!fs.existsSync(file)) throw new Error(`kubeconfig: file ${file} does not exist`);
    kc.loadFromFile(file);
  } else kc.loadFromDefault();
  if (c.context) {
    if (!kc.getContexts().some((x) => x.name === c.context)) throw new Error(`context: no context named ${JSON.stringify(c.context)} in the kubeconfig`);
    kc.setCurrentContext(c.context);
  }
  if (!kc.getCurrentCluster()) throw new Error('kubeconfig: no current cluster (set `context` or a current-context)');
  return new Kube(kc);
}

/** The namespace of the current context, if the config names none. */
export function contextNamespace(kube: Kube): string | undefined {
  return kube.kc.getContextObject(kube.kc.getCurrentContext())?.namespace;
}
