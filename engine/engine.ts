import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import * as YAML from 'yaml';
import { startServer } from '../provider/server';
import { statusPb } from '../provider/proto';
import { deepEqual, type Json } from '../provider/values';
import { emptyPb, enginePb, engineRpc, fromStruct, grpc, providerPb, providerRpc, pulumiRunDir, resourcePb, resourceRpc, toStruct } from './rpc';
import { StateStore, createOrder, deleteOrder, type ResourceState, type StateFile } from './state';
import { formatChange, getPath, shallowChanges, type DiffKind, type PropertyChange } from './display';

/**
 * The local engine: runs a Pulumi TypeScript program without the Pulumi CLI.
 *
 * It serves the Engine and ResourceMonitor gRPC services, runs the program in a
 * child node process through `@pulumi/pulumi/cmd/run` (TypeScript through tsx,
 * `@kubevm/pulumi` resolved to this repository's sdk/nodejs by a shim package in a
 * temporary NODE_PATH directory), and forwards each RegisterResource to the kubevm
 * provider (served in-process by provider/server.ts, called over the real wire):
 * Check, then Create, or Diff and Update / replace. Resources in the state file that
 * the program no longer declares are deleted after it exits, dependents first.
 * Previews call the same RPCs with `preview` set and never write the state file.
 */
export type Operation = 'preview' | 'up' | 'refresh' | 'destroy';

export interface EngineOptions {
  /** The program: a directory with Pulumi.yaml and index.ts. */
  programDir: string;
  /** Default `<programDir>/.kubevm-state.json`. */
  statePath?: string;
  /** Default `dev`. */
  stack?: string;
  /** Provider configuration for the default kubevm provider (else `kubevm:*` program config, else the usual places). */
  kubeconfig?: string;
  /** Used when neither `kubeconfig` nor `kubevm:kubeconfig` config is set (the CLI passes the embedded cluster's). */
  defaultKubeconfig?: string;
  namespace?: string;
  context?: string;
  /** Program configuration, `key` (= `<project>:key`) or `ns:key` → value. */
  config?: Record<string, string>;
  /** Extra environment for the program. */
  env?: Record<string, string>;
  /** preview/up: refresh (Read) every resource first; the refreshed state is saved only by `up`. */
  refresh?: boolean;
  /** Where the progress lines go (default stdout). */
  out?: (line: string) => void;
  /** Gives up on the program after this long (default 30 min). */
  timeoutMs?: number;
}

export type StepOp = 'create' | 'update' | 'replace' | 'delete' | 'same' | 'refresh';

export interface Step {
  op: StepOp;
  urn: string;
  type: string;
  name: string;
  changes: PropertyChange[];
}

export interface EngineResult {
  ok: boolean;
  steps: Step[];
  /** Steps that change something (everything but `same`, and refreshes that found nothing). */
  changes: number;
  errors: string[];
  summary: string;
}

const PB = providerPb as any;
const RPB = resourcePb as any;
const KIND_NAMES: Record<number, DiffKind> = Object.fromEntries(Object.entries(PB.PropertyDiff.Kind).map(([k, v]) => [v as number, k as DiffKind]));
const ROOT = path.resolve(__dirname, '..');
const STACK_TYPE = 'pulumi:pulumi:Stack';

export async function runEngine(op: Operation, opts: EngineOptions): Promise<EngineResult> {
  const d = new Deployment(op, opts);
  try {
    return await d.run();
  } finally {
    await d.close();
  }
}

interface Project {
  name: string;
  main?: string;
  config: Record<string, string>;
}

