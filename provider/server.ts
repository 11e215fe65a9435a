import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Kube } from '../controller/runtime/kube';
import { checkConfigFailures, contextNamespace, kubeFromConfig, readConfig, CONFIG_KEYS, type ProviderConfig } from './config';
import { anyPb, emptyPb, engineRpc, enginePb, fromStruct, grpc, pluginPb, providerPb, providerRpc, statusPb, toStruct } from './proto';
import { InitFailedError, parseId, type OpContext } from './resources/common';
import { providerResourceFor as resourceFor } from './resources';
import { invoke } from './functions';
import { deepEqual, plain, wrapSecrets } from './values';

/**
 * The kubevm resource provider: its own gRPC ResourceProvider server on the
 * stubs inside @pulumi/pulumi, not `@pulumi/pulumi/provider`'s main(), which
 * drops detailed diffs, ignores provider configuration, has no previews and
 * crashes on import (see docs/provider.md). The engine starts the plugin as
 * `pulumi-resource-kubevm <engine-address>` and reads the port from the first
 * line of stdout; nothing else may be printed to stdout.
 *
 * Every RPC works on the wire values (secrets wrapped, unknowns as the sentinel
 * string); resource modules turn them into plain values and wrap secrets again
 * on the way out. Messages to the engine log never carry input values.
 */
const ROOT = path.resolve(__dirname, '..');
const VERSION: string = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
const PB = providerPb as any;
const Kind = PB.PropertyDiff.Kind;
const Changes = PB.DiffResponse.DiffChanges;

type Sev = 'debug' | 'info' | 'warning' | 'error';

class EngineLog {
  private client?: any;
  constructor(address?: string) {
    if (address) this.client = new (engineRpc as any).EngineClient(address, grpc.credentials.createInsecure());
  }
  setAddress(address: string): void {
    if (!this.client && address) this.client = new (engineRpc as any).EngineClient(address, grpc.credentials.createInsecure());
  }
  log(sev: Sev, urn: string, message: string, ephemeral = false): void {
    if (!this.client) {
      process.stderr.write(`[kubevm ${sev}] ${urn ? `${urn}: ` : ''}${message}\n`);
      return;
    }
    const req = new (enginePb as any).LogRequest();
    const S = (enginePb as any).LogSeverity;
    req.setSeverity({ debug: S.DEBUG, info: S.INFO, warning: S.WARNING, error: S.ERROR }[sev]);
    req.setMessage(message);
    req.setUrn(urn);
    req.setEphemeral(ephemeral);
    this.client.log(req, () => undefined);
  }
  close(): void {
    this.client?.close();
  }
}

function grpcError(e: unknown): any {
  const err = e as Error;
  const message = err?.message ?? String(e);
  const metadata = new grpc.Metadata();
  if (e instanceof InitFailedError) {
    // Created but not ready: the engine keeps the resource (with its id) and reports the reasons.
    const detail = new PB.ErrorResourceInitFailed();
    detail.setId(e.id);
    detail.setProperties(toStruct(e.props));
    detail.setInputs(toStruct(e.inputs));
    detail.setReasonsList([message]);
    const any = new anyPb.Any();
    any.pack(detail.serializeBinary(), 'pulumirpc.ErrorResourceInitFailed');
    const status = new statusPb.Status();
    status.setCode(grpc.status.UNKNOWN);
    status.setMessage(message);
    status.addDetails(any);
    metadata.add('grpc-status-details-bin', Buffer.from(status.serializeBinary()));
  }
  return { code: grpc.status.UNKNOWN, message, metadata };
}

function unary(fn: (req: any) => Promise<any> | any): (call: any, cb: any) => void {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then((res) => cb(null, res), (e) => cb(grpcError(e), null));
  };
}

const unimplemented = (what: string) => (_call: any, cb: any) => cb({ code: grpc.status.UNIMPLEMENTED, message: `${what} is not implemented by kubevm` }, null);

export class KubevmProvider {
  private kube?: Kube;
  private config: ProviderConfig = {};
  private configUnknown = false;
  private namespace = 'default';
  private cancelled = false;
  readonly log: EngineLog;

  constructor(engineAddress?: string) {
    this.log = new EngineLog(engineAddress);
  }

