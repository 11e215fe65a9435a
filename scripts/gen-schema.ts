import { writeGenerated } from './gen-files';
import * as path from 'node:path';
import { KINDS } from '../controller/api/schema';
import { INSTALL_DESCRIPTION, INSTALL_INPUTS, INSTALL_OUTPUTS, INSTALL_TOKEN, type InstallField } from '../provider/resources/install-schema';

/**
 * Generates schema.json, the Pulumi package schema of `kubevm`, from
 * controller/api/schema.ts (the one place the fields are written). `--check`
 * exits 1 when schema.json differs from what would be generated.
 *
 * Mapping rules (see docs/provider-schema.md):
 * - every spec field of a kind becomes an input property of the same camelCase
 *   name, plus `name`, `namespace`, `labels`, `annotations` from metadata;
 * - nested objects become types `kubevm:index:<Kind><Path>` (array items singular);
 * - outputs are all inputs plus a few flattened status fields (STATUS_OUTPUTS);
 * - `x-kubevm-update` goes into the description (and `willReplaceOnChanges`);
 * - defaults, enums and patterns stay in the description: the provider validates
 *   with the CRD schema and the API server fills defaults (the SDK sends only
 *   what the user wrote, so reads normalise server-filled values away).
 */
const root = path.join(__dirname, '..');

type Schema = Record<string, any>;
type PropertySpec = Record<string, any>;

export const PACKAGE = 'kubevm';
export const MODULE = 'index';
export const token = (name: string): string => `${PACKAGE}:${MODULE}:${name}`;

/** Kinds exposed as Pulumi resources (VirtualMachineInstance is the controller's business). */
export const RESOURCE_KINDS = ['VirtualMachine', 'Network', 'Volume', 'ContainerPathMount', 'BackupPolicy'] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];

/** Properties whose values are secret, as `<Kind>.<spec path>`; also marked secret in the schema. */
export const SECRET_FIELDS = ['VirtualMachine.cloudInit.userData', 'VirtualMachine.cloudInit.networkData'];

/**
 * A status value exposed as a top-level output. `path` walks the status object
 * (numbers index arrays); `condition` reads `conditions[type=…].status == "True"`.
 */
export interface StatusOutput {
  name: string;
  path?: (string | number)[];
  condition?: string;
  description?: string;
}

export const STATUS_OUTPUTS: Record<ResourceKind, StatusOutput[]> = {
  VirtualMachine: [
    { name: 'printableStatus', path: ['printableStatus'] },
    { name: 'ready', path: ['ready'] },
    { name: 'node', path: ['node'] },
    {
      name: 'ipAddress',
      path: ['interfaces', 0, 'ipAddress'],
      description: 'Guest IPv4 address of the first interface, when known.',
    },
    {
      name: 'restartRequired',
      condition: 'RestartRequired',
      description: 'True when a change that needs a restart is waiting for one (updatePolicy Manual leaves the VM running).',
    },
    { name: 'restartRequiredFields', path: ['restartRequiredFields'] },
  ],
  Network: [
    { name: 'phase', path: ['phase'] },
    { name: 'bridgeName', path: ['bridgeName'] },
  ],
  Volume: [
    { name: 'phase', path: ['phase'] },
    { name: 'path', path: ['path'] },
    { name: 'node', path: ['nodeName'] },
    { name: 'actualSize', path: ['actualSize'] },
    { name: 'virtualSize', path: ['virtualSize'] },
  ],
  ContainerPathMount: [
    { name: 'phase', path: ['phase'] },
    { name: 'reason', path: ['reason'] },
    { name: 'message', path: ['message'] },
    { name: 'node', path: ['node'] },
    {
      name: 'restartRequired',
      condition: 'RestartRequired',
      description: 'True when the share waits for the next start of the VM (the backend cannot add it to the running VM, or its tag is still held).',
    },
  ],
  BackupPolicy: [
    { name: 'nextScheduleTime', path: ['nextScheduleTime'] },
    { name: 'lastScheduleTime', path: ['lastScheduleTime'] },
    { name: 'lastResult', path: ['lastResult'] },
    { name: 'chains', path: ['chains'] },
  ],
};

/** The values of STATUS_OUTPUTS for an observed object's status (undefined where unknown). */
export function statusOutputValues(kind: ResourceKind, status: any): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const o of STATUS_OUTPUTS[kind]) {
    if (o.condition) {
      const c = (status?.conditions ?? []).find((x: any) => x?.type === o.condition);
      out[o.name] = c ? c.status === 'True' : false;
    } else {
      let v: any = status;
      for (const seg of o.path!) v = v?.[seg];
      out[o.name] = v;
    }
  }
  return out;
}