function readProject(dir: string, stack: string): Project {
  const file = ['Pulumi.yaml', 'Pulumi.yml'].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  if (!file) throw new Error(`${dir}: no Pulumi.yaml (a program directory needs Pulumi.yaml and index.ts)`);
  const doc = YAML.parse(fs.readFileSync(file, 'utf8')) ?? {};
  if (typeof doc.name !== 'string' || !doc.name) throw new Error(`${file}: needs a name`);
  if (doc.runtime !== undefined && (typeof doc.runtime === 'string' ? doc.runtime : doc.runtime?.name) !== 'nodejs') {
    throw new Error(`${file}: runtime ${JSON.stringify(doc.runtime)} is not supported (only nodejs)`);
  }
  const config: Record<string, string> = {};
  const put = (k: string, v: unknown) => {
    if (v === undefined || v === null) return;
    if (typeof v === 'object' && 'secure' in (v as object)) throw new Error(`config ${k}: encrypted (secure) values are not supported by the local engine`);
    config[k.includes(':') ? k : `${doc.name}:${k}`] = typeof v === 'string' ? v : JSON.stringify(v);
  };
  // Project-level defaults, then the stack file.
  for (const [k, v] of Object.entries<any>(doc.config ?? {})) put(k, v && typeof v === 'object' && 'default' in v ? v.default : v && typeof v === 'object' && 'value' in v ? v.value : v);
  const stackFile = path.join(dir, `Pulumi.${stack}.yaml`);
  if (fs.existsSync(stackFile)) for (const [k, v] of Object.entries<any>(YAML.parse(fs.readFileSync(stackFile, 'utf8'))?.config ?? {})) put(k, v);
  return { name: doc.name, main: typeof doc.main === 'string' ? doc.main : undefined, config };
}

const unique = <T>(xs: T[]): T[] => [...new Set(xs)];

class Deployment {
  private readonly dir: string;
  private readonly stack: string;
  private readonly out: (line: string) => void;
  private project!: Project;
  private store!: StateStore;
  private state!: StateFile;
  /** The live view: old state, updated as steps finish. */
  private current = new Map<string, ResourceState>();
  private registered: string[] = [];
  private readonly steps: Step[] = [];
  private readonly errors: string[] = [];
  private readonly pending = new Set<Promise<unknown>>();
  private server?: any;
  private provider?: { server: any };
  private client?: any;
  private child?: ChildProcess;
  private tmp?: string;
  private stackUrn = '';

  constructor(
    private readonly op: Operation,
    private readonly opts: EngineOptions,
  ) {
    this.dir = path.resolve(opts.programDir);
    this.stack = opts.stack ?? 'dev';
    this.out = opts.out ?? ((l) => process.stdout.write(l + '\n'));
  }

  private get dryRun(): boolean {
    return this.op === 'preview';
  }

  async run(): Promise<EngineResult> {
    this.project = readProject(this.dir, this.stack);
    for (const [k, v] of Object.entries(this.opts.config ?? {})) this.project.config[k.includes(':') ? k : `${this.project.name}:${k}`] = v;
    this.store = new StateStore(path.resolve(this.opts.statePath ?? path.join(this.dir, '.kubevm-state.json')));
    this.state = this.store.load(this.project.name, this.stack);
    for (const r of this.state.resources) this.current.set(r.urn, r);
    const verb = { preview: 'Previewing update', up: 'Updating', refresh: 'Refreshing', destroy: 'Destroying' }[this.op];
    this.out(`${verb} (${this.project.name}/${this.stack}), state ${this.store.file}`);

    await this.startServers();
    await this.configureProvider();

    if (this.op === 'refresh' || this.opts.refresh) {
      await this.refresh();
      if (this.op !== 'preview') this.save();
    }
    if (this.op === 'destroy') {
      for (const r of deleteOrder([...this.current.values()])) await this.step(() => this.delete(r));
    } else if (this.op !== 'refresh') {
      const code = await this.runProgram();
      await Promise.allSettled([...this.pending]);
      if (code !== 0 && !this.errors.length) this.errors.push(`the program exited with code ${code}`);
      if (!this.errors.length) {
        const gone = [...this.current.values()].filter((r) => !this.registered.includes(r.urn));
        for (const r of deleteOrder(gone)) await this.step(() => this.delete(r));
      }
    }
    return this.result();
  }

