/**
 * JSON structured logs, one object per line, each carrying the request's correlation id.
 * Callers log chosen fields only; as a second line of defence, fields whose names look like secrets,
 * card data or auth headers are replaced before writing.
 */
import { logLevel } from "./env.ts";

/** Fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** A logger bound to one request (or one component). */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
type Level = Exclude<keyof typeof LEVELS, "silent">;

// Names of fields never written as they are: credentials, signatures, card data, raw bodies.
const REDACT = /authorization|cookie|secret|password|token|api[-_]?key|signature|card|^pan$|cvc|cvv|^body$|^raw/i;

function redact(value: unknown, depth = 0): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (value === null || typeof value !== "object" || depth > 4) return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = REDACT.test(k) ? "[redacted]" : redact(v, depth + 1);
  return out;
}

function write(level: Level, msg: string, base: LogFields, fields: LogFields | undefined): void {
  const min = LEVELS[logLevel() as keyof typeof LEVELS] ?? LEVELS.info;
  if (LEVELS[level] < min) return;
  const line = JSON.stringify({
    ts: new Date().toISOString(),
    level,
    msg,
    ...(redact({ ...base, ...fields }) as LogFields),
  });
  // Errors and warnings to stderr, the rest to stdout, as the Supabase log explorer expects.
  if (level === "error" || level === "warn") console.error(line);
  else console.log(line);
}

/** Creates a logger whose lines all carry `base`. */
export function createLogger(base: LogFields = {}): Logger {
  return {
    debug: (msg, fields) => write("debug", msg, base, fields),
    info: (msg, fields) => write("info", msg, base, fields),
    warn: (msg, fields) => write("warn", msg, base, fields),
    error: (msg, fields) => write("error", msg, base, fields),
    child: (fields) => createLogger({ ...base, ...fields }),
  };
}

/**
 * An error as log fields: its class, the provider's type and HTTP status when it has them, and its message
 * (never a stack or a request body, which may hold card data or headers).
 */
export function describeError(err: unknown): LogFields {
  if (!(err instanceof Error)) return { message: String(err) };
  const e = err as Error & { type?: unknown; statusCode?: unknown; status?: unknown; code?: unknown };
  const fields: LogFields = { name: e.constructor?.name ?? e.name, message: e.message.slice(0, 300) };
  if (typeof e.type === "string") fields.type = e.type;
  const status = e.statusCode ?? e.status;
  if (typeof status === "number") fields.status = status;
  if (typeof e.code === "string") fields.code = e.code;
  return fields;
}

// A caller-supplied id is kept only when it is short and plain, so it is safe in logs, headers and the ledger.
const CORRELATION_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The request's correlation id: the caller's `x-correlation-id` when well-formed, else a new UUID. */
export function correlationIdFrom(req: Request): string {
  const given = req.headers.get("x-correlation-id");
  return given && CORRELATION_ID.test(given) ? given : crypto.randomUUID();
}
