/**
 * Server-side apply (application/apply-patch+yaml), after structured-merge-diff's
 * Updater.Apply: merge the applied configuration into the live object (applied values win),
 * remove what this applier stopped applying (unless someone else owns it), detect conflicts
 * with other managers, and record the applier's new field set.
 */
import { PatchError, badRequest } from './errors';
import { Json, JsonObject, clone, deepEqual, isObject } from './json';
import {
  FieldSet,
  Path,
  compareObjects,
  fieldSetFromLeaves,
  flatten,
  formatPath,
  getAt,
  keyToken,
  listKind,
  removeAt,
  valueToken,
} from './fieldpath';
import {
  ManagerRecord,
  decodeManagedFields,
  describeManager,
  encodeManagedFields,
  managerIdentity,
  newRecord,
  recordUpdate,
  releasePaths,
} from './managed-fields';
import { effectiveSchema, fieldSchema, isAtomicMap, itemSchema } from './schema';

export interface ApplyArgs {
  live: Json | undefined;
  applied: Json;
  manager: string;
  force: boolean;
  schema?: Json;
  apiVersion: string;
  now: string;
  subresource?: string;
}

/** Upstream's name for the owner of fields that existed before the first apply. */
const BEFORE_FIRST_APPLY = 'before-first-apply';

export function serverSideApply(args: ApplyArgs): Json {
  const config = validateApplied(args.applied);
  const schema = effectiveSchema(args.schema, config);
  const live: JsonObject = isObject(args.live) ? clone(args.live) : {};
  const records = startingRecords(args, live, schema);

  const applyId = managerIdentity(args.manager, 'Apply', args.apiVersion, args.subresource);
  const previous = records.find((r) => r.id === applyId);
  const others = records.filter((r) => r !== previous);
  const appliedSet = fieldSetFromLeaves(flatten(config, schema));

  const merged = mergeApplied(live, config, schema) as JsonObject;
  if (previous) removeDropped(merged, previous.set.difference(appliedSet), appliedSet, others);

  const cmp = compareObjects(live, merged, schema);
  const changed = cmp.modified.union(cmp.added);
  const conflicts = findConflicts(others, changed);
  if (conflicts.length > 0 && !args.force) throw conflictError(conflicts);
  // Forced or conflict-free: other managers lose what this apply changed or removed.
  releasePaths(others, changed.union(cmp.removed));

  // Re-applying the same configuration changes nothing: return the live object untouched (not
  // even the entry's time) so the write is a no-op and resourceVersion does not move.
  if (previous && sameSet(previous.set, appliedSet) && !others.some((r) => r.dirty) && sameObject(live, merged)) {
    return clone(args.live);
  }
  const own = previous ?? newRecord(args.manager, 'Apply', args.apiVersion, args.now, args.subresource);
  own.set = appliedSet;
  own.entry.apiVersion = args.apiVersion;
  own.entry.time = args.now;
  own.dirty = true;

  setManagedFields(merged, [...others, own]);
  return merged;
}

interface Conflict {
  record: ManagerRecord;
  paths: FieldSet;
}

/** Paths this apply changes that another manager (Apply or Update) owns. */
function findConflicts(others: ManagerRecord[], changed: FieldSet): Conflict[] {
  return others.map((r) => ({ record: r, paths: r.set.intersection(changed) })).filter((c) => !c.paths.empty);
}

function sameSet(a: FieldSet, b: FieldSet): boolean {
  return a.size === b.size && [...a].every((p) => b.has(p));
}

/** Equal apart from managedFields (which are recomputed anyway). */
function sameObject(a: JsonObject, b: JsonObject): boolean {
  const strip = (o: JsonObject) => (isObject(o.metadata) ? { ...o, metadata: { ...o.metadata, managedFields: undefined } } : o);
  return deepEqual(withoutUndefined(strip(a)), withoutUndefined(strip(b)));
}

function withoutUndefined(o: JsonObject): JsonObject {
  return JSON.parse(JSON.stringify(o));
}

