import * as path from 'node:path';
import { runEngine, type EngineOptions, type Operation } from './engine';

/**
 * `kubevm up|preview|refresh|destroy [program-dir] [flags]`: the local engine's
 * command line. Resolves with the exit code: 0, 1 on errors or (with
 * --expect-no-changes) when the run found changes, 2 on bad usage.
 */
export const ENGINE_COMMANDS: readonly Operation[] = ['up', 'preview', 'refresh', 'destroy'];

export class UsageError extends Error {}

export function parseEngineArgs(
  op: Operation,
  args: string[],
  defaults: Partial<EngineOptions> = {},
): EngineOptions & { expectNoChanges: boolean } {
  const o: EngineOptions & { expectNoChanges: boolean } = { programDir: '.', expectNoChanges: false, ...defaults, config: {} };
  let dir: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const flag = a.includes('=') && a.startsWith('--') ? a.slice(0, a.indexOf('=')) : a;
    const value = (): string => {
      const v = a.startsWith('--') && a.includes('=') ? a.slice(a.indexOf('=') + 1) : args[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    if (flag === '--stack' || flag === '-s') o.stack = value();
    else if (flag === '--state') o.statePath = path.resolve(value());
    else if (flag === '--kubeconfig') o.kubeconfig = path.resolve(value());
    else if (flag === '--namespace' || flag === '-n') o.namespace = value();
    else if (flag === '--config' || flag === '-c') {
      const kv = value();
      const eq = kv.indexOf('=');
      if (eq <= 0) throw new UsageError(`${flag}: ${JSON.stringify(kv)} is not KEY=VALUE`);
      o.config![kv.slice(0, eq)] = kv.slice(eq + 1);
    } else if (flag === '--refresh' || flag === '-r') o.refresh = true;
    else if (flag === '--expect-no-changes') o.expectNoChanges = true;
    else if (a.startsWith('-')) throw new UsageError(`unknown flag ${JSON.stringify(a)}`);
    else if (dir === undefined) dir = a;
    else throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
  }
  if (op === 'destroy' && o.refresh) throw new UsageError('--refresh does not apply to destroy');
  o.programDir = path.resolve(dir ?? o.programDir);
  return o;
}

export async function engineCommand(op: Operation, args: string[], defaults: Partial<EngineOptions> = {}): Promise<number> {
  const o = parseEngineArgs(op, args, defaults);
  const r = await runEngine(op, o);
  if (!r.ok) return 1;
  if (o.expectNoChanges && r.changes > 0) {
    process.stderr.write(`kubevm ${op}: --expect-no-changes: ${r.changes} change(s) found\n`);
    return 1;
  }
  return 0;
}
