import * as fs from 'node:fs';
import * as net from 'node:net';

/**
 * The test guest's serial console, for tests that drive a VM through the HAL
 * directly: read what it printed (the backend's console.log) and type commands
 * into the root shell it offers on console.sock once user-data has run.
 */
export interface ConsoleVm {
  consoleLog?: string;
  consoleSocket?: string;
}

export function consoleText(vm: ConsoleVm | undefined): string {
  try {
    return fs.readFileSync(vm!.consoleLog!, 'utf8');
  } catch {
    return '';
  }
}

/** Waits until the console (from character `from` on) matches; returns the match. */
export async function waitConsole(
  vm: () => ConsoleVm | undefined,
  re: RegExp,
  timeoutMs = 60_000,
  from = 0,
): Promise<RegExpMatchArray> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const m = consoleText(vm()).slice(from).match(re);
    if (m) return m;
    if (Date.now() > end)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for /${re.source}/ on the console; last output:\n${consoleText(vm()).slice(-800)}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

let seq = 0;

/**
 * Runs a shell command on the guest's console and returns what it printed. The
 * end marker is computed by the shell (`$((6*7))`), so the echoed command line
 * never matches it. Waits for the shell first (it starts after user-data) unless told it runs.
 */
export async function runOnConsole(
  vm: () => ConsoleVm | undefined,
  command: string,
  { timeoutMs = 60_000, waitForShell = true }: { timeoutMs?: number; waitForShell?: boolean } = {},
): Promise<string> {
  // After a migration the shell runs already, but the target's console log starts empty.
  if (waitForShell) await waitConsole(vm, /KUBEVM-USERDATA-DONE[\s\S]*# /, timeoutMs);
  const tag = `KVT${process.pid}x${++seq}`;
  const sock = net.createConnection(vm()!.consoleSocket!);
  await new Promise<void>((resolve, reject) => sock.once('connect', () => resolve()).once('error', reject));
  try {
    const from = consoleText(vm()).length;
    sock.write(`${command}; echo ${tag}-$((6*7))\n`);
    const m = await waitConsole(vm, new RegExp(`([\\s\\S]*)${tag}-42\\r?\\n`), timeoutMs, from);
    return m[1];
  } finally {
    sock.destroy();
  }
}
