import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import YAML from 'yaml';
import { SqliteBackend } from './store/sqlite';
import { ApiServer, User } from './apiserver/server';
import { WatchLimits } from './apiserver/watch';
import { ensurePki } from './pki';

/**
 * The embedded control plane on one machine: the API server on SQLite, with
 * its certificates, token and kubeconfig under one data directory. The
 * controller and node agents join this process in later work.
 */
export interface ClusterOptions {
  dataDir: string;
  port?: number;
  host?: string;
  /** Resumable watch window in revisions. */
  historySize?: number;
  compactIntervalMs?: number;
  /** Watch limits (bookmark interval, per-watcher buffer cap, default timeout); tests shorten them. */
  watch?: Partial<WatchLimits>;
  log?: (line: string) => void;
}

export interface RunningCluster {
  url: string;
  port: number;
  kubeconfigPath: string;
  token: string;
  caCert: string;
  server: ApiServer;
  backend: SqliteBackend;
  stop(): Promise<void>;
}

export const STATE_FILE = 'cluster.json';

export function defaultDataDir(): string {
  return process.env.KUBEVM_DATA_DIR ?? path.join(process.cwd(), '.kubevm');
}

export async function startCluster(opts: ClusterOptions): Promise<RunningCluster> {
  const dataDir = path.resolve(opts.dataDir);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const pki = ensurePki(path.join(dataDir, 'pki'));
  const token = ensureToken(path.join(dataDir, 'token'));
  const backend = new SqliteBackend({ path: path.join(dataDir, 'state.db'), historySize: opts.historySize });
  const tokens = new Map<string, User>([[token, { name: 'kubevm-admin', groups: ['system:masters', 'system:authenticated'] }]]);
  const server = new ApiServer({
    backend,
    tokens,
    tls: { cert: pki.cert, key: pki.key },
    host: opts.host ?? '127.0.0.1',
    port: opts.port ?? 0,
    compactIntervalMs: opts.compactIntervalMs ?? 5 * 60_000,
    watch: opts.watch,
    log: opts.log,
  });
  let url: string;
  try {
    url = await server.start();
  } catch (e) {
    backend.close();
    throw e;
  }
  const port = server.port;
  const kubeconfigPath = path.join(dataDir, 'kubeconfig');
  fs.writeFileSync(kubeconfigPath, kubeconfig(`https://127.0.0.1:${port}`, pki.caCert, token), { mode: 0o600 });
  const statePath = path.join(dataDir, STATE_FILE);
  fs.writeFileSync(statePath, JSON.stringify({ pid: process.pid, url, port, kubeconfig: kubeconfigPath, startedAt: new Date().toISOString() }, null, 2));
  let stopped = false;
  return {
    url,
    port,
    kubeconfigPath,
    token,
    caCert: pki.caCert,
    server,
    backend,
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
      backend.close();
      try {
        const st = JSON.parse(fs.readFileSync(statePath, 'utf8'));
        if (st.pid === process.pid) fs.unlinkSync(statePath);
      } catch {
        /* already gone */
      }
    },
  };
}

function ensureToken(file: string): string {
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  const token = randomBytes(32).toString('base64url');
  fs.writeFileSync(file, token + '\n', { mode: 0o600 });
  return token;
}

export function kubeconfig(server: string, caPem: string, token: string): string {
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'kubevm', cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') } }],
    users: [{ name: 'kubevm-admin', user: { token } }],
    contexts: [{ name: 'kubevm', context: { cluster: 'kubevm', user: 'kubevm-admin', namespace: 'default' } }],
    'current-context': 'kubevm',
    preferences: {},
  });
}
