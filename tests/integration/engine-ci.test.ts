import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import * as YAML from 'yaml';
import { startTestCluster, TestCluster, tempDir } from '../helpers/cluster';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { runEngine } from '../../engine/engine';

/**
 * examples/ci: the workflow says what its README says (triggers, schedule, jobs,
 * runners, commands), and the local-engine drift check really behaves as a CI gate:
 * the `up-local` and `drift-local` commands, run as written (npx, no shell), against
 * an embedded cluster with sim nodes: exit 0 without drift, 1 after a kubectl edit.
 */
const ROOT = path.resolve(__dirname, '../..');
const CI = path.join(ROOT, 'examples/ci');
const workflow = YAML.parse(fs.readFileSync(path.join(CI, '.github/workflows/vms.yml'), 'utf8'));
const readme = fs.readFileSync(path.join(CI, 'README.md'), 'utf8');

/** The README's job table: job → {when, runsOn, command}. */
function readmeJobs(): Record<string, { when: string; runsOn: string; command: string }> {
  const out: Record<string, { when: string; runsOn: string; command: string }> = {};
  const rows = readme.split('\n').filter((l) => /^\| `[a-z-]+` \|/.test(l));
  for (const row of rows) {
    const cells = row.split(' | ').map((c) => c.replace(/^\| /, '').replace(/ \|$/, '').trim());
    const unquote = (c: string) => c.replace(/^`/, '').replace(/`$/, '');
    out[unquote(cells[0])] = { when: cells[1], runsOn: unquote(cells[2]), command: unquote(cells[3]) };
  }
  return out;
}

/** The last `run:` of a job: its command. */
const jobCommand = (id: string): string => {
  const runs = (workflow.jobs[id].steps as any[]).filter((s) => typeof s.run === 'string');
  return runs[runs.length - 1].run.trim();
};

