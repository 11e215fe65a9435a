import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import * as YAML from 'yaml';
import { startServer } from '../provider/server';
import { statusPb } from '../provider/proto';
import { deepEqual, type Json } from '../provider/values';
import {
  emptyPb,
  enginePb,
  engineRpc,
  fromStruct,
  grpc,
  providerPb,
  providerRpc,
  pulumiRunDir,
  resourcePb,
  resourceRpc,
  toStruct,
} from './rpc';
import { StateStore, createOrder, type ResourceState, type StateFile } from './state';
import { formatChange, getPath, shallowChanges, show, type DiffKind, type PropertyChange } from './display';
import { otherPackageMessage, providerRefUrn, readTimeouts, type Timeouts } from './options';

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
 *
 * Explicit provider resources (`new kubevm.Provider(...)`) each get their own
 * provider server, configured with CheckConfig/DiffConfig/Configure; resources whose
 * `provider` option names one are routed to it. `import` reads the resource and
 * records it when the program's inputs match; `get` reads a resource and records it
 * as external (never updated or deleted). `protect` refuses deletes and replacements.
 * Stack outputs are printed and kept in the state (as the stack's entry).
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

/**
 * `import`: adopted by the `import` resource option; `read`: a `get` (external resource);
 * `discard`: an external resource the program no longer reads leaves the state (nothing is deleted).
 */
export type StepOp = 'create' | 'update' | 'replace' | 'delete' | 'same' | 'refresh' | 'import' | 'read' | 'discard';

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
  /** Steps that change something (everything but `same`, `read`, `discard`, and refreshes that found nothing). */
  changes: number;
  errors: string[];
  summary: string;
  /** The stack outputs (`export const x = …` in the program), secrets in their wire shape; empty for refresh/destroy. */
  outputs: Record<string, Json>;
}

/**
 * A state entry with the engine's per-resource options. state.ts keeps extra
 * fields as they are (it seals secrets in `inputs`/`outputs` only).
 */
export interface Resource extends ResourceState {
  /** URN of the explicit provider resource that manages it (absent: the default provider). */
  provider?: string;
  /** `protect: true`: never deleted or replaced by the engine. */
  protect?: boolean;
  /** Read with `get`: never updated or deleted, only dropped from the state. */
  external?: boolean;
  /** customTimeouts in seconds, kept for the delete that may come in a later run. */
  customTimeouts?: Timeouts;
}

/** What a registration says about a resource, besides its inputs. */
interface Goal {
  urn: string;
  type: string;
  name: string;
  dependencies: string[];
  provider?: string;
  protect?: boolean;
  customTimeouts?: Timeouts;
  ignoreChanges: string[];
}

interface ProviderHandle {
  server: any;
  client: any;
}

const PB = providerPb as any;
const RPB = resourcePb as any;
const KIND_NAMES: Record<number, DiffKind> = Object.fromEntries(
  Object.entries(PB.PropertyDiff.Kind).map(([k, v]) => [v as number, k as DiffKind]),
);
const DIFF_SOME = PB.DiffResponse.DiffChanges.DIFF_SOME;
const ROOT = path.resolve(__dirname, '..');
const STACK_TYPE = 'pulumi:pulumi:Stack';
const PROVIDER_TYPE = 'pulumi:providers:kubevm';
/** Steps that change nothing in the cluster. */
const QUIET_OPS: ReadonlySet<StepOp> = new Set(['same', 'read', 'discard']);

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
    if (typeof v === 'object' && 'secure' in (v as object))
      throw new Error(`config ${k}: encrypted (secure) values are not supported by the local engine`);
    config[k.includes(':') ? k : `${doc.name}:${k}`] = typeof v === 'string' ? v : JSON.stringify(v);
  };
  // Project-level defaults, then the stack file.
  for (const [k, v] of Object.entries<any>(doc.config ?? {}))
    put(k, v && typeof v === 'object' && 'default' in v ? v.default : v && typeof v === 'object' && 'value' in v ? v.value : v);
  const stackFile = path.join(dir, `Pulumi.${stack}.yaml`);
  if (fs.existsSync(stackFile))
    for (const [k, v] of Object.entries<any>(YAML.parse(fs.readFileSync(stackFile, 'utf8'))?.config ?? {})) put(k, v);
  return { name: doc.name, main: typeof doc.main === 'string' ? doc.main : undefined, config };
}

const unique = <T>(xs: T[]): T[] => [...new Set(xs)];

