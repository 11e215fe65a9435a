import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Confinement of host paths users hand us (ContainerPath shares): a path is
 * accepted only if it lies under one of the node's allowed roots, both as
 * written and after symlinks are resolved. `..` is refused outright rather than
 * normalised away: a path that climbs is a mistake or an attack, and silently
 * fixing it would hide which.
 */
export class PathError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`path ${JSON.stringify(path)} refused: ${reason}`);
    this.name = 'PathError';
  }
}

export interface ConfineOptions {
  /** Absolute directories under which paths may lie (each is itself allowed). */
  allowedRoots: readonly string[];
  /** Require the path to exist and be a directory (default true: shares are directories). */
  mustBeDirectory?: boolean;
}

function isUnder(p: string, root: string): boolean {
  // Segment-aware: /data2 is not under /data.
  return p === root || p.startsWith(root.endsWith('/') ? root : `${root}/`);
}

/** Lexical normalisation: absolute, no `..`, no NUL; collapses `//`, `.` and trailing slashes. */
export function normalisePath(p: string): string {
  if (typeof p !== 'string' || p === '') throw new PathError(String(p), 'must be a non-empty string');
  if (p.includes('\0')) throw new PathError(p, 'contains a NUL byte');
  if (!p.startsWith('/')) throw new PathError(p, 'must be absolute (start with "/")');
  if (p.split('/').includes('..')) throw new PathError(p, 'contains ".." (paths may not climb out of a directory)');
  return path.posix.normalize(p).replace(/(.)\/+$/, '$1');
}

/**
 * Returns the real path (symlinks resolved) of `p` if it is confined to an
 * allowed root; throws PathError saying why otherwise.
 */
export function confinePath(p: string, opts: ConfineOptions): string {
  const lexical = normalisePath(p);
  if (opts.allowedRoots.length === 0) throw new PathError(p, 'no allowed roots are configured on this node');
  const roots = opts.allowedRoots.map((r) => {
    const n = normalisePath(r);
    // A root that is itself a symlink is the operator's choice: compare against its target.
    try {
      return { given: n, real: fs.realpathSync(n) };
    } catch {
      return { given: n, real: n };
    }
  });
  const lexicalRoot = roots.find((r) => isUnder(lexical, r.given) || isUnder(lexical, r.real));
  if (!lexicalRoot) throw new PathError(p, `is outside the allowed roots (${roots.map((r) => r.given).join(', ')})`);

  let real: string;
  try {
    real = fs.realpathSync(lexical);
  } catch (e: any) {
    throw new PathError(p, e?.code === 'ENOENT' ? 'does not exist' : `cannot be resolved (${e?.code ?? e})`);
  }
  if (!roots.some((r) => isUnder(real, r.real)))
    throw new PathError(p, `resolves through a symlink to ${JSON.stringify(real)}, outside the allowed roots`);
  if (opts.mustBeDirectory !== false && !fs.statSync(real).isDirectory()) throw new PathError(p, 'is not a directory');
  return real;
}
