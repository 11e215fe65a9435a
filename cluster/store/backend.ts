/**
 * The storage contract of the embedded API server, in the shape of kine's
 * `Backend`: a log of revisions where the revision of a write is the
 * resourceVersion clients see. Keys look like `/<group>/<resource>/<ns>/<name>`.
 *
 * Objects handed out by a backend are shared with its cache: callers treat
 * them as immutable and clone before changing anything.
 */
export interface StoredObject {
  key: string;
  rev: number;
  obj: any;
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  type: EventType;
  key: string;
  rev: number;
  obj: any;
  /** The object before this write (MODIFIED and DELETED); selector watches need it. */
  prev?: any;
}

export class StoreError extends Error {
  constructor(
    public readonly code: 'KeyExists' | 'NotFound' | 'Conflict' | 'Compacted',
    message: string,
    /** For Conflict: the current stored object. For Compacted: the compacted revision. */
    public readonly current?: StoredObject | number,
  ) {
    super(message);
  }
}

export interface Backend {
  /** The revision of the newest write. */
  currentRevision(): number;
  /** Events at or below this revision are gone; a watch from before it gets 410. */
  compactedRevision(): number;
  get(key: string): StoredObject | undefined;
  /** Current objects whose key starts with prefix, sorted by key. */
  list(prefix: string): StoredObject[];
  count(prefix: string): number;
  /** The object's metadata.resourceVersion is set to the new revision by the backend. */
  create(key: string, obj: any): StoredObject;
  update(key: string, obj: any, expectedRev: number): StoredObject;
  delete(key: string, expectedRev: number): StoredObject;
  /** Events with rev > after, oldest first; throws StoreError('Compacted') when history is gone. */
  since(after: number): StoreEvent[];
  /** Called synchronously after every committed write. */
  subscribe(listener: (ev: StoreEvent) => void): () => void;
  compact(): number;
  close(): void;
}
