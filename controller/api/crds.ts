import { GROUP, VERSION, KINDS, KindDef } from './schema';

/**
 * CustomResourceDefinitions generated from the schema in schema.ts. Our own
 * `x-kubevm-*` annotations are stripped: kube-apiserver rejects unknown
 * keywords in a CRD schema.
 */
export function stripExtensions(s: any): any {
  if (Array.isArray(s)) return s.map(stripExtensions);
  if (s === null || typeof s !== 'object') return s;
  const out: any = {};
  for (const [k, v] of Object.entries(s)) if (!k.startsWith('x-kubevm-')) out[k] = stripExtensions(v);
  return out;
}

export function crdFor(k: KindDef): any {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${k.plural}.${GROUP}`, labels: { 'app.kubernetes.io/part-of': 'kubevm' } },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: { plural: k.plural, singular: k.singular, kind: k.kind, listKind: `${k.kind}List`, shortNames: k.shortNames, categories: k.categories },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: k.printerColumns,
          schema: {
            openAPIV3Schema: stripExtensions({
              type: 'object',
              description: k.description,
              properties: { spec: k.spec, status: k.status },
            }),
          },
        },
      ],
    },
  };
}

export function allCrds(): any[] {
  return KINDS.map(crdFor);
}

/** The update class (live | restart | replace) of a VirtualMachine spec field, by its top-level name. */
export function updateClassOf(kind: string, field: string): 'live' | 'restart' | 'replace' | undefined {
  const k = KINDS.find((x) => x.kind === kind);
  return k?.spec.properties?.[field]?.['x-kubevm-update'];
}