const UPDATE_TEXT: Record<string, string> = {
  live: 'Changing this is applied live to a running VM.',
  restart:
    'Changing this needs a restart: it takes effect at the next start, and the VM follows its updatePolicy (Manual keeps it running with restartRequired; Restart restarts it).',
  replace: 'Changing this replaces the VM.',
};

const pascal = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);
const singular = (s: string): string => (s.endsWith('s') ? s.slice(0, -1) : s);

/** The update text for a field of `kind`: the VM's words above, and plain ones for the other kinds. */
function updateText(kind: string, update: string): string {
  if (kind === 'VirtualMachine') return UPDATE_TEXT[update];
  return update === 'replace' ? `Changing this replaces the ${kind}.` : update === 'restart' ? UPDATE_TEXT.restart : 'Changing this is applied in place.';
}

function describe(s: Schema, update?: string, kind = 'VirtualMachine'): string | undefined {
  const parts: string[] = [];
  if (s.description) parts.push(String(s.description));
  if (s.enum && s.type !== 'boolean') parts.push(`One of: ${s.enum.map((v: unknown) => `\`${v}\``).join(', ')}.`);
  if (s.default !== undefined) parts.push(`Default: \`${JSON.stringify(s.default)}\`.`);
  if (update) parts.push(updateText(kind, update));
  return parts.length ? parts.join(' ') : undefined;
}

class Builder {
  types: Record<string, Schema> = {};

  /** The Pulumi property spec of an OpenAPI schema at `typeName` (used when it is an object). */
  property(s: Schema, typeName: string, secretPaths: Set<string>, here: string): PropertySpec {
    const p: PropertySpec = {};
    switch (s.type) {
      case 'string':
      case 'integer':
      case 'number':
      case 'boolean':
        p.type = s.type;
        break;
      case 'array':
        p.type = 'array';
        p.items = this.property(s.items ?? {}, s.items?.type === 'object' ? singular(typeName) : typeName, secretPaths, here);
        delete p.items.description;
        break;
      case 'object':
        if (s.additionalProperties && !s.properties) {
          p.type = 'object';
          p.additionalProperties = this.property(s.additionalProperties, typeName, secretPaths, here);
          delete p.additionalProperties.description;
        } else {
          p.$ref = `#/types/${token(typeName)}`;
          this.objectType(s, typeName, secretPaths, here);
        }
        break;
      default:
        p.$ref = 'pulumi.json#/Any';
    }
    const d = describe(s);
    if (d) p.description = d;
    if (secretPaths.has(here)) p.secret = true;
    return p;
  }

  objectType(s: Schema, typeName: string, secretPaths: Set<string>, here: string): void {
    const properties: Record<string, PropertySpec> = {};
    for (const [k, v] of Object.entries<Schema>(s.properties ?? {})) {
      properties[k] = this.property(v, typeName + pascal(k), secretPaths, `${here}.${k}`);
    }
    const t: Schema = { type: 'object', properties };
    if (s.description) t.description = s.description;
    if (s.required?.length) t.required = [...s.required];
    this.types[token(typeName)] = t;
  }
}

const meta = {
  name: {
    type: 'string',
    description:
      'Name of the object in the cluster; auto-named from the resource name with a random suffix when absent. Changing it replaces the object.',
    willReplaceOnChanges: true,
  },
  namespace: {
    type: 'string',
    description: "Namespace of the object; the provider's default namespace when absent. Changing it replaces the object.",
    willReplaceOnChanges: true,
  },
  labels: {
    type: 'object',
    additionalProperties: { type: 'string' },
    description:
      'Labels of the object. The provider manages only the keys it set: labels others add (controllers, `kubectl label`) are kept and are not drift; a key removed here is removed from the object.',
  },
  annotations: {
    type: 'object',
    additionalProperties: { type: 'string' },
    description:
      'Annotations of the object, managed like labels: only the keys set here. The provider adds `kubevm.dev/autonamed` when it chose the name, and lists the keys it manages in `kubevm.dev/managed-labels` and `kubevm.dev/managed-annotations` on the object (reserved keys).',
  },
};

function kindDef(kind: string) {
  const k = KINDS.find((x) => x.kind === kind);
  if (!k) throw new Error(`unknown kind ${kind}`);
  return k;
}

