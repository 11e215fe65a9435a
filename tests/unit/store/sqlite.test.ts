import * as path from 'node:path';
import * as fs from 'node:fs';
import { SqliteBackend } from '../../../cluster/store/sqlite';
import { StoreError, StoreEvent } from '../../../cluster/store/backend';
import { tempDir } from '../../helpers/tmp';

const cm = (name: string, v = '1') => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'ns' }, data: { v } });

describe('SqliteBackend', () => {
  let dir: string;
  let b: SqliteBackend;
  beforeEach(() => {
    dir = tempDir();
    b = new SqliteBackend({ path: path.join(dir, 'db'), historySize: 5 });
  });
  afterEach(() => {
    b.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('revisions are dense and become resourceVersions', () => {
    const a = b.create('/core/configmaps/ns/a', cm('a'));
    const c = b.create('/core/configmaps/ns/c', cm('c'));
    expect([a.rev, c.rev]).toEqual([1, 2]);
    expect(a.obj.metadata.resourceVersion).toBe('1');
    const u = b.update('/core/configmaps/ns/a', cm('a', '2'), 1);
    expect(u.rev).toBe(3);
    expect(b.get('/core/configmaps/ns/a')!.obj.data.v).toBe('2');
    expect(b.currentRevision()).toBe(3);
  });

  test('create of an existing key, stale update and stale delete fail', () => {
    b.create('/k/a', cm('a'));
    expect(() => b.create('/k/a', cm('a'))).toThrow(expect.objectContaining({ code: 'KeyExists' }));
    b.update('/k/a', cm('a', '2'), 1);
    expect(() => b.update('/k/a', cm('a', '3'), 1)).toThrow(expect.objectContaining({ code: 'Conflict' }));
    expect(() => b.delete('/k/a', 1)).toThrow(StoreError);
    expect(() => b.update('/k/missing', cm('x'), 1)).toThrow(expect.objectContaining({ code: 'NotFound' }));
  });

  test('list is by prefix and sorted; count agrees', () => {
    for (const n of ['b', 'a', 'c']) b.create(`/core/configmaps/ns/${n}`, cm(n));
    b.create('/core/configmaps/ns2/z', cm('z'));
    b.create('/core/secrets/ns/s', cm('s'));
    expect(b.list('/core/configmaps/ns/').map((s) => s.obj.metadata.name)).toEqual(['a', 'b', 'c']);
    expect(b.list('/core/configmaps/').length).toBe(4);
    expect(b.count('/core/configmaps/')).toBe(4);
    b.delete('/core/configmaps/ns/b', 1); // 'b' was written first
    expect(b.list('/core/configmaps/ns/').map((s) => s.obj.metadata.name)).toEqual(['a', 'c']);
  });

  test('subscribers see every write with the previous object; since() replays the window', () => {
    const seen: StoreEvent[] = [];
    b.subscribe((e) => seen.push(e));
    b.create('/k/a', cm('a'));
    b.update('/k/a', cm('a', '2'), 1);
    b.delete('/k/a', 2);
    expect(seen.map((e) => `${e.type}@${e.rev}`)).toEqual(['ADDED@1', 'MODIFIED@2', 'DELETED@3']);
    expect(seen[1].prev.data.v).toBe('1');
    expect(seen[2].obj.metadata.resourceVersion).toBe('3');
    expect(b.since(1).map((e) => e.rev)).toEqual([2, 3]);
    expect(b.since(3)).toEqual([]);
  });

  test('a revision older than the window is compacted (410 upstream)', () => {
    for (let i = 0; i < 8; i++) b.create(`/k/${i}`, cm(String(i)));
    expect(b.compactedRevision()).toBe(3);
    expect(() => b.since(2)).toThrow(expect.objectContaining({ code: 'Compacted' }));
    expect(b.since(3).map((e) => e.rev)).toEqual([4, 5, 6, 7, 8]);
  });

  test('compaction drops superseded rows but keeps current objects', () => {
    b.create('/k/a', cm('a'));
    for (let i = 0; i < 10; i++) b.update('/k/a', cm('a', String(i)), i + 1);
    b.create('/k/gone', cm('gone'));
    b.delete('/k/gone', 12);
    const before = b.logRows();
    b.compact();
    expect(b.logRows()).toBeLessThan(before);
    b.close();
    b = new SqliteBackend({ path: path.join(dir, 'db'), historySize: 5 });
    expect(b.get('/k/a')!.obj.data.v).toBe('9');
    expect(b.get('/k/gone')).toBeUndefined();
    expect(b.currentRevision()).toBe(13);
  });

  test('state and the resumable window survive reopening', () => {
    b.create('/k/a', cm('a'));
    b.update('/k/a', cm('a', '2'), 1);
    b.create('/k/b', cm('b'));
    b.close();
    b = new SqliteBackend({ path: path.join(dir, 'db'), historySize: 5 });
    expect(b.list('/k/').map((s) => s.obj.data.v)).toEqual(['2', '1']);
    const evs = b.since(1);
    expect(evs.map((e) => `${e.type}@${e.rev}`)).toEqual(['MODIFIED@2', 'ADDED@3']);
    expect(evs[0].prev.data.v).toBe('1');
    expect(b.create('/k/c', cm('c')).rev).toBe(4);
  });
});
