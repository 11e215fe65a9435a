import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { generateSdk, readSchema, filesOnDisk, SDK_DIR } from '../../../scripts/gen-sdk';

const root = path.join(__dirname, '..', '..', '..');
const sdk = path.join(root, SDK_DIR);

test('sdk/nodejs is up to date with schema.json (run npm run gen)', () => {
  const files = generateSdk(readSchema());
  const stale = Object.entries(files)
    .filter(([rel, content]) => !fs.existsSync(path.join(sdk, rel)) || fs.readFileSync(path.join(sdk, rel), 'utf8') !== content)
    .map(([rel]) => rel);
  const extra = filesOnDisk().filter((rel) => !(rel in files));
  expect({ stale, extra }).toEqual({ stale: [], extra: [] });
});

test('the SDK has the generated shape: classes, tokens, Args, secrets, package pulumi block', () => {
  const files = generateSdk(readSchema());
  for (const [file, cls, tok] of [
    ['virtualMachine.ts', 'VirtualMachine', 'kubevm:index:VirtualMachine'],
    ['network.ts', 'Network', 'kubevm:index:Network'],
    ['volume.ts', 'Volume', 'kubevm:index:Volume'],
  ]) {
    const src = files[file];
    expect(src).toContain(`export class ${cls} extends pulumi.CustomResource`);
    expect(src).toContain(`public static readonly __pulumiType = '${tok}'`);
    expect(src).toContain('public static get(name: string, id: pulumi.Input<pulumi.ID>');
    expect(src).toContain(`public static isInstance(obj: any): obj is ${cls}`);
    expect(src).toContain(`export interface ${cls}Args`);
    expect(files['index.ts']).toContain(`case "${tok}":`);
  }
  expect(files['virtualMachine.ts']).toContain(
    'declare public /*out*/ readonly restartRequired: pulumi.Output<boolean | undefined>;',
  );
  expect(files['provider.ts']).toContain('additionalSecretOutputs: ["kubeconfig"]');
  expect(files['provider.ts']).toContain(
    'resourceInputs["kubeconfig"] = args?.kubeconfig ? pulumi.secret(args.kubeconfig) : undefined;',
  );
  const pkg = JSON.parse(files['package.json']);
  expect(pkg).toMatchObject({
    name: '@kubevm/pulumi',
    pulumi: { resource: true, name: 'kubevm' },
    dependencies: { '@pulumi/pulumi': expect.any(String) },
  });
});

/** A program using the SDK as a user would; compiled with the SDK so the public types are checked too. */
const USAGE = `
import * as kubevm from "./index";
const net = new kubevm.Network("net", { type: "bridge", bridge: { vlan: 10 } });
const root = new kubevm.Volume("root", { size: "1Gi", source: { image: { path: "/images/guest.qcow2" } } });
const vm = new kubevm.VirtualMachine("vm", {
  memory: "256Mi",
  cpu: { cores: 2 },
  disks: [{ name: "root", volume: root.name }],
  interfaces: [{ name: "eth0", network: net.name, ports: [{ port: 22 }] }],
  cloudInit: { userData: "#cloud-config\\n" },
  labels: { app: "web" },
});
const ip: kubevm.types.output.VirtualMachineDisk[] | undefined = undefined;
export const out = { ip: vm.ipAddress, ready: vm.ready, restart: vm.restartRequired, node: vm.node, phase: root.phase, bridge: net.bridgeName, ip2: ip };
export const got = kubevm.VirtualMachine.get("imported", "default/vm");
export const found = kubevm.getVirtualMachineOutput({ name: "vm" }).apply((r) => r.printableStatus);
export const caps = kubevm.getNodeCapabilities().then((r) => r.nodes.map((n) => n.capabilities));
export const p = new kubevm.Provider("p", { kubeconfig: "/tmp/kubeconfig", namespace: "vms" });
export const ns: string | undefined = kubevm.config.namespace;
export const isVm: boolean = kubevm.VirtualMachine.isInstance(vm);
`;

test('the SDK type-checks against @pulumi/pulumi, with a usage program', () => {
  const configFile = path.join(sdk, 'tsconfig.json');
  const parsed = ts.getParsedCommandLineOfConfigFile(
    configFile,
    { noEmit: true },
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(String(d.messageText));
      },
    },
  )!;
  const usage = path.join(sdk, '__usage_check.ts');
  const host = ts.createCompilerHost(parsed.options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) =>
    path.resolve(name) === usage ? ts.createSourceFile(name, USAGE, lang) : getSourceFile(name, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => path.resolve(name) === usage || fileExists(name);
  const program = ts.createProgram({ rootNames: [...parsed.fileNames, usage], options: parsed.options, host });
  const diags = ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file
      ? `${path.relative(root, d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}`
      : '';
    return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
  expect(diags).toEqual([]);
  // @pulumi/pulumi resolves to the repository's copy.
  expect(program.getSourceFiles().some((f) => f.fileName.includes('node_modules/@pulumi/pulumi/'))).toBe(true);
}, 120000);
