/**
 * Strategic merge patch for built-in kinds, following k8s.io/apimachinery's
 * pkg/util/strategicpatch (StrategicMergeMapPatch with MergeParallelList and
 * IgnoreUnmatchedNulls), driven by the merge-key hints of builtinSchema().
 *
 * Where upstream copies a patch value verbatim (a key missing from the original, a new list
 * item), we merge it into an empty value instead, so nested nulls and directives are dropped
 * and directive keys can never reach storage.
 */
import { PatchError, badRequest } from './errors';
import { Json, JsonObject, canonicalJson, clone, deepEqual, hasOwn, isObject } from './json';
import { builtinSchema, fieldSchema, itemSchema, patchMeta } from './schema';

const DIRECTIVE = '$patch';
const RETAIN_KEYS = '$retainKeys';
const DELETE_FROM_PRIMITIVE_LIST = '$deleteFromPrimitiveList/';
const SET_ELEMENT_ORDER = '$setElementOrder/';

export function applyStrategicMergePatch(target: Json, patch: Json, group: string, kind: string): Json {
  if (!isObject(patch)) {
    throw badRequest(
      `json: cannot unmarshal ${Array.isArray(patch) ? 'array' : typeof patch} into Go value of type map[string]interface {}`,
    );
  }
  const original = isObject(target) ? clone(target) : {};
  return mergeMap(original, clone(patch), builtinSchema(group, kind)) ?? {};
}

// ---- maps -----------------------------------------------------------------------------------

/**
 * Merge `patch` into `original` (both already private copies; `original` is modified).
 * Returns undefined when the patch says `$patch: delete`.
 */
function mergeMap(original: JsonObject, patch: JsonObject, schema: Json): JsonObject | undefined {
  if (hasOwn(patch, DIRECTIVE)) {
    const directive = patch[DIRECTIVE];
    delete patch[DIRECTIVE];
    if (directive === 'delete') return undefined;
    // `replace`: the patch (cleaned of nulls/directives) becomes the whole map.
    if (directive === 'replace') return mergeMap({}, patch, schema);
    if (directive !== 'merge') throw badRequest(`unknown patch type: ${String(directive)} in map: ${JSON.stringify(patch)}`);
  }
  applyRetainKeys(original, patch);
  applySetElementOrder(original, patch, schema);

  const deletions: [string, Json][] = [];
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith(DELETE_FROM_PRIMITIVE_LIST)) deletions.push([key.slice(DELETE_FROM_PRIMITIVE_LIST.length), value]);
    else if (!key.startsWith('$')) mergeField(original, key, value, fieldSchema(schema, key));
    // Any other `$…` key is an unknown directive: never store it.
  }
  // Deletions run last so that a value both added and deleted ends up deleted.
  for (const [key, values] of deletions) deleteFromPrimitiveList(original, key, values);
  return original;
}

function mergeField(original: JsonObject, key: string, value: Json, schema: Json): void {
  if (value === null) {
    delete original[key];
    return;
  }
  const current = original[key];
  if (isObject(value)) {
    const merged = mergeMap(isObject(current) ? current : {}, value, schema);
    if (merged === undefined) delete original[key];
    else original[key] = merged;
  } else if (Array.isArray(value)) {
    original[key] = mergeList(Array.isArray(current) ? current : [], value, schema);
  } else {
    original[key] = value;
  }
}

/** `$retainKeys: [...]`: drop every key of the original that is not listed. */
function applyRetainKeys(original: JsonObject, patch: JsonObject): void {
  if (!hasOwn(patch, RETAIN_KEYS)) return;
  const keep = patch[RETAIN_KEYS];
  delete patch[RETAIN_KEYS];
  if (!Array.isArray(keep)) throw badRequest('invalid patch format of retainKeys');
  for (const [k, v] of Object.entries(patch)) {
    const exempt = v === null || k.startsWith(DELETE_FROM_PRIMITIVE_LIST) || k.startsWith(SET_ELEMENT_ORDER) || k === DIRECTIVE;
    if (!exempt && !keep.includes(k)) throw badRequest('invalid patch format of retainKeys');
  }
  for (const k of Object.keys(original)) {
    if (!keep.includes(k)) delete original[k];
  }
}

