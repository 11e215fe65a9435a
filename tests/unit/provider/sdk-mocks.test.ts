import * as pulumi from '@pulumi/pulumi';

/** The generated SDK at run time, under Pulumi's mocks (no engine, no provider). */
const registered: { type: string; name: string; inputs: any }[] = [];
pulumi.runtime.setMocks(
  {
    newResource: (args) => {
      registered.push({ type: args.type, name: args.name, inputs: args.inputs });
      return {
        id: `default/${args.inputs.name ?? args.name}`,
        state: { ...args.inputs, namespace: 'default', printableStatus: 'Running' },
      };
    },
    call: (args) =>
      args.token === 'kubevm:index:getVirtualMachine'
        ? { name: args.inputs.name, namespace: 'default', printableStatus: 'Stopped' }
        : {},
  },
  'project',
  'stack',
  true,
);

const outputOf = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply(resolve));

test('resources register with their tokens and inputs; outputs and invokes come back typed', async () => {
  const kubevm: typeof import('../../../sdk/nodejs') = require('../../../sdk/nodejs');
  const vm = new kubevm.VirtualMachine('web', { memory: '256Mi', disks: [{ name: 'root', volume: 'root' }] });
  expect(kubevm.VirtualMachine.isInstance(vm)).toBe(true);
  expect(await outputOf(vm.printableStatus)).toBe('Running');
  expect(await outputOf(vm.namespace)).toBe('default');
  const p = new kubevm.Provider('p', { kubeconfig: '/tmp/kubeconfig' });
  expect(await outputOf(p.urn)).toContain('pulumi:providers:kubevm::p');
  const got = await kubevm.getVirtualMachine({ name: 'web' });
  expect(got.printableStatus).toBe('Stopped');
  const reg = registered.find((r) => r.name === 'web')!;
  expect(reg).toMatchObject({
    type: 'kubevm:index:VirtualMachine',
    inputs: { memory: '256Mi', disks: [{ name: 'root', volume: 'root' }] },
  });
});
