import * as fs from 'node:fs';
import * as path from 'node:path';
import * as https from 'node:https';
import { execFile } from 'node:child_process';
import { tempDir } from './tmp';
import { startCluster, RunningCluster, ClusterOptions } from '../../cluster/embedded';

/**
 * Test harness: a real embedded cluster (HTTPS, SQLite) in a temporary data
 * directory, plus helpers to drive it with raw HTTPS requests and with the
 * real kubectl binary.
 */
export interface TestCluster extends RunningCluster {
  dataDir: string;
  /** Raw request with the admin token; body objects are sent as JSON. */
  request(method: string, path: string, body?: any, headers?: Record<string, string>): Promise<HttpReply>;
  kubectl(args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<KubectlResult>;
  cleanup(): Promise<void>;
}

export interface HttpReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export { tempDir };

export async function startTestCluster(opts: Partial<ClusterOptions> = {}): Promise<TestCluster> {
  const dataDir = opts.dataDir ?? tempDir();
  const c = await startCluster({ dataDir, port: 0, ...opts });
  const home = path.join(dataDir, 'home');
  fs.mkdirSync(home, { recursive: true });
  return {
    ...c,
    dataDir,
    request: (method, p, body, headers) => httpsRequest(c.url, c.token, c.caCert, method, p, body, headers),
    kubectl: (args, o) => runKubectl(c.kubeconfigPath, home, args, o),
    async cleanup() {
      await c.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function httpsRequest(
  base: string,
  token: string | undefined,
  ca: string,
  method: string,
  p: string,
  body?: any,
  headers: Record<string, string> = {},
): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const h: Record<string, string> = { ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    if (data !== undefined && !h['Content-Type']) h['Content-Type'] = 'application/json';
    // Node frames a DELETE body neither by length nor by chunks unless told: without this the
    // body would be read as the start of the next request on the kept-alive connection.
    if (data !== undefined && !h['Content-Length'] && !h['Transfer-Encoding']) h['Content-Length'] = String(Buffer.byteLength(data));
    const req = https.request(new URL(p, base), { method, headers: h, ca }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

export function runKubectl(
  kubeconfig: string,
  home: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<KubectlResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'kubectl',
      args,
      {
        env: { ...process.env, KUBECONFIG: kubeconfig, HOME: home },
        timeout: opts.timeoutMs ?? 30_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as any).code === 'number' ? (err as any).code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.input !== undefined) {
      child.stdin!.write(opts.input);
    }
    child.stdin?.end();
  });
}

/** Polls `fn` until it returns a truthy value or the time runs out; returns the value. */
export async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** Requests against the kubevm.dev API of a test cluster (resolved lazily: the cluster starts in beforeAll). */
export function kubevmApi(cluster: () => TestCluster, ns = 'default') {
  const api = `/apis/kubevm.dev/v1alpha1/namespaces/${ns}`;
  return {
    api,
    get: async (p: string) => (await cluster().request('GET', p)).json,
    post: async (plural: string, body: any) => {
      const r = await cluster().request('POST', `${api}/${plural}`, { apiVersion: 'kubevm.dev/v1alpha1', ...body });
      if (r.status !== 201) throw new Error(`POST ${plural}: ${r.status} ${r.text}`);
      return r.json;
    },
    merge: (p: string, body: any) => cluster().request('PATCH', p, body, { 'Content-Type': 'application/merge-patch+json' }),
  };
}
