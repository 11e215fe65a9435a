import { spawn, execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir, eventually, httpsRequest } from '../helpers/cluster';

/**
 * `kubevm cluster up|status|down` as a user runs them: up in the foreground,
 * status and down from another shell, clean shutdown, state kept on restart.
 */
const bin = path.join(__dirname, '..', '..', 'bin', 'kubevm');

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [bin, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

test('up prints the kubeconfig, status and down work from another process, restart keeps objects', async () => {
  const dataDir = tempDir();
  const port = 20000 + Math.floor(Math.random() * 20000);
  const start = () => {
    const p = spawn(process.execPath, [bin, 'cluster', 'up', '--data-dir', dataDir, '--port', String(port)]);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    return { p, out: () => out };
  };
  try {
    expect((await run(['cluster', 'status', '--data-dir', dataDir])).code).toBe(1);
    const first = start();
    await eventually(() => first.out().includes('export KUBECONFIG='), 30_000, 'up to print the kubeconfig');
    const kubeconfig = path.join(dataDir, 'kubeconfig');
    expect(first.out()).toContain(`export KUBECONFIG=${kubeconfig}`);
    expect(fs.readFileSync(kubeconfig, 'utf8')).toContain(`server: https://127.0.0.1:${port}`);

    const status = await run(['cluster', 'status', '--data-dir', dataDir]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`running (pid ${first.p.pid}) at https://127.0.0.1:${port}`);
    // A second `up` on the same data directory is refused.
    const dup = await run(['cluster', 'up', '--data-dir', dataDir, '--port', String(port + 1)]);
    expect(dup.code).toBe(2);
    expect(dup.stderr).toContain('already running');

    const token = fs.readFileSync(path.join(dataDir, 'token'), 'utf8').trim();
    const ca = fs.readFileSync(path.join(dataDir, 'pki', 'ca.crt'), 'utf8');
    const base = `https://127.0.0.1:${port}`;
    const created = await httpsRequest(base, token, ca, 'POST', '/api/v1/namespaces/default/configmaps', {
      apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kept' }, data: { a: '1' },
    });
    expect(created.status).toBe(201);

    const exited = new Promise<number | null>((r) => first.p.once('exit', (code) => r(code)));
    const down = await run(['cluster', 'down', '--data-dir', dataDir]);
    expect(down.stdout).toContain('stopped');
    expect(await exited).toBe(0);
    expect(first.out()).toContain('SIGTERM: shutting down');
    expect((await run(['cluster', 'status', '--data-dir', dataDir])).code).toBe(1);

    const second = start();
    await eventually(() => second.out().includes('export KUBECONFIG='), 30_000, 'second up');
    const kept = await httpsRequest(base, token, ca, 'GET', '/api/v1/namespaces/default/configmaps/kept');
    expect(kept.status).toBe(200);
    expect(kept.json.data).toEqual({ a: '1' });
    expect(kept.json.metadata.uid).toBe(created.json.metadata.uid);
    second.p.kill('SIGINT');
    await new Promise((r) => second.p.once('exit', r));
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}, 90_000);

test('bad flags are refused with a message naming the flag', async () => {
  const r = await run(['cluster', 'up', '--port', 'http']);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain('--port: "http" is not a port number');
  const u = await run(['cluster', 'sideways']);
  expect(u.code).toBe(2);
  expect(u.stderr).toContain('usage:');
});
