import { EventEmitter } from 'node:events';
import * as net from 'node:net';

/**
 * A QMP client over a unix socket: line-delimited JSON, one greeting, then
 * `qmp_capabilities`, then commands whose replies are matched by `id` (so
 * several may be in flight) and asynchronous events. QEMU allows one client
 * per QMP socket; the agent holds it for the life of the VM.
 */
export interface QmpEvent {
  event: string;
  data?: any;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  QMP: { version: { qemu: { major: number; minor: number; micro: number }; package?: string }; capabilities: string[] };
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

export interface QmpConnectOptions {
  /** Total time to wait for the socket to accept and the handshake to finish. */
  timeoutMs?: number;
  /** Checked between connection attempts: stop retrying when the process is gone. */
  alive?: () => boolean;
  /** Default per-command timeout. */
  commandTimeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (v: any) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

type Events = { event: [QmpEvent]; close: [Error | undefined] };

export class QmpClient extends EventEmitter<Events> {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedWith: Error | undefined | null = null; // null: open
  greeting!: QmpGreeting;

  private constructor(
    private readonly sock: net.Socket,
    readonly path: string,
    private readonly commandTimeoutMs: number,
  ) {
    super();
  }

  /** Connects, retrying while the socket does not accept yet, and negotiates capabilities. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    let lastErr: any;
    while (Date.now() < deadline) {
      if (opts.alive && !opts.alive()) throw new Error(`QMP ${path}: the process exited before QMP was ready`);
      try {
        const sock = await openSocket(path, Math.max(50, deadline - Date.now()));
        const c = new QmpClient(sock, path, opts.commandTimeoutMs ?? 10_000);
        await c.handshake(Math.max(50, deadline - Date.now()));
        return c;
      } catch (e: any) {
        lastErr = e;
        // Not there yet, or QEMU not listening yet: retry. Anything else is real.
        if (!['ENOENT', 'ECONNREFUSED', 'EAGAIN'].includes(e?.code)) throw e;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    throw new Error(`QMP ${path}: not ready within ${timeoutMs} ms (last error: ${lastErr?.message ?? lastErr})`);
  }

  private handshake(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.sock.destroy();
        reject(new Error(`QMP ${this.path}: no greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      const onData = (d: Buffer) => {
        this.buf += d.toString('utf8');
        const nl = this.buf.indexOf('\n');
        if (nl < 0) return;
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        this.sock.off('data', onData);
        this.sock.off('error', onErr);
        this.sock.off('close', onClose);
        clearTimeout(timer);
        try {
          this.greeting = JSON.parse(line);
          if (!this.greeting.QMP) throw new Error(`unexpected greeting ${line}`);
        } catch (e: any) {
          this.sock.destroy();
          return reject(new Error(`QMP ${this.path}: ${e.message}`));
        }
        this.attach();
        this.execute('qmp_capabilities').then(() => resolve(), reject);
      };
      const onErr = (e: Error) => {
        clearTimeout(timer);
        reject(e);
      };
      // QEMU closes at once when the monitor already has a client.
      const onClose = () => onErr(new Error(`QMP ${this.path}: closed before the greeting (another client connected?)`));
      this.sock.on('data', onData);
      this.sock.once('error', onErr);
      this.sock.once('close', onClose);
    });
  }

  private attach(): void {
    this.sock.on('data', (d) => {
      this.buf += d.toString('utf8');
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (line) this.onMessage(line);
      }
    });
    this.sock.on('error', (e) => this.shutdown(e));
    this.sock.on('close', () => this.shutdown(undefined));
    // Leftover bytes that arrived with the greeting.
    if (this.buf.includes('\n')) this.sock.emit('data', Buffer.alloc(0));
  }

  private onMessage(line: string): void {
    let msg: any;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // QEMU only sends JSON; ignore torn garbage rather than crash the agent
    }
    if (msg.event) {
      this.emit('event', msg as QmpEvent);
      return;
    }
    const p = msg.id !== undefined ? this.pending.get(String(msg.id)) : undefined;
    if (!p) return; // a reply to a command that already timed out
    this.pending.delete(String(msg.id));
    clearTimeout(p.timer);
    if (msg.error) p.reject(new QmpError(p.command, msg.error.class, msg.error.desc));
    else p.resolve(msg.return);
  }

  private shutdown(err: Error | undefined): void {
    if (this.closedWith !== null) return;
    this.closedWith = err;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`QMP ${p.command}: connection closed${err ? ` (${err.message})` : ''}`));
      this.pending.delete(id);
    }
    this.emit('close', err);
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  /** Runs a command; rejects with QmpError for a QMP error reply, or on timeout/close. */
  execute<T = any>(command: string, args?: Record<string, unknown>, timeoutMs = this.commandTimeoutMs): Promise<T> {
    if (this.closedWith !== null) return Promise.reject(new Error(`QMP ${command}: connection closed`));
    const id = `kv${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`QMP ${command}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /**
   * Resolves with the next event of that name matching `match`. Register it
   * before sending the command that causes the event, or it may be missed.
   */
  waitEvent(name: string, match: (e: QmpEvent) => boolean = () => true, timeoutMs = this.commandTimeoutMs): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const onEvent = (e: QmpEvent) => {
        if (e.event === name && match(e)) {
          cleanup();
          resolve(e);
        }
      };
      const onClose = () => {
        cleanup();
        reject(new Error(`QMP: connection closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`QMP: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  close(): void {
    this.sock.destroy();
    this.shutdown(undefined);
  }
}

function openSocket(path: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error(`connect ${path} timed out`), { code: 'EAGAIN' }));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