  /** The service implementation for grpc-js. */
  implementation(): Record<string, (call: any, cb: any) => void> {
    return {
      handshake: unary((req) => {
        this.log.setAddress(req.getEngineAddress());
        return new PB.ProviderHandshakeResponse().setAcceptSecrets(true).setAcceptResources(true).setAcceptOutputs(false);
      }),
      getPluginInfo: unary(() => new (pluginPb as any).PluginInfo().setVersion(VERSION)),
      getSchema: unary((req) => {
        if (req.getVersion() !== 0) throw new Error(`schema version ${req.getVersion()} is not supported`);
        const file = path.join(ROOT, 'schema.json');
        const schema = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : JSON.stringify({ name: 'kubevm', version: VERSION });
        return new PB.GetSchemaResponse().setSchema(schema);
      }),
      checkConfig: unary((req) => {
        const news = fromStruct(req.getNews()) ?? {};
        const res = new PB.CheckResponse().setInputs(toStruct(wrapSecrets(news, ['kubeconfig'], news)));
        res.setFailuresList(checkConfigFailures(plain(news)).map((f) => new PB.CheckFailure().setProperty(f.property).setReason(f.reason)));
        return res;
      }),
      diffConfig: unary((req) => {
        const o = plain(fromStruct(req.getOldInputs()) ?? fromStruct(req.getOlds()) ?? {});
        const n = plain(fromStruct(req.getNews()) ?? {});
        const changed = CONFIG_KEYS.filter((k) => !deepEqual(o[k], n[k]));
        const res = new PB.DiffResponse().setChanges(changed.length ? Changes.DIFF_SOME : Changes.DIFF_NONE).setDiffsList([...changed]).setHasdetaileddiff(true);
        for (const k of changed) res.getDetaileddiffMap().set(k, new PB.PropertyDiff().setKind(o[k] === undefined ? Kind.ADD : n[k] === undefined ? Kind.DELETE : Kind.UPDATE));
        return res;
      }),
      configure: unary((req) => {
        const { config, unknown } = readConfig(fromStruct(req.getArgs()), req.getVariablesMap().getEntryList());
        this.config = config;
        this.configUnknown = unknown;
        this.kube = undefined;
        if (!unknown) {
          // Fail early on a bad kubeconfig, with a message that does not echo its content.
          this.kube = kubeFromConfig(config);
          this.namespace = config.namespace ?? contextNamespace(this.kube) ?? 'default';
        } else this.namespace = config.namespace ?? 'default';
        return new PB.ConfigureResponse()
          .setAcceptsecrets(true)
          .setAcceptresources(true)
          .setSupportspreview(true)
          .setAcceptoutputs(false)
          // Check takes the engine's proposed names (a stack's pulumi:autonaming configuration).
          .setSupportsAutonamingConfiguration(true);
      }),
      check: unary((req) => {
        const r = resourceFor(req.getUrn());
        // The random seed makes autonames agree between a preview and its update.
        const an = req.hasAutonaming() ? req.getAutonaming() : undefined;
        const autonaming = an ? { proposedName: an.getProposedName(), mode: (['propose', 'enforce', 'disable'] as const)[an.getMode()] ?? 'propose' } : undefined;
        const out = r.check(req.getUrn(), fromStruct(req.getOlds()) ?? {}, fromStruct(req.getNews()) ?? {}, this.namespace, req.getRandomseed_asU8(), autonaming);
        const res = new PB.CheckResponse().setInputs(toStruct(out.inputs));
        res.setFailuresList(out.failures.map((f) => new PB.CheckFailure().setProperty(f.property).setReason(f.reason)));
        return res;
      }),
      diff: unary((req) => {
        const r = resourceFor(req.getUrn());
        const d = r.diff(fromStruct(req.getOlds()) ?? {}, fromStruct(req.getNews()) ?? {}, req.getIgnorechangesList());
        const res = new PB.DiffResponse()
          .setChanges(d.diffs.length ? Changes.DIFF_SOME : Changes.DIFF_NONE)
          .setDiffsList(d.diffs)
          .setReplacesList(d.replaces)
          .setDeletebeforereplace(d.deleteBeforeReplace)
          .setHasdetaileddiff(true);
        for (const c of d.changes) res.getDetaileddiffMap().set(c.path, new PB.PropertyDiff().setKind(Kind[c.kind]));
        return res;
      }),
      create: unary(async (req) => {
        const r = resourceFor(req.getUrn());
        const props = fromStruct(req.getProperties()) ?? {};
        if (req.getPreview()) {
          return new PB.CreateResponse().setId(r.previewId(props)).setProperties(toStruct(r.previewResult(props)));
        }
        const ctx = this.ctx(req.getUrn());
        const { id, obj } = await r.create(ctx, props, this.timeout(req.getTimeout(), r.defaultTimeoutMs));
        return new PB.CreateResponse().setId(id).setProperties(toStruct(r.result(props, obj)));
      }),
      read: unary(async (req) => {
        const r = resourceFor(req.getUrn());
        // Import sends neither inputs nor properties; refresh sends both; `get` only properties.
        const like = fromStruct(req.getInputs()) ?? fromStruct(req.getProperties());
        const got = await r.read(this.ctx(req.getUrn()), req.getId(), like && Object.keys(like).length ? like : undefined);
        const res = new PB.ReadResponse();
        if (!got) return res;
        return res.setId(req.getId()).setInputs(toStruct(got.inputs)).setProperties(toStruct(got.props));
      }),
      update: unary(async (req) => {
        const r = resourceFor(req.getUrn());
        const olds = fromStruct(req.getOlds()) ?? {};
        const news = fromStruct(req.getNews()) ?? {};
        const change = r.diff(olds, news, req.getIgnorechangesList());
        if (req.getPreview()) return new PB.UpdateResponse().setProperties(toStruct(r.previewUpdate(olds, news, change)));
        const ctx = this.ctx(req.getUrn());
        const obj = await r.update(ctx, req.getId(), olds, news, this.timeout(req.getTimeout(), r.defaultTimeoutMs), change);
        return new PB.UpdateResponse().setProperties(toStruct(r.result(news, obj)));
      }),
      delete: unary(async (req) => {
        const r = resourceFor(req.getUrn());
        parseId(req.getId());
        await r.delete(this.ctx(req.getUrn()), req.getId(), this.timeout(req.getTimeout(), r.defaultTimeoutMs));
        return new emptyPb.Empty();
      }),
      cancel: unary(() => {
        this.cancelled = true;
        return new emptyPb.Empty();
      }),
      invoke: unary(async (req) => {
        // Lookups are read-only: they run the same way in previews.
        const out = await invoke(() => this.ctx(''), req.getTok(), fromStruct(req.getArgs()) ?? {});
        const res = new PB.InvokeResponse().setFailuresList(out.failures.map((f) => new PB.CheckFailure().setProperty(f.property).setReason(f.reason)));
        return out.value ? res.setReturn(toStruct(out.value)) : res;
      }),
      attach: unary((req) => {
        this.log.setAddress(req.getAddress());
        return new emptyPb.Empty();
      }),
      parameterize: unimplemented('Parameterize'),
      call: unimplemented('Call'),
      construct: unimplemented('Construct'),
      list: (call: any) => call.destroy({ code: grpc.status.UNIMPLEMENTED, message: 'List is not implemented by kubevm' }),
      getMapping: unary(() => new PB.GetMappingResponse().setProvider('').setData('')),
      getMappings: unary(() => new PB.GetMappingsResponse()),
    };
  }

