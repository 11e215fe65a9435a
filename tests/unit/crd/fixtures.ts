/** Builders for CRDs used across the CRD unit tests. */

let uidCounter = 0;

/** A CRD for widgets.example.com with one version `v1` using `schema` as its openAPIV3Schema. */
export function makeCrd(schema: any, version: Record<string, any> = {}, spec: Record<string, any> = {}): any {
  uidCounter++;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: 'widgets.example.com', uid: `uid-${uidCounter}`, resourceVersion: '1' },
    spec: {
      group: 'example.com',
      scope: 'Namespaced',
      names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
      versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: schema }, ...version }],
      conversion: { strategy: 'None' },
      ...spec,
    },
  };
}

/** `{type: object, properties: {spec: {type: object, properties: specProps, ...specExtra}}}`. */
export function specSchema(specProps: Record<string, any>, specExtra: Record<string, any> = {}): any {
  return { type: 'object', properties: { spec: { type: 'object', properties: specProps, ...specExtra } } };
}

export function widget(spec: any, name = 'w1'): any {
  return { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name, namespace: 'default' }, spec };
}

/** The path of a property node under spec in version 0's schema, as upstream prints it. */
export const SPEC_PATH = 'spec.versions[0].schema.openAPIV3Schema.properties[spec]';
export const ROOT_PATH = 'spec.versions[0].schema.openAPIV3Schema';
