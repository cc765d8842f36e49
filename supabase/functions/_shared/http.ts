/**
 * The frame around every function: CORS (preflight answered early), correlation id (taken or made, echoed in
 * `x-correlation-id`), method check, error mapping and one access-log line. Handlers inside stay thin.
 */
import { corsHeaders, preflight } from "./cors.ts";
import { AppError, mapError } from "./errors.ts";
import { correlationIdFrom, createLogger, type Logger } from "./log.ts";

/** Per-request context handed to handlers. */
export interface RequestContext {
  correlationId: string;
  log: Logger;
}

/** A function's logic, framed by {@link serve}. */
export type Handler = (req: Request, ctx: RequestContext) => Promise<Response>;

/** Options for {@link serve}. */
export interface ServeOptions {
  /** Function name, for logs. */
  name: string;
  /** Methods the function answers (OPTIONS is handled here). */
  methods: readonly string[];
}

/** A JSON answer. */
export function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return Response.json(body, { status, headers });
}

/** Parses the body as JSON; 400 `invalid_request` when it is not JSON. */
export async function readJson(req: Request): Promise<unknown> {
  const text = await req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new AppError(400, "invalid_request", "The request body must be valid JSON.");
  }
}

/**
 * The client's address: the first x-forwarded-for hop, which the edge (Supabase's relay or our gateway) sets.
 * "unknown" when absent, so such requests still share one rate-limit bucket rather than escaping it.
 */
export function clientAddress(req: Request): string {
  const first = req.headers.get("x-forwarded-for")?.split(",")[0]?.trim();
  return first && first.length <= 64 ? first : "unknown";
}

function withHeaders(res: Response, extra: Record<string, string>): Response {
  const headers = new Headers(res.headers);
  for (const [k, v] of Object.entries(extra)) headers.set(k, v);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

/** Wraps `handler` into `(req) => Response` with CORS, correlation id, error mapping and logging. */
export function serve(options: ServeOptions, handler: Handler): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    const started = performance.now();
    const correlationId = correlationIdFrom(req);
    const log = createLogger({ fn: options.name, correlation_id: correlationId });
    let res: Response;
    if (req.method === "OPTIONS") {
      res = preflight(req, options.methods);
    } else if (!options.methods.includes(req.method)) {
      res = json(
        { error: { code: "method_not_allowed", message: `Use ${options.methods.join(" or ")}.` } },
        405,
        { Allow: [...options.methods, "OPTIONS"].join(", ") },
      );
    } else {
      try {
        res = await handler(req, { correlationId, log });
      } catch (err) {
        const mapped = mapError(err);
        if (mapped.unexpected) {
          // Full detail goes to the server log only; the client sees the generic body.
          log.error("request failed", {
            error: err instanceof Error ? { name: err.name, message: err.message, stack: err.stack } : String(err),
          });
        }
        res = json(mapped.body, mapped.status, mapped.headers);
      }
    }
    res = withHeaders(res, { ...corsHeaders(req), "x-correlation-id": correlationId });
    log.info("request", {
      method: req.method,
      status: res.status,
      duration_ms: Math.round(performance.now() - started),
    });
    return res;
  };
}
