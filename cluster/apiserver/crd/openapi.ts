import { clone, isObject } from './util';

/**
 * The `components.schemas` entry for a CRD version in `/openapi/v3/apis/<group>/<version>`,
 * shaped like kube-apiserver's CRD OpenAPI builder output: the version's schema with TypeMeta
 * and ObjectMeta properties and `x-kubernetes-group-version-kind`, which is how
 * `kubectl explain` finds the schema for a resource.
 *
 * Upstream points metadata at `#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`;
 * this inlines a compact ObjectMeta instead so the entry is complete on its own.
 */

const API_CONVENTIONS = 'https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md';

const STRING_MAP = { type: 'object', additionalProperties: { type: 'string' } };

const OBJECT_META = {
  type: 'object',
  description: `Standard object's metadata. More info: ${API_CONVENTIONS}#metadata`,
  properties: {
    name: { type: 'string', description: 'Name must be unique within a namespace.' },
    generateName: { type: 'string', description: 'Optional prefix the server uses to generate a unique name if name is not provided.' },
    namespace: { type: 'string', description: 'Namespace defines the space within which each name must be unique.' },
    uid: { type: 'string', description: 'UID is the unique in time and space value for this object. Populated by the system.' },
    resourceVersion: { type: 'string', description: 'An opaque value that represents the internal version of this object.' },
    generation: { type: 'integer', format: 'int64', description: 'A sequence number representing a specific generation of the desired state.' },
    creationTimestamp: { type: 'string', format: 'date-time', description: 'Time when this object was created. Populated by the system.' },
    deletionTimestamp: { type: 'string', format: 'date-time', description: 'Time after which this resource will be deleted. Set by the server.' },
    deletionGracePeriodSeconds: { type: 'integer', format: 'int64', description: 'Seconds allowed for graceful termination.' },
    labels: { ...STRING_MAP, description: 'Map of string keys and values that can be used to organize and categorize objects.' },
    annotations: { ...STRING_MAP, description: 'Unstructured key value map stored with a resource, not queryable.' },
    finalizers: {
      type: 'array',
      items: { type: 'string' },
      'x-kubernetes-list-type': 'set',
      description: 'Must be empty before the object is deleted from the registry.',
    },
    ownerReferences: {
      type: 'array',
      description: 'List of objects depended by this object.',
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['uid'],
      items: {
        type: 'object',
        required: ['apiVersion', 'kind', 'name', 'uid'],
        properties: {
          apiVersion: { type: 'string' },
          kind: { type: 'string' },
          name: { type: 'string' },
          uid: { type: 'string' },
          controller: { type: 'boolean' },
          blockOwnerDeletion: { type: 'boolean' },
        },
      },
    },
    managedFields: {
      type: 'array',
      description: 'Maps workflow-id and version to the set of fields that are managed by that workflow.',
      items: {
        type: 'object',
        properties: {
          manager: { type: 'string' },
          operation: { type: 'string' },
          apiVersion: { type: 'string' },
          time: { type: 'string', format: 'date-time' },
          fieldsType: { type: 'string' },
          fieldsV1: { type: 'object' },
          subresource: { type: 'string' },
        },
      },
    },
    selfLink: { type: 'string', description: 'Deprecated: selfLink is a legacy read-only field.' },
  },
};

const TYPE_META = {
  apiVersion: {
    type: 'string',
    description: `APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: ${API_CONVENTIONS}#resources`,
  },
  kind: {
    type: 'string',
    description: `Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: ${API_CONVENTIONS}#types-kinds`,
  },
};

export function findVersion(crd: any, version: string): Record<string, any> {
  const versions: unknown[] = Array.isArray(crd?.spec?.versions) ? crd.spec.versions : [];
  const v = versions.find((x): x is Record<string, any> => isObject(x) && x.name === version);
  if (!v) throw new Error(`CustomResourceDefinition ${crd?.metadata?.name} has no version ${version}`);
  return v;
}

/** A version's openAPIV3Schema; a version without one keeps whatever it is given. */
export function versionSchema(crd: any, version: string): Record<string, any> {
  const s = findVersion(crd, version).schema?.openAPIV3Schema;
  return isObject(s) ? s : { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
}

export function openApiSchemaFor(crd: any, version: string): any {
  const schema = clone(versionSchema(crd, version));
  // TypeMeta and ObjectMeta come first, as in upstream's output; the CRD's own entries for them
  // only constrain name/generateName and are replaced.
  const rest = isObject(schema.properties) ? schema.properties : {};
  const own = Object.fromEntries(Object.entries(rest).filter(([k]) => !(k in TYPE_META) && k !== 'metadata'));
  return {
    ...schema,
    type: 'object',
    properties: { ...clone(TYPE_META), metadata: clone(OBJECT_META), ...own },
    'x-kubernetes-group-version-kind': [{ group: crd.spec.group, version, kind: crd.spec.names.kind }],
  };
}
