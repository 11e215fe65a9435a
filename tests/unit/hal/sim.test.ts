import { SimBackend, SimWorld, type VmSpec, type VmStatus } from '../../../controller/hal';

const spec = (uid: string, o: Partial<VmSpec> = {}): VmSpec => ({
  name: `vm-${uid}`,
  uid,
  cpu: { cores: 1 },
  memoryMiB: 128,
  disks: [],
  nics: [{ name: 'default', network: 'pod' }],
  filesystems: [],
  ...o,
});

const fast = { startMs: 20, guestReadyMs: 40, stopMs: 20, jitter: 0 };

function changes(b: SimBackend): string[] {
  const seen: string[] = [];
  b.observe((s, c) => seen.push(`${c}:${s.phase}`));
  return seen;
}

async function until(b: SimBackend, uid: string, pred: (s: VmStatus) => boolean, ms = 2_000): Promise<VmStatus> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = b.status(uid);
    if (s && pred(s)) return s;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timeout: ${JSON.stringify(b.status(uid))}`);
}

describe('sim backend', () => {
  test('phases: Starting → Running (after startMs) → guest ready → Stopping → Succeeded', async () => {
    const b = new SimBackend({ delays: fast });
    const seen = changes(b);
    const t0 = Date.now();
    const s = await b.start(spec('a'));
    expect(s.phase).toBe('Running');
    expect(s.qmpReadyAt! - t0).toBeGreaterThanOrEqual(15);
    const ready = await until(b, 'a', (x) => !!x.guestReadyAt);
    expect(ready.interfaces[0].ip).toMatch(/^10\./);
    const stopped = await b.stop('a');
    expect(stopped).toMatchObject({ phase: 'Succeeded', reason: 'GuestShutdown' });
    expect(seen).toEqual([
      'created:Starting',
      'qmp-ready:Running',
      'guest-ready:Running',
      'stop-requested:Stopping',
      'ended:Succeeded',
    ]);
    await b.cleanup('a');
    expect(b.status('a')).toBeUndefined();
  });

  test('kill ends at once; a crash (kill -9 from outside) is a failure', async () => {
    const b = new SimBackend({ delays: fast });
    await b.start(spec('k'));
    expect(await b.kill('k')).toMatchObject({ phase: 'Succeeded', reason: 'ForceStopped' });
    await b.start(spec('c'));
    b.crash('c');
    expect(b.status('c')).toMatchObject({ phase: 'Failed', reason: 'Killed', exit: { signal: 'SIGKILL' } });
  });

  test('pause/resume, hotplug bookkeeping, wrong-state errors', async () => {
    const b = new SimBackend({ delays: fast });
    await b.start(spec('p'));
    expect((await b.pause('p')).phase).toBe('Paused');
    expect((await b.resume('p')).phase).toBe('Running');
    await b.attachNic('p', { name: 'extra', network: 'user' });
    expect(b.status('p')!.interfaces.map((i) => i.name)).toEqual(['default', 'extra']);
    await expect(b.attachNic('p', { name: 'extra', network: 'user' })).rejects.toThrow(/already attached/);
    await b.detachNic('p', 'extra');
    await b.attachDisk('p', { name: 'd', path: '/x.qcow2', format: 'qcow2', bus: 'virtio' });
    await b.detachDisk('p', 'd');
    await expect(b.detachDisk('p', 'd')).rejects.toThrow(/not attached/);
    await b.kill('p');
    await expect(b.pause('p')).rejects.toThrow(/is Succeeded; the operation needs it running/);
    await expect(b.cleanup('nope')).resolves.toBeUndefined();
  });

  test('adopt: VMs outlive a backend instance; a new one takes them over', async () => {
    const world = new SimWorld();
    const first = new SimBackend({ delays: fast, world });
    await first.start(spec('x'));
    await first.close();
    expect(first.status('x')).toBeUndefined();
    const second = new SimBackend({ delays: fast, world });
    expect(await second.discover()).toEqual(['x']);
    expect(second.status('x')).toBeUndefined();
    expect(await second.adopt('x')).toMatchObject({ phase: 'Running', adopted: true });
    expect((await second.stop('x')).phase).toBe('Succeeded');
    expect(await second.adopt('x')).toBeUndefined(); // ended: nothing to adopt
  });

  test('capabilities are admission-checked; failure injection fails start', async () => {
    const b = new SimBackend({ delays: fast, capabilities: ['lifecycle', 'network-user'] });
    await expect(b.start(spec('n'))).rejects.toThrow(
      'backend "sim" lacks capability "network-pod" needed by spec.nics[0].network',
    );
    const f = new SimBackend({ delays: fast, failStart: (s) => (s.uid === 'bad' ? 'image missing' : undefined) });
    await expect(f.start(spec('bad'))).rejects.toThrow(/image missing/);
    expect(f.status('bad')).toMatchObject({ phase: 'Failed', reason: 'StartFailed' });
  });

  test('scale: 2,000 VMs start and stop concurrently', async () => {
    const b = new SimBackend({ delays: { startMs: 5, guestReadyMs: 10, stopMs: 5, jitter: 0.5 } });
    const uids = Array.from({ length: 2000 }, (_x, i) => `s${i}`);
    await Promise.all(uids.map((u) => b.start(spec(u))));
    expect(b.list().filter((s) => s.phase === 'Running')).toHaveLength(2000);
    await Promise.all(uids.map((u) => b.stop(u)));
    expect(b.list().every((s) => s.phase === 'Succeeded')).toBe(true);
  });
});
