/**
 * The one place where failures become HTTP answers: the engine's SQLSTATEs (docs/engine-contract.md), our own
 * AppErrors, and everything else as a 500 that reveals nothing about the internals.
 * Body shape: `{ "error": { "code", "message", "details"? } }`.
 */

/** The JSON body of every error answer. */
export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/** An error the doors raise on purpose, with its HTTP status and public code. */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly options: { details?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "AppError";
  }
}

/** 400 `invalid_request` listing every field error as `{ path, message }`. */
export function invalidRequest(message: string, errors?: { path: string; message: string }[]): AppError {
  return new AppError(400, "invalid_request", message, errors ? { details: { errors } } : {});
}

// Engine SQLSTATEs (contract "Errors" table): code and HTTP status. DETAIL carries JSON details where given.
const ENGINE_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  SH400: { status: 400, code: "invalid_request", message: "The request is invalid." },
  SH401: { status: 404, code: "product_not_found", message: "One or more products do not exist or are not for sale." },
  SH402: { status: 404, code: "order_not_found", message: "The order does not exist." },
  SH409: { status: 409, code: "insufficient_stock", message: "Not enough stock for one or more items." },
  SH410: { status: 409, code: "invalid_transition", message: "The order is not in a state that allows this." },
  SH411: {
    status: 409,
    code: "transaction_code_reused",
    message: "This SumUp transaction code already paid another order; check the receipt.",
  },
  SH422: {
    status: 422,
    code: "idempotency_key_reused",
    message: "This Idempotency-Key was already used with a different request.",
  },
};

// Postgres states worth a retry by the client: serialization failures, deadlocks, lock timeouts, shutdown,
// and postgres.js's own connection errors. Anything else unexpected is a 500.
const RETRYABLE_SQLSTATES = new Set(["40001", "40P01", "55P03", "57P01", "57P03", "53300"]);
const CONNECTION_ERRORS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/** What a failure becomes on the wire, plus whether it is our fault (logged as an error) or the client's. */
export interface MappedError {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
  /** True for 5xx answers that hide an unexpected failure: log it in full, server side only. */
  unexpected: boolean;
}

/** A Postgres error as postgres.js raises it (duck-typed so this file needs no driver import). */
export interface PgErrorLike {
  name: string;
  code: string;
  message: string;
  detail?: string;
}

/** True for an error raised by the database server (as opposed to a connection failure). */
export function isPgError(err: unknown): err is PgErrorLike {
  return err instanceof Error && err.name === "PostgresError" && typeof (err as { code?: unknown }).code === "string";
}

/** The engine's public code for an error it raised (e.g. "invalid_transition"), or null. */
export function engineErrorCode(err: unknown): string | null {
  return isPgError(err) ? ENGINE_ERRORS[err.code]?.code ?? null : null;
}

function parseDetail(detail: string | undefined): unknown {
  if (!detail) return undefined;
  try {
    return JSON.parse(detail);
  } catch {
    // The engine's contract promises JSON; anything else is kept out of the answer rather than guessed at.
    return undefined;
  }
}

function body(code: string, message: string, details?: unknown): ErrorBody {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}

/** Maps any thrown value to its HTTP answer. */
export function mapError(err: unknown): MappedError {
  if (err instanceof AppError) {
    return {
      status: err.status,
      body: body(err.code, err.message, err.options.details),
      headers: err.options.headers ?? {},
      unexpected: err.status >= 500 && err.code === "internal_error",
    };
  }
  if (isPgError(err)) {
    const known = ENGINE_ERRORS[err.code];
    if (known) {
      // The engine's messages are written for clients, prefixed with the code ("insufficient_stock: ..."),
      // which the body already carries; fall back to ours when it gives none.
      const message = err.message.startsWith(`${known.code}: `)
        ? err.message.slice(known.code.length + 2)
        : err.message;
      return {
        status: known.status,
        body: body(known.code, message || known.message, parseDetail(err.detail)),
        headers: {},
        unexpected: false,
      };
    }
    if (RETRYABLE_SQLSTATES.has(err.code)) {
      return {
        status: 503,
        body: body("temporarily_unavailable", "The service is busy; retry shortly."),
        headers: { "Retry-After": "1" },
        unexpected: true,
      };
    }
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && CONNECTION_ERRORS.has(code)) {
    return {
      status: 503,
      body: body("temporarily_unavailable", "The service is busy; retry shortly."),
      headers: { "Retry-After": "1" },
      unexpected: true,
    };
  }
  return { status: 500, body: body("internal_error", "Internal error."), headers: {}, unexpected: true };
}
