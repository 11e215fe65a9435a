import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { imageChain, imageMap, type MapExtent } from './qemuimg';

/**
 * Checksums of an image's logical content (what a guest reads), independent of
 * format, layout and backing chain: the content is cut into 64 KiB chunks (the
 * qcow2 cluster and dirty-bitmap granularity), each chunk is hashed with sha256,
 * and the checksum is the sha256 of those digests in order.
 *
 * The digests are kept next to each point (`.sums`): a Full stores all of them,
 * an Incremental only the chunks it holds (index + digest records). So the
 * checksum of an incremental costs reading and hashing only the clusters it
 * copied, plus one pass over the digests of its chain; and a restore or verify
 * recomputes it from the content and compares.
 *
 * Content is read straight from the image files at the host offsets that
 * `qemu-img map` reports for each extent; chunks the map says are zero are not
 * read at all. Compressed or encrypted clusters have no plain host offset; such
 * images are refused (kubevm never writes them).
 */
export const CHUNK_SIZE = 64 * 1024;
export const CHECKSUM_PREFIX = 'chunked-sha256:';
const DIGEST = 32;
const RECORD = 4 + DIGEST; // delta record: u32 chunk index (big-endian) + digest
const WINDOW = 16; // chunks read ahead while one is hashed
const STREAM_CHUNKS = 32 * 1024; // digests per block when streaming a sums file
const SPAN_CHUNKS = 32; // chunks per read when hashing a whole image (2 MiB)

const zeroDigests = new Map<number, Buffer>();
function zeroDigest(len: number): Buffer {
  let d = zeroDigests.get(len);
  if (!d) zeroDigests.set(len, (d = createHash('sha256').update(Buffer.alloc(len)).digest()));
  return d;
}

/** The checksum of a complete digest sequence. */
export function checksumOf(sums: Buffer): string {
  return CHECKSUM_PREFIX + createHash('sha256').update(sums).digest('hex');
}

export function chunkCount(virtualSize: number): number {
  return Math.ceil(virtualSize / CHUNK_SIZE);
}

function finish(outer: Hash): string {
  return CHECKSUM_PREFIX + outer.digest('hex');
}

/** An image opened for reading its logical content. */
class ContentReader {
  private constructor(
    private readonly extents: MapExtent[],
    private readonly layers: fsp.FileHandle[],
    readonly virtualSize: number,
    private readonly what: string,
  ) {}

  static async open(image: string, format: string): Promise<ContentReader> {
    const chain = await imageChain(image, { format });
    const extents = await imageMap(image, { format });
    const layers: fsp.FileHandle[] = [];
    try {
      for (const info of chain) {
        // A layer with an external data file keeps its data there (guest offset = host offset).
        const dataFile = info['format-specific']?.data?.['data-file'];
        const file = dataFile ? path.resolve(path.dirname(info.filename), dataFile) : info.filename;
        layers.push(await fsp.open(file, 'r'));
      }
    } catch (e) {
      await Promise.all(layers.map((l) => l.close()));
      throw e;
    }
    return new ContentReader(extents, layers, chain[0]['virtual-size'], image);
  }

  async close(): Promise<void> {
    await Promise.all(this.layers.map((l) => l.close().catch(() => undefined)));
  }

  get chunks(): number {
    return chunkCount(this.virtualSize);
  }

  /** Chunk indexes holding data of the top image itself (depth 0): what an incremental changed. */
  topChunks(): number[] {
    const out: number[] = [];
    for (const e of this.extents) {
      if (e.depth !== 0 || !e.present) continue;
      const first = Math.floor(e.start / CHUNK_SIZE);
      const last = Math.floor((e.start + e.length - 1) / CHUNK_SIZE);
      for (let i = Math.max(first, out.length ? out[out.length - 1] + 1 : 0); i <= last; i++) out.push(i);
    }
    return out;
  }

