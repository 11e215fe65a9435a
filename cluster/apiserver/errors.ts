/**
 * metav1.Status errors, shaped the way kube-apiserver sends them. Note that
 * `details.kind` holds the resource (plural), as upstream does.
 */
export interface StatusCause {
  reason?: string;
  message: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export class ApiError extends Error {
  constructor(
    public readonly code: number,
    public readonly reason: string,
    message: string,
    public readonly details?: StatusDetails,
  ) {
    super(message);
  }

  toStatus(): any {
    const s: any = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      code: this.code,
    };
    if (this.details) s.details = this.details;
    return s;
  }
}

/** `configmaps` or `deployments.apps`: how upstream names a resource in messages. */
export function qualifiedResource(group: string, resource: string): string {
  return group ? `${resource}.${group}` : resource;
}

export const errors = {
  notFound(group: string, resource: string, name: string): ApiError {
    return new ApiError(404, 'NotFound', `${qualifiedResource(group, resource)} "${name}" not found`, {
      name,
      group: group || undefined,
      kind: resource,
    });
  },
  noResource(): ApiError {
    return new ApiError(404, 'NotFound', 'the server could not find the requested resource');
  },
  alreadyExists(group: string, resource: string, name: string): ApiError {
    return new ApiError(409, 'AlreadyExists', `${qualifiedResource(group, resource)} "${name}" already exists`, {
      name,
      group: group || undefined,
      kind: resource,
    });
  },
  conflict(group: string, resource: string, name: string, why?: string): ApiError {
    return new ApiError(
      409,
      'Conflict',
      `Operation cannot be fulfilled on ${qualifiedResource(group, resource)} "${name}": ${
        why ?? 'the object has been modified; please apply your changes to the latest version and try again'
      }`,
      { name, group: group || undefined, kind: resource },
    );
  },
  /** 422 with causes; `qualifiedKind` is `ConfigMap` or `Widget.example.com`. */
  invalid(qualifiedKind: string, group: string, name: string, causes: StatusCause[]): ApiError {
    const parts = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message));
    const body = parts.length === 1 ? parts[0] : `[${parts.join(', ')}]`;
    return new ApiError(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${body}`, {
      name,
      group: group || undefined,
      kind: qualifiedKind.split('.')[0],
      causes: causes.map((c) => ({ reason: c.reason ?? 'FieldValueInvalid', message: c.message, field: c.field })),
    });
  },
  badRequest(message: string): ApiError {
    return new ApiError(400, 'BadRequest', message);
  },
  forbidden(message: string, group?: string, resource?: string, name?: string): ApiError {
    return new ApiError(403, 'Forbidden', message, resource ? { name, group: group || undefined, kind: resource } : undefined);
  },
  methodNotAllowed(message = 'the server does not allow this method on the requested resource'): ApiError {
    return new ApiError(405, 'MethodNotAllowed', message);
  },
  unsupportedMediaType(contentType: string, accepted: string[]): ApiError {
    return new ApiError(
      415,
      'UnsupportedMediaType',
      `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`,
    );
  },
  notAcceptable(accepted: string[]): ApiError {
    return new ApiError(406, 'NotAcceptable', `only the following media types are accepted: ${accepted.join(', ')}`);
  },
  expired(message: string): ApiError {
    return new ApiError(410, 'Expired', message);
  },
  gone(message: string): ApiError {
    return new ApiError(410, 'Gone', message);
  },
  tooLarge(limit: number): ApiError {
    return new ApiError(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${limit}`);
  },
  unauthorized(): ApiError {
    return new ApiError(401, 'Unauthorized', 'Unauthorized');
  },
  timeout(message: string): ApiError {
    return new ApiError(504, 'Timeout', message);
  },
  internal(message: string): ApiError {
    return new ApiError(500, 'InternalError', `Internal error occurred: ${message}`);
  },
};
