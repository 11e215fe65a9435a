import * as fs from 'node:fs';

/**
 * Follows a VM's console log and hands each complete line to `onLine`. QEMU
 * appends to the file itself (chardev logfile), so we only read: inotify
 * (fs.watch) for promptness, a slow poll as a safety net because inotify can
 * miss events on some filesystems.
 */
export class ConsoleFollower {
  private offset = 0;
  private partial = '';
  private watcher?: fs.FSWatcher;
  private timer?: NodeJS.Timeout;
  private reading = false;

  constructor(
    private readonly file: string,
    private readonly onLine: (line: string) => void,
    pollMs = 500,
  ) {
    try {
      this.watcher = fs.watch(file, () => this.read());
      this.watcher.on('error', () => undefined);
    } catch {
      /* file not there yet: the poll covers it */
    }
    this.timer = setInterval(() => this.read(), pollMs);
    this.timer.unref();
    this.read();
  }

  /** Reads whatever was appended since the last call (synchronously: lines are small). */
  read(): void {
    if (this.reading) return;
    this.reading = true;
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.file, 'r');
      const size = fs.fstatSync(fd).size;
      if (size < this.offset) this.offset = 0; // truncated or replaced
      while (this.offset < size) {
        const buf = Buffer.alloc(Math.min(65536, size - this.offset));
        const n = fs.readSync(fd, buf, 0, buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        const text = this.partial + buf.subarray(0, n).toString('utf8');
        const lines = text.split(/\r?\n/);
        this.partial = lines.pop() ?? '';
        for (const l of lines) this.onLine(l);
      }
    } catch {
      /* not created yet */
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
      this.reading = false;
    }
  }

  close(): void {
    this.read();
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
  }
}

export interface GuestReady {
  hostname?: string;
  ip?: string;
  /** MAC (lower case) → IPv4 address. */
  ips: Record<string, string>;
}

/**
 * Parses the test guest's ready marker (tests/guest/init):
 * `KUBEVM-GUEST-READY hostname=H ip=IP macs=MAC/IP,... uptime=S`.
 * Real guests do not print it; their IPs would come from a guest agent.
 */
export function parseReadyMarker(line: string): GuestReady | undefined {
  const i = line.indexOf('KUBEVM-GUEST-READY ');
  if (i < 0) return undefined;
  const fields: Record<string, string> = {};
  for (const kv of line
    .slice(i + 19)
    .trim()
    .split(/\s+/)) {
    const eq = kv.indexOf('=');
    if (eq > 0) fields[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const ips: Record<string, string> = {};
  for (const pair of (fields.macs ?? '').split(',')) {
    const [mac, ip] = pair.split('/');
    if (mac && ip && ip !== 'none') ips[mac.toLowerCase()] = ip;
  }
  return { hostname: fields.hostname, ip: fields.ip && fields.ip !== 'none' ? fields.ip : undefined, ips };
}

/** `KUBEVM-GUEST-NIC mac=M ip=IP`: a NIC hotplugged after boot got (or did not get) a lease. */
export function parseNicMarker(line: string): { mac: string; ip?: string } | undefined {
  const m = /KUBEVM-GUEST-NIC mac=(\S+) ip=(\S+)/.exec(line);
  return m ? { mac: m[1].toLowerCase(), ip: m[2] === 'none' ? undefined : m[2] } : undefined;
}
