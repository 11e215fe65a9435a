import { createHash, randomBytes } from 'node:crypto';
import { API_VERSION, NAME_PATTERN } from '../../controller/api/schema';
import { isConflict, type Gvr } from '../../controller/runtime/kube';
import { applyIgnoreChanges, diffInputs, type DiffResult, type UpdateClass } from '../diff';
import { specSchema, validateSpec, withDefaults, withoutDefaults, type Failure } from '../spec-schema';
import { isObject, isSecret, plain, UNKNOWN, withoutUnknowns, wrapSecrets, type Json } from '../values';
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
 * level (camelCase, as in the CRD) plus `name`, `namespace`, `labels` and
 * `annotations`; the id is `namespace/name`; outputs are the inputs plus a few
 * status fields. A resource module supplies the kind, how each field changes,
 * readiness and the status outputs; this class does check, diff, create, read,
 * update and delete.
 *
 * Names: without `name`, a resource is auto-named `<logical name>-<8 random
 * characters>` (the random seed of Check makes a preview and the update agree),
 * kept across updates; the annotation `kubevm.dev/autonamed` records it, so a
 * replacement can be created before the old object is deleted.
 *
 * Labels and annotations merge: the provider owns only the keys it set, listed
 * on the object in `kubevm.dev/managed-labels` and `kubevm.dev/managed-annotations`.
 * Keys others add (controllers, `kubectl label`) are left alone by updates and
 * are not drift on refresh; a key removed from the program is removed from the
 * object.
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

export const META_KEYS = ['name', 'namespace', 'labels', 'annotations'];
const NAME_RE = new RegExp(NAME_PATTERN);

/** Set (in the annotations input and on the object) when the provider chose the name. */
export const AUTONAMED = 'kubevm.dev/autonamed';

/** Check's autonaming options when the engine applies a stack's `pulumi:autonaming` configuration. */
export interface Autonaming {
  proposedName: string;
  mode: 'propose' | 'enforce' | 'disable';
}
/** Comma-separated keys of the labels / annotations the provider set on the object. */
export const MANAGED_LABELS = 'kubevm.dev/managed-labels';
export const MANAGED_ANNOTATIONS = 'kubevm.dev/managed-annotations';
const MANAGED_KEY = { labels: MANAGED_LABELS, annotations: MANAGED_ANNOTATIONS } as const;
type MetaMap = keyof typeof MANAGED_KEY;
/** Annotations tools and controllers write; an import of an object the provider did not create leaves them out. */
const FOREIGN_ANNOTATION_PREFIXES = ['kubevm.dev/', 'kubectl.kubernetes.io/'];

// Kubernetes label and annotation keys: an optional DNS-subdomain prefix and a name of at most 63 characters.
const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

function keyProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) return 'must have a DNS subdomain as its prefix (before "/")';
  if (!QUALIFIED_NAME.test(name)) return 'must be at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit (optionally after a "prefix/")';
  return undefined;
}

/**
 * `<base>-<8 characters of [a-z0-9]>`, a DNS label of at most 63 characters.
 * With a seed (Check's randomSeed) the suffix is derived from it, so the
 * preview and the update of one deployment pick the same name.
 */
export function autoname(base: string, seed?: Uint8Array): string {
  const bytes = seed && seed.length ? createHash('sha256').update(seed).digest() : randomBytes(8);
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let suffix = '';
  for (let i = 0; i < 8; i++) suffix += alphabet[bytes[i] % alphabet.length];
  const clean = base
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .slice(0, 63 - 9)
    .replace(/^-+|-+$/g, '');
  return clean ? `${clean}-${suffix}` : suffix;
}

/** Keys the provider manages on an object, from its managed-keys annotation (undefined when it has none). */
export function managedKeys(obj: any, which: MetaMap): string[] | undefined {
  const v = obj?.metadata?.annotations?.[MANAGED_KEY[which]];
  return typeof v === 'string' ? v.split(',').filter(Boolean) : undefined;
}

