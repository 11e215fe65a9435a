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

describe('saving after every step (cached entries)', () => {
  const state = (resources: ResourceState[]) => ({ version: 1 as const, project: 'p', stack: 's', resources });
  const entry = (name: string, memory: string) => ({
    ...res(name),
    inputs: { memory, cloudInit: secret({ userData: 'pw: s3cret-value' }) },
    outputs: { memory, ready: true, cloudInit: secret({ userData: 'pw: s3cret-value' }) },
  });

  test('the file is the pretty-printed state, secrets sealed; an empty state too', () => {
    const dir = tempDir();
    const file = path.join(dir, 'state.json');
    const store = new StateStore(file);
    store.save(state([]));
    expect(fs.readFileSync(file, 'utf8')).toBe(JSON.stringify(state([]), null, 2) + '\n');
    store.save(state([entry('a', '64Mi'), entry('b', '96Mi')]));
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toBe(JSON.stringify(JSON.parse(text), null, 2) + '\n');
    expect(text).not.toContain('s3cret');
    expect(new StateStore(file).load('p', 's').resources).toEqual([entry('a', '64Mi'), entry('b', '96Mi')]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('unchanged entries are not rewritten: same objects, equal copies, or a state just loaded', () => {
    const dir = tempDir();
    const file = path.join(dir, 'state.json');
    const store = new StateStore(file);
    const a = entry('a', '64Mi');
    const b = entry('b', '96Mi');
    store.save(state([a, b]));
    const ino = fs.statSync(file).ino;
    const text = fs.readFileSync(file, 'utf8');
    store.save(state([a, b]));
    store.save(state([JSON.parse(JSON.stringify(a)), { ...b }]));
    // A rename of a new file over the state changes the inode: nothing was written.
    expect(fs.statSync(file).ino).toBe(ino);
    const again = new StateStore(file);
    again.save(again.load('p', 's'));
    expect(fs.statSync(file).ino).toBe(ino);
    expect(fs.readFileSync(file, 'utf8')).toBe(text);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a replaced, added, removed or reordered entry is written; unchanged secrets keep their ciphertext', () => {
    const dir = tempDir();
    const file = path.join(dir, 'state.json');
    const store = new StateStore(file);
    const a = entry('a', '64Mi');
    const b = entry('b', '96Mi');
    store.save(state([a, b]));
    const sealed = (name: string) =>
      JSON.parse(fs.readFileSync(file, 'utf8')).resources.find((r: any) => r.urn === name).inputs.cloudInit.ciphertext;
    const bCipher = sealed('b');
    const a2 = entry('a', '128Mi');
    store.save(state([a2, b]));
    expect(new StateStore(file).load('p', 's').resources).toEqual([a2, b]);
    expect(sealed('b')).toBe(bCipher);
    const c = entry('c', '32Mi');
    store.save(state([a2, b, c]));
    expect(new StateStore(file).load('p', 's').resources.map((r) => r.urn)).toEqual(['a', 'b', 'c']);
    store.save(state([c, a2]));
    expect(new StateStore(file).load('p', 's').resources).toEqual([c, a2]);
    store.save({ ...state([c, a2]), stack: 't' });
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).stack).toBe('t');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