function deleteFromPrimitiveList(original: JsonObject, key: string, values: Json): void {
  if (!Array.isArray(values)) throw badRequest('invalid patch format of primitive list');
  const current = original[key];
  if (!Array.isArray(current)) return;
  original[key] = current.filter((item) => !values.some((v) => deepEqual(v, item)));
}

// ---- lists ----------------------------------------------------------------------------------

/** How list items are identified: by their merge-key value (maps) or by value (scalars). */
type Identity = (item: Json) => string | undefined;

function identityFor(mergeKey: string | undefined): Identity {
  if (!mergeKey) return (item) => canonicalJson(item);
  return (item) => (isObject(item) && hasOwn(item, mergeKey) ? canonicalJson(item[mergeKey]) : undefined);
}

function mergeList(original: Json[], patch: Json[], schema: Json): Json[] {
  const meta = patchMeta(schema);
  const items = itemSchema(schema);
  if (!meta.merge) return replaceList(patch, items);
  if (original.length === 0 && patch.length === 0) return original;

  const allMaps = [...original, ...patch].every(isObject);
  const allScalars = [...original, ...patch].every((v) => !isObject(v) && !Array.isArray(v));
  if (allScalars) return mergeScalarList(original, patch);
  if (!allMaps) throw badRequest(`list element types are not identical: ${JSON.stringify([original, patch])}`);
  if (!meta.mergeKey) throw badRequest('cannot merge lists without merge key');
  return mergeMapList(original, patch, meta.mergeKey, items);
}

/** Lists without a merge strategy are replaced; a `{$patch: replace}` marker item is dropped. */
function replaceList(patch: Json[], items: Json): Json[] {
  return patch
    .filter((item) => !(isObject(item) && hasOwn(item, DIRECTIVE)))
    .map((item) => (isObject(item) ? (mergeMap({}, item, items) ?? {}) : item));
}

function mergeScalarList(original: Json[], patch: Json[]): Json[] {
  const id = identityFor(undefined);
  const merged = dedupe([...original, ...patch], id);
  return normalizeOrder(merged, patch, original, id);
}

function mergeMapList(original: Json[], patch: Json[], mergeKey: string, items: Json): Json[] {
  const id = identityFor(mergeKey);
  let server = original;
  let plain: JsonObject[] = [];
  let replace = false;
  for (const p of patch as JsonObject[]) {
    if (!hasOwn(p, DIRECTIVE)) {
      plain.push(p);
      continue;
    }
    switch (p[DIRECTIVE]) {
      case 'delete':
        if (!hasOwn(p, mergeKey)) throw noMergeKey(p, mergeKey);
        server = server.filter((o) => id(o) !== id(p));
        break;
      case 'replace':
        replace = true;
        break;
      case 'merge': // explicit default: nothing to do
        break;
      default:
        throw badRequest(`unknown patch type: ${String(p[DIRECTIVE])} in map: ${JSON.stringify(p)}`);
    }
  }
  if (replace) {
    // The patch items become the whole list, ordered as given (upstream treats them as "server" items).
    server = plain.map((p) => mergeMap({}, p, items) ?? {});
    plain = [];
  }

  const merged = server.slice();
  for (const p of plain) {
    if (!hasOwn(p, mergeKey)) throw noMergeKey(p, mergeKey);
    const at = merged.findIndex((o) => id(o) === id(p));
    if (at >= 0) merged[at] = mergeMap(merged[at], p, items) ?? {};
    else merged.push(mergeMap({}, p, items) ?? {});
  }
  return normalizeOrder(merged, plain, server, id);
}

function noMergeKey(item: Json, mergeKey: string): PatchError {
  return badRequest(`map: ${JSON.stringify(item)} does not contain declared merge key: ${mergeKey}`);
}