/** The applied object must be an object and must not carry managedFields (upstream: 400). */
function validateApplied(applied: Json): JsonObject {
  if (!isObject(applied)) throw badRequest('the apply patch must be a JSON or YAML object');
  const mf = isObject(applied.metadata) ? applied.metadata.managedFields : undefined;
  if (mf !== undefined && mf !== null && !(Array.isArray(mf) && mf.length === 0)) {
    throw badRequest('metadata.managedFields must be nil');
  }
  // A null in an apply configuration means "not set by me": drop it, so that a field this manager
  // applied before is removed (if nobody else owns it) instead of being owned as null.
  return withoutNulls(clone(applied)) as JsonObject;
}

function withoutNulls(v: Json): Json {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (!isObject(v)) return v;
  for (const k of Object.keys(v)) {
    if (v[k] === null) delete v[k];
    else v[k] = withoutNulls(v[k]);
  }
  return v;
}

/**
 * Managers of the live object. When an existing object has no managedFields at all, upstream
 * (skipNonAppliedManager) first attributes all its fields to "before-first-apply", so that the
 * first apply cannot silently take over values it did not set.
 */
function startingRecords(args: ApplyArgs, live: JsonObject, schema: Json): ManagerRecord[] {
  if (args.live === undefined) return [];
  const records = decodeManagedFields(live.metadata?.managedFields) ?? [];
  if (records.length > 0) return records;
  return recordUpdate([], compareObjects({}, live, schema), {
    manager: BEFORE_FIRST_APPLY,
    apiVersion: args.apiVersion,
    now: args.now,
  });
}

function setManagedFields(obj: JsonObject, records: ManagerRecord[]): void {
  const entries = encodeManagedFields(records);
  if (!isObject(obj.metadata)) obj.metadata = {};
  if (entries.length > 0) obj.metadata.managedFields = entries;
  else delete obj.metadata.managedFields;
}

// ---- merge ----------------------------------------------------------------------------------

/** Merge `applied` over `live` (neither is modified): granular maps merge, associative lists merge by key, the rest is replaced. */
export function mergeApplied(live: Json, applied: Json, schema: Json): Json {
  if (isObject(applied)) {
    if (!isObject(live) || isAtomicMap(schema)) return clone(applied);
    const out: JsonObject = clone(live);
    for (const [k, v] of Object.entries(applied)) out[k] = mergeApplied(live[k], v, fieldSchema(schema, k));
    return out;
  }
  if (Array.isArray(applied) && Array.isArray(live)) {
    const a = listKind(schema, applied);
    const l = listKind(schema, live);
    if (a.type === 'set' && l.type === 'set') return mergeLists(live, applied, valueToken, (_l, r) => clone(r));
    if (a.type === 'map' && l.type === 'map') {
      const id = (item: Json) => keyToken(item, a.keys);
      const items = itemSchema(schema);
      return mergeLists(live, applied, id, (lv, rv) => mergeApplied(lv, rv, items));
    }
  }
  return clone(applied);
}

/**
 * Upstream's associative list merge (typed/merge.go visitListItems): live-only items keep their
 * place, applied items appear in applied order, shared items are merged.
 */
function mergeLists(lhs: Json[], rhs: Json[], id: (item: Json) => string, merge: (l: Json, r: Json) => Json): Json[] {
  const lIds = lhs.map(id);
  const rIds = rhs.map(id);
  const lById = new Map(lhs.map((item, i) => [lIds[i], item] as const));
  const rSet = new Set(rIds);
  const shared = rIds.filter((k) => lById.has(k));
  let nextShared = shared.shift();
  const done = new Set<string>();
  const out: Json[] = [];
  let li = 0;
  let ri = 0;
  while (li < lhs.length || ri < rhs.length) {
    if (li < lhs.length && ri < rhs.length) {
      const lk = lIds[li];
      if (lk === rIds[ri]) {
        done.add(lk);
        out.push(merge(lhs[li], rhs[ri]));
        li++;
        ri++;
        nextShared = shared.shift();
        continue;
      }
      // A shared item that comes later in applied order: emit it when we get there.
      if (rSet.has(lk) && nextShared !== undefined && nextShared !== lk) {
        li++;
        continue;
      }
    }
    if (li < lhs.length) {
      const lk = lIds[li];
      if (!rSet.has(lk)) {
        out.push(clone(lhs[li]));
        li++;
        continue;
      }
      if (done.has(lk) || ri >= rhs.length) {
        li++;
        continue;
      }
    }
    const rk = rIds[ri];
    done.add(rk);
    out.push(lById.has(rk) ? merge(lById.get(rk), rhs[ri]) : clone(rhs[ri]));
    ri++;
    if (nextShared === rk) nextShared = shared.shift();
  }
  return out;
}

