import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { grpc, providerRpc, providerPb, engineRpc, emptyPb, fromStruct, toStruct } from '../../provider/proto';
import { secret } from '../../provider/values';
import { tempDir } from './tmp';

/**
 * The kubevm provider plugin as the Pulumi engine runs it, for tests over the
 * real gRPC wire: spawned as a process that prints its port on the first stdout
 * line, with a fake Engine service collecting its log, configured with a
 * kubeconfig. Two launch forms:
 * - `bin`: the executable `bin/pulumi-resource-kubevm <engine>`;
 * - `shimless`: the plugin folder (the repository, PulumiPlugin.yaml + package.json
 *   `main`) run the way the Node language host runs it:
 *   `node @pulumi/pulumi/cmd/run-plugin <folder> <engine>` in the project's directory.
 */
const PB = providerPb as any;
const ROOT = path.join(__dirname, '..', '..');
export const KIND_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(PB.PropertyDiff.Kind).map(([k, v]) => [v as number, k]),
);
export const DIFF_NONE: number = PB.DiffResponse.DiffChanges.DIFF_NONE;
export const DIFF_SOME: number = PB.DiffResponse.DiffChanges.DIFF_SOME;

export interface LogLine {
  severity: number;
  message: string;
  urn: string;
}

export interface ProviderHarness {
  /** Log lines the provider sent to the engine (severity 2 = warning). */
  logs: LogLine[];
  stderr(): string;
  urn(type: string, name: string): string;
  rpc<T = any>(method: string, req: any): Promise<T>;
  check(
    type: string,
    name: string,
    news: any,
    olds?: any,
  ): Promise<{ inputs: any; failures: { property: string; reason: string }[] }>;
  diff(
    type: string,
    name: string,
    olds: any,
    news: any,
    id: string,
  ): Promise<{
    changes: number;
    diffs: string[];
    replaces: string[];
    deleteBeforeReplace: boolean;
    detailed: Record<string, string>;
  }>;
  create(
    type: string,
    name: string,
    props: any,
    opts?: { preview?: boolean; timeout?: number },
  ): Promise<{ id: string; props: any }>;
  update(
    type: string,
    name: string,
    id: string,
    olds: any,
    news: any,
    opts?: { preview?: boolean; timeout?: number },
  ): Promise<any>;
  read(type: string, name: string, id: string, props?: any, inputs?: any): Promise<{ id: string; props: any; inputs: any }>;
  del(type: string, name: string, id: string, props: any, timeout?: number): Promise<void>;
  invoke(tok: string, args: any): Promise<{ value: any; failures: { property: string; reason: string }[] }>;
  close(): Promise<void>;
}

