import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';

/**
 * Process plumbing shared by backends. Processes are spawned from argument
 * arrays (never a shell, so no quoting bugs and no injection through names or
 * paths), detached into their own process group with output to a log file, so
 * they outlive the agent: an agent restart must not take the VMs with it.
 */
export interface Spawned {
  pid: number;
  child: ChildProcess;
  /** Resolves when the process ends (only observable for our own children). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnDetached(
  argv: readonly string[],
  opts: { logPath: string; cwd?: string; env?: NodeJS.ProcessEnv },
): Spawned {
  if (argv.length === 0 || argv.some((a) => typeof a !== 'string'))
    throw new TypeError('argv must be a non-empty array of strings');
  const log = fs.openSync(opts.logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', log, log],
      detached: true,
      shell: false,
    });
  } finally {
    fs.closeSync(log); // the child holds its own copy
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    // spawn failures (ENOENT) arrive as 'error' without 'exit'.
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  child.unref();
  if (child.pid === undefined) {
    // Let the 'error' event fire before reporting; the caller sees the message.
    throw new Error(`cannot start ${argv[0]}: not found or not executable`);
  }
  return { pid: child.pid, child, exited };
}

/** Runs a short command to completion (argument array), returning its output. */
export function run(
  argv: readonly string[],
  timeoutMs = 10_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], shell: false, timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Like run() but rejects with the command and its stderr when it fails. */
export async function runChecked(argv: readonly string[], timeoutMs?: number): Promise<string> {
  const r = await run(argv, timeoutMs);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** Fields of /proc/<pid>/stat after the command name (which may contain spaces). */
function statFields(pid: number): string[] | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a zombie still answers kill(pid, 0)). */
export function isAlive(pid: number): boolean {
  const f = statFields(pid);
  return f !== undefined && f[0] !== 'Z' && f[0] !== 'X';
}

/**
 * Kernel start time of a process (clock ticks since boot). Together with the
 * pid it identifies a process for good: pids are reused, start times are not.
 */
export function startTime(pid: number): string | undefined {
  return statFields(pid)?.[19]; // field 22 overall; 20 after pid and comm
}

export function cmdline(pid: number): string[] | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').slice(0, -1);
  } catch {
    return undefined;
  }
}

/** A process we recorded earlier: pid, its start time and a string its argv must contain. */
export interface ProcessRecord {
  pid: number;
  startTime: string;
  /** An argument only this process has (e.g. its socket path). */
  marker: string;
}

export function recordOf(pid: number, marker: string): ProcessRecord {
  return { pid, startTime: startTime(pid) ?? '', marker };
}

/** True if the recorded process is still the one running under that pid. */
export function isSameProcess(r: ProcessRecord): boolean {
  if (!isAlive(r.pid) || startTime(r.pid) !== r.startTime) return false;
  return (cmdline(r.pid) ?? []).some((a) => a.includes(r.marker));
}

/** Signals a recorded process only if it is still that process (guards against pid reuse). */
export function signalRecorded(r: ProcessRecord, signal: NodeJS.Signals): boolean {
  if (!isSameProcess(r)) return false;
  try {
    process.kill(r.pid, signal);
    return true;
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until the process is gone or the deadline passes; true if it ended. */
export async function waitGone(pid: number, timeoutMs: number, intervalMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (!isAlive(pid)) return true;
    await sleep(intervalMs);
  }
  return !isAlive(pid);
}

/** Polls until a path exists; fails early if `alive()` says the producer died. */
export async function waitForPath(p: string, timeoutMs: number, alive: () => boolean, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fs.existsSync(p)) {
    if (!alive()) throw new Error(`${what} exited before creating ${p}`);
    if (Date.now() > end) throw new Error(`${what} did not create ${p} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** Last `bytes` of a log file, for error messages. */
export function tail(p: string, bytes = 2000): string {
  try {
    const fd = fs.openSync(p, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(bytes, size);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8').trim();
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
