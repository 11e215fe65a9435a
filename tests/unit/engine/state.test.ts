import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from '../../helpers/tmp';
import { StateStore, createOrder, deleteOrder, type ResourceState } from '../../../engine/state';
import { getPath, parsePath } from '../../../engine/display';
import { secret } from '../../../provider/values';

const res = (name: string, dependencies: string[] = []): ResourceState => ({ urn: name, type: 't', id: name, inputs: {}, outputs: {}, dependencies });

test('secrets are sealed in the file and opened on load; a passphrase key needs the same passphrase', () => {
  const dir = tempDir();
  for (const pass of [undefined, 'correct horse']) {
    if (pass) process.env.KUBEVM_STATE_PASSPHRASE = pass;
    const file = path.join(dir, `${pass ? 'p' : 'k'}.json`);
    const r = { ...res('a'), inputs: { ud: secret('s3cret-value'), n: 1 }, outputs: { nested: [{ x: secret({ k: 's3cret-value' }) }] } };
    new StateStore(file).save({ version: 1, project: 'p', stack: 's', resources: [r] });
    expect(fs.readFileSync(file, 'utf8')).not.toContain('s3cret');
    expect(new StateStore(file).load('p', 's').resources[0]).toEqual(r);
    if (pass) {
      process.env.KUBEVM_STATE_PASSPHRASE = 'wrong';
      expect(() => new StateStore(file).load('p', 's')).toThrow(/cannot decrypt/);
      delete process.env.KUBEVM_STATE_PASSPHRASE;
    } else expect(fs.existsSync(`${file}.key`)).toBe(true);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('create order puts dependencies first; delete order is the reverse', () => {
  const rs = [res('vm', ['vol', 'net']), res('vol'), res('net'), res('mount', ['vm'])];
  expect(createOrder(rs).map((r) => r.urn)).toEqual(['vol', 'net', 'vm', 'mount']);
  expect(deleteOrder(rs).map((r) => r.urn)).toEqual(['mount', 'vm', 'net', 'vol']);
});

test('detailed-diff paths', () => {
  expect(parsePath('disks[1].name')).toEqual(['disks', 1, 'name']);
  expect(parsePath('labels["a.b/c"]')).toEqual(['labels', 'a.b/c']);
  expect(getPath({ cpu: { cores: 2 } }, 'cpu.cores')).toBe(2);
});