function resource(b: Builder, kind: ResourceKind): { spec: Schema; outputs: Record<string, PropertySpec> } {
  const k = kindDef(kind);
  const secretPaths = new Set(SECRET_FIELDS.filter((f) => f.startsWith(`${kind}.`)).map((f) => f.slice(kind.length)));
  const inputProperties: Record<string, PropertySpec> = { ...structuredClone(meta) };
  for (const [field, s] of Object.entries<Schema>(k.spec.properties)) {
    const p = b.property(s, kind + pascal(field), secretPaths, `.${field}`);
    const update = s['x-kubevm-update'];
    const d = describe(s, update, kind);
    if (d) p.description = d;
    if (update === 'replace') p.willReplaceOnChanges = true;
    if (field in inputProperties) throw new Error(`${kind}: spec field ${field} collides with a metadata property`);
    inputProperties[field] = p;
  }
  const properties: Record<string, PropertySpec> = structuredClone(inputProperties);
  properties.uid = { type: 'string', description: 'uid of the object in the cluster.' };
  for (const o of STATUS_OUTPUTS[kind]) {
    if (o.name in properties) throw new Error(`${kind}: status output ${o.name} collides with an input`);
    let s: Schema;
    if (o.condition) s = { type: 'boolean' };
    else {
      s = k.status;
      for (const seg of o.path!) s = typeof seg === 'number' ? s.items : s.properties?.[seg];
      if (!s) throw new Error(`${kind}: status path ${o.path!.join('.')} not in the schema`);
    }
    const p = b.property(s, kind + pascal(o.name), new Set(), '');
    const d = o.description ?? describe(s);
    if (d) p.description = d;
    properties[o.name] = p;
  }
  const spec: Schema = {
    description: k.description,
    properties,
    required: ['name', 'namespace'],
    inputProperties,
  };
  return { spec, outputs: properties };
}

/**
 * Install has no CRD: its fields come from the provider's table
 * (provider/resources/install-schema.ts), the one place they are written.
 */
function installProperty(f: InstallField): PropertySpec {
  const p: PropertySpec = { type: f.type };
  if (f.type === 'array') p.items = { type: f.of ?? 'string' };
  if (f.type === 'object') p.additionalProperties = { type: f.of ?? 'string' };
  const d = describe({ description: f.description, enum: f.enum, default: f.default, type: f.type });
  const update = f.update === 'replace' ? 'Changing this replaces the Install.' : f.update === 'live' ? 'Changing this is applied in place.' : undefined;
  p.description = [d, update].filter(Boolean).join(' ');
  if (f.update === 'replace') p.willReplaceOnChanges = true;
  return p;
}

export function installResource(): Schema {
  const inputProperties = Object.fromEntries(Object.entries(INSTALL_INPUTS).map(([k, f]) => [k, installProperty(f)]));
  const outputs = Object.fromEntries(Object.entries(INSTALL_OUTPUTS).map(([k, f]) => [k, installProperty(f)]));
  for (const k of Object.keys(outputs)) if (k in inputProperties) throw new Error(`Install: output ${k} collides with an input`);
  return {
    description: INSTALL_DESCRIPTION,
    properties: { ...structuredClone(inputProperties), ...outputs },
    // Always in the outputs: the namespace (defaulted by Check) and the status outputs.
    required: ['namespace', ...Object.keys(outputs)],
    inputProperties,
  };
}

const providerConfig = {
  kubeconfig: {
    type: 'string',
    description:
      'Kubeconfig to use: a file path or the kubeconfig content (YAML or JSON). When unset, the provider loads the default kubeconfig ($KUBECONFIG, then ~/.kube/config).',
    secret: true,
  },
  context: { type: 'string', description: 'Kubeconfig context to use; the current context when unset.' },
  namespace: {
    type: 'string',
    description: "Default namespace for resources that do not set one; the context's namespace, else `default`, when unset.",
  },
};

