/**
 * The service's error kinds and their HTTP mapping, in one place. A user's code failing is not
 * here: that is data (HTTP 200, success: false), built by the execution service.
 */
export type ErrorKind =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'gone'
  | 'request_timeout'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'busy'
  | 'client_closed'
  | 'method_not_allowed'
  | 'unavailable'
  | 'internal';

const statusOf: Record<ErrorKind, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  gone: 410,
  request_timeout: 408,
  payload_too_large: 413,
  unsupported_media_type: 415,
  busy: 429,
  // nginx's code for it: nobody reads this answer, but the log says what happened.
  client_closed: 499,
  internal: 500,
  unavailable: 503,
};

export class ServiceError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** For `busy`: when to try again, sent as Retry-After. */
    readonly retryAfterS?: number,
  ) {
    super(message);
  }
  get status(): number {
    return statusOf[this.kind];
  }
}

export const badRequest = (message: string) => new ServiceError('bad_request', message);
export const forbidden = (message: string) => new ServiceError('forbidden', message);
export const notFound = (message: string) => new ServiceError('not_found', message);
export const conflict = (message: string) => new ServiceError('conflict', message);
export const gone = (message: string) => new ServiceError('gone', message);
export const unavailable = (message: string) => new ServiceError('unavailable', message);
export const tooLarge = (message: string) => new ServiceError('payload_too_large', message);

interface ValidatorError {
  status: number;
  message: string;
  errors?: { path?: string; message?: string }[];
}

function isValidatorError(err: unknown): err is ValidatorError {
  return typeof err === 'object' && err !== null && typeof (err as ValidatorError).status === 'number';
}

/** "/body/timeout" -> "body.timeout", so the message names the field the way the client wrote it. */
function fieldOf(p: string | undefined): string {
  return (p ?? '').replace(/^\//, '').replace(/\//g, '.') || 'request';
}

/**
 * Faults of the machine, not of the request (a full disk, a read-only BASE_DIR, no descriptors
 * left): 503s that tell the operator what to look at, without the paths (those go to the log).
 */
const SYSTEM_FAULTS: Record<string, string> = {
  ENOSPC: "The server's disk is full: free space on the file system of BASE_DIR",
  EDQUOT: "The server's disk quota is used up: raise it for the file system of BASE_DIR",
  EROFS: 'The server cannot write its files: the file system of BASE_DIR is read-only',
  EACCES: 'The server may not write its files: check who owns BASE_DIR and its contents',
  EPERM: 'The server may not write its files: check who owns BASE_DIR and its contents',
  EMFILE: 'The server has too many files open: raise its open-file limit (ulimit -n)',
  ENFILE: 'The machine has too many files open: raise fs.file-max',
  ENOMEM: 'The server is out of memory',
};

function systemFault(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (err as { syscall?: unknown }).syscall !== undefined ? SYSTEM_FAULTS[code] : undefined;
}

const kindOfStatus = Object.fromEntries(Object.entries(statusOf).map(([k, s]) => [s, k])) as Record<number, ErrorKind>;

/**
 * Maps anything thrown on the way to a response to (status, message). Validator errors (from
 * express-openapi-validator), body-parser errors and ServiceErrors keep their meaning; anything
 * else is internal: logged in full by the caller, answered with a plain message.
 */
export function classify(err: unknown): { kind: ErrorKind; status: number; message: string; retryAfterS?: number } {
  if (err instanceof ServiceError) {
    return { kind: err.kind, status: err.status, message: err.message, retryAfterS: err.retryAfterS };
  }
  if (isValidatorError(err) && err.status >= 400 && err.status < 500) {
    const kind = kindOfStatus[err.status] ?? 'bad_request';
    const status = kindOfStatus[err.status] ? err.status : 400;
    const details = (err.errors ?? [])
      .map((e) => `${fieldOf(e.path)}: ${e.message ?? 'invalid'}`)
      .filter((d, i, all) => all.indexOf(d) === i);
    const type = (err as { type?: string }).type;
    const where = err.errors?.[0]?.path ?? '';
    let message: string;
    if (type === 'entity.too.large') message = 'Request body is larger than the limit (MAX_BODY_BYTES)';
    else if (type === 'entity.parse.failed') message = `Request body is not valid JSON: ${err.message}`;
    else if (status === 404) message = `Not found: ${where}`;
    else if (status === 405) message = `Method not allowed on ${where}`;
    else if (status === 415) message = 'Unsupported media type: send the body as application/json';
    else if (details.length > 0) message = `Invalid request: ${details.join('; ')}`;
    else message = err.message;
    return { kind, status, message };
  }
  const fault = systemFault(err);
  if (fault) return { kind: 'unavailable', status: 503, message: `${fault} (details in the server log under this execution_id)` };
  return { kind: 'internal', status: 500, message: 'Internal error: see the server log for this execution_id' };
}