export async function startProvider(opts: {
  kubeconfigPath: string;
  namespace?: string;
  launch?: 'bin' | 'shimless';
  project?: string;
}): Promise<ProviderHarness> {
  const project = opts.project ?? 'provider-test';
  const logs: LogLine[] = [];
  let stderr = '';
  const engine = new grpc.Server();
  engine.addService((engineRpc as any).EngineService, {
    log: (call: any, cb: any) => {
      logs.push({ severity: call.request.getSeverity(), message: call.request.getMessage(), urn: call.request.getUrn() });
      cb(null, new emptyPb.Empty());
    },
  });
  const enginePort = await new Promise<number>((res, rej) =>
    engine.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e: any, p: number) => (e ? rej(e) : res(p))),
  );
  const engineAddress = `127.0.0.1:${enginePort}`;

  let child: ChildProcess;
  let projectDir: string | undefined;
  if (opts.launch === 'shimless') {
    // The language host: `node <run-plugin> <plugin folder> <engine>` with the project's directory as cwd.
    projectDir = tempDir();
    fs.writeFileSync(path.join(projectDir, 'Pulumi.yaml'), `name: ${project}\nruntime: nodejs\n`);
    fs.writeFileSync(
      path.join(projectDir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, target: 'ES2020', module: 'commonjs' } }),
    );
    const runPlugin = path.dirname(require.resolve('@pulumi/pulumi/cmd/run-plugin/run.js'));
    child = spawn(process.execPath, [runPlugin, ROOT, engineAddress], { cwd: projectDir, stdio: ['ignore', 'pipe', 'pipe'] });
  } else {
    child = spawn(process.execPath, [path.join(ROOT, 'bin/pulumi-resource-kubevm'), engineAddress], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }
  child.stderr!.on('data', (d) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d.toString();
      const lines = out.split('\n');
      if (lines.length > 1) resolve(Number(lines[0]));
    });
    child.on('exit', (code) => reject(new Error(`provider exited with ${code}: ${stderr}`)));
  });
  if (!(port > 0)) throw new Error(`provider printed no port: ${stderr}`);
  const client = new (providerRpc as any).ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const rpc = <T = any>(method: string, req: any): Promise<T> =>
    new Promise((resolve, reject) => client[method](req, (err: any, res: any) => (err ? reject(err) : resolve(res))));
  const urn = (type: string, name: string) => `urn:pulumi:dev::${project}::${type}::${name}`;

  const cfg: Record<string, any> = {
    kubeconfig: secret(fs.readFileSync(opts.kubeconfigPath, 'utf8')),
    namespace: opts.namespace ?? 'default',
  };
  const checked = await rpc(
    'checkConfig',
    new PB.CheckRequest().setUrn(`urn:pulumi:dev::${project}::pulumi:providers:kubevm::default`).setNews(toStruct(cfg)),
  );
  if (checked.getFailuresList().length)
    throw new Error(
      `provider configuration refused: ${checked
        .getFailuresList()
        .map((f: any) => f.getReason())
        .join('; ')}`,
    );
  await rpc('configure', new PB.ConfigureRequest().setArgs(checked.getInputs()).setAcceptsecrets(true).setAcceptresources(true));

  return {
    logs,
    stderr: () => stderr,
    urn,
    rpc,
    async check(type, name, news, olds = {}) {
      const res = await rpc(
        'check',
        new PB.CheckRequest().setUrn(urn(type, name)).setOlds(toStruct(olds)).setNews(toStruct(news)),
      );
      return {
        inputs: fromStruct(res.getInputs())!,
        failures: res.getFailuresList().map((f: any) => ({ property: f.getProperty(), reason: f.getReason() })),
      };
    },
    async diff(type, name, olds, news, id) {
      const res = await rpc(
        'diff',
        new PB.DiffRequest().setUrn(urn(type, name)).setId(id).setOlds(toStruct(olds)).setNews(toStruct(news)),
      );
      const detailed: Record<string, string> = {};
      res.getDetaileddiffMap().forEach((v: any, k: string) => (detailed[k] = KIND_NAMES[v.getKind()]));
      return {
        changes: res.getChanges(),
        diffs: res.getDiffsList(),
        replaces: res.getReplacesList(),
        deleteBeforeReplace: res.getDeletebeforereplace(),
        detailed,
      };
    },
    async create(type, name, props, o = {}) {
      const res = await rpc(
        'create',
        new PB.CreateRequest()
          .setUrn(urn(type, name))
          .setProperties(toStruct(props))
          .setPreview(!!o.preview)
          .setTimeout(o.timeout ?? 0),
      );
      return { id: res.getId() as string, props: fromStruct(res.getProperties())! };
    },
    async update(type, name, id, olds, news, o = {}) {
      const res = await rpc(
        'update',
        new PB.UpdateRequest()
          .setUrn(urn(type, name))
          .setId(id)
          .setOlds(toStruct(olds))
          .setNews(toStruct(news))
          .setPreview(!!o.preview)
          .setTimeout(o.timeout ?? 0),
      );
      return fromStruct(res.getProperties())!;
    },
    async read(type, name, id, props, inputs) {
      const req = new PB.ReadRequest().setUrn(urn(type, name)).setId(id);
      if (props) req.setProperties(toStruct(props));
      if (inputs) req.setInputs(toStruct(inputs));
      const res = await rpc('read', req);
      return { id: res.getId() as string, props: fromStruct(res.getProperties()), inputs: fromStruct(res.getInputs()) };
    },
    async del(type, name, id, props, timeout = 0) {
      await rpc(
        'delete',
        new PB.DeleteRequest().setUrn(urn(type, name)).setId(id).setProperties(toStruct(props)).setTimeout(timeout),
      );
    },
    async invoke(tok, args) {
      const res = await rpc('invoke', new PB.InvokeRequest().setTok(tok).setArgs(toStruct(args)));
      return {
        value: fromStruct(res.getReturn()),
        failures: res.getFailuresList().map((f: any) => ({ property: f.getProperty(), reason: f.getReason() })),
      };
    },
    async close() {
      client.close();
      if (child.exitCode === null) {
        // A plugin that does not end on SIGTERM within 10 s (a busy machine) is killed: teardown must end.
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      engine.forceShutdown();
      if (projectDir) fs.rmSync(projectDir, { recursive: true, force: true });
    },
  };
}