/** Splits a one-line command as sh would for the simple words used here: double quotes, $VAR expansion. */
function words(command: string, env: Record<string, string>): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(command))) {
    const raw = m[1] ?? m[2];
    if (m[2] !== undefined && /["'`\\;|&<>()]/.test(raw))
      throw new Error(`unsupported shell syntax in ${JSON.stringify(command)}`);
    out.push(
      raw.replace(/\$\{?([A-Z_][A-Z0-9_]*)\}?/g, (_, v: string) => {
        if (env[v] === undefined) throw new Error(`${command}: $${v} is not set`);
        return env[v];
      }),
    );
  }
  return out;
}

describe('the workflow matches the README', () => {
  test('triggers: pushes to main, the documented schedule, and manual runs', () => {
    expect(workflow.on.push).toEqual({ branches: ['main'] });
    const cron = workflow.on.schedule.map((s: any) => s.cron);
    expect(cron).toEqual(['17 */6 * * *']);
    expect(readme).toContain(`The schedule is \`${cron[0]}\``);
    expect(workflow.on).toHaveProperty('workflow_dispatch');
    expect(workflow.concurrency).toEqual({ group: 'vms', 'cancel-in-progress': false });
  });

  test('the jobs, when they run, where, and their commands are the table in the README', () => {
    const documented = readmeJobs();
    expect(Object.keys(documented).sort()).toEqual(Object.keys(workflow.jobs).sort());
    for (const [id, doc] of Object.entries(documented)) {
      const job = workflow.jobs[id];
      expect({ id, command: jobCommand(id) }).toEqual({ id, command: doc.command });
      const runsOn = Array.isArray(job['runs-on']) ? `[${job['runs-on'].join(', ')}]` : job['runs-on'];
      expect({ id, runsOn }).toEqual({ id, runsOn: doc.runsOn });
      const engine = id.endsWith('-local') ? "vars.KUBEVM_ENGINE == 'local'" : "vars.KUBEVM_ENGINE != 'local'";
      expect(job.if).toContain(engine);
      if (doc.when === 'push to `main`') {
        expect(job.if).toMatch(/^github\.event_name == 'push' && /);
      } else {
        expect(doc.when).toBe('schedule, or run by hand');
        expect(job.if).toContain("(github.event_name == 'schedule' || github.event_name == 'workflow_dispatch')");
      }
    }
  });

  test('the drift checks are previews with --refresh and --expect-no-changes; the deploys are ups', () => {
    expect(jobCommand('drift')).toMatch(/^pulumi preview --refresh --expect-no-changes /);
    expect(jobCommand('drift-local')).toMatch(/^npx kubevm preview --refresh --expect-no-changes /);
    expect(jobCommand('up')).toMatch(/^pulumi up --yes /);
    expect(jobCommand('up-local')).toMatch(/^npx kubevm up /);
    // The Pulumi jobs run in the program's directory; the local ones name it.
    for (const id of ['up', 'drift']) expect(workflow.jobs[id].steps.at(-1)['working-directory']).toBe('examples/fleet');
    for (const id of ['up-local', 'drift-local'])
      expect(words(jobCommand(id), { KUBEVM_STATE_DIR: '/s' })).toContain('examples/fleet');
  });
});

describe('the local-engine commands against a real cluster', () => {
  let c: TestCluster;
  let rt: Runtime;
  let stateDir: string;
  let env: Record<string, string>;

  /** Runs a job's command as written, with `npx --no-install` (never fetch a package), in the repository root. */
  const runJob = (id: string): Promise<{ code: number; out: string }> => {
    const [npx, ...args] = words(jobCommand(id), env);
    expect(npx).toBe('npx');
    return new Promise((resolve, reject) => {
      const child = spawn('npx', ['--no-install', ...args], {
        cwd: ROOT,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code: code ?? 1, out }));
    });
  };

  beforeAll(async () => {
    c = await startTestCluster();
    rt = await startSimRuntime(c, { nodeCapacity: { cpu: 16, memoryBytes: 16 * 2 ** 30 } });
    stateDir = tempDir();
    // What the self-hosted runner's job env provides, pointed at this test's cluster and a temporary state directory.
    env = { KUBECONFIG: c.kubeconfigPath, KUBEVM_STATE_DIR: stateDir, KUBEVM_STATE_PASSPHRASE: 'ci-test-passphrase' };
  }, 60_000);

  afterAll(async () => {
    await rt?.stop();
    await c?.cleanup();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }, 60_000);

  test('up-local deploys the fleet; drift-local then exits 0', async () => {
    const up = await runJob('up-local');
    expect(up.out).toContain('Resources: 11 created');
    expect(up.code).toBe(0);
    expect(fs.existsSync(path.join(stateDir, 'fleet-prod.json'))).toBe(true);
    const drift = await runJob('drift-local');
    expect(drift.out).toContain('Resources: 11 unchanged');
    expect(drift.code).toBe(0);
  }, 180_000);

  test('after an out-of-band kubectl edit, drift-local exits non-zero and names the field', async () => {
    const patched = await c.kubectl(['patch', 'vm', 'fleet-db-1', '--type', 'merge', '-p', '{"spec":{"memory":"512Mi"}}']);
    expect(patched.code).toBe(0);
    const drift = await runJob('drift-local');
    expect(drift.code).toBe(1);
    // The refresh finds the edit; the preview would put the program's value back.
    expect(drift.out).toContain('~ kubevm:index:VirtualMachine fleet-db-1 refresh\n    ~ memory: "384Mi" => "512Mi"\n');
    expect(drift.out).toContain('~ kubevm:index:VirtualMachine fleet-db-1 update\n    ~ memory: "512Mi" => "384Mi"\n');
    expect(drift.out).toContain('Resources: 1 to update, 1 to refresh, 10 unchanged');
    expect(drift.out).toContain('kubevm preview: --expect-no-changes: 2 change(s) found');
  }, 120_000);

  test('the same state destroys the fleet', async () => {
    process.env.KUBEVM_STATE_PASSPHRASE = env.KUBEVM_STATE_PASSPHRASE;
    try {
      const r = await runEngine('destroy', {
        programDir: path.join(ROOT, 'examples/fleet'),
        stack: 'prod',
        statePath: path.join(stateDir, 'fleet-prod.json'),
        kubeconfig: c.kubeconfigPath,
        out: () => undefined,
      });
      expect(r.errors).toEqual([]);
    } finally {
      delete process.env.KUBEVM_STATE_PASSPHRASE;
    }
    expect((await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines')).json.items).toEqual([]);
  }, 60_000);
});
