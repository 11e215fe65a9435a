import * as http from 'node:http';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import YAML from 'yaml';
import { Backend } from '../store/backend';
import { ApiError, errors } from './errors';
import { Registry, ResourceType, BUILTIN_TYPES } from './registry';
import { Objects } from './objects';
import { WatchHub, WatchLimits } from './watch';
import { Handlers, Reply } from './handlers';
import { OpenApi } from './openapi';
import { Controllers } from './controllers';
import * as discovery from './discovery';

/**
 * The Kubernetes-compatible API server: HTTPS with bearer tokens, discovery,
 * OpenAPI v3, health, and the resource endpoints. It owns no storage of its
 * own; everything goes through a Backend.
 */
export interface User {
  name: string;
  groups: string[];
}

export interface ApiServerOptions {
  backend: Backend;
  /** token → user. Requests to API paths without a known token get 401. */
  tokens: Map<string, User>;
  /** TLS material; omit for plain HTTP (tests of the HTTP layer only). */
  tls?: { cert: string; key: string };
  host?: string;
  port?: number;
  /** Largest accepted request body (kube-apiserver: 3 MiB). */
  maxBodyBytes?: number;
  /** Time allowed for a non-watch request, including reading its body. */
  requestTimeoutMs?: number;
  watch?: Partial<WatchLimits>;
  /** How often the store is compacted (0 = never). */
  compactIntervalMs?: number;
  log?: (line: string) => void;
}

export const SERVER_VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.4-kubevm',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2026-11-27T00:00:00Z',
  goVersion: 'go1.23.8',
  compiler: 'gc',
  platform: 'linux/amd64',
  // Not in upstream's version.Info (clients ignore it): marks kubevm's embedded API server, whose
  // controller and node agents run in-process. The Install resource's `mode: auto` reads it.
  kubevm: 'embedded',
};

const PUBLIC_PATHS = new Set(['/version', '/healthz', '/livez', '/readyz', '/version/']);

export class ApiServer {
  readonly registry = new Registry();
  readonly objects: Objects;
  readonly watches: WatchHub;
  readonly controllers: Controllers;
  private readonly handlers: Handlers;
  private readonly openapi: OpenApi;
  private server?: http.Server;
  private compactTimer?: NodeJS.Timeout;
  private readonly maxBody: number;
  private readonly requestTimeoutMs: number;
  private address = '';

  constructor(private readonly opts: ApiServerOptions) {
    this.maxBody = opts.maxBodyBytes ?? 3 * 1024 * 1024;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
    this.objects = new Objects(opts.backend);
    this.watches = new WatchHub(opts.backend, {
      bookmarkIntervalMs: opts.watch?.bookmarkIntervalMs ?? 60_000,
      maxBufferedBytes: opts.watch?.maxBufferedBytes ?? 16 * 1024 * 1024,
      defaultTimeoutSeconds: opts.watch?.defaultTimeoutSeconds ?? 1800 + Math.floor(Math.random() * 1800),
    });
    this.handlers = new Handlers(this.objects, opts.backend, this.watches);
    this.openapi = new OpenApi(this.registry);
    this.controllers = new Controllers(opts.backend, this.objects, this.registry);
  }

