import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir, httpsRequest, eventually } from '../helpers/cluster';

/**
 * kill -9 during a burst of writes: after a restart on the same data directory
 * every write the server acknowledged is there.
 */
const bin = path.join(__dirname, '..', '..', 'bin', 'kubevm');

function up(dataDir: string, port: number): ChildProcess {
  return spawn(process.execPath, [bin, 'cluster', 'up', '--data-dir', dataDir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
}

async function ready(dataDir: string, port: number): Promise<{ token: string; ca: string; base: string }> {
  const base = `https://127.0.0.1:${port}`;
  const r = await eventually(async () => {
    const token = fs.readFileSync(path.join(dataDir, 'token'), 'utf8').trim();
    const ca = fs.readFileSync(path.join(dataDir, 'pki', 'ca.crt'), 'utf8');
    const r = await httpsRequest(base, token, ca, 'GET', '/api/v1/namespaces/default');
    return r.status === 200 ? { token, ca, base } : undefined;
  }, 30_000, 'cluster up');
  return r!;
}

test('every acknowledged write survives kill -9', async () => {
  const dataDir = tempDir();
  const port = 20000 + Math.floor(Math.random() * 20000);
  let proc = up(dataDir, port);
  try {
    const { token, ca, base } = await ready(dataDir, port);
    const acked: string[] = [];
    let stop = false;
    // Eight concurrent writers; the process is killed while they run.
    const writer = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const name = `cm-${w}-${i}`;
        try {
          const r = await httpsRequest(base, token, ca, 'POST', '/api/v1/namespaces/default/configmaps', {
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name },
            data: { i: String(i) },
          });
          if (r.status === 201) acked.push(name);
        } catch {
          return; // connection refused or reset: the server is gone
        }
      }
    };
    const writers = Array.from({ length: 8 }, (_, w) => writer(w));
    await eventually(() => acked.length >= 300, 60_000, '300 acknowledged writes');
    proc.kill('SIGKILL');
    stop = true;
    await Promise.all(writers);
    await new Promise((r) => proc.once('exit', r));
    expect(acked.length).toBeGreaterThanOrEqual(300);

    proc = up(dataDir, port);
    const again = await ready(dataDir, port);
    const list = await httpsRequest(base, again.token, again.ca, 'GET', '/api/v1/namespaces/default/configmaps');
    const names = new Set(list.json.items.map((i: any) => i.metadata.name));
    const missing = acked.filter((n) => !names.has(n));
    expect(missing).toEqual([]);
    // resourceVersions keep growing after the restart.
    const maxRv = Math.max(...list.json.items.map((i: any) => Number(i.metadata.resourceVersion)));
    const after = await httpsRequest(base, again.token, again.ca, 'POST', '/api/v1/namespaces/default/configmaps', {
      apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'after-restart' },
    });
    expect(Number(after.json.metadata.resourceVersion)).toBeGreaterThan(maxRv);
  } finally {
    proc.kill('SIGKILL');
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}, 120_000);
