import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient, QmpError } from '../../../controller/hal/common/qmp';
import { ensureQemu } from '../../guest';

/**
 * The QMP client against a real QEMU with no guest (firmware idles; QMP is
 * ready in ~150 ms), plus a scripted socket for the edges QEMU will not
 * produce on demand (a reply that never comes, a torn line).
 */
let dir: string;
let qemu: ChildProcess | undefined;
let qmp: QmpClient;

function startQemu(sock: string, extra: string[] = []): ChildProcess {
  return spawn(
    'qemu-system-x86_64',
    [
      '-machine',
      'q35',
      '-accel',
      'tcg',
      '-nodefaults',
      '-display',
      'none',
      '-m',
      '64',
      '-qmp',
      `unix:${sock},server=on,wait=off`,
      ...extra,
    ],
    {
      stdio: 'ignore',
    },
  );
}

beforeAll(async () => {
  ensureQemu();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvq-'));
  const sock = path.join(dir, 'qmp.sock');
  const child = startQemu(sock);
  qemu = child;
  let exited = false;
  child.once('exit', () => (exited = true));
  // Connect right away: the client retries until QEMU listens.
  qmp = await QmpClient.connect(sock, { timeoutMs: 20_000, alive: () => !exited });
}, 60_000);

afterAll(() => {
  qmp?.close();
  if (qemu?.exitCode === null) qemu.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('QmpClient against QEMU', () => {
  test('greeting carries the version; capabilities are negotiated', async () => {
    expect(qmp.greeting.QMP.version.qemu.major).toBeGreaterThanOrEqual(7);
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
  });

  test('concurrent commands each get their own reply (id correlation)', async () => {
    const [status, name, kvm, version] = await Promise.all([
      qmp.execute('query-status'),
      qmp.execute('query-name'),
      qmp.execute('query-kvm'),
      qmp.execute('query-version'),
    ]);
    expect(status.status).toBe('running');
    expect(name).toEqual({});
    expect(kvm).toHaveProperty('present');
    expect(version.qemu.major).toBe(qmp.greeting.QMP.version.qemu.major);
  });

  test('an error reply rejects with QmpError naming the command and class', async () => {
    const err = await qmp.execute('device_del', { id: 'nope' }).catch((e) => e);
    expect(err).toBeInstanceOf(QmpError);
    expect(err.errorClass).toBe('DeviceNotFound');
    expect(err.message).toMatch(/^QMP device_del: DeviceNotFound: /);
    await expect(qmp.execute('no-such-command')).rejects.toThrow(/CommandNotFound/);
  });

  test('events: STOP and RESUME arrive and can be awaited', async () => {
    const stopped = qmp.waitEvent('STOP');
    await qmp.execute('stop');
    expect((await stopped).event).toBe('STOP');
    expect((await qmp.execute('query-status')).status).toBe('paused');
    const seen: string[] = [];
    qmp.on('event', (e) => seen.push(e.event));
    const resumed = qmp.waitEvent('RESUME');
    await qmp.execute('cont');
    await resumed;
    expect(seen).toContain('RESUME');
  });

  test('waitEvent times out with the event name', async () => {
    await expect(qmp.waitEvent('DEVICE_DELETED', () => true, 100)).rejects.toThrow(/no DEVICE_DELETED event within 100 ms/);
  });

  test('a second client on the same monitor fails clearly instead of hanging', async () => {
    await expect(QmpClient.connect(qmp.path, { timeoutMs: 600 })).rejects.toThrow(/greeting|not ready/);
  });

  test('quit: the reply, then the connection closes and later commands reject', async () => {
    const closed = new Promise<void>((r) => qmp.once('close', () => r()));
    const shutdown = qmp.waitEvent('SHUTDOWN');
    await qmp.execute('quit');
    expect((await shutdown).data).toMatchObject({ guest: false, reason: 'host-qmp-quit' });
    await closed;
    expect(qmp.closed).toBe(true);
    await expect(qmp.execute('query-status')).rejects.toThrow(/connection closed/);
  });

  test('connect gives up early when the process died', async () => {
    await expect(QmpClient.connect(path.join(dir, 'never.sock'), { timeoutMs: 5_000, alive: () => false })).rejects.toThrow(
      /exited before QMP was ready/,
    );
    await expect(QmpClient.connect(path.join(dir, 'never.sock'), { timeoutMs: 200 })).rejects.toThrow(/not ready within 200 ms/);
  });
});

describe('QmpClient edges (scripted socket)', () => {
  test('command timeout; a late reply is ignored; torn lines are reassembled', async () => {
    const sock = path.join(dir, 'fake.sock');
    const server = net.createServer((c) => {
      c.write('{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\n');
      let buf = '';
      c.on('data', (d) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const msg = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (msg.execute === 'qmp_capabilities') c.write(JSON.stringify({ return: {}, id: msg.id }) + '\n');
          if (msg.execute === 'slow') setTimeout(() => c.write(JSON.stringify({ return: 'late', id: msg.id }) + '\n'), 150);
          if (msg.execute === 'torn') {
            const line = JSON.stringify({ return: { ok: true }, id: msg.id }) + '\n';
            c.write(`{"event": "X", "data": {}}\n${line.slice(0, 5)}`);
            setTimeout(() => c.write(line.slice(5)), 30);
          }
        }
      });
    });
    await new Promise<void>((r) => server.listen(sock, r));
    const c = await QmpClient.connect(sock, { timeoutMs: 2_000 });
    try {
      await expect(c.execute('slow', undefined, 50)).rejects.toThrow(/QMP slow: no reply within 50 ms/);
      const ev = c.waitEvent('X');
      expect(await c.execute('torn')).toEqual({ ok: true });
      await ev;
      await new Promise((r) => setTimeout(r, 150)); // the late reply arrives and is dropped
      expect(c.closed).toBe(false);
    } finally {
      c.close();
      server.close();
    }
  });
});
