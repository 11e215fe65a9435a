import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SECRET_SIG, SIG_KEY, isObject, isSecret, type Json } from '../provider/values';

/**
 * The engine's state file: one JSON document with a resource per entry, in the
 * order they were created (dependencies before dependents).
 *
 * Secrets never reach the file in plain text: every secret value (the wire shape
 * `{sig: secret, value}`) is sealed with AES-256-GCM as `{sig: secret, ciphertext}`.
 * The key is derived (scrypt) from $KUBEVM_STATE_PASSPHRASE when set, otherwise it
 * is a random 32-byte key kept beside the state as `<state>.key` (mode 0600).
 */
export interface ResourceState {
  urn: string;
  type: string;
  id: string;
  inputs: Record<string, Json>;
  outputs: Record<string, Json>;
  /** URNs this resource depends on (explicit dependsOn, property dependencies, parent). */
  dependencies: string[];
}

export interface StateFile {
  version: 1;
  project: string;
  stack: string;
  /** scrypt salt when the key comes from a passphrase. */
  salt?: string;
  resources: ResourceState[];
}

export class StateStore {
  private key?: Buffer;
  private salt?: string;

  constructor(readonly file: string) {}

  load(project: string, stack: string): StateFile {
    if (!fs.existsSync(this.file)) return { version: 1, project, stack, resources: [] };
    const raw = JSON.parse(fs.readFileSync(this.file, 'utf8')) as StateFile;
    if (raw.version !== 1) throw new Error(`${this.file}: state version ${raw.version} is not supported`);
    this.salt = raw.salt;
    const open = (v: Json) => this.transform(v, (s) => this.open(s));
    return { ...raw, resources: raw.resources.map((r) => ({ ...r, inputs: open(r.inputs), outputs: open(r.outputs) })) };
  }

  save(state: StateFile): void {
    const seal = (v: Json) => this.transform(v, (s) => this.seal(s));
    const resources = state.resources.map((r) => ({ ...r, inputs: seal(r.inputs), outputs: seal(r.outputs) }));
    const out: StateFile = { ...state, resources };
    if (this.salt) out.salt = this.salt;
    else delete out.salt;
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(out, null, 2) + '\n', { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }

  private transform(v: Json, f: (secret: Record<string, Json>) => Json): Json {
    if (isSecret(v)) return f(v);
    if (Array.isArray(v)) return v.map((x) => this.transform(x, f));
    if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, this.transform(x, f)]));
    return v;
  }

  private seal(s: Record<string, Json>): Json {
    if (s.ciphertext !== undefined) return s;
    const iv = crypto.randomBytes(12);
    const c = crypto.createCipheriv('aes-256-gcm', this.getKey(), iv);
    const body = Buffer.concat([c.update(JSON.stringify(s.value ?? null), 'utf8'), c.final()]);
    return { [SIG_KEY]: SECRET_SIG, ciphertext: Buffer.concat([iv, c.getAuthTag(), body]).toString('base64') };
  }

  private open(s: Record<string, Json>): Json {
    if (typeof s.ciphertext !== 'string') return s;
    const buf = Buffer.from(s.ciphertext, 'base64');
    const d = crypto.createDecipheriv('aes-256-gcm', this.getKey(), buf.subarray(0, 12));
    d.setAuthTag(buf.subarray(12, 28));
    let text: string;
    try {
      text = Buffer.concat([d.update(buf.subarray(28)), d.final()]).toString('utf8');
    } catch {
      throw new Error(`${this.file}: cannot decrypt a secret (wrong KUBEVM_STATE_PASSPHRASE or key file ${this.file}.key)`);
    }
    return { [SIG_KEY]: SECRET_SIG, value: JSON.parse(text) };
  }

  private getKey(): Buffer {
    if (this.key) return this.key;
    const pass = process.env.KUBEVM_STATE_PASSPHRASE;
    if (pass) {
      this.salt ??= crypto.randomBytes(16).toString('base64');
      this.key = crypto.scryptSync(pass, Buffer.from(this.salt, 'base64'), 32);
      return this.key;
    }
    const keyFile = `${this.file}.key`;
    if (fs.existsSync(keyFile)) this.key = Buffer.from(fs.readFileSync(keyFile, 'utf8').trim(), 'base64');
    else {
      this.key = crypto.randomBytes(32);
      fs.mkdirSync(path.dirname(keyFile), { recursive: true });
      fs.writeFileSync(keyFile, this.key.toString('base64') + '\n', { mode: 0o600 });
    }
    if (this.key.length !== 32) throw new Error(`${keyFile}: not a 32-byte base64 key`);
    return this.key;
  }
}

/** Orders resources so that each comes after everything it depends on (stable otherwise). */
export function createOrder(resources: ResourceState[]): ResourceState[] {
  const byUrn = new Map(resources.map((r) => [r.urn, r]));
  const done = new Set<string>();
  const out: ResourceState[] = [];
  const visit = (r: ResourceState, stack: Set<string>) => {
    if (done.has(r.urn) || stack.has(r.urn)) return;
    stack.add(r.urn);
    for (const d of r.dependencies) {
      const dep = byUrn.get(d);
      if (dep) visit(dep, stack);
    }
    done.add(r.urn);
    out.push(r);
  };
  for (const r of resources) visit(r, new Set());
  return out;
}

/** Dependents before their dependencies: the order to delete in. */
export const deleteOrder = (resources: ResourceState[]): ResourceState[] => createOrder(resources).reverse();
