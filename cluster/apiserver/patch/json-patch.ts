/**
 * JSON patch (RFC 6902), with kube-apiserver's error mapping:
 *  - a body that is not an array of operations → 400 BadRequest (the request could not be decoded);
 *  - an operation that cannot be applied (failed `test`, missing path, bad op) → 422 Invalid;
 *  - a failed `test` of /metadata/resourceVersion → 409 Conflict, because clients (kubectl's
 *    managedFields upgrade) use it as an optimistic-concurrency precondition.
 */
import { applyPatch, JsonPatchError, Operation } from 'fast-json-patch';
import { PatchError } from './errors';
import { Json, clone, isObject } from './json';

/** Upstream's text for 422s from patch application; the detail goes into `causes`. */
const UNPROCESSABLE_MESSAGE = 'the server rejected our request due to an error in our request';
/** Suffix of upstream's Conflict message; the HTTP layer prefixes `Operation cannot be fulfilled on <res> "<name>": `. */
export const OBJECT_MODIFIED_MESSAGE =
  'the object has been modified; please apply your changes to the latest version and try again';

export function applyJsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) {
    throw new PatchError(400, `json: cannot unmarshal ${jsonTypeName(ops)} into Go value of type jsonpatch.Patch`, 'BadRequest');
  }
  const badOp = ops.findIndex((op) => !isObject(op));
  if (badOp >= 0) {
    throw new PatchError(
      400,
      `json: cannot unmarshal ${jsonTypeName(ops[badOp])} into Go value of type jsonpatch.Operation`,
      'BadRequest',
    );
  }
  // Clone both: fast-json-patch inserts operation values into the document by reference.
  const doc = clone(target);
  const operations = clone(ops) as Operation[];
  try {
    return applyPatch(doc, operations, true, true).newDocument;
  } catch (err) {
    throw translateError(err, operations);
  }
}

function translateError(err: unknown, ops: Operation[]): PatchError {
  const failed = err instanceof JsonPatchError && typeof err.index === 'number' ? ops[err.index] : undefined;
  if (err instanceof JsonPatchError && err.name === 'TEST_OPERATION_FAILED' && failed?.path === '/metadata/resourceVersion') {
    return new PatchError(409, OBJECT_MODIFIED_MESSAGE, 'Conflict');
  }
  return new PatchError(422, UNPROCESSABLE_MESSAGE, 'Invalid', [
    { reason: 'UnexpectedServerResponse', message: describeFailure(err, failed) },
  ]);
}

function describeFailure(err: unknown, op: Operation | undefined): string {
  if (!(err instanceof Error)) return String(err);
  const firstLine = err.message.split('\n')[0];
  if (err instanceof JsonPatchError && err.name === 'TEST_OPERATION_FAILED' && op) {
    return `testing value ${op.path} failed: test failed`;
  }
  return op ? `${op.op} operation at ${op.path}: ${firstLine}` : firstLine;
}

function jsonTypeName(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'object' ? 'object' : typeof v;
}
