import * as os from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Worker threads that read and hash spans of an image for common/checksum.ts,
 * so a whole-image checksum uses every core instead of one (a 512 MiB Full:
 * 205-267 ms on one core here, see docs/benchmarks.md, backup).
 *
 * A task names the files to read (by path: each worker keeps its own
 * descriptors), the reads that fill a span buffer and the span's chunk
 * lengths; the worker answers with one digest per chunk (the zero digest for
 * chunks no read touched). Workers are started on first use and do not keep
 * the process alive. KUBEVM_CHECKSUM_THREADS sets their number (default: the
 * cores, at most 4); 0 or 1 hashes on the calling thread.
 */
export interface SpanTask {
  algo: 'blake3' | 'sha256';
  paths: string[];
  /** [layer index into paths, file offset, offset in the span buffer, length] */
  reads: [number, number, number, number][];
  /** Per chunk: its length, and whether any read touched it (else it is all zeros). */
  lens: number[];
  filled: boolean[];
  chunkSize: number;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const { blake3 } = require(workerData.blake);
const hash = { blake3: (b) => blake3(b), sha256: (b) => createHash('sha256').update(b).digest() };
const fds = new Map();
const zeros = new Map();
let buf = Buffer.allocUnsafe(0);
function open(p) {
  let f = fds.get(p);
  if (f === undefined) { f = fs.openSync(p, 'r'); fds.set(p, f); }
  return f;
}
function zeroDigest(algo, len) {
  const k = algo + '/' + len;
  let d = zeros.get(k);
  if (!d) zeros.set(k, (d = hash[algo](Buffer.alloc(len))));
  return d;
}
parentPort.on('message', (t) => {
  try {
    if (t.close) {
      for (const f of fds.values()) fs.closeSync(f);
      fds.clear();
      parentPort.postMessage({ id: t.id });
      return;
    }
    const size = t.lens.length * t.chunkSize;
    if (buf.length < size) buf = Buffer.allocUnsafe(size);
    if (t.reads.length) buf.fill(0, 0, size);
    for (const [layer, at, into, len] of t.reads) {
      const fd = open(t.paths[layer]);
      let pos = 0;
      while (pos < len) {
        const n = fs.readSync(fd, buf, into + pos, len - pos, at + pos);
        if (n === 0) throw new Error(t.paths[layer] + ': ends before offset ' + (at + pos) + ' (truncated image)');
        pos += n;
      }
    }
    const out = Buffer.alloc(t.lens.length * 32);
    let hashed = 0;
    for (let j = 0; j < t.lens.length; j++) {
      const len = t.lens[j];
      let d;
      if (t.filled[j]) { d = hash[t.algo](buf.subarray(j * t.chunkSize, j * t.chunkSize + len)); hashed++; }
      else d = zeroDigest(t.algo, len);
      d.copy(out, j * 32);
    }
    parentPort.postMessage({ id: t.id, digests: out, hashed });
  } catch (e) {
    parentPort.postMessage({ id: t.id, error: String(e && e.message || e) });
  }
});
`;

interface Pending {
  resolve(r: { digests: Buffer; hashed: number }): void;
  reject(e: Error): void;
}

class Slot {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  constructor(onDead: (s: Slot) => void) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { blake: require.resolve('@napi-rs/blake-hash') } });
    this.worker.unref();
    this.worker.on('message', (m: { id: number; digests?: Uint8Array; hashed?: number; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error) p.reject(new Error(m.error));
      else p.resolve({ digests: Buffer.from(m.digests?.buffer ?? new ArrayBuffer(0), m.digests?.byteOffset, m.digests?.byteLength), hashed: m.hashed ?? 0 });
      if (!this.pending.size) this.worker.unref();
    });
    const dead = (e: Error) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
      onDead(this);
    };
    this.worker.on('error', dead);
    this.worker.on('exit', (code) => dead(new Error(`checksum worker exited (code ${code})`)));
  }
  send(id: number, msg: unknown): Promise<{ digests: Buffer; hashed: number }> {
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref(); // a task in flight keeps the process alive until it is answered
      this.worker.postMessage({ id, ...(msg as object) });
    });
  }
}

export class HashPool {
  private slots: Slot[] = [];
  private next = 0;
  private seq = 0;

  constructor(readonly size: number) {}

  /** Hashes one span on the next worker (round robin). */
  run(t: SpanTask): Promise<{ digests: Buffer; hashed: number }> {
    return this.slot().send(++this.seq, t);
  }

  /** Closes the workers' descriptors (after a whole checksum: the files may be deleted next). */
  async release(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.send(++this.seq, { close: true }).catch(() => undefined)));
  }

  private slot(): Slot {
    while (this.slots.length < this.size) this.slots.push(new Slot((s) => (this.slots = this.slots.filter((x) => x !== s))));
    const s = this.slots[this.next++ % this.slots.length];
    return s;
  }
}

let shared: HashPool | undefined;

/** The process's pool, or undefined when hashing stays on the calling thread. */
export function hashPool(): HashPool | undefined {
  const env = process.env.KUBEVM_CHECKSUM_THREADS;
  const n = env !== undefined && env !== '' ? Number(env) : Math.min(os.availableParallelism(), 4);
  if (!Number.isInteger(n) || n < 0) throw new Error(`KUBEVM_CHECKSUM_THREADS: ${JSON.stringify(env)} must be a whole number`);
  if (n < 2) return undefined;
  if (!shared || shared.size !== n) shared = new HashPool(n);
  return shared;
}