// ---- removal of dropped fields --------------------------------------------------------------

/**
 * Remove the paths this manager applied last time but not now, unless the new configuration or
 * another manager still owns them (or something below them). Containers left empty by the
 * removal go too, as upstream removes named fields the applier no longer sets.
 */
function removeDropped(obj: JsonObject, dropped: FieldSet, applied: FieldSet, others: ManagerRecord[]): void {
  const stillOwned = (p: Path) => applied.coversAtOrBelow(p) || others.some((r) => r.set.coversAtOrBelow(p));
  // Deepest first, so that an item's own fields are handled before the item.
  for (const path of dropped.sorted().reverse()) {
    if (stillOwned(path) || isItemKeyField(path)) continue;
    if (removeAt(obj, path)) removeEmptyParents(obj, path, stillOwned);
  }
}

/**
 * A key field of a map-list item (`…k:{"name":"c"}.f:name`) goes with its item: removing it alone
 * would leave an item that can no longer be identified.
 */
function isItemKeyField(path: Path): boolean {
  if (path.length < 2) return false;
  const parent = path[path.length - 2];
  const last = path[path.length - 1];
  if (!parent.startsWith('k:') || !last.startsWith('f:')) return false;
  try {
    const id = JSON.parse(parent.slice(2));
    return isObject(id) && Object.prototype.hasOwnProperty.call(id, last.slice(2));
  } catch {
    return false;
  }
}

function removeEmptyParents(obj: JsonObject, path: Path, stillOwned: (p: Path) => boolean): void {
  for (let depth = path.length - 1; depth >= 1; depth--) {
    const parent = path.slice(0, depth);
    // Stop at list items (they carry their key fields) and never drop metadata itself.
    if (!parent[depth - 1].startsWith('f:') || (depth === 1 && parent[0] === 'f:metadata')) return;
    const v = getAt(obj, parent);
    const empty = (isObject(v) && Object.keys(v).length === 0) || (Array.isArray(v) && v.length === 0);
    if (!empty || stillOwned(parent)) return;
    removeAt(obj, parent);
  }
}

// ---- conflicts ------------------------------------------------------------------------------

/** Upstream's NewConflictError / getConflictMessage, grouped by manager in identifier order. */
function conflictError(conflicts: Conflict[]): PatchError {
  const groups = [...conflicts].sort((a, b) => (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0));
  const flat = groups.flatMap((g) =>
    g.paths.sorted().map((p) => ({ manager: describeManager(g.record.entry), field: formatPath(p) })),
  );
  const causes = flat.map((c) => ({ reason: 'FieldManagerConflict', message: `conflict with ${c.manager}`, field: c.field }));
  let message: string;
  if (flat.length === 1) {
    message = `Apply failed with 1 conflict: conflict with ${flat[0].manager}: ${flat[0].field}`;
  } else {
    const lines = groups.flatMap((g) => [
      `conflict with ${describeManager(g.record.entry)}:`,
      ...g.paths.sorted().map((p) => `- ${formatPath(p)}`),
    ]);
    message = `Apply failed with ${flat.length} conflicts: ${lines.join('\n')}`;
  }
  return new PatchError(409, message, 'Conflict', causes);
}