export function generateSchema(): Schema {
  const b = new Builder();
  const resources: Record<string, Schema> = {};
  const outputsOf: Partial<Record<ResourceKind, Record<string, PropertySpec>>> = {};
  for (const kind of RESOURCE_KINDS) {
    const r = resource(b, kind);
    resources[token(kind)] = r.spec;
    outputsOf[kind] = r.outputs;
  }
  resources[INSTALL_TOKEN] = installResource();
  b.types[token('NodeCapabilities')] = {
    type: 'object',
    description: 'What a node can run, as reported by its node agent.',
    properties: {
      name: { type: 'string', description: 'Node name.' },
      backends: { type: 'array', items: { type: 'string' }, description: 'HAL backends the node agent offers (qemu, sim).' },
      capabilities: {
        type: 'array',
        items: { type: 'string' },
        description: "Capabilities of the node's backend, e.g. hotplug-disk, network-bridge, accel-kvm.",
      },
    },
    required: ['name', 'backends', 'capabilities'],
  };
  b.types[token('BackupInfoDisk')] = {
    type: 'object',
    description: "One disk's point of a Backup.",
    properties: {
      name: { type: 'string', description: 'Disk name.' },
      checksum: { type: 'string', description: 'Checksum of the disk content the point restores to (`chunked-blake3:…`, or `chunked-sha256:…` for chains started with sha256); absent until the backup succeeded.' },
      size: { type: 'integer', description: 'Bytes the point takes on the node.' },
    },
    required: ['name'],
  };
  b.types[token('BackupInfo')] = {
    type: 'object',
    description: 'A Backup of a VM, as listBackups reports it.',
    properties: {
      name: { type: 'string', description: 'Backup name (what a Restore or a Volume `source.fromBackup` names).' },
      policy: { type: 'string', description: 'The BackupPolicy that made it; absent for on-demand backups.' },
      type: { type: 'string', description: 'What ran (`Full` or `Incremental`); what was asked for while it has not run yet.' },
      phase: { type: 'string', description: '`Pending`, `Running`, `Succeeded` or `Failed`.' },
      reason: { type: 'string', description: 'Why the run is what it is (why Full, why Failed).' },
      startTime: { type: 'string', description: 'The point in time of the backup (ISO 8601).' },
      completionTime: { type: 'string', description: 'When it ended (ISO 8601).' },
      disks: { type: 'array', items: { $ref: `#/types/${token('BackupInfoDisk')}` }, description: 'Points per disk.' },
    },
    required: ['name', 'phase', 'disks'],
  };
  const functions: Record<string, Schema> = {
    [token('listBackups')]: {
      description:
        'Lists the Backups of a VM (also of a VM that no longer exists), oldest first: name, type, phase, times, and per disk the checksum and size.',
      inputs: {
        properties: {
          vm: { type: 'string', description: 'Name of the VirtualMachine.' },
          namespace: { type: 'string', description: "Namespace; the provider's default namespace when absent." },
        },
        type: 'object',
        required: ['vm'],
      },
      outputs: {
        properties: {
          backups: { type: 'array', items: { $ref: `#/types/${token('BackupInfo')}` }, description: 'The Backups, oldest first.' },
        },
        type: 'object',
        required: ['backups'],
      },
    },
    [token('getVirtualMachine')]: {
      description: 'Looks up a VirtualMachine in the cluster: its spec and its status outputs.',
      inputs: {
        properties: {
          name: { type: 'string', description: 'Name of the VirtualMachine.' },
          namespace: { type: 'string', description: "Namespace; the provider's default namespace when absent." },
        },
        type: 'object',
        required: ['name'],
      },
      outputs: { properties: structuredClone(outputsOf.VirtualMachine), type: 'object', required: ['name', 'namespace'] },
    },
    [token('getNodeCapabilities')]: {
      description: 'Lists the nodes that run a kubevm agent, with the backends and capabilities each offers.',
      inputs: {
        properties: { node: { type: 'string', description: 'Only this node; all nodes when absent.' } },
        type: 'object',
      },
      outputs: {
        properties: {
          nodes: { type: 'array', items: { $ref: `#/types/${token('NodeCapabilities')}` }, description: 'The matching nodes.' },
        },
        type: 'object',
        required: ['nodes'],
      },
    },
  };
  const sortedTypes = Object.fromEntries(
    Object.keys(b.types)
      .sort()
      .map((t) => [t, b.types[t]]),
  );
  return {
    name: PACKAGE,
    displayName: 'kubevm',
    version: '0.1.0',
    description: 'Declare and run fleets of virtual machines on Kubernetes from TypeScript.',
    keywords: ['pulumi', 'kubevm', 'kubernetes', 'virtual-machines', 'kind/native'],
    license: 'Apache-2.0',
    meta: { moduleFormat: '(.*)' },
    config: { variables: structuredClone(providerConfig) },
    provider: {
      description: 'The kubevm provider: which cluster and default namespace to use.',
      inputProperties: structuredClone(providerConfig),
      properties: {},
    },
    types: sortedTypes,
    resources,
    functions,
    language: {
      nodejs: {
        packageName: '@kubevm/pulumi',
        packageDescription: 'Declare and run fleets of virtual machines on Kubernetes from TypeScript.',
        dependencies: { '@pulumi/pulumi': '^3.270.0' },
        devDependencies: { '@types/node': '^20.0.0', typescript: '^5.9.0' },
        typescriptVersion: '5.9',
      },
    },
  };
}

export function schemaJson(): string {
  return JSON.stringify(generateSchema(), null, 2) + '\n';
}

export function generated(): Record<string, string> {
  return { 'schema.json': schemaJson() };
}

if (require.main === module) {
  process.exit(writeGenerated(root, generated(), process.argv.includes('--check')) ? 1 : 0);
}
