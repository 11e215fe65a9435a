/**
 * metadata.managedFields bookkeeping (the FieldManager of k8s.io/apiserver, simplified).
 *
 * Managers are identified like upstream's BuildManagerIdentifier: manager name, operation and
 * subresource, plus apiVersion for Update entries (an applier keeps one entry across versions).
 */
import { Json, clone, isObject } from './json';
import { Comparison, FieldSet, compareObjects } from './fieldpath';
import { effectiveSchema } from './schema';

export interface ManagedFieldsEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  fieldsType: 'FieldsV1';
  fieldsV1: Json;
  subresource?: string;
}

/** A decoded entry. `dirty` entries are re-encoded; the others are returned exactly as stored. */
export interface ManagerRecord {
  id: string;
  entry: ManagedFieldsEntry;
  set: FieldSet;
  dirty: boolean;
}

type Operation = ManagedFieldsEntry['operation'];

export function managerIdentity(manager: string, operation: Operation, apiVersion: string, subresource?: string): string {
  return JSON.stringify({
    manager,
    operation,
    apiVersion: operation === 'Update' ? apiVersion : undefined,
    subresource: subresource || undefined,
  });
}

/** How upstream names a manager in conflict messages: `"kubectl" with subresource "status" using v1`. */
export function describeManager(entry: ManagedFieldsEntry): string {
  let s = JSON.stringify(entry.manager);
  if (entry.subresource) s += ` with subresource ${JSON.stringify(entry.subresource)}`;
  if (entry.operation === 'Update') s += ` using ${entry.apiVersion}`;
  return s;
}

export function newRecord(
  manager: string,
  operation: Operation,
  apiVersion: string,
  now: string,
  subresource?: string,
): ManagerRecord {
  const entry: ManagedFieldsEntry = { manager, operation, apiVersion, time: now, fieldsType: 'FieldsV1', fieldsV1: {} };
  if (subresource) entry.subresource = subresource;
  return { id: managerIdentity(manager, operation, apiVersion, subresource), entry, set: new FieldSet(), dirty: true };
}

/**
 * Decode a managedFields value; undefined when it is not a valid list of entries (the caller
 * then falls back to another source, as upstream does on decode errors).
 */
export function decodeManagedFields(value: Json): ManagerRecord[] | undefined {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) return undefined;
  const byId = new Map<string, ManagerRecord>();
  for (const raw of value) {
    if (!isValidEntry(raw)) return undefined;
    const entry = clone(raw) as ManagedFieldsEntry;
    const id = managerIdentity(entry.manager, entry.operation, entry.apiVersion, entry.subresource);
    const set = FieldSet.fromFieldsV1(entry.fieldsV1 ?? {});
    const seen = byId.get(id);
    // Duplicate identities cannot be represented; fold them into one entry.
    if (seen) byId.set(id, { ...seen, set: seen.set.union(set), dirty: true });
    else byId.set(id, { id, entry, set, dirty: false });
  }
  return [...byId.values()];
}

function isValidEntry(e: Json): boolean {
  return (
    isObject(e) &&
    typeof e.manager === 'string' &&
    (e.operation === 'Apply' || e.operation === 'Update') &&
    (e.apiVersion === undefined || typeof e.apiVersion === 'string') &&
    (e.fieldsType === undefined || e.fieldsType === 'FieldsV1') &&
    (e.fieldsV1 === undefined || isObject(e.fieldsV1)) &&
    (e.subresource === undefined || typeof e.subresource === 'string')
  );
}

/** `[{}]` is upstream's explicit request to drop all managedFields. */
export function isResetManagedFields(value: Json): boolean {
  if (!Array.isArray(value) || value.length !== 1 || !isObject(value[0])) return false;
  return Object.values(value[0]).every(
    (v) => v === undefined || v === null || v === '' || (isObject(v) && Object.keys(v).length === 0),
  );
}

