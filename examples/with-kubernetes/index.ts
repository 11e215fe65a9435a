import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import * as kubevm from '@kubevm/pulumi';

/**
 * Kubernetes resources and kubevm resources in one program: a Namespace made by
 * @pulumi/kubernetes holds the VM, and a Secret made by @pulumi/kubernetes holds its
 * cloud-init user data, so the user data never sits in the VirtualMachine object.
 *
 * The kubevm resources take the Namespace's `metadata.name` and the Secret's name as
 * outputs, so Pulumi creates the Namespace and the Secret first and deletes them last.
 * Both providers read the same kubeconfig ($KUBECONFIG, or `kubernetes:kubeconfig` and
 * `kubevm:kubeconfig` config).
 */
const config = new pulumi.Config();
const namespaceName = config.get('namespace') ?? 'vms';

const namespace = new k8s.core.v1.Namespace('vms', {
  metadata: { name: namespaceName, labels: { 'app.kubernetes.io/part-of': 'kubevm-example' } },
});

const userData = new k8s.core.v1.Secret('app-userdata', {
  metadata: { name: 'app-userdata', namespace: namespace.metadata.name },
  // stringData is secret in @pulumi/kubernetes: it stays encrypted in the Pulumi state.
  stringData: {
    userdata: ['#cloud-config', 'hostname: app-1', 'runcmd:', '  - echo "hello from a Secret-fed cloud-init"'].join('\n') + '\n',
  },
});

const network = new kubevm.Network('app-net', { name: 'app-net', namespace: namespace.metadata.name, type: 'pod' });

const vm = new kubevm.VirtualMachine('app-1', {
  name: 'app-1',
  namespace: namespace.metadata.name,
  memory: '128Mi',
  labels: { app: 'with-kubernetes' },
  interfaces: [{ name: 'eth0', network: network.name }],
  cloudInit: { userDataSecretRef: { name: userData.metadata.name, key: 'userdata' } },
});

export const vmNamespace = vm.namespace;
export const vmStatus = vm.printableStatus;
export const userDataSecret = userData.metadata.name;
