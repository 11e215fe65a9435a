
import YAML from 'yaml';
import { ensureGuest } from '../tests/guest';

/** Prints a Network, a Volume and a VirtualMachine booting the test guest (built if needed). */
const guest = ensureGuest();
const docs = [
  { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Network', metadata: { name: 'default' }, spec: { type: 'pod' } },
  { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Volume', metadata: { name: 'demo-data' }, spec: { size: '64Mi', source: { blank: {} } } },
  {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'demo' },
    spec: {
      runStrategy: 'Always',
      memory: '128Mi',
      firmware: { kernel: { kernelPath: guest.kernel, initrdPath: guest.initrd, cmdline: guest.cmdline } },
      disks: [{ name: 'data', volume: 'demo-data' }],
      interfaces: [{ name: 'eth0', network: 'default' }],
      cloudInit: { userData: '#!/bin/sh\necho "hello from $(hostname): $(uname -r)"\n' },
    },
  },
];
process.stdout.write(docs.map((d) => YAML.stringify(d)).join('---\n'));

