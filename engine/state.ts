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
 *
 * The engine saves after every step, so with a large program a save must not cost
 * the whole state each time (1,000 VMs: ~13 s of sealing and serialising per `up`,
 * ~25 s for a no-change `up`, measured with bench/provider.ts). Each entry's sealed
 * text is kept per URN and reused while the entry is the same object, or has the
 * same content (so an unchanged secret keeps its ciphertext), and a save whose file
 * text would not change writes nothing. Entries are values: after a save, replace
 * an entry with a new object to change it, never mutate it in place. Every write is
 * still the whole file, to a temporary file renamed over the state (atomic).
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

/** What was last written for one resource: the entry, its plain JSON, its sealed text in the file (UTF-8). */
interface Written {
  entry: ResourceState;
  plain: string;
  bytes: Buffer;
}

/** An entry as it sits inside `"resources": [ … ]` (indented; JSON strings hold no raw newline). */
const entryBytes = (sealed: Json): Buffer => Buffer.from(`    ${JSON.stringify(sealed, null, 2).replace(/\n/g, '\n    ')}`);
const COMMA = Buffer.from(',\n');

export class StateStore {
  private key?: Buffer;
  private salt?: string;
  /** Per URN, what the file holds now (written or loaded). */
  private written = new Map<string, Written>();
  /** The file's content as this store last wrote or read it: the header and the entries in order. */
  private last?: { head: string; entries: Buffer[] };

  constructor(readonly file: string) {}

  load(project: string, stack: string): StateFile {
    if (!fs.existsSync(this.file)) return { version: 1, project, stack, resources: [] };
    const raw = JSON.parse(fs.readFileSync(this.file, 'utf8')) as StateFile;
    if (raw.version !== 1) throw new Error(`${this.file}: state version ${raw.version} is not supported`);
    this.salt = raw.salt;
    const open = (v: Json) => this.transform(v, (s) => this.open(s));
    const resources = raw.resources.map((r) => ({ ...r, inputs: open(r.inputs), outputs: open(r.outputs) }));
    // The sealed entries as they are in the file: a save of unchanged entries keeps them (and their ciphertexts).
    this.written = new Map(
      resources.map((r, i) => [r.urn, { entry: r, plain: JSON.stringify(r), bytes: entryBytes(raw.resources[i]) }]),
    );
    this.last = { head: this.head(raw), entries: resources.map((r) => this.written.get(r.urn)!.bytes) };
    return { ...raw, resources };
  }

  /** Writes the state (whole file, atomically); a save that would not change the file writes nothing. */
  save(state: StateFile): void {
    const written = new Map<string, Written>();
    const entries = state.resources.map((r) => {
      const w = this.entry(r);
      written.set(r.urn, w);
      return w.bytes;
    });
    this.written = written;
    const head = this.head(state); // after sealing: a passphrase's salt is made by the first seal
    const last = this.last;
    if (last && last.head === head && last.entries.length === entries.length && entries.every((b, i) => b === last.entries[i]))
      return;
    // Exactly JSON.stringify(file, null, 2) + '\n' with `resources` as the last key, from the cached entries.
    const parts: Buffer[] = [Buffer.from(`${head.slice(0, -2)},\n  "resources": ${entries.length ? '[\n' : '[]'}`)];
    entries.forEach((b, i) => parts.push(...(i ? [COMMA, b] : [b])));
    parts.push(Buffer.from(entries.length ? '\n  ]\n}\n' : '\n}\n'));
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, Buffer.concat(parts), { mode: 0o600 });
    fs.renameSync(tmp, this.file);
    this.last = { head, entries };
  }

  /** The file's top level without `resources` (which the file puts last), indented as in the file. */
  private head(state: StateFile): string {
    const { resources: _resources, salt: _salt, ...rest } = state;
    return JSON.stringify(this.salt ? { ...rest, salt: this.salt } : rest, null, 2);
  }

  /** The sealed text of one entry: reused while the entry is the same object or has the same content. */
  private entry(r: ResourceState): Written {
    const prev = this.written.get(r.urn);
    if (prev?.entry === r) return prev;
    const plain = JSON.stringify(r);
    if (prev?.plain === plain) return { entry: r, plain, bytes: prev.bytes };
    const seal = (v: Json) => this.transform(v, (s) => this.seal(s));
    return { entry: r, plain, bytes: entryBytes({ ...r, inputs: seal(r.inputs), outputs: seal(r.outputs) }) };
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
  // On the current path (a dependency cycle is cut where it closes).
  const visiting = new Set<string>();
  const visit = (r: ResourceState) => {
    if (done.has(r.urn) || visiting.has(r.urn)) return;
    visiting.add(r.urn);
    for (const d of r.dependencies) {
      const dep = byUrn.get(d);
      if (dep) visit(dep);
    }
    visiting.delete(r.urn);
    done.add(r.urn);
    out.push(r);
  };
  for (const r of resources) visit(r);
  return out;
}

/** Dependents before their dependencies: the order to delete in. */
export const deleteOrder = (resources: ResourceState[]): ResourceState[] => createOrder(resources).reverse();
