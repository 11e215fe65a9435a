import { API_VERSION, NAME_PATTERN } from '../../controller/api/schema';
import { isConflict, type Gvr } from '../../controller/runtime/kube';
import { applyIgnoreChanges, diffInputs, type DiffResult, type UpdateClass } from '../diff';
import { specSchema, validateSpec, withDefaults, withoutDefaults, type Failure } from '../spec-schema';
import { isObject, plain, UNKNOWN, withoutUnknowns, wrapSecrets, type Json } from '../values';
import { waitFor, WaitError, type Verdict, type WaitContext } from '../wait';

/** The object exists but did not become ready: sent to the engine as ErrorResourceInitFailed. */
export class InitFailedError extends Error {
  constructor(
    message: string,
    readonly id: string,
    readonly props: Record<string, any>,
    readonly inputs: Record<string, any>,
  ) {
    super(message);
  }
}

/**
 * What every kubevm resource shares: inputs are the CRD spec fields at the top
 * level (camelCase, as in the CRD) plus `name`, `namespace` and `labels`; the id
 * is `namespace/name`; outputs are the inputs plus a few status fields. A
 * resource module supplies the kind, how each field changes, readiness and the
 * status outputs; this class does check, diff, create, read, update and delete.
 */
export interface OpContext extends WaitContext {
  urn: string;
  defaultNamespace: string;
  warn(message: string): void;
}

export type Props = Record<string, Json>;

export interface CheckOutcome {
  inputs: Props;
  failures: Failure[];
}

export interface DiffOutcome extends DiffResult {
  deleteBeforeReplace: boolean;
}

export const META_KEYS = ['name', 'namespace', 'labels'];
const NAME_RE = new RegExp(NAME_PATTERN);

export function parseId(id: string): { namespace: string; name: string } {
  const parts = id.split('/');
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw new Error(`invalid id ${JSON.stringify(id)}: expected namespace/name`);
  return { namespace: parts[0], name: parts[1] };
}

/** The logical name in a URN (`urn:pulumi:stack::project::type::name`). */
export function urnName(urn: string): string {
  return urn.split('::').pop() ?? '';
}

export abstract class CrdResource {
  abstract readonly token: string;
  abstract readonly kind: string;
  abstract readonly gvr: Gvr;
  /** Output-only properties (unknown in previews). */
  abstract readonly outputKeys: string[];
  /** Input properties that are always secret in outputs. */
  readonly secretKeys: string[] = [];
  readonly defaultTimeoutMs: number = 5 * 60_000;

  /** How a change of a spec field is applied. */
  abstract classifySpec(key: string): UpdateClass;
  /** Status-derived outputs. */
  abstract outputs(obj: any): Props;
  /** Whether a freshly created object is ready. */
  abstract ready(obj: any): Verdict;

  /** Semantic rules beyond the schema (e.g. "exactly one source"). Inputs are plain, unknowns removed. */
  protected semanticFailures(_spec: Props): Failure[] {
    return [];
  }

  get specKeys(): string[] {
    return Object.keys(specSchema(this.kind).properties ?? {});
  }

  get inputKeys(): string[] {
    return [...META_KEYS, ...this.specKeys];
  }

  classify(key: string): UpdateClass {
    if (key === 'name' || key === 'namespace') return 'replace';
    if (key === 'labels') return 'live';
    return this.classifySpec(key);
  }

