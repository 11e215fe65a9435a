import * as pulumi from '@pulumi/pulumi';

/**
 * examples/with-kubernetes under Pulumi's mocks: the real program, the real
 * @pulumi/kubernetes and kubevm SDKs, no engine. The mocks answer like the API
 * server would (metadata.name as given, namespace filled in); the monitor's
 * RegisterResource requests are watched to see the dependencies the SDK records.
 */
jest.mock('@kubevm/pulumi', () => jest.requireActual('../../sdk/nodejs'), { virtual: true });

interface Registered {
  type: string;
  name: string;
  inputs: any;
  dependencies: string[];
  propertyDependencies: Record<string, string[]>;
}
const registered = new Map<string, Registered>();

pulumi.runtime.setMocks(
  {
    newResource: (args) => {
      const r = registered.get(args.name);
      if (r) {
        r.type = args.type;
        r.inputs = args.inputs;
      }
      const isK8s = args.type.startsWith('kubernetes:');
      const ns = isK8s ? args.inputs.metadata?.namespace : (args.inputs.namespace ?? 'default');
      const id = isK8s
        ? ns
          ? `${ns}/${args.inputs.metadata.name}`
          : args.inputs.metadata.name
        : `${ns}/${args.inputs.name ?? args.name}`;
      return { id, state: isK8s ? args.inputs : { ...args.inputs, namespace: ns, printableStatus: 'Running' } };
    },
    call: () => ({}),
  },
  'with-kubernetes',
  'dev',
  false,
);

// Watch the wire requests: the mocks' newResource does not see dependencies.
const monitor = pulumi.runtime.getMonitor() as any;
const register = monitor.registerResource.bind(monitor);
monitor.registerResource = (req: any, cb: any) => {
  const propertyDependencies: Record<string, string[]> = {};
  req.getPropertydependenciesMap().forEach((v: any, k: string) => (propertyDependencies[k] = v.getUrnsList()));
  registered.set(req.getName(), {
    type: req.getType(),
    name: req.getName(),
    inputs: undefined,
    dependencies: req.getDependenciesList(),
    propertyDependencies,
  });
  return register(req, cb);
};

const outputOf = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply(resolve));
const urn = (type: string, name: string) => `urn:pulumi:dev::with-kubernetes::${type}::${name}`;
const NS = urn('kubernetes:core/v1:Namespace', 'vms');
const SECRET = urn('kubernetes:core/v1:Secret', 'app-userdata');
const NET = urn('kubevm:index:Network', 'app-net');

let program: typeof import('../../examples/with-kubernetes/index');

beforeAll(async () => {
  program = require('../../examples/with-kubernetes/index');
  // Every registration has gone out once the last output resolves.
  await outputOf(program.vmStatus);
  await outputOf(program.userDataSecret);
});

test('the Namespace and the Secret are @pulumi/kubernetes resources; the Secret lives in the Namespace', () => {
  expect(registered.get('vms')).toMatchObject({ type: 'kubernetes:core/v1:Namespace', inputs: { metadata: { name: 'vms' } } });
  const secret = registered.get('app-userdata')!;
  expect(secret.type).toBe('kubernetes:core/v1:Secret');
  expect(secret.inputs.metadata).toEqual({ name: 'app-userdata', namespace: 'vms' });
  expect(secret.propertyDependencies.metadata).toEqual([NS]);
});

test('the kubevm Network and VM get the Namespace name, and the VM the Secret reference', async () => {
  const net = registered.get('app-net')!;
  expect(net).toMatchObject({ type: 'kubevm:index:Network', inputs: { name: 'app-net', namespace: 'vms', type: 'pod' } });
  const vm = registered.get('app-1')!;
  expect(vm.type).toBe('kubevm:index:VirtualMachine');
  expect(vm.inputs.namespace).toBe('vms');
  expect(vm.inputs.cloudInit).toEqual({ userDataSecretRef: { name: 'app-userdata', key: 'userdata' } });
  expect(vm.inputs.cloudInit.userData).toBeUndefined(); // the user data itself stays in the Secret
  expect(vm.inputs.interfaces).toEqual([{ name: 'eth0', network: 'app-net' }]);
  expect(await outputOf(program.vmNamespace)).toBe('vms');
  expect(await outputOf(program.userDataSecret)).toBe('app-userdata');
});

test('the dependencies are recorded: the VM waits for the Namespace, the Secret and the Network', () => {
  const vm = registered.get('app-1')!;
  expect(vm.propertyDependencies.namespace).toEqual([NS]);
  expect(vm.propertyDependencies.cloudInit).toEqual([SECRET]);
  expect(vm.propertyDependencies.interfaces).toEqual([NET]);
  expect([...vm.dependencies].sort()).toEqual([NET, NS, SECRET].sort());
  expect(registered.get('app-net')!.dependencies).toEqual([NS]);
});