const pick = (m: Record<string, string>, keys: string[]): Record<string, string> =>
  Object.fromEntries(keys.filter((k) => m[k] !== undefined).map((k) => [k, m[k]]));

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
    if (key === 'labels' || key === 'annotations') return 'live';
    return this.classifySpec(key);
  }

  /**
   * Validates the inputs and fills in `name` (explicit, else the previous one,
   * else the engine's proposal under the stack's autonaming configuration, else
   * an autoname) and `namespace`. `randomSeed` is Check's seed (autonames).
   */
  check(urn: string, olds: Props, news: Props, defaultNamespace: string, randomSeed?: Uint8Array, autonaming?: Autonaming): CheckOutcome {
    const p = plain(news);
    const failures: Failure[] = [];
    for (const k of Object.keys(p)) if (!this.inputKeys.includes(k)) failures.push({ property: k, reason: `${k}: unknown property of ${this.token}` });
    const inputs: Props = { ...news };
    let autonamed = false;
    let nameMissing = false;
    if (news.name !== undefined) inputs.name = news.name;
    else if (olds.name !== undefined) {
      inputs.name = olds.name; // stable across updates
      autonamed = plain(olds.annotations)?.[AUTONAMED] === 'true';
    } else if (autonaming?.mode === 'disable') {
      nameMissing = true;
      failures.push({ property: 'name', reason: 'name: required: autonaming is disabled for this stack (pulumi:autonaming mode "disable")' });
    } else if (autonaming) {
      // The stack's pattern (pulumi:autonaming); the engine makes a fresh proposal for a replacement.
      inputs.name = autonaming.proposedName;
    } else {
      inputs.name = autoname(urnName(urn), randomSeed?.length ? Buffer.concat([Buffer.from(randomSeed), Buffer.from(urn)]) : undefined);
      autonamed = true;
    }
    inputs.namespace = news.namespace ?? defaultNamespace;
    for (const k of ['name', 'namespace']) {
      if (k === 'name' && nameMissing) continue;
      const v = plain(inputs[k]);
      if (v !== UNKNOWN && (typeof v !== 'string' || !NAME_RE.test(v) || v.length > 63))
        failures.push({ property: k, reason: `${k}: value ${JSON.stringify(v)} must be a DNS label (lower-case letters, digits and '-', at most 63 characters)` });
    }
    for (const which of ['labels', 'annotations'] as const) {
      const m = plain(news[which]);
      if (m === undefined || m === UNKNOWN) continue;
      if (!isObject(m)) {
        failures.push({ property: which, reason: `${which}: must be a map of strings` });
        continue;
      }
      for (const [k, v] of Object.entries(m)) {
        const at = `${which}["${k}"]`;
        const bad = keyProblem(k);
        if (bad) failures.push({ property: at, reason: `${at}: key ${JSON.stringify(k)} ${bad}` });
        if (Object.values(MANAGED_KEY).includes(k as any)) failures.push({ property: at, reason: `${at}: key ${JSON.stringify(k)} is reserved for the provider (it lists the keys the provider manages)` });
        if (v === UNKNOWN) continue;
        if (typeof v !== 'string') failures.push({ property: at, reason: `${at}: value ${JSON.stringify(v)} must be a string` });
        else if (which === 'labels' && !LABEL_VALUE.test(v))
          failures.push({ property: at, reason: `${at}: value ${JSON.stringify(v)} must be empty or at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit` });
      }
    }
    // The autoname marker travels in the annotations input (as pulumi.com/autonamed does with Pulumi's Kubernetes provider).
    const rawAnnotations = news.annotations;
    if (rawAnnotations === undefined || (isObject(rawAnnotations) && !isSecret(rawAnnotations))) {
      const a: Props = { ...(rawAnnotations ?? {}) };
      delete a[AUTONAMED];
      if (autonamed) a[AUTONAMED] = 'true';
      if (Object.keys(a).length || rawAnnotations !== undefined) inputs.annotations = a;
      else delete inputs.annotations;
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

  /**
   * Plain inputs as the server would hold them: spec defaults applied, empty
   * maps as none, the autoname marker left out (it is bookkeeping, not a change).
   */
  normalise(p: Props): Props {
    const out: Props = { name: p.name, namespace: p.namespace };
    for (const which of ['labels', 'annotations'] as const) {
      const m = p[which];
      if (m === UNKNOWN) out[which] = UNKNOWN;
      else if (isObject(m)) {
        const rest = { ...m };
        if (which === 'annotations') delete rest[AUTONAMED];
        if (Object.keys(rest).length > 0) out[which] = rest;
      }
    }
    Object.assign(out, withDefaults(this.specOf(p), specSchema(this.kind)));
    return out;
  }

  /** Whether the (plain) inputs carry an autoname: a replacement then gets a new name and need not delete first. */
  isAutonamed(p: Props): boolean {
    return isObject(p.annotations) && p.annotations[AUTONAMED] === 'true';
  }

  diff(olds: Props, news: Props, ignoreChanges: string[] = []): DiffOutcome {
    const o = this.normalise(plain(olds));
    const n = applyIgnoreChanges(o, this.normalise(plain(news)), ignoreChanges);
    const res = diffInputs(o, n, this.inputKeys, (k) => this.classify(k));
    const sameName = n.name === o.name && n.namespace === o.namespace;
    // An autonamed object is recreated under a new name (the engine checks the replacement again without olds).
    return { ...res, deleteBeforeReplace: res.replaces.length > 0 && sameName && !this.isAutonamed(plain(news)) };
  }

  /**
   * The object for the (plain) inputs. With `base` (the live object) the
   * labels and annotations merge: keys the provider set before (its
   * managed-keys annotations, else those of `previous`, the last inputs) and
   * no longer wants are removed, keys others set are kept.
   */
  toObject(p: Props, base: any = {}, previous?: Props): any {
    const metadata: any = { ...(base.metadata ?? {}), name: p.name, namespace: p.namespace };
    for (const which of ['labels', 'annotations'] as const) {
      const live: Record<string, string> = { ...(base.metadata?.[which] ?? {}) };
      const owned = managedKeys(base, which) ?? (isObject(previous?.[which]) ? Object.keys(previous![which]) : []);
      for (const k of owned) delete live[k];
      Object.assign(live, isObject(p[which]) ? p[which] : {});
      if (Object.keys(live).length) metadata[which] = live;
      else delete metadata[which];
    }
    metadata.annotations = {
      ...(metadata.annotations ?? {}),
      [MANAGED_LABELS]: Object.keys(isObject(p.labels) ? p.labels : {}).sort().join(','),
      [MANAGED_ANNOTATIONS]: Object.keys(isObject(p.annotations) ? p.annotations : {}).sort().join(','),
    };
    return { apiVersion: API_VERSION, kind: this.kind, metadata, spec: this.specOf(p) };
  }

  /**
   * Inputs as the user would write them to get `obj`; `like` = last inputs
   * (none on import). Only the labels and annotations the provider manages are
   * inputs; on an object without the managed-keys annotations, those of `like`,
   * or on import all labels and the annotations tools did not write.
   */
  inputsFromObject(obj: any, like: Props | undefined): Props {
    const out: Props = { name: obj.metadata.name, namespace: obj.metadata.namespace };
    for (const which of ['labels', 'annotations'] as const) {
      const live: Record<string, string> = { ...(obj.metadata[which] ?? {}) };
      delete live[MANAGED_LABELS];
      delete live[MANAGED_ANNOTATIONS];
      let keys = managedKeys(obj, which) ?? (like ? Object.keys(isObject(like[which]) ? like[which] : {}) : undefined);
      if (!keys) keys = Object.keys(live).filter((k) => which === 'labels' || k === AUTONAMED || !FOREIGN_ANNOTATION_PREFIXES.some((x) => k.startsWith(x)));
      const m = pick(live, keys);
      if (Object.keys(m).length || like?.[which] !== undefined) out[which] = m;
    }
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

  /** The id a create will return (previews show it too). */
  previewId(raw: Props): string {
    const p = plain(raw);
    return `${p.namespace}/${p.name}`;
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

  /**
   * Replaces the spec with the desired one and merges labels and annotations
   * (see toObject); a PUT on the current resourceVersion, retried on conflicts.
   */
  protected async put(ctx: OpContext, p: Props, previous?: Props): Promise<{ before: any; after: any }> {
    for (let attempt = 0; ; attempt++) {
      const before = await ctx.kube.get(this.gvr, p.namespace, p.name);
      const next = this.toObject(p, before, previous);
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
    const { before, after } = await this.put(ctx, p, plain(rawOlds));
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