  private firstExtent(offset: number): number {
    let lo = 0;
    let hi = this.extents.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const e = this.extents[mid];
      if (e.start + e.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The chunk's content, or undefined when it is all zeros (known from the map alone). */
  async read(index: number, buf: Buffer): Promise<Buffer | undefined> {
    const [filled] = await this.readSpan(index, 1, buf);
    return filled ? buf.subarray(0, Math.min(CHUNK_SIZE, this.virtualSize - index * CHUNK_SIZE)) : undefined;
  }

  /**
   * Reads chunks [first, first + count) into buf (count × CHUNK_SIZE bytes) in as few reads as the map
   * allows; says per chunk whether any data was there (else it is all zeros, known from the map alone).
   */
  async readSpan(first: number, count: number, buf: Buffer): Promise<boolean[]> {
    const start = first * CHUNK_SIZE;
    const end = Math.min(start + count * CHUNK_SIZE, this.virtualSize);
    const filled: boolean[] = new Array(count).fill(false);
    let zeroed = false;
    for (let i = this.firstExtent(start); i < this.extents.length; i++) {
      const e = this.extents[i];
      if (e.start >= end) break;
      if (e.zero || !e.data || !e.present) continue;
      if (e.compressed || e.offset === undefined)
        throw new Error(`${this.what}: extent at ${e.start} has no plain host offset (compressed or encrypted); cannot checksum it`);
      if (!zeroed) {
        buf.fill(0, 0, end - start); // holes and zero extents between the data read below
        zeroed = true;
      }
      const from = Math.max(start, e.start);
      const to = Math.min(end, e.start + e.length);
      for (let c = Math.floor((from - start) / CHUNK_SIZE); c <= Math.floor((to - 1 - start) / CHUNK_SIZE); c++) filled[c] = true;
      const layer = this.layers[e.depth];
      if (!layer) throw new Error(`${this.what}: map names layer ${e.depth}, the chain has ${this.layers.length}`);
      let pos = 0;
      const len = to - from;
      while (pos < len) {
        const at = e.offset + (from - e.start) + pos;
        const { bytesRead } = await layer.read(buf, from - start + pos, len - pos, at);
        if (bytesRead === 0) throw new Error(`${this.what}: layer ${e.depth} ends before offset ${at} (truncated image)`);
        pos += bytesRead;
      }
    }
    return filled;
  }

  /** Digests of every chunk, in order: 2 MiB spans, the next one read while this one is hashed. */
  async allDigests(put: (index: number, digest: Buffer) => void): Promise<number> {
    const total = this.chunks;
    const bufs = [Buffer.allocUnsafe(SPAN_CHUNKS * CHUNK_SIZE), Buffer.allocUnsafe(SPAN_CHUNKS * CHUNK_SIZE)];
    const load = (first: number, buf: Buffer) => {
      const p = this.readSpan(first, Math.min(SPAN_CHUNKS, total - first), buf);
      p.catch(() => undefined); // awaited below, in order
      return p;
    };
    let hashed = 0;
    let next = total > 0 ? load(0, bufs[0]) : undefined;
    for (let first = 0, k = 0; first < total; first += SPAN_CHUNKS, k++) {
      const filled = await next!;
      const buf = bufs[k % 2];
      if (first + SPAN_CHUNKS < total) next = load(first + SPAN_CHUNKS, bufs[(k + 1) % 2]);
      for (let j = 0; j < filled.length; j++) {
        const i = first + j;
        const len = Math.min(CHUNK_SIZE, this.virtualSize - i * CHUNK_SIZE);
        if (filled[j]) {
          put(i, createHash('sha256').update(buf.subarray(j * CHUNK_SIZE, j * CHUNK_SIZE + len)).digest());
          hashed++;
        } else put(i, zeroDigest(len));
      }
    }
    return hashed;
  }

  /** Digests of the given chunks, in order, with WINDOW reads in flight. */
  async digests(indexes: Iterable<number>, put: (index: number, digest: Buffer) => void): Promise<number> {
    const it = indexes[Symbol.iterator]();
    const bufs = Array.from({ length: WINDOW }, () => Buffer.allocUnsafe(CHUNK_SIZE));
    const inflight: { index: number; data: Promise<Buffer | undefined> }[] = [];
    let slot = 0;
    let hashed = 0;
    const launch = () => {
      const n = it.next();
      if (n.done) return;
      const data = this.read(n.value, bufs[slot++ % WINDOW]);
      data.catch(() => undefined); // awaited below, in order
      inflight.push({ index: n.value, data });
    };
    for (let k = 0; k < WINDOW; k++) launch();
    while (inflight.length) {
      const { index, data } = inflight.shift()!;
      const content = await data;
      if (content) {
        put(index, createHash('sha256').update(content).digest());
        hashed++;
      } else put(index, zeroDigest(Math.min(CHUNK_SIZE, this.virtualSize - index * CHUNK_SIZE)));
      launch(); // only now: its buffer is the one just hashed
    }
    return hashed;
  }
}

export interface ImageChecksum {
  virtualSize: number;
  checksum: string;
  /** Chunks read and hashed (the rest were zero, or come from a base). */
  hashedChunks: number;
}

/**
 * The checksum of an image's whole logical content (through its backing chain).
 * With `sumsPath`, the digests are written there as well (a Full's `.sums`).
 */
export async function imageChecksum(image: string, format: string, sumsPath?: string): Promise<ImageChecksum> {
  const r = await ContentReader.open(image, format);
  const out = sumsPath ? fs.openSync(sumsPath, 'w') : undefined;
  try {
    const outer = createHash('sha256');
    const block = Buffer.allocUnsafe(STREAM_CHUNKS * DIGEST);
    let used = 0;
    const flush = () => {
      if (out !== undefined && used) fs.writeSync(out, block, 0, used);
      used = 0;
    };
    const hashedChunks = await r.allDigests((_i, d) => {
      outer.update(d);
      d.copy(block, used);
      used += DIGEST;
      if (used === block.length) flush();
    });
    flush();
    if (out !== undefined) fs.fsyncSync(out);
    return { virtualSize: r.virtualSize, checksum: finish(outer), hashedChunks };
  } finally {
    if (out !== undefined) fs.closeSync(out);
    await r.close();
  }
}

/** Digests of the chunks an incremental holds itself, by chunk index. */
export async function changedDigests(
  image: string,
): Promise<{ virtualSize: number; changes: Map<number, Buffer>; hashedChunks: number }> {
  const r = await ContentReader.open(image, 'qcow2');
  try {
    const changes = new Map<number, Buffer>();
    const hashedChunks = await r.digests(r.topChunks(), (i, d) => changes.set(i, d));
    return { virtualSize: r.virtualSize, changes, hashedChunks };
  } finally {
    await r.close();
  }
}

/** An incremental's `.sums`: (u32 index, digest) records in index order. */
export function encodeDelta(changes: Map<number, Buffer>): Buffer {
  const idx = [...changes.keys()].sort((a, b) => a - b);
  const buf = Buffer.alloc(idx.length * RECORD);
  idx.forEach((i, k) => {
    buf.writeUInt32BE(i, k * RECORD);
    changes.get(i)!.copy(buf, k * RECORD + 4);
  });
  return buf;
}

function decodeDelta(p: string, chunks: number, into: Map<number, Buffer>): void {
  const buf = fs.readFileSync(p);
  if (buf.length % RECORD !== 0) throw new Error(`${p}: not a digest delta (size ${buf.length} is not a multiple of ${RECORD})`);
  for (let o = 0; o < buf.length; o += RECORD) {
    const i = buf.readUInt32BE(o);
    if (i >= chunks) throw new Error(`${p}: chunk index ${i} is beyond the image's ${chunks} chunks`);
    into.set(i, buf.subarray(o + 4, o + RECORD));
  }
}

/**
 * The checksum a chain's digest files give: the Full's digests with each
 * incremental's (and `extra`) laid over them, in chain order. Streams the
 * Full's file; holds only the changed digests in memory.
 */
export function chainSumsChecksum(
  fullSums: string,
  deltaSums: string[],
  virtualSize: number,
  extra?: Map<number, Buffer>,
): string {
  const chunks = chunkCount(virtualSize);
  const changed = new Map<number, Buffer>();
  for (const d of deltaSums) decodeDelta(d, chunks, changed);
  for (const [i, d] of extra ?? []) changed.set(i, d);
  const fd = fs.openSync(fullSums, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size !== chunks * DIGEST) throw new Error(`${fullSums}: holds ${size / DIGEST} digests, the image has ${chunks} chunks`);
    const outer = createHash('sha256');
    const block = Buffer.allocUnsafe(STREAM_CHUNKS * DIGEST);
    for (let first = 0; first < chunks; first += STREAM_CHUNKS) {
      const n = Math.min(STREAM_CHUNKS, chunks - first);
      const got = fs.readSync(fd, block, 0, n * DIGEST, first * DIGEST);
      if (got !== n * DIGEST) throw new Error(`${fullSums}: short read`);
      for (let k = 0; k < n; k++) {
        const c = changed.get(first + k);
        if (c) c.copy(block, k * DIGEST);
      }
      outer.update(block.subarray(0, n * DIGEST));
    }
    return finish(outer);
  } finally {
    fs.closeSync(fd);
  }
}
