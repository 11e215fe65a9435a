import * as k8s from '@kubernetes/client-node';
import { fetch as undiciFetch, Agent as UndiciAgent } from 'undici';

/**
 * The small Kubernetes client the controller and the agents use: JSON CRUD,
 * merge patches, status updates and informers on @kubernetes/client-node, so
 * the same code runs against the embedded API server and a real cluster.
 */
export interface Gvr {
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

export const GVR = {
  vm: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'virtualmachines', namespaced: true },
  vmi: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'virtualmachineinstances', namespaced: true },
  volume: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'volumes', namespaced: true },
  network: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'networks', namespaced: true },
  containerPathMount: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'containerpathmounts', namespaced: true },
  backupPolicy: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'backuppolicies', namespaced: true },
  backup: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'backups', namespaced: true },
  restore: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'restores', namespaced: true },
  migration: { group: 'kubevm.dev', version: 'v1alpha1', plural: 'migrations', namespaced: true },
  node: { group: '', version: 'v1', plural: 'nodes', namespaced: false },
  lease: { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespaced: true },
  event: { group: '', version: 'v1', plural: 'events', namespaced: true },
  secret: { group: '', version: 'v1', plural: 'secrets', namespaced: true },
} satisfies Record<string, Gvr>;

export class KubeError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export function isNotFound(e: unknown): boolean {
  return e instanceof KubeError && e.code === 404;
}
export function isConflict(e: unknown): boolean {
  return e instanceof KubeError && e.code === 409;
}

function basePath(g: Gvr, namespace?: string): string {
  const root = g.group ? `/apis/${g.group}/${g.version}` : `/api/${g.version}`;
  return g.namespaced && namespace ? `${root}/namespaces/${namespace}/${g.plural}` : `${root}/${g.plural}`;
}

export class Kube {
  readonly kc: k8s.KubeConfig;
  private readonly server: string;

  constructor(kc: k8s.KubeConfig) {
    this.kc = kc;
    this.server = kc.getCurrentCluster()!.server;
  }

  private authCache?: Promise<{ headers: Record<string, string>; dispatcher: unknown }>;

  /**
   * Headers and TLS dispatcher from the kubeconfig, made once: client-node builds
   * a new connection pool per call otherwise. (Static tokens and certificates;
   * exec credential plugins with expiring tokens would need a refresh here.)
   */
  private auth(): Promise<{ headers: Record<string, string>; dispatcher: unknown }> {
    this.authCache ??= (async () => {
      const ctx = new k8s.RequestContext(`${this.server}/`, k8s.HttpMethod.GET);
      await this.kc.applySecurityAuthentication(ctx);
      // A bounded pool: with one TLS connection per concurrent request, a burst of hundreds of requests
      // (a 1,000-VM `up`) spends longer in handshakes than undici's connect timeout allows.
      const tls: any = {};
      await this.kc.applyToHTTPSOptions(tls);
      const skip = this.kc.getCurrentCluster()?.skipTLSVerify === true;
      const dispatcher = this.server.startsWith('https:')
        ? new UndiciAgent({ connections: 32, connect: { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: !skip } })
        : ctx.getDispatcher();
      return { headers: ctx.getHeaders(), dispatcher };
    })();
    return this.authCache;
  }

  static fromFile(path: string): Kube {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(path);
    return new Kube(kc);
  }

  /** From kubeconfig YAML text (not a path), optionally selecting a context by name. */
  static fromString(kubeconfigYaml: string, context?: string): Kube {
    const kc = new k8s.KubeConfig();
    kc.loadFromString(kubeconfigYaml);
    if (context) kc.setCurrentContext(context);
    return new Kube(kc);
  }

  /** One JSON request with client-node's authentication and TLS settings (as its Watch does). */
  async request(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<any> {
    const auth = await this.auth();
    const headers: Record<string, string> = { ...auth.headers, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = contentType;
    const res = await undiciFetch(`${this.server}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      dispatcher: auth.dispatcher as any,
    });
    const text = await res.text();
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.status >= 400) throw new KubeError(res.status, json?.reason ?? 'Unknown', json?.message ?? text);
    return json;
  }

  get(g: Gvr, namespace: string | undefined, name: string): Promise<any> {
    return this.request('GET', `${basePath(g, namespace)}/${name}`);
  }

  async tryGet(g: Gvr, namespace: string | undefined, name: string): Promise<any | undefined> {
    try {
      return await this.get(g, namespace, name);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async list(g: Gvr, namespace?: string, labelSelector?: string): Promise<any[]> {
    const q = labelSelector ? `?labelSelector=${encodeURIComponent(labelSelector)}` : '';
    return (await this.request('GET', `${basePath(g, namespace)}${q}`)).items;
  }

  create(g: Gvr, namespace: string | undefined, obj: any): Promise<any> {
    return this.request('POST', `${basePath(g, namespace)}?fieldManager=kubevm`, obj);
  }

  mergePatch(g: Gvr, namespace: string | undefined, name: string, patch: any, subresource?: string): Promise<any> {
    return this.request(
      'PATCH',
      `${basePath(g, namespace)}/${name}${subresource ? `/${subresource}` : ''}?fieldManager=kubevm`,
      patch,
      'application/merge-patch+json',
    );
  }

  /** Replaces status with optimistic concurrency on the given object's resourceVersion. */
  updateStatus(g: Gvr, obj: any): Promise<any> {
    return this.request('PUT', `${basePath(g, obj.metadata.namespace)}/${obj.metadata.name}/status?fieldManager=kubevm`, obj);
  }

  async delete(g: Gvr, namespace: string | undefined, name: string, propagationPolicy = 'Background'): Promise<void> {
    try {
      await this.request('DELETE', `${basePath(g, namespace)}/${name}`, { propagationPolicy });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  /** An informer (list + watch, relist on 410) that restarts itself after errors. */
  informer(g: Gvr, namespace?: string): k8s.Informer<any> & k8s.ObjectCache<any> {
    const path = basePath(g, namespace);
    const inf = k8s.makeInformer<any>(this.kc, path, async () => {
      const list = await this.request('GET', path);
      return list as any;
    });
    inf.on('error', () => {
      // client-node's informer stops on errors other than 410: start it again shortly.
      setTimeout(() => void inf.start().catch(() => undefined), 1000).unref();
    });
    return inf;
  }
}