/** Create order with each resource after its explicit provider too. */
function orderWithProviders(resources: Resource[]): Resource[] {
  const byUrn = new Map(resources.map((r) => [r.urn, r]));
  const augmented = resources.map((r) => (r.provider ? { ...r, dependencies: [...r.dependencies, r.provider] } : r));
  return createOrder(augmented).map((r) => byUrn.get(r.urn)!);
}

class Deployment {
  private readonly dir: string;
  private readonly stack: string;
  private readonly out: (line: string) => void;
  private project!: Project;
  private store!: StateStore;
  private state!: StateFile;
  /** The live view: old state, updated as steps finish. */
  private current = new Map<string, Resource>();
  /** URNs the program registered or read, in order. */
  private registered: string[] = [];
  private registeredSet = new Set<string>();
  private readonly steps: Step[] = [];
  private readonly errors: string[] = [];
  private readonly pending = new Set<Promise<unknown>>();
  private server?: any;
  /** Provider servers by provider URN; '' is the default provider. */
  private readonly providers = new Map<string, Promise<ProviderHandle>>();
  private child?: ChildProcess;
  private tmp?: string;
  private stackUrn = '';
  private stackOutputs?: Record<string, Json>;
  private address = '';

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
    for (const [k, v] of Object.entries(this.opts.config ?? {}))
      this.project.config[k.includes(':') ? k : `${this.project.name}:${k}`] = v;
    this.store = new StateStore(path.resolve(this.opts.statePath ?? path.join(this.dir, '.kubevm-state.json')));
    this.state = this.store.load(this.project.name, this.stack);
    for (const r of this.state.resources) this.current.set(r.urn, r);
    const verb = { preview: 'Previewing update', up: 'Updating', refresh: 'Refreshing', destroy: 'Destroying' }[this.op];
    this.out(`${verb} (${this.project.name}/${this.stack}), state ${this.store.file}`);

    await this.startServers();