  /** Starts controllers, creates the system namespaces and listens. Resolves with the URL. */
  async start(): Promise<string> {
    this.controllers.start();
    this.bootstrap();
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.onRequest(req, res);
    this.server = this.opts.tls ? https.createServer({ cert: this.opts.tls.cert, key: this.opts.tls.key }, handler) : http.createServer(handler);
    this.server.requestTimeout = this.requestTimeoutMs;
    this.server.headersTimeout = Math.min(this.requestTimeoutMs, 30_000);
    this.server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => resolve());
    });
    const a = this.server.address() as AddressInfo;
    this.address = `${a.address}:${a.port}`;
    if (this.opts.compactIntervalMs)
      this.compactTimer = setInterval(() => this.opts.backend.compact(), this.opts.compactIntervalMs).unref();
    return `${this.opts.tls ? 'https' : 'http'}://${a.address}:${a.port}`;
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  async stop(): Promise<void> {
    clearInterval(this.compactTimer);
    this.controllers.stop();
    this.watches.closeAll();
    if (this.server) {
      const s = this.server;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    }
  }

  private bootstrap(): void {
    const ns = BUILTIN_TYPES.find((t) => t.kind === 'Namespace')!;
    for (const name of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
      if (!this.objects.tryGet(ns, undefined, name))
        this.objects.create(ns, undefined, { apiVersion: 'v1', kind: 'Namespace', metadata: { name } }, { fieldManager: 'kube-apiserver' });
    }
  }

  private authenticate(req: http.IncomingMessage): User | undefined {
    const h = req.headers.authorization;
    if (!h || !h.startsWith('Bearer ')) return undefined;
    const token = h.slice(7).trim();
    for (const [t, user] of this.opts.tokens) {
      if (t.length === token.length && timingSafeEqual(Buffer.from(t), Buffer.from(token))) return user;
    }
    return undefined;
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = Date.now();
    const url = new URL(req.url ?? '/', 'https://localhost');
    const path = url.pathname;
    try {
      if (PUBLIC_PATHS.has(path)) return this.publicEndpoint(path, req, res);
      const user = this.authenticate(req);
      if (!user) throw errors.unauthorized();
      const body = await readBody(req, this.maxBody);
      const reply = this.route(path, url.searchParams, req, res, body, user);
      if (reply) send(res, reply, req.headers.accept);
    } catch (e) {
      sendError(res, e, this.opts.log);
    } finally {
      if (this.opts.log && !path.includes('watch=')) this.opts.log(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started}ms`);
    }
  }

  private publicEndpoint(path: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    if (path.startsWith('/version')) return send(res, { code: 200, body: SERVER_VERSION }, undefined);
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
    res.end('ok');
  }

  private route(
    path: string,
    query: URLSearchParams,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    body: Buffer,
    user: User,
  ): Reply | undefined {
    const seg = path.split('/').filter(Boolean);
    const accept = req.headers.accept;
    if (seg[0] === 'openapi') return this.openapiEndpoint(seg, res);
    if (seg[0] === 'api' && seg.length === 1) {
      const fmt = discovery.negotiateDiscovery(accept);
      if (fmt !== 'legacy') return discoveryReply(fmt, discovery.aggregated(this.registry, true, fmt));
      return { code: 200, body: discovery.apiVersions(this.address) };
    }
    if (seg[0] === 'apis' && seg.length === 1) {
      const fmt = discovery.negotiateDiscovery(accept);
      if (fmt !== 'legacy') return discoveryReply(fmt, discovery.aggregated(this.registry, false, fmt));
      return { code: 200, body: discovery.apiGroupList(this.registry) };
    }
    if (seg[0] === 'apis' && seg.length === 2) {
      const g = this.registry.groups().find((x) => x.name === seg[1]);
      if (!g) throw errors.noResource();
      return { code: 200, body: discovery.apiGroup(g) };
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (seg[0] === 'api') [group, version, rest] = ['', seg[1], seg.slice(2)];
    else if (seg[0] === 'apis') [group, version, rest] = [seg[1], seg[2], seg.slice(3)];
    else throw errors.noResource();
    if (rest.length === 0) {
      const list = discovery.apiResourceList(this.registry, group, version);
      if (!list) throw errors.noResource();
      return { code: 200, body: list };
    }
    if (group === 'authentication.k8s.io' && rest[0] === 'selfsubjectreviews' && req.method === 'POST')
      return {
        code: 201,
        body: {
          kind: 'SelfSubjectReview',
          apiVersion: `authentication.k8s.io/${version}`,
          metadata: { creationTimestamp: null },
          status: { userInfo: { username: user.name, groups: user.groups } },
        },
      };
    const target = this.resolve(group, version, rest);
    if (!target) throw errors.noResource();
    checkAcceptable(accept);
    return this.handlers.handle({ ...target, query, req, res, body });
  }

  /** Maps the path after /api/v1 or /apis/g/v to a type, namespace, name and subresource. */
  private resolve(
    group: string,
    version: string,
    rest: string[],
  ): { type: ResourceType; namespace?: string; name?: string; subresource?: string } | undefined {
    const find = (resource: string) => this.registry.find(group, version, resource);
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      const nsType = find('namespaces');
      // /namespaces/{name}/status and /finalize are subresources of the namespace itself.
      if (rest.length === 3 && nsType && nsType.subresources.includes(rest[2])) return { type: nsType, name: rest[1], subresource: rest[2] };
      const t = find(rest[2]);
      if (!t || !t.namespaced || rest.length > 5) return undefined;
      return { type: t, namespace: rest[1], name: rest[3], subresource: rest[4] };
    }
    const t = find(rest[0]);
    if (!t || rest.length > 3) return undefined;
    return { type: t, name: rest[1], subresource: rest[2] };
  }

  private openapiEndpoint(seg: string[], res: http.ServerResponse): Reply | undefined {
    if (seg[1] !== 'v3') throw errors.noResource(); // v2 is protobuf-only for kubectl; 404 makes it use v3
    if (seg.length === 2) return { code: 200, body: this.openapi.index() };
    const doc = this.openapi.document(seg.slice(2).join('/'));
    if (!doc) throw errors.noResource();
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'public, immutable' });
    res.end(doc);
    return undefined;
  }
}

function discoveryReply(fmt: 'v2' | 'v2beta1', body: any): Reply {
  return { code: 200, body, contentType: fmt === 'v2' ? discovery.AGGREGATED_V2 : discovery.AGGREGATED_V2BETA1 } as Reply;
}

/** We speak JSON (and YAML); a client that accepts neither gets 406, as upstream. */
function checkAcceptable(accept: string | undefined): void {
  if (!accept) return;
  const types = accept.split(',').map((p) => p.split(';')[0].trim().toLowerCase());
  if (types.some((t) => t === 'application/json' || t === '*/*' || t === 'application/*' || t === 'application/yaml' || t === ''))
    return;
  throw errors.notAcceptable(['application/json', 'application/yaml']);
}

function wantsYaml(accept: string | undefined): boolean {
  return !!accept && accept.split(',')[0].split(';')[0].trim() === 'application/yaml';
}

function send(res: http.ServerResponse, reply: Reply & { contentType?: string }, accept: string | undefined): void {
  const headers: Record<string, string | string[]> = {};
  if (reply.warnings?.length) headers['Warning'] = reply.warnings.map((w) => `299 - ${JSON.stringify(w)}`);
  let text: string;
  if (wantsYaml(accept) && !reply.contentType) {
    headers['Content-Type'] = 'application/yaml';
    text = YAML.stringify(reply.body);
  } else {
    headers['Content-Type'] = reply.contentType ?? 'application/json';
    text = JSON.stringify(reply.body);
  }
  res.writeHead(reply.code, headers);
  res.end(text);
}

function sendError(res: http.ServerResponse, e: unknown, log?: (l: string) => void): void {
  let err: ApiError;
  if (e instanceof ApiError) err = e;
  else {
    log?.(`internal error: ${(e as Error)?.stack ?? e}`);
    err = errors.internal((e as Error)?.message ?? String(e));
  }
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (err.code === 401) headers['WWW-Authenticate'] = 'Bearer realm="kubevm"';
  res.writeHead(err.code, headers);
  res.end(JSON.stringify(err.toStatus()));
}

/** Reads the whole body, refusing more than `limit` bytes with 413 (without buffering the excess). */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.reject(errors.tooLarge(limit));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        reject(errors.tooLarge(limit));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => !failed && resolve(Buffer.concat(chunks)));
    req.on('error', (e) => !failed && reject(e));
  });
}
