/**
 * Errors raised by the patch module. The HTTP layer turns them into metav1.Status bodies
 * (code, reason, message, details.causes), so each error carries exactly those pieces.
 */

export interface PatchErrorCause {
  reason: string;
  message: string;
  field?: string;
}

export type PatchErrorCode = 400 | 409 | 415 | 422;
export type PatchErrorReason = 'BadRequest' | 'Conflict' | 'UnsupportedMediaType' | 'Invalid';

export class PatchError extends Error {
  /** Goes to `details.causes` of the Status body (apply conflicts, JSON-patch failures). */
  public causes?: PatchErrorCause[];

  constructor(
    public code: PatchErrorCode,
    message: string,
    public reason: PatchErrorReason,
    causes?: PatchErrorCause[],
  ) {
    super(message);
    this.name = 'PatchError';
    if (causes) this.causes = causes;
  }
}

export function badRequest(message: string): PatchError {
  return new PatchError(400, message, 'BadRequest');
}