    if (this.op === 'refresh' || this.opts.refresh) {
      await this.refresh();
      if (this.op !== 'preview') this.save();
    }
    if (this.op === 'destroy') {
      await this.deleteAll([...this.current.values()]);
      if (!this.errors.length) this.dropStack();
    } else if (this.op !== 'refresh') {
      const code = await this.runProgram();
      await Promise.allSettled([...this.pending]);
      if (code !== 0 && !this.errors.length) this.errors.push(`the program exited with code ${code}`);
      if (!this.errors.length) {
        await this.deleteAll([...this.current.values()].filter((r) => !this.registeredSet.has(r.urn)));
        if (!this.errors.length) this.saveStackOutputs();
      }
    }
    return this.result();
  }

  private result(): EngineResult {
    // A refresh that found nothing is not a change; in a plain `refresh` it counts as unchanged.
    const count = (o: StepOp) =>
      this.steps.filter((s) =>
        s.op === 'refresh'
          ? o === 'refresh'
            ? s.changes.length > 0
            : o === 'same' && this.op === 'refresh' && !s.changes.length
          : s.op === o,
      ).length;
    const changes = this.steps.filter((s) => !QUIET_OPS.has(s.op) && !(s.op === 'refresh' && !s.changes.length)).length;
    const words: [StepOp, string, string][] = [
      ['create', 'to create', 'created'],
      ['update', 'to update', 'updated'],
      ['replace', 'to replace', 'replaced'],
      ['delete', 'to delete', 'deleted'],
      ['import', 'to import', 'imported'],
      ['refresh', 'to refresh', 'refreshed'],
      ['read', 'to read', 'read'],
      ['same', 'unchanged', 'unchanged'],
    ];
    const parts = words.filter(([o]) => count(o)).map(([o, p, d]) => `${count(o)} ${this.dryRun ? p : d}`);
    const outputs = this.op === 'up' || this.op === 'preview' ? (this.stackOutputs ?? {}) : {};
    const keys = Object.keys(outputs).sort();
    if (keys.length && !this.errors.length) {
      this.out('Outputs:');
      for (const k of keys) this.out(`    ${k}: ${show(outputs[k])}`);
    }
    const summary = `Resources: ${parts.length ? parts.join(', ') : 'none'}${this.errors.length ? `; ${this.errors.length} error(s)` : ''}`;
    this.out(summary);
    return { ok: this.errors.length === 0, steps: this.steps, changes, errors: this.errors, summary, outputs };
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
    const sym = {
      create: '+',
      update: '~',
      replace: '+-',
      delete: '-',
      same: ' ',
      refresh: '~',
      import: '=',
      read: '>',
      discard: '<',
    }[s.op];
    if (s.op === 'refresh' && !s.changes.length) return;
    this.out(`${sym} ${s.type} ${s.name} ${this.dryRun ? s.op : pastTense(s.op)}`);
    for (const c of s.changes) this.out(`    ${formatChange(c)}`);
  }

  /** Records (or replaces) a state entry and writes the state file (never in a preview). */
  private put(r: Resource): void {
    if (this.dryRun) return;
    const entry: Resource = { ...r };
    for (const k of ['provider', 'protect', 'external', 'customTimeouts'] as const)
      if (entry[k] === undefined || entry[k] === false) delete entry[k];
    this.current.set(r.urn, entry);
    this.save();
  }

  private remove(urn: string): void {
    if (this.dryRun) return;
    this.current.delete(urn);
    this.save();
  }

  private save(): void {
    if (this.dryRun) return;
    const order = [
      ...this.registered.filter((u) => this.current.has(u)),
      ...[...this.current.keys()].filter((u) => !this.registeredSet.has(u)),
    ];
    this.state.resources = createOrder(order.map((u) => this.current.get(u)!));
    this.store.save(this.state);
  }

  private markRegistered(urn: string): void {
    if (this.registeredSet.has(urn)) throw new Error(`duplicate resource URN ${urn}`);
    this.registeredSet.add(urn);
    this.registered.push(urn);
  }

  // ---- servers and providers ------------------------------------------------------

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
      supportsFeature: (call: any, cb: any) =>
        cb(null, new RPB.SupportsFeatureResponse().setHassupport(['secrets'].includes(call.request.getId()))),
      registerResource: this.unary((req) => this.register(req)),
      readResource: this.unary((req) => this.readExternal(req)),
      registerResourceOutputs: this.unary((req) => this.registerOutputs(req)),
      invoke: this.unary((req) => this.invoke(req)),
      signalAndWaitForShutdown: this.unary(() => new emptyPb.Empty()),
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e: Error | null, p: number) =>
        e ? reject(e) : resolve(p),
      ),
    );
    this.address = `127.0.0.1:${port}`;
  }

  /** One kubevm provider server (in this process, called over gRPC like a plugin). */
  private async startProvider(): Promise<ProviderHandle> {
    const p = await startServer({ engineAddress: this.address });
    const client = new (providerRpc as any).ResourceProviderClient(`127.0.0.1:${p.port}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 400 * 1024 * 1024,
    });
    return { server: p.server, client };
  }

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

  /**
   * The provider server for a provider URN ('' = default), started on first use: a
   * program whose resources all name an explicit provider never needs the default
   * one's cluster. An explicit provider that the program has not registered (yet) in
   * this run — refresh, destroy, deletes of resources the program dropped — is started
   * from its state entry's configuration.
   */
  private provider(urn = ''): Promise<ProviderHandle> {
    let h = this.providers.get(urn);
    if (!h && !urn) {
      h = this.startProvider().then(async (p) => {
        await this.configure(p, this.defaultProviderConfig());
        return p;
      });
      this.providers.set(urn, h);
    }
    if (!h) {
      const st = this.current.get(urn);
      if (!st || st.type !== PROVIDER_TYPE)
        return Promise.reject(new Error(`provider ${urn} is neither registered by the program nor recorded in the state`));
      h = this.startProvider().then(async (p) => {
        await this.configure(p, st.inputs);
        return p;
      });
      this.providers.set(urn, h);
    }
    return h;
  }

  private async rpc<T = any>(method: string, req: any, provider = ''): Promise<T> {
    const { client } = await this.provider(provider);
    return new Promise((resolve, reject) => client[method](req, (err: any, res: any) => (err ? reject(err) : resolve(res))));
  }

  private async configure(p: ProviderHandle, args: Record<string, Json>): Promise<void> {
    await new Promise((resolve, reject) =>
      p.client.configure(
        new PB.ConfigureRequest().setArgs(toStruct(args)).setAcceptsecrets(true).setAcceptresources(true),
        (err: any, res: any) => (err ? reject(new Error(`Configure: ${grpcMessage(err)}`)) : resolve(res)),
      ),
    );
  }

  /** The default provider's configuration: engine options, else `kubevm:*` program config, else the CLI's default kubeconfig. */
  private defaultProviderConfig(): Record<string, string> {
    const cfg = this.project.config;
    const args: Record<string, string> = {};
    for (const k of ['kubeconfig', 'context', 'namespace'] as const) {
      const v = this.opts[k] ?? cfg[`kubevm:${k}`];
      if (v) args[k] = v;
    }
    if (!args.kubeconfig && this.opts.defaultKubeconfig) args.kubeconfig = this.opts.defaultKubeconfig;
    return args;
  }

  /**
   * `new kubevm.Provider(name, {kubeconfig, context, namespace})`: CheckConfig, DiffConfig
   * against the recorded configuration, then Configure its own provider server. The
   * configuration is kept in the state, so later runs (refresh, destroy, deletes) can
   * reach the same cluster.
   */
  private async registerProvider(req: any, goal: Goal): Promise<any> {
    const { urn, type, name } = goal;
    const news = fromStruct(req.getObject()) ?? {};
    const old = this.current.get(urn);
    if (!this.providers.has(urn)) this.providers.set(urn, this.startProvider());
    const handle = await this.providers.get(urn)!;
    const call = (method: string, r: any): Promise<any> =>
      new Promise((resolve, reject) =>
        handle.client[method](r, (err: any, res: any) =>
          err ? reject(new Error(`${method}: ${grpcMessage(err)}`)) : resolve(res),
        ),
      );

    const checked = await call(
      'checkConfig',
      new PB.CheckRequest()
        .setUrn(urn)
        .setOlds(toStruct(old?.inputs ?? {}))
        .setNews(toStruct(news)),
    );
    const failures = checked.getFailuresList().map((f: any) => `${f.getProperty() || '(provider)'}: ${f.getReason()}`);
    if (failures.length) throw new Error(`invalid provider configuration:\n  ${failures.join('\n  ')}`);
    const inputs = fromStruct(checked.getInputs()) ?? {};

    let op: StepOp = 'create';
    let changes: PropertyChange[] = [];
    if (old) {
      const d = await call(
        'diffConfig',
        new PB.DiffRequest()
          .setUrn(urn)
          .setId(old.id)
          .setOlds(toStruct(old.outputs))
          .setNews(toStruct(inputs))
          .setOldInputs(toStruct(old.inputs)),
      );
      changes = detailedChanges(d, old.outputs, inputs);
      op = d.getChanges() === DIFF_SOME ? 'update' : 'same';
    }
    await this.configure(handle, inputs);
    this.record({ op, urn, type, name, changes });
    const id = old?.id ?? (this.dryRun ? '' : crypto.randomUUID());
    this.put({ urn, type, id, inputs, outputs: inputs, dependencies: goal.dependencies, protect: goal.protect });
    return new RPB.RegisterResourceResponse().setUrn(urn).setId(id).setObject(toStruct(inputs));
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
    const nodePath = [this.shimDir(), path.join(ROOT, 'node_modules'), process.env.NODE_PATH]
      .filter(Boolean)
      .join(path.delimiter);
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.opts.env };
    for (const k of Object.keys(env)) if (k.startsWith('PULUMI_NODEJS_')) delete env[k];
    // tsx looks for a tsconfig up the tree; a parent's `paths` must not redirect @kubevm/pulumi to the SDK source.
    const own = path.join(this.dir, 'tsconfig.json');
    const tsconfig = fs.existsSync(own) ? own : path.join(this.tmp!, 'tsconfig.json');
    if (tsconfig !== own)
      fs.writeFileSync(
        tsconfig,
        JSON.stringify({ compilerOptions: { module: 'commonjs', target: 'ES2022', esModuleInterop: true, strict: true } }),
      );
    Object.assign(env, {
      TSX_TSCONFIG_PATH: tsconfig,
      NODE_PATH: nodePath,
      PULUMI_CONFIG: JSON.stringify(this.project.config),
      PULUMI_CONFIG_SECRET_KEYS: '[]',
    });
    const args = [
      // Plain formatting for the stacks @pulumi/pulumi takes on every output promise (see the file).
      '--require',
      path.join(ROOT, 'engine', 'preload', 'fast-stacks.js'),
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
      // After a failed step the deployment ends, as with Pulumi: steps in flight finish, no new
      // ones start, and the program is stopped. (The SDK does not always exit by itself after a
      // failed registration: with outputs waiting on the failed resource it can linger forever.)
      let idle = 0;
      const watchdog = setInterval(() => {
        if (!this.errors.length) return;
        idle = this.pending.size === 0 ? idle + 1 : 0;
        if (idle >= 4) child.kill('SIGKILL');
      }, 250);
      child.on('error', reject);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        clearInterval(watchdog);
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
    const res = await this.rpc(
      'invoke',
      new PB.InvokeRequest().setTok(req.getTok()).setArgs(req.getArgs()).setPreview(this.dryRun),
      providerRefUrn(req.getProvider()),
    );
    // The monitor answers with its own message type (ResourceInvokeResponse), not the provider's InvokeResponse.
    return new RPB.ResourceInvokeResponse().setReturn(res.getReturn()).setFailuresList(res.getFailuresList());
  }

  /** RegisterResourceOutputs: the stack's outputs are kept (component outputs are not needed here). */
  private registerOutputs(req: any): any {
    if (req.getUrn() === this.stackUrn) this.stackOutputs = fromStruct(req.getOutputs()) ?? {};
    return new emptyPb.Empty();
  }

  private saveStackOutputs(): void {
    if (this.dryRun || !this.stackUrn) return;
    this.put({ urn: this.stackUrn, type: STACK_TYPE, id: '', inputs: {}, outputs: this.stackOutputs ?? {}, dependencies: [] });
  }

  private dropStack(): void {
    for (const r of [...this.current.values()]) if (r.type === STACK_TYPE) this.remove(r.urn);
  }

  private goal(req: any, urn: string): Goal {
    const parent: string = req.getParent();
    const propertyDeps: string[] = [];
    req.getPropertydependenciesMap().forEach((v: any) => propertyDeps.push(...v.getUrnsList()));
    return {
      urn,
      type: req.getType(),
      name: req.getName(),
      dependencies: unique([
        ...req.getDependenciesList(),
        ...propertyDeps,
        ...(parent && parent !== this.stackUrn ? [parent] : []),
      ]),
      provider: providerRefUrn(req.getProvider()) || undefined,
      protect: req.getProtect() || undefined,
      customTimeouts: readTimeouts(req.hasCustomtimeouts() ? req.getCustomtimeouts() : undefined),
      ignoreChanges: req.getIgnorechangesList(),
    };
  }

  private async register(req: any): Promise<any> {
    const type: string = req.getType();
    const name: string = req.getName();
    const urn = this.urn(req.getParent(), type, name);
    const reply = (id: string, outputs: Record<string, Json>) =>
      new RPB.RegisterResourceResponse().setUrn(urn).setId(id).setObject(toStruct(outputs));
    if (!req.getCustom()) {
      if (type === STACK_TYPE) this.stackUrn = urn;
      return reply('', {});
    }
    if (this.errors.length) throw new Error(`${name}: not registered, an earlier step failed`);
    try {
      if (type !== PROVIDER_TYPE && !type.startsWith('kubevm:')) throw new Error(otherPackageMessage(type));
      const goal = this.goal(req, urn);
      this.markRegistered(urn);
      if (type === PROVIDER_TYPE) return await this.registerProvider(req, goal);
      const [id, outputs] = await this.registerCustom(req, goal);
      return reply(id, outputs);
    } catch (e) {
      const message = grpcMessage(e);
      this.error(urn, message);
      throw new Error(message);
    }
  }

  private async registerCustom(req: any, goal: Goal): Promise<[string, Record<string, Json>]> {
    const { urn, type, name } = goal;
    const news = fromStruct(req.getObject()) ?? {};
    let old = this.current.get(urn);
    // A resource that was read with `get` before is now managed: it is created (or imported) anew.
    if (old?.external) old = undefined;
    const importId: string = req.getImportid();
    if (!old && importId) return this.import(goal, importId, news);

    const inputs = await this.check(goal, old?.inputs ?? {}, news);
    if (!old) {
      const made = await this.create(goal, inputs);
      return [this.dryRun ? '' : made.id, made.outputs];
    }
    const diff = await this.diff(old, inputs, goal);
    if (diff.changes !== DIFF_SOME && !diff.replaces.length) {
      this.record({ op: 'same', urn, type, name, changes: [] });
      this.put({ ...old, inputs, ...this.options(goal) });
      return [old.id, old.outputs];
    }
    if (diff.replaces.length) {
      if (goal.protect) {
        throw new Error(
          `cannot be replaced: it is protected (protect: true), and ${diff.replaces.join(', ')} changed, which forces a replacement. ` +
            'Remove the protect option and run `kubevm up`, or change the program so that no replacement is needed.',
        );
      }
      return this.replace(old, inputs, goal, diff, news);
    }
    const res = await this.rpc(
      'update',
      new PB.UpdateRequest()
        .setUrn(urn)
        .setId(old.id)
        .setOlds(toStruct(old.outputs))
        .setNews(toStruct(inputs))
        .setOldInputs(toStruct(old.inputs))
        .setIgnorechangesList(goal.ignoreChanges)
        .setTimeout(goal.customTimeouts?.update ?? 0)
        .setPreview(this.dryRun),
      goal.provider,
    );
    const outputs = fromStruct(res.getProperties()) ?? {};
    this.record({ op: 'update', urn, type, name, changes: diff.changed });
    this.put({ ...old, inputs, outputs, ...this.options(goal) });
    return [old.id, outputs];
  }

  /** The per-resource options a state entry keeps. */
  private options(goal: Goal): Pick<Resource, 'dependencies' | 'provider' | 'protect' | 'customTimeouts'> {
    return {
      dependencies: goal.dependencies,
      provider: goal.provider,
      protect: goal.protect,
      customTimeouts: goal.customTimeouts,
    };
  }

  /**
   * The `import` option: Read by id (no inputs, no state), Check the program's inputs
   * against what was read, Diff. A difference fails the import (a preview warns), as
   * with Pulumi; a match records the resource, which the engine manages from then on.
   */
  private async import(goal: Goal, importId: string, news: Record<string, Json>): Promise<[string, Record<string, Json>]> {
    const { urn, type, name } = goal;
    const res = await this.rpc('read', new PB.ReadRequest().setUrn(urn).setId(importId), goal.provider);
    if (!res.getId()) throw new Error(`import ${JSON.stringify(importId)}: no such ${type} (Read found nothing to import)`);
    const readInputs = fromStruct(res.getInputs());
    if (!readInputs)
      throw new Error(
        `import ${JSON.stringify(importId)}: the provider returned no inputs for ${type}, so it cannot be imported`,
      );
    const outputs = fromStruct(res.getProperties()) ?? {};
    const id: string = res.getId();
    const inputs = await this.check(goal, readInputs, news);
    const read: Resource = { urn, type, id, inputs: readInputs, outputs, dependencies: goal.dependencies };
    const diff = await this.diff(read, inputs, goal);
    if (diff.changes === DIFF_SOME || diff.replaces.length) {
      const lines = diff.changed.map((c) => `    ${formatChange(c)}`).join('\n');
      if (!this.dryRun)
        throw new Error(
          `inputs to import do not match the existing resource ${id}; the import fails. Differences (existing => program):\n${lines}`,
        );
      this.out(`warning: ${name}: inputs to import do not match the existing resource ${id}; importing it will fail`);
      this.record({ op: 'import', urn, type, name, changes: diff.changed });
      return [id, outputs];
    }
    this.record({ op: 'import', urn, type, name, changes: [] });
    this.put({ urn, type, id, inputs, outputs, ...this.options(goal) });
    return [id, outputs];
  }

  /**
   * ReadResource (`X.get(name, id)`): Read through the provider and record the
   * resource as external: later runs refresh it but never update or delete it.
   */
  private async readExternal(req: any): Promise<any> {
    const type: string = req.getType();
    const name: string = req.getName();
    const id: string = req.getId();
    const urn = this.urn(req.getParent(), type, name);
    if (this.errors.length) throw new Error(`${name}: not read, an earlier step failed`);
    try {
      if (!type.startsWith('kubevm:')) throw new Error(otherPackageMessage(type));
      const old = this.current.get(urn);
      if (old && !old.external) throw new Error(`${type} ${name} is managed by this stack; read it with get under another name`);
      this.markRegistered(urn);
      const provider = providerRefUrn(req.getProvider()) || undefined;
      const props = fromStruct(req.getProperties()) ?? {};
      const res = await this.rpc(
        'read',
        new PB.ReadRequest().setUrn(urn).setId(id).setProperties(toStruct(props)).setInputs(toStruct(props)),
        provider,
      );
      if (!res.getId()) throw new Error(`get ${JSON.stringify(id)}: no such ${type}`);
      const outputs = fromStruct(res.getProperties()) ?? {};
      const inputs = fromStruct(res.getInputs()) ?? {};
      this.record({ op: 'read', urn, type, name, changes: old ? shallowChanges(old.outputs, outputs, deepEqual) : [] });
      const dependencies = unique<string>(req.getDependenciesList());
      this.put({ urn, type, id: res.getId(), inputs, outputs, dependencies, provider, external: true });
      return new RPB.ReadResourceResponse().setUrn(urn).setProperties(toStruct(outputs));
    } catch (e) {
      const message = grpcMessage(e);
      this.error(urn, message);
      throw new Error(message);
    }
  }

  private async check(goal: Goal, olds: Record<string, Json>, news: Record<string, Json>, seedExtra = ''): Promise<Record<string, Json>> {
    const res = await this.rpc(
      'check',
      new PB.CheckRequest().setUrn(goal.urn).setOlds(toStruct(olds)).setNews(toStruct(news)).setRandomseed(randomSeed(goal.urn + seedExtra)),
      goal.provider,
    );
    const failures = res.getFailuresList().map((f: any) => `${f.getProperty() || '(resource)'}: ${f.getReason()}`);
    if (failures.length) throw new Error(`invalid inputs:\n  ${failures.join('\n  ')}`);
    return fromStruct(res.getInputs()) ?? {};
  }

  private async diff(old: Resource, inputs: Record<string, Json>, goal: Goal) {
    const res = await this.rpc(
      'diff',
      new PB.DiffRequest()
        .setUrn(old.urn)
        .setId(old.id)
        .setOlds(toStruct(old.outputs))
        .setNews(toStruct(inputs))
        .setOldInputs(toStruct(old.inputs))
        .setIgnorechangesList(goal.ignoreChanges),
      goal.provider,
    );
    return {
      changes: res.getChanges() as number,
      changed: detailedChanges(res, old.outputs, inputs),
      replaces: res.getReplacesList() as string[],
      deleteBeforeReplace: res.getDeletebeforereplace() as boolean,
    };
  }

  private async create(
    goal: Goal,
    inputs: Record<string, Json>,
    record = true,
  ): Promise<{ id: string; outputs: Record<string, Json> }> {
    const { urn, type, name } = goal;
    let res: any;
    try {
      res = await this.rpc(
        'create',
        new PB.CreateRequest()
          .setUrn(urn)
          .setProperties(toStruct(inputs))
          .setTimeout(goal.customTimeouts?.create ?? 0)
          .setPreview(this.dryRun),
        goal.provider,
      );
    } catch (e) {
      // Created but not ready: keep it in the state (with its id) so the next run can update or delete it.
      const failed = initFailed(e);
      if (failed) this.put({ urn, type, id: failed.id, inputs, outputs: failed.props, ...this.options(goal) });
      throw e;
    }
    const made = { id: res.getId() as string, outputs: fromStruct(res.getProperties()) ?? {} };
    if (record) this.record({ op: 'create', urn, type, name, changes: [] });
    this.put({ urn, type, id: made.id, inputs, outputs: made.outputs, ...this.options(goal) });
    return made;
  }

  private async replace(
    old: Resource,
    inputs: Record<string, Json>,
    goal: Goal,
    diff: { changed: PropertyChange[]; deleteBeforeReplace: boolean },
    news: Record<string, Json>,
  ): Promise<[string, Record<string, Json>]> {
    this.record({ op: 'replace', urn: old.urn, type: old.type, name: goal.name, changes: diff.changed });
    // Create-before-delete: the replacement is a new resource, so Check runs without old inputs (as Pulumi
    // does) and with a seed of its own: an autonamed resource gets a fresh name that cannot collide.
    if (!diff.deleteBeforeReplace) inputs = await this.check(goal, {}, news, `\0replaces\0${old.id}`);
    if (this.dryRun) {
      const made = await this.create(goal, inputs, false);
      return ['', made.outputs];
    }
    if (diff.deleteBeforeReplace) {
      await this.deleteResource(old);
      this.remove(old.urn);
      const made = await this.create(goal, inputs, false);
      return [made.id, made.outputs];
    }
    const made = await this.create(goal, inputs, false);
    if (made.id !== old.id) await this.deleteResource(old);
    return [made.id, made.outputs];
  }

  private async deleteResource(r: Resource): Promise<void> {
    await this.rpc(
      'delete',
      new PB.DeleteRequest()
        .setUrn(r.urn)
        .setId(r.id)
        .setProperties(toStruct(r.outputs))
        .setOldInputs(toStruct(r.inputs))
        .setTimeout(r.customTimeouts?.delete ?? 0),
      r.provider,
    );
  }

  /**
   * Deletes resources, dependents first (a resource before its explicit provider).
   * Protected resources are refused up front, and then nothing is deleted. External
   * (`get`) resources and the stack's entry only leave the state; an explicit
   * provider's entry leaves it once its resources are gone.
   */
  private async deleteAll(resources: Resource[]): Promise<void> {
    const protectedOnes = resources.filter((r) => r.protect);
    if (protectedOnes.length) {
      for (const r of protectedOnes) {
        this.error(
          r.urn,
          'cannot be deleted: it is protected (protect: true). Set `protect: false` in the program and run `kubevm up` first; then remove it or destroy the stack',
        );
      }
      this.out(`nothing was deleted: ${protectedOnes.length} protected resource(s)`);
      return;
    }
    for (const r of orderWithProviders(resources).reverse()) {
      if (r.type === STACK_TYPE) continue;
      await this.step(() => this.delete(r));
    }
  }

  private async delete(r: Resource): Promise<void> {
    const name = shortName(r.urn);
    if (r.external) {
      this.record({ op: 'discard', urn: r.urn, type: r.type, name, changes: [] });
      this.remove(r.urn);
      return;
    }
    this.record({ op: 'delete', urn: r.urn, type: r.type, name, changes: [] });
    if (this.dryRun) return;
    if (r.type !== PROVIDER_TYPE) {
      try {
        await this.deleteResource(r);
      } catch (e) {
        throw new Error(`${r.urn}: ${grpcMessage(e)}`);
      }
    }
    this.remove(r.urn);
  }

  /** Read every resource; a resource that is gone leaves the state. Provider and stack entries are kept as they are. */
  private async refresh(): Promise<void> {
    for (const r of orderWithProviders([...this.current.values()])) {
      if (r.type === STACK_TYPE || r.type === PROVIDER_TYPE) continue;
      await this.step(async () => {
        let res: any;
        try {
          res = await this.rpc(
            'read',
            new PB.ReadRequest().setUrn(r.urn).setId(r.id).setProperties(toStruct(r.outputs)).setInputs(toStruct(r.inputs)),
            r.provider,
          );
        } catch (e) {
          throw new Error(`${r.urn}: ${grpcMessage(e)}`);
        }
        const name = shortName(r.urn);
        if (!res.getId()) {
          this.record({
            op: 'refresh',
            urn: r.urn,
            type: r.type,
            name,
            changes: [{ path: '(resource)', kind: 'DELETE', old: r.id }],
          });
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
    for (const h of this.providers.values()) {
      const p = await h.catch(() => undefined);
      p?.client.close();
      p?.server.forceShutdown();
    }
    this.server?.forceShutdown();
    if (this.tmp) fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/**
 * Check's random seed (the provider derives autonames from it): derived from the URN, so a
 * preview and the following up agree on a new resource's name, and so do runs of the same
 * program. (The Pulumi CLI draws a random seed per run unless it follows an update plan.)
 */
function randomSeed(urn: string): Uint8Array {
  return crypto.createHash('sha256').update(`kubevm-engine\0${urn}`).digest();
}

function shortName(urn: string): string {
  return urn.split('::').pop() ?? urn;
}

function pastTense(op: StepOp): string {
  return {
    create: 'created',
    update: 'updated',
    replace: 'replaced',
    delete: 'deleted',
    same: 'unchanged',
    refresh: 'refreshed',
    import: 'imported',
    read: 'read',
    discard: 'discarded',
  }[op];
}

function grpcMessage(e: unknown): string {
  const err = e as { details?: string; message?: string };
  return err?.details || err?.message || String(e);
}

/** A DiffResponse's per-property changes, with old values from `olds` and new ones from `news`. */
function detailedChanges(res: any, olds: Record<string, Json>, news: Record<string, Json>): PropertyChange[] {
  const changed: PropertyChange[] = [];
  res
    .getDetaileddiffMap()
    .forEach((v: any, p: string) =>
      changed.push({ path: p, kind: KIND_NAMES[v.getKind()], old: getPath(olds, p), new: getPath(news, p) }),
    );
  changed.sort((a, b) => a.path.localeCompare(b.path));
  if (!res.getHasdetaileddiff())
    for (const p of res.getDiffsList()) changed.push({ path: p, kind: 'UPDATE', old: getPath(olds, p), new: getPath(news, p) });
  return changed;
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