  check(urn: string, olds: Props, news: Props, defaultNamespace: string): CheckOutcome {
    const p = plain(news);
    const failures: Failure[] = [];
    for (const k of Object.keys(p)) if (!this.inputKeys.includes(k)) failures.push({ property: k, reason: `${k}: unknown property of ${this.token}` });
    const inputs: Props = { ...news };
    inputs.name = news.name ?? olds.name ?? urnName(urn);
    inputs.namespace = news.namespace ?? defaultNamespace;
    for (const k of ['name', 'namespace']) {
      const v = plain(inputs[k]);
      if (v !== UNKNOWN && (typeof v !== 'string' || !NAME_RE.test(v) || v.length > 63))
        failures.push({ property: k, reason: `${k}: value ${JSON.stringify(v)} must be a DNS label (lower-case letters, digits and '-', at most 63 characters)` });
    }
    const labels = plain(news.labels);
    if (labels !== undefined && labels !== UNKNOWN) {
      if (!isObject(labels)) failures.push({ property: 'labels', reason: 'labels: must be a map of strings' });
      else for (const [k, v] of Object.entries(labels)) if (typeof v !== 'string' && v !== UNKNOWN) failures.push({ property: `labels["${k}"]`, reason: `labels["${k}"]: value ${JSON.stringify(v)} must be a string` });
    }
    const spec = withoutUnknowns(this.specOf(p));
    failures.push(...validateSpec(this.kind, spec), ...this.semanticFailures(spec));
    return { inputs, failures };
  }

  specOf(p: Props): Props {
    const spec: Props = {};
    for (const k of this.specKeys) if (p[k] !== undefined) spec[k] = p[k];
    return spec;
  }

  /** Plain inputs as the server would hold them: spec defaults applied, empty labels as none. */
  normalise(p: Props): Props {
    const out: Props = { name: p.name, namespace: p.namespace };
    if (isObject(p.labels) && Object.keys(p.labels).length > 0) out.labels = p.labels;
    else if (p.labels === UNKNOWN) out.labels = UNKNOWN;
    Object.assign(out, withDefaults(this.specOf(p), specSchema(this.kind)));
    return out;
  }

  diff(olds: Props, news: Props, ignoreChanges: string[] = []): DiffOutcome {
    const o = this.normalise(plain(olds));
    const n = applyIgnoreChanges(o, this.normalise(plain(news)), ignoreChanges);
    const res = diffInputs(o, n, this.inputKeys, (k) => this.classify(k));
    const sameName = n.name === o.name && n.namespace === o.namespace;
    return { ...res, deleteBeforeReplace: res.replaces.length > 0 && sameName };
  }

  toObject(p: Props, base: any = {}): any {
    const metadata = { ...(base.metadata ?? {}), name: p.name, namespace: p.namespace };
    if (isObject(p.labels) && Object.keys(p.labels).length) metadata.labels = p.labels;
    else delete metadata.labels;
    return { apiVersion: API_VERSION, kind: this.kind, metadata, spec: this.specOf(p) };
  }

  /** Inputs as the user would write them to get `obj`; `like` = last inputs (none on import). */
  inputsFromObject(obj: any, like: Props | undefined): Props {
    const out: Props = { name: obj.metadata.name, namespace: obj.metadata.namespace };
    const labels = obj.metadata.labels ?? {};
    if (Object.keys(labels).length || like?.labels !== undefined) out.labels = labels;
    const spec = withoutDefaults(obj.spec ?? {}, specSchema(this.kind), like ? this.specOf(like) : undefined);
    return { ...out, ...spec };
  }

  /** Outputs = the inputs (secrets kept or added) + status outputs. */
  result(rawInputs: Props, obj: any): Props {
    const p = plain(rawInputs);
    const inputs: Props = {};
    for (const k of this.inputKeys) if (p[k] !== undefined) inputs[k] = p[k];
    return { ...wrapSecrets(inputs, this.secretKeys, rawInputs), ...this.outputs(obj) };
  }

  previewResult(rawInputs: Props): Props {
    const out: Props = wrapSecrets(rawInputs, this.secretKeys, rawInputs);
    for (const k of this.outputKeys) out[k] = UNKNOWN;
    return out;
  }

  /** Outputs of an update preview: status outputs unknown unless the resource can tell. */
  previewUpdate(_olds: Props, news: Props, _change: DiffOutcome): Props {
    return this.previewResult(news);
  }

