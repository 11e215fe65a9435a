/**
 * CustomResourceDefinition support for the embedded API server:
 *
 * - `defaultCrd` / `validateCrd`: CRD objects themselves (names, versions, structural schemas,
 *   defaults, printer columns, scale subresource), with upstream's field paths and messages;
 * - `compileVersion`: prune, default and validate custom resources of one CRD version;
 * - `openApiSchemaFor`: the /openapi/v3 component schema of a CRD version;
 * - `evalJsonPath`: the simple JSONPaths of printer columns and the scale subresource;
 * - `formatCauses`: the 422 message built from causes.
 */
export type { Cause } from './causes';
export { formatCauses } from './causes';
export { validateCrd, defaultCrd } from './validate-crd';
export type { CompiledVersion } from './compile';
export { compileVersion } from './compile';
export { openApiSchemaFor } from './openapi';
export { evalJsonPath } from './jsonpath';