  private timeout(seconds: number, fallbackMs: number): number {
    return seconds > 0 ? seconds * 1000 : fallbackMs;
  }

  private ctx(urn: string): OpContext {
    if (!this.kube) {
      throw new Error(
        this.configUnknown
          ? 'the provider configuration is not known yet (it depends on values computed during this update)'
          : 'the provider is not configured: Configure was not called',
      );
    }
    return {
      kube: this.kube,
      urn,
      defaultNamespace: this.namespace,
      progress: (m) => this.log.log('info', urn, m, true),
      warn: (m) => this.log.log('warning', urn, m),
      cancelled: () => this.cancelled,
    };
  }

  /** For tests: the effective configuration, kubeconfig redacted. */
  describeConfig(): Record<string, string | undefined> {
    return { kubeconfig: this.config.kubeconfig ? '[secret]' : undefined, context: this.config.context, namespace: this.namespace };
  }
}

/** Starts the server on 127.0.0.1 (port 0 = any) and resolves with the bound port. */
export async function startServer(opts: { engineAddress?: string; port?: number } = {}): Promise<{ port: number; server: any; provider: KubevmProvider }> {
  const provider = new KubevmProvider(opts.engineAddress);
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 400 * 1024 * 1024 });
  server.addService((providerRpc as any).ResourceProviderService, provider.implementation());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, server, provider };
}

/** The plugin's entry point: `pulumi-resource-kubevm [flags] <engine-address>`. */
export async function main(argv: string[]): Promise<void> {
  const args = argv.filter((a, i) => !a.startsWith('-') && !(i > 0 && ['--tracing', '-tracing'].includes(argv[i - 1])));
  const { port, server, provider } = await startServer({ engineAddress: args[0] });
  // The handshake of the plugin protocol: the port, alone, as the first line of stdout.
  process.stdout.write(`${port}\n`);
  const stop = () => {
    provider.log.close();
    server.tryShutdown(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