  async create(ctx: OpContext, raw: Props, timeoutMs: number): Promise<{ id: string; obj: any }> {
    const p = plain(raw);
    const created = await ctx.kube.create(this.gvr, p.namespace, this.toObject(p)).catch((e) => {
      if (isConflict(e)) throw new Error(`${this.kind} ${p.namespace}/${p.name} already exists; import it with id "${p.namespace}/${p.name}"`);
      throw e;
    });
    const id = `${p.namespace}/${p.name}`;
    const obj = await this.initFailure(ctx, raw, id, created, this.waitReady(ctx, created, timeoutMs, id));
    return { id, obj };
  }

  /** A wait that failed after the object was written: the engine records the object with the error. */
  protected async initFailure(ctx: OpContext, raw: Props, id: string, fallback: any, waiting: Promise<any>): Promise<any> {
    try {
      return await waiting;
    } catch (e) {
      if (!(e instanceof WaitError)) throw e;
      const { namespace, name } = parseId(id);
      const obj = (await ctx.kube.tryGet(this.gvr, namespace, name).catch(() => undefined)) ?? fallback;
      throw new InitFailedError(e.message, id, this.result(raw, obj), raw);
    }
  }

  protected waitReady(ctx: OpContext, created: any, timeoutMs: number, id: string): Promise<any> {
    const gen = created.metadata.generation ?? 0;
    return waitFor(ctx, {
      gvr: this.gvr,
      namespace: created.metadata.namespace,
      name: created.metadata.name,
      what: `${this.kind} ${id} to be ready`,
      timeoutMs,
      check: (o) => (!o ? { done: false, failed: 'deleted while waiting' } : (o.status?.observedGeneration ?? gen) < gen ? { done: false } : this.ready(o)),
    });
  }

  async read(ctx: OpContext, id: string, rawLike: Props | undefined): Promise<{ inputs: Props; props: Props } | undefined> {
    const { namespace, name } = parseId(id);
    const obj = await ctx.kube.tryGet(this.gvr, namespace, name);
    if (!obj || obj.metadata.deletionTimestamp) return undefined;
    const like = rawLike ? plain(rawLike) : undefined;
    const inputs = wrapSecrets(this.inputsFromObject(obj, like), this.secretKeys, rawLike ?? {});
    return { inputs, props: { ...inputs, ...this.outputs(obj) } };
  }

  /** Replaces labels and spec with the desired ones (PUT on the current resourceVersion, retried on conflicts). */
  protected async put(ctx: OpContext, p: Props): Promise<{ before: any; after: any }> {
    for (let attempt = 0; ; attempt++) {
      const before = await ctx.kube.get(this.gvr, p.namespace, p.name);
      const next = this.toObject(p, before);
      next.status = before.status;
      try {
        const after = await ctx.kube.request('PUT', `${this.path(p.namespace)}/${p.name}?fieldManager=kubevm-provider`, next);
        return { before, after };
      } catch (e) {
        if (!isConflict(e) || attempt >= 5) throw e;
      }
    }
  }

  protected path(namespace: string): string {
    return `/apis/${this.gvr.group}/${this.gvr.version}/namespaces/${namespace}/${this.gvr.plural}`;
  }

  async update(ctx: OpContext, id: string, rawOlds: Props, rawNews: Props, timeoutMs: number, change: DiffOutcome): Promise<any> {
    const p = plain(rawNews);
    const { before, after } = await this.put(ctx, p);
    return this.initFailure(ctx, rawNews, id, after, this.waitUpdated(ctx, before, after, timeoutMs, id, change, rawOlds));
  }

  protected waitUpdated(ctx: OpContext, _before: any, after: any, timeoutMs: number, id: string, _change: DiffOutcome, _olds: Props): Promise<any> {
    return this.waitReady(ctx, after, timeoutMs, id);
  }

  async delete(ctx: OpContext, id: string, timeoutMs: number): Promise<void> {
    const { namespace, name } = parseId(id);
    await ctx.kube.delete(this.gvr, namespace, name);
    await waitFor(ctx, {
      gvr: this.gvr,
      namespace,
      name,
      what: `${this.kind} ${id} to be deleted`,
      timeoutMs,
      check: (o) => ({ done: !o }),
    });
  }
}

