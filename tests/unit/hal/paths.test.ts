import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { confinePath, normalisePath, PathError } from '../../../controller/hal/common/paths';

let tmp: string;
let root: string;

beforeAll(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kvp-')));
  root = path.join(tmp, 'data');
  fs.mkdirSync(path.join(root, 'team', 'share'), { recursive: true });
  fs.writeFileSync(path.join(root, 'team', 'file.txt'), 'x');
  fs.mkdirSync(path.join(tmp, 'data2'));
  fs.mkdirSync(path.join(tmp, 'secret'));
  fs.symlinkSync(path.join(tmp, 'secret'), path.join(root, 'to-secret')); // escapes
  fs.symlinkSync('team/share', path.join(root, 'to-share')); // stays inside
  fs.symlinkSync('/', path.join(root, 'team', 'share', 'to-root')); // escapes from deep down
  fs.symlinkSync(root, path.join(tmp, 'root-link')); // a root given as a symlink
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const opts = () => ({ allowedRoots: [root] });

function reason(p: string, o = opts()): string {
  try {
    confinePath(p, o);
  } catch (e) {
    expect(e).toBeInstanceOf(PathError);
    return (e as PathError).reason;
  }
  throw new Error(`${p} was accepted`);
}

describe('normalisePath', () => {
  test('collapses duplicate slashes, "." segments and trailing slashes', () => {
    expect(normalisePath('/a//b/./c/')).toBe('/a/b/c');
    expect(normalisePath('/')).toBe('/');
  });
  test('refuses relative paths, "..", NUL and empty strings, saying why', () => {
    expect(() => normalisePath('a/b')).toThrow('must be absolute');
    expect(() => normalisePath('/a/../b')).toThrow('contains ".."');
    expect(() => normalisePath('/a/b/..')).toThrow('contains ".."');
    expect(() => normalisePath('/a\0b')).toThrow('NUL');
    expect(() => normalisePath('')).toThrow('non-empty');
  });
  test('names that merely contain dots are fine', () => {
    expect(normalisePath('/a/..b/c..')).toBe('/a/..b/c..');
  });
});

describe('confinePath', () => {
  test('accepts directories under a root (and the root itself), returning the real path', () => {
    expect(confinePath(path.join(root, 'team', 'share'), opts())).toBe(path.join(root, 'team', 'share'));
    expect(confinePath(`${root}//team/./share/`, opts())).toBe(path.join(root, 'team', 'share'));
    expect(confinePath(root, opts())).toBe(root);
  });

  test('a symlink that stays inside the roots is resolved and accepted', () => {
    expect(confinePath(path.join(root, 'to-share'), opts())).toBe(path.join(root, 'team', 'share'));
  });

  test('refuses ".." even when it would land inside the root', () => {
    expect(reason(path.join(root, 'team') + '/../team/share')).toMatch(/contains "\.\."/);
    expect(reason(`${root}/../secret`)).toMatch(/contains "\.\."/);
  });

  test('refuses paths outside the roots, segment-aware (data2 is not under data)', () => {
    expect(reason(path.join(tmp, 'secret'))).toMatch(/outside the allowed roots \(.*\/data\)/);
    expect(reason(path.join(tmp, 'data2'))).toMatch(/outside the allowed roots/);
    expect(reason('/etc')).toMatch(/outside the allowed roots/);
  });

  test('refuses symlink escapes and names the target', () => {
    expect(reason(path.join(root, 'to-secret'))).toBe(
      `resolves through a symlink to ${JSON.stringify(path.join(tmp, 'secret'))}, outside the allowed roots`,
    );
    expect(reason(path.join(root, 'team', 'share', 'to-root'))).toMatch(/resolves through a symlink to "\/"/);
  });

  test('refuses missing paths and files where a directory is needed', () => {
    expect(reason(path.join(root, 'nope'))).toBe('does not exist');
    expect(reason(path.join(root, 'team', 'file.txt'))).toBe('is not a directory');
    expect(confinePath(path.join(root, 'team', 'file.txt'), { ...opts(), mustBeDirectory: false })).toBe(
      path.join(root, 'team', 'file.txt'),
    );
  });

  test('no configured roots refuses everything', () => {
    expect(reason(root, { allowedRoots: [] })).toMatch(/no allowed roots/);
  });

  test('a root configured through a symlink works both ways', () => {
    const link = path.join(tmp, 'root-link');
    expect(confinePath(path.join(link, 'team'), { allowedRoots: [link] })).toBe(path.join(root, 'team'));
    expect(confinePath(path.join(root, 'team'), { allowedRoots: [link] })).toBe(path.join(root, 'team'));
  });

  test('the error message carries the path and the reason', () => {
    expect(() => confinePath('/etc', opts())).toThrow(/^path "\/etc" refused: is outside the allowed roots/);
  });
});