function dedupe(list: Json[], id: Identity): Json[] {
  const seen = new Set<string | undefined>();
  return list.filter((item) => {
    const k = id(item);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

// ---- $setElementOrder -----------------------------------------------------------------------

/**
 * `$setElementOrder/<field>: [...]` (sent by kubectl's client-side apply): merge the list named
 * by the directive, then order the items the directive lists as it says, keeping the server-only
 * items near their previous neighbours. The merged list is taken out of the patch.
 */
function applySetElementOrder(original: JsonObject, patch: JsonObject, schema: Json): void {
  for (const key of Object.keys(patch)) {
    if (!key.startsWith(SET_ELEMENT_ORDER)) continue;
    const order = patch[key];
    delete patch[key];
    const field = key.slice(SET_ELEMENT_ORDER.length);
    if (!field || !Array.isArray(order)) throw badRequest('invalid patch format of setElementOrder list');

    const listSchema = fieldSchema(schema, field);
    const mergeKey = patchMeta(listSchema).mergeKey;
    const current = hasOwn(original, field) ? original[field] : undefined;
    const patched = hasOwn(patch, field) ? patch[field] : undefined;
    if (patched === null) continue; // the list is being deleted; the main loop does that
    if (current !== undefined && !Array.isArray(current)) continue; // type change: plain replace
    if (patched !== undefined && !Array.isArray(patched)) throw badRequest('invalid patch format of setElementOrder list');
    if (current === undefined && patched === undefined) continue;

    validateOrderList(patched ?? [], order, mergeKey);
    const merged = patched === undefined ? current : mergeList(current ?? [], patched, listSchema);
    original[field] = normalizeOrder(merged, order, current ?? [], identityFor(mergeKey));
    delete patch[field];
  }
}

/** Upstream validatePatchWithSetOrderList: patch items must appear in the order list, in that order. */
function validateOrderList(patchList: Json[], order: Json[], mergeKey: string | undefined): void {
  const id = identityFor(mergeKey);
  const items = patchList.filter((p) => !(isObject(p) && hasOwn(p, DIRECTIVE)));
  let pi = 0;
  for (let oi = 0; pi < items.length && oi < order.length; oi++) {
    if (id(items[pi]) !== undefined && id(items[pi]) === id(order[oi])) pi++;
  }
  if (pi < items.length) {
    throw badRequest(
      `The order in patch list:\n${JSON.stringify(patchList)}\n doesn't match $setElementOrder list:\n${JSON.stringify(order)}\n`,
    );
  }
}

// ---- ordering (upstream normalizeElementOrder / mergeSortedSlice) ---------------------------

/**
 * Items present in `patchOrder` come in that order; the others ("server-only") keep the order
 * of `serverOrder`; the two sequences are interleaved using positions in `serverOrder`. Like
 * upstream, an item new to the server sorts before the server-only items that follow it.
 */
function normalizeOrder(merged: Json[], patchOrder: Json[], serverOrder: Json[], id: Identity): Json[] {
  const patchIds = patchOrder.map(id);
  const serverIds = serverOrder.map(id);
  const inPatch = (item: Json) => {
    const k = id(item);
    return k !== undefined && patchIds.includes(k);
  };
  const patchItems = sortByPosition(merged.filter(inPatch), patchIds, id);
  const serverOnly = sortByPosition(
    merged.filter((m) => !inPatch(m)),
    serverIds,
    id,
  );

  const pos = (item: Json) => {
    const k = id(item);
    return k === undefined ? -1 : serverIds.indexOf(k);
  };
  const out: Json[] = [];
  let i = 0;
  let j = 0;
  while (i < serverOnly.length || j < patchItems.length) {
    if (j >= patchItems.length) out.push(serverOnly[i++]);
    else if (i >= serverOnly.length) out.push(patchItems[j++]);
    else {
      const li = pos(serverOnly[i]);
      const ri = pos(patchItems[j]);
      if (li >= 0 && ri >= 0 && li < ri) out.push(serverOnly[i++]);
      else out.push(patchItems[j++]);
    }
  }
  return out;
}

/** Stable sort by position in `order`; items not found keep their relative order at the end. */
function sortByPosition(items: Json[], order: (string | undefined)[], id: Identity): Json[] {
  const rank = (item: Json) => {
    const k = id(item);
    const at = k === undefined ? -1 : order.indexOf(k);
    return at < 0 ? Number.MAX_SAFE_INTEGER : at;
  };
  return items
    .map((item, index) => ({ item, index, r: rank(item) }))
    .sort((a, b) => a.r - b.r || a.index - b.index)
    .map((x) => x.item);
}