  private result(): EngineResult {
    const count = (o: StepOp) => this.steps.filter((s) => s.op === o).length;
    const changes = this.steps.filter((s) => s.op !== 'same' && !(s.op === 'refresh' && !s.changes.length)).length;
    const words: [StepOp, string, string][] = [
      ['create', 'to create', 'created'],
      ['update', 'to update', 'updated'],
      ['replace', 'to replace', 'replaced'],
      ['delete', 'to delete', 'deleted'],
      ['refresh', 'to refresh', 'refreshed'],
      ['same', 'unchanged', 'unchanged'],
    ];
    const parts = words.filter(([o]) => count(o)).map(([o, p, d]) => `${count(o)} ${this.dryRun ? p : d}`);
    const summary = `Resources: ${parts.length ? parts.join(', ') : 'none'}${this.errors.length ? `; ${this.errors.length} error(s)` : ''}`;
    this.out(summary);
    return { ok: this.errors.length === 0, steps: this.steps, changes, errors: this.errors, summary };
  }

  /** Runs one state-changing step; errors are recorded (and the remaining deletes still run). */
  private async step(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.error('', (e as Error).message);
    }
  }

  private error(urn: string, message: string): void {
    this.errors.push(urn ? `${urn}: ${message}` : message);
    this.out(`error: ${urn ? `${shortName(urn)}: ` : ''}${message}`);
  }

  private record(s: Step): void {
    this.steps.push(s);
    if (s.op === 'same') return;
    const sym = { create: '+', update: '~', replace: '+-', delete: '-', same: ' ', refresh: '~' }[s.op];
    if (s.op === 'refresh' && !s.changes.length) return;
    this.out(`${sym} ${s.type} ${s.name} ${this.dryRun ? s.op : pastTense(s.op)}`);
    for (const c of s.changes) this.out(`    ${formatChange(c)}`);
  }

  private save(): void {
    if (this.dryRun) return;
    const order = [...this.registered.filter((u) => this.current.has(u)), ...[...this.current.keys()].filter((u) => !this.registered.includes(u))];
    this.state.resources = createOrder(order.map((u) => this.current.get(u)!));
    this.store.save(this.state);
  }

  // ---- servers and the provider -------------------------------------------------

  private async startServers(): Promise<void> {
    this.server = new grpc.Server({ 'grpc.max_receive_message_length': 400 * 1024 * 1024 });
    this.server.addService((engineRpc as any).EngineService, {
      log: (call: any, cb: any) => {
        this.log(call.request);
        cb(null, new emptyPb.Empty());
      },
      getRootResource: (_call: any, cb: any) => cb(null, new (enginePb as any).GetRootResourceResponse().setUrn(this.stackUrn)),
      setRootResource: (call: any, cb: any) => {
        this.stackUrn = call.request.getUrn();
        cb(null, new (enginePb as any).SetRootResourceResponse());
      },
    });
    this.server.addService(resourceRpc.ResourceMonitorService, {
      supportsFeature: (call: any, cb: any) => cb(null, new RPB.SupportsFeatureResponse().setHassupport(['secrets'].includes(call.request.getId()))),
      registerResource: this.unary((req) => this.register(req)),
      registerResourceOutputs: this.unary(() => new emptyPb.Empty()),
      invoke: this.unary((req) => this.invoke(req)),
      signalAndWaitForShutdown: this.unary(() => new emptyPb.Empty()),
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e: Error | null, p: number) => (e ? reject(e) : resolve(p))),
    );
    this.address = `127.0.0.1:${port}`;
    const p = await startServer({ engineAddress: this.address });
    this.provider = p;
    this.client = new (providerRpc as any).ResourceProviderClient(`127.0.0.1:${p.port}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 400 * 1024 * 1024,
    });
  }

  private address = '';

  private unary(fn: (req: any) => Promise<any> | any): (call: any, cb: any) => void {
    return (call, cb) => {
      const p = Promise.resolve()
        .then(() => fn(call.request))
        .then(
          (res) => cb(null, res),
          (e) => cb({ code: grpc.status.UNKNOWN, message: (e as Error).message ?? String(e) }, null),
        );
      this.pending.add(p);
      void p.finally(() => this.pending.delete(p));
    };
  }

  private log(req: any): void {
    const sev = ['debug', 'info', 'warning', 'error'][req.getSeverity()] ?? 'info';
    if (sev === 'debug') return;
    const urn: string = req.getUrn();
    const msg = `${sev}: ${urn ? `${shortName(urn)}: ` : ''}${req.getMessage().trimEnd()}`;
    if (sev === 'error') this.errors.push(urn ? `${urn}: ${req.getMessage()}` : req.getMessage());
    this.out(req.getEphemeral() ? `    ${msg}` : msg);
  }

  private rpc<T = any>(method: string, req: any): Promise<T> {
    return new Promise((resolve, reject) => this.client[method](req, (err: any, res: any) => (err ? reject(err) : resolve(res))));
  }

  private async configureProvider(): Promise<void> {
    const cfg = this.project.config;
    const args: Record<string, string> = {};
    for (const k of ['kubeconfig', 'context', 'namespace'] as const) {
      const v = this.opts[k] ?? cfg[`kubevm:${k}`];
      if (v) args[k] = v;
    }
    if (!args.kubeconfig && this.opts.defaultKubeconfig) args.kubeconfig = this.opts.defaultKubeconfig;
    await this.rpc('configure', new PB.ConfigureRequest().setArgs(toStruct(args)).setAcceptsecrets(true).setAcceptresources(true));
  }

  // ---- the program ----------------------------------------------------------------

  private entryPoint(): string {
    if (this.project.main) return path.resolve(this.dir, this.project.main);
    for (const f of ['index.ts', 'index.js']) if (fs.existsSync(path.join(this.dir, f))) return path.join(this.dir, f);
    throw new Error(`${this.dir}: no index.ts (or main in Pulumi.yaml)`);
  }

  /**
   * A NODE_PATH directory where `@kubevm/pulumi` is this repository's SDK, transpiled
   * with TypeScript itself: the generated SDK assigns lazy getters to `exports`, which
   * esbuild's (tsx's) CommonJS output does not keep, so tsx cannot load it from source.
   */
  private shimDir(): string {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kubevm-engine-'));
    const pkg = path.join(this.tmp, 'node_modules', '@kubevm', 'pulumi');
    const sdk = path.join(ROOT, 'sdk', 'nodejs');
    const ts: typeof import('typescript') = require('typescript');
    const walk = (rel: string): void => {
      for (const e of fs.readdirSync(path.join(sdk, rel), { withFileTypes: true })) {
        const r = path.join(rel, e.name);
        if (e.isDirectory()) {
          if (e.name !== 'node_modules' && e.name !== 'bin') walk(r);
        } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
          const out = ts.transpileModule(fs.readFileSync(path.join(sdk, r), 'utf8'), {
            fileName: r,
            compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020, esModuleInterop: true },
          });
          fs.mkdirSync(path.dirname(path.join(pkg, r)), { recursive: true });
          fs.writeFileSync(path.join(pkg, r.replace(/\.ts$/, '.js')), out.outputText);
        }
      }
    };
    walk('.');
    const meta = JSON.parse(fs.readFileSync(path.join(sdk, 'package.json'), 'utf8'));
    fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ ...meta, main: 'index.js', types: undefined }, null, 2));
    return path.join(this.tmp, 'node_modules');
  }

  private runProgram(): Promise<number> {
    const entry = this.entryPoint();
    const nodePath = [this.shimDir(), path.join(ROOT, 'node_modules'), process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.opts.env };
    for (const k of Object.keys(env)) if (k.startsWith('PULUMI_NODEJS_')) delete env[k];
    // tsx looks for a tsconfig up the tree; a parent's `paths` must not redirect @kubevm/pulumi to the SDK source.
    const own = path.join(this.dir, 'tsconfig.json');
    const tsconfig = fs.existsSync(own) ? own : path.join(this.tmp!, 'tsconfig.json');
    if (tsconfig !== own) fs.writeFileSync(tsconfig, JSON.stringify({ compilerOptions: { module: 'commonjs', target: 'ES2022', esModuleInterop: true, strict: true } }));
    Object.assign(env, {
      TSX_TSCONFIG_PATH: tsconfig,
      NODE_PATH: nodePath,
      PULUMI_CONFIG: JSON.stringify(this.project.config),
      PULUMI_CONFIG_SECRET_KEYS: '[]',
    });
    const args = [
      '--require',
      require.resolve('tsx/cjs'),
      pulumiRunDir,
      '--monitor',
      this.address,
      '--engine',
      this.address,
      '--project',
      this.project.name,
      '--stack',
      this.stack,
      '--organization',
      'organization',
      '--dry-run',
      String(this.dryRun),
      '--parallel',
      '16',
      entry,
    ];
    const child = spawn(process.execPath, args, { cwd: this.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const lines = (prefix: string) => {
      let buf = '';
      return (d: Buffer) => {
        buf += d.toString();
        const parts = buf.split('\n');
        buf = parts.pop()!;
        for (const l of parts) this.out(`${prefix}${l}`);
      };
    };
    child.stdout!.on('data', lines('program: '));
    child.stderr!.on('data', lines('program: '));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the program did not finish within ${(this.opts.timeoutMs ?? 1_800_000) / 1000} s`));
      }, this.opts.timeoutMs ?? 1_800_000);
      child.on('error', reject);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        resolve(code ?? (signal ? 128 : 1));
      });
    });
  }

  private urn(parent: string, type: string, name: string): string {
    let qualified = type;
    if (parent && parent !== this.stackUrn) {
      const parentType = parent.split('::')[2];
      if (parentType && parentType !== STACK_TYPE) qualified = `${parentType}$${type}`;
    }
    return `urn:pulumi:${this.stack}::${this.project.name}::${qualified}::${name}`;
  }

  private async invoke(req: any): Promise<any> {
    const res = await this.rpc('invoke', new PB.InvokeRequest().setTok(req.getTok()).setArgs(req.getArgs()).setPreview(this.dryRun));
    return res;
  }

  private async register(req: any): Promise<any> {
    const type: string = req.getType();
    const name: string = req.getName();
    const parent: string = req.getParent();
    const urn = this.urn(parent, type, name);
    const reply = (id: string, outputs: Record<string, Json>) => new RPB.RegisterResourceResponse().setUrn(urn).setId(id).setObject(toStruct(outputs));
    if (!req.getCustom()) {
      if (type === STACK_TYPE) this.stackUrn = urn;
      return reply('', {});
    }
    if (type.startsWith('pulumi:providers:')) {
      throw new Error(`${name}: explicit provider resources are not supported by the local engine; configure the default provider (--kubeconfig, --namespace, or kubevm:* config)`);
    }
    if (!type.startsWith('kubevm:')) throw new Error(`${type} ${name}: the local engine runs kubevm resources only`);
    if (req.getImportid()) throw new Error(`${name}: import is not supported by the local engine`);
    if (this.registered.includes(urn)) throw new Error(`duplicate resource URN ${urn}`);
    this.registered.push(urn);

    const propertyDeps: string[] = [];
    req.getPropertydependenciesMap().forEach((v: any) => propertyDeps.push(...v.getUrnsList()));
    const dependencies = unique([...req.getDependenciesList(), ...propertyDeps, ...(parent && parent !== this.stackUrn ? [parent] : [])]);
    const news = fromStruct(req.getObject()) ?? {};
    const ignoreChanges: string[] = req.getIgnorechangesList();
    const old = this.current.get(urn);
    try {
      const inputs = await this.check(urn, old?.inputs ?? {}, news);
      if (!old) {
        const made = await this.create(urn, type, name, inputs, dependencies);
        return reply(this.dryRun ? '' : made.id, made.outputs);
      }
      const diff = await this.diff(old, inputs, ignoreChanges);
      if (diff.changes !== PB.DiffResponse.DiffChanges.DIFF_SOME && !diff.replaces.length) {
        this.record({ op: 'same', urn, type, name, changes: [] });
        if (!this.dryRun) {
          this.current.set(urn, { ...old, inputs, dependencies });
          this.save();
        }
        return reply(old.id, old.outputs);
      }
      if (diff.replaces.length) return reply(...(await this.replace(old, inputs, dependencies, diff)));
      const res = await this.rpc(
        'update',
        new PB.UpdateRequest()
          .setUrn(urn)
          .setId(old.id)
          .setOlds(toStruct(old.outputs))
          .setNews(toStruct(inputs))
          .setOldInputs(toStruct(old.inputs))
          .setIgnorechangesList(ignoreChanges)
          .setPreview(this.dryRun),
      );
      const outputs = fromStruct(res.getProperties()) ?? {};
      this.record({ op: 'update', urn, type, name, changes: diff.changed });
      if (!this.dryRun) {
        this.current.set(urn, { ...old, inputs, outputs, dependencies });
        this.save();
      }
      return reply(old.id, outputs);
    } catch (e) {
      const message = grpcMessage(e);
      this.error(urn, message);
      throw new Error(message);
    }
  }

  private async check(urn: string, olds: Record<string, Json>, news: Record<string, Json>): Promise<Record<string, Json>> {
    const res = await this.rpc('check', new PB.CheckRequest().setUrn(urn).setOlds(toStruct(olds)).setNews(toStruct(news)));
    const failures = res.getFailuresList().map((f: any) => `${f.getProperty() || '(resource)'}: ${f.getReason()}`);
    if (failures.length) throw new Error(`invalid inputs:\n  ${failures.join('\n  ')}`);
    return fromStruct(res.getInputs()) ?? {};
  }

  private async diff(old: ResourceState, inputs: Record<string, Json>, ignoreChanges: string[] = []) {
    const res = await this.rpc(
      'diff',
      new PB.DiffRequest().setUrn(old.urn).setId(old.id).setOlds(toStruct(old.outputs)).setNews(toStruct(inputs)).setOldInputs(toStruct(old.inputs)).setIgnorechangesList(ignoreChanges),
    );
    const changed: PropertyChange[] = [];
    res.getDetaileddiffMap().forEach((v: any, p: string) => changed.push({ path: p, kind: KIND_NAMES[v.getKind()], old: getPath(old.outputs, p), new: getPath(inputs, p) }));
    changed.sort((a, b) => a.path.localeCompare(b.path));
    if (!res.getHasdetaileddiff()) for (const p of res.getDiffsList()) changed.push({ path: p, kind: 'UPDATE', old: getPath(old.outputs, p), new: getPath(inputs, p) });
    return { changes: res.getChanges() as number, changed, replaces: res.getReplacesList() as string[], deleteBeforeReplace: res.getDeletebeforereplace() as boolean };
  }

  private async create(urn: string, type: string, name: string, inputs: Record<string, Json>, dependencies: string[], record = true): Promise<{ id: string; outputs: Record<string, Json> }> {
    let res: any;
    try {
      res = await this.rpc('create', new PB.CreateRequest().setUrn(urn).setProperties(toStruct(inputs)).setPreview(this.dryRun));
    } catch (e) {
      // Created but not ready: keep it in the state (with its id) so the next run can update or delete it.
      const failed = initFailed(e);
      if (failed && !this.dryRun) {
        this.current.set(urn, { urn, type, id: failed.id, inputs, outputs: failed.props, dependencies });
        this.save();
      }
      throw e;
    }
    const made = { id: res.getId() as string, outputs: fromStruct(res.getProperties()) ?? {} };
    if (record) this.record({ op: 'create', urn, type, name, changes: [] });
    if (!this.dryRun) {
      this.current.set(urn, { urn, type, id: made.id, inputs, outputs: made.outputs, dependencies });
      this.save();
    }
    return made;
  }

  private async replace(old: ResourceState, inputs: Record<string, Json>, dependencies: string[], diff: { changed: PropertyChange[]; deleteBeforeReplace: boolean }): Promise<[string, Record<string, Json>]> {
    const name = shortName(old.urn);
    this.record({ op: 'replace', urn: old.urn, type: old.type, name, changes: diff.changed });
    if (this.dryRun) {
      const made = await this.create(old.urn, old.type, name, inputs, dependencies, false);
      return ['', made.outputs];
    }
    if (diff.deleteBeforeReplace) {
      await this.deleteResource(old);
      this.current.delete(old.urn);
      this.save();
      const made = await this.create(old.urn, old.type, name, inputs, dependencies, false);
      return [made.id, made.outputs];
    }
    const made = await this.create(old.urn, old.type, name, inputs, dependencies, false);
    if (made.id !== old.id) await this.deleteResource(old);
    return [made.id, made.outputs];
  }

  private async deleteResource(r: ResourceState): Promise<void> {
    await this.rpc('delete', new PB.DeleteRequest().setUrn(r.urn).setId(r.id).setProperties(toStruct(r.outputs)).setOldInputs(toStruct(r.inputs)));
  }

  private async delete(r: ResourceState): Promise<void> {
    this.record({ op: 'delete', urn: r.urn, type: r.type, name: shortName(r.urn), changes: [] });
    if (this.dryRun) return;
    try {
      await this.deleteResource(r);
    } catch (e) {
      throw new Error(`${r.urn}: ${grpcMessage(e)}`);
    }
    this.current.delete(r.urn);
    this.save();
  }

  /** Read every resource; a resource that is gone leaves the state. */
  private async refresh(): Promise<void> {
    for (const r of createOrder([...this.current.values()])) {
      await this.step(async () => {
        let res: any;
        try {
          res = await this.rpc('read', new PB.ReadRequest().setUrn(r.urn).setId(r.id).setProperties(toStruct(r.outputs)).setInputs(toStruct(r.inputs)));
        } catch (e) {
          throw new Error(`${r.urn}: ${grpcMessage(e)}`);
        }
        const name = shortName(r.urn);
        if (!res.getId()) {
          this.record({ op: 'refresh', urn: r.urn, type: r.type, name, changes: [{ path: '(resource)', kind: 'DELETE', old: r.id }] });
          this.current.delete(r.urn);
          return;
        }
        const outputs = fromStruct(res.getProperties()) ?? {};
        const inputs = fromStruct(res.getInputs()) ?? r.inputs;
        this.record({ op: 'refresh', urn: r.urn, type: r.type, name, changes: shallowChanges(r.outputs, outputs, deepEqual) });
        this.current.set(r.urn, { ...r, id: res.getId(), inputs, outputs });
      });
    }
  }

  async close(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    this.client?.close();
    this.provider?.server.forceShutdown();
    this.server?.forceShutdown();
    if (this.tmp) fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

function shortName(urn: string): string {
  return urn.split('::').pop() ?? urn;
}

function pastTense(op: StepOp): string {
  return { create: 'created', update: 'updated', replace: 'replaced', delete: 'deleted', same: 'unchanged', refresh: 'refreshed' }[op];
}

function grpcMessage(e: unknown): string {
  const err = e as { details?: string; message?: string };
  return err?.details || err?.message || String(e);
}

/** The ErrorResourceInitFailed detail of a failed Create: the resource exists, but is not ready. */
function initFailed(e: unknown): { id: string; props: Record<string, Json> } | undefined {
  const md = (e as { metadata?: any })?.metadata;
  const bin = md?.get?.('grpc-status-details-bin')?.[0];
  if (!bin) return undefined;
  try {
    const status = statusPb.Status.deserializeBinary(bin);
    for (const any of status.getDetailsList()) {
      if (!String(any.getTypeUrl()).endsWith('pulumirpc.ErrorResourceInitFailed')) continue;
      const d = PB.ErrorResourceInitFailed.deserializeBinary(any.getValue_asU8());
      if (d.getId()) return { id: d.getId(), props: fromStruct(d.getProperties()) ?? {} };
    }
  } catch {
    return undefined;
  }
  return undefined;
}