/** Entries without fields are dropped; the rest sorted as upstream does (Apply first, then by time, manager…). */
export function encodeManagedFields(records: ManagerRecord[]): ManagedFieldsEntry[] {
  return records
    .filter((r) => !r.set.empty)
    .map((r) => (r.dirty ? encodeRecord(r) : clone(r.entry)))
    .sort(compareEntries);
}

function encodeRecord(r: ManagerRecord): ManagedFieldsEntry {
  const { manager, operation, apiVersion, time, subresource } = r.entry;
  const out: ManagedFieldsEntry = { manager, operation, apiVersion, time, fieldsType: 'FieldsV1', fieldsV1: r.set.toFieldsV1() };
  if (subresource) out.subresource = subresource;
  return out;
}

function compareEntries(a: ManagedFieldsEntry, b: ManagedFieldsEntry): number {
  if (a.operation !== b.operation) return a.operation < b.operation ? -1 : 1;
  const ta = seconds(a.time);
  const tb = seconds(b.time);
  if (ta !== tb) return ta - tb;
  for (const k of ['manager', 'apiVersion', 'subresource'] as const) {
    const x = a[k] ?? '';
    const y = b[k] ?? '';
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

function seconds(time: string | undefined): number {
  const ms = time ? Date.parse(time) : NaN;
  return Number.isNaN(ms) ? 0 : Math.floor(ms / 1000);
}

/** Take `paths` out of every record's set. */
export function releasePaths(records: ManagerRecord[], paths: FieldSet): void {
  for (const r of records) {
    const next = r.set.difference(paths);
    if (next.size !== r.set.size) {
      r.set = next;
      r.dirty = true;
    }
  }
}

/**
 * Attribute a non-apply change to `manager` (upstream Updater.Update with force): every changed
 * or added path moves to the manager's Update entry, removed paths leave every entry.
 * The manager's entry (and its time) is only touched when something changed.
 */
export function recordUpdate(
  records: ManagerRecord[],
  cmp: Comparison,
  opts: { manager: string; apiVersion: string; now: string; subresource?: string },
): ManagerRecord[] {
  const changed = cmp.modified.union(cmp.added);
  releasePaths(records, changed.union(cmp.removed));
  if (changed.empty) return records;
  const id = managerIdentity(opts.manager, 'Update', opts.apiVersion, opts.subresource);
  let own = records.find((r) => r.id === id);
  if (!own) {
    own = newRecord(opts.manager, 'Update', opts.apiVersion, opts.now, opts.subresource);
    records.push(own);
  }
  own.set = own.set.union(changed);
  own.entry.time = opts.now;
  own.dirty = true;
  return records;
}

/**
 * The entries an update starts from. Like upstream's decodeLiveOrNew: a client may write
 * managedFields directly (kubectl's client-side → server-side apply upgrade does), `[{}]` clears
 * them, and an absent/empty/invalid value keeps the stored ones. Subresource writes cannot
 * change managedFields.
 */
function baseRecords(oldObj: Json, newObj: Json, subresource?: string): ManagerRecord[] {
  const fromNew = newObj?.metadata?.managedFields;
  if (!subresource) {
    if (isResetManagedFields(fromNew)) return [];
    const decoded = decodeManagedFields(fromNew);
    if (decoded && decoded.length > 0) return decoded;
  }
  return decodeManagedFields(oldObj?.metadata?.managedFields) ?? [];
}

export function updateManagedFields(args: {
  oldObj: Json | undefined;
  newObj: Json;
  manager: string;
  apiVersion: string;
  now: string;
  subresource?: string;
  schema?: Json;
}): ManagedFieldsEntry[] {
  const schema = effectiveSchema(args.schema, args.newObj);
  const records = baseRecords(args.oldObj, args.newObj, args.subresource);
  const cmp = compareObjects(args.oldObj ?? {}, args.newObj, schema);
  return encodeManagedFields(recordUpdate(records, cmp, args));
}
