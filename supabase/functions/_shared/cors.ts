/**
 * CORS with an allow-list (ALLOWED_ORIGINS). An allowed origin gets the allow headers on every answer; any
 * other origin gets none, so the browser withholds the answer, and its preflight is refused with 403.
 * Requests without an Origin header (servers, webhooks, curl) are not CORS requests and pass untouched.
 */
import { allowedOrigins } from "./env.ts";

// Headers our clients send: supabase-js's own, plus the ones this API defines.
const ALLOW_HEADERS =
  "authorization, x-client-info, apikey, content-type, idempotency-key, x-correlation-id, if-none-match";
// Headers a browser script may read from our answers.
const EXPOSE_HEADERS = "x-correlation-id, retry-after, etag, idempotent-replayed";

/** True when browsers from `origin` may call the functions. */
export function isAllowedOrigin(origin: string): boolean {
  const allowed = allowedOrigins();
  return allowed.includes("*") || allowed.includes(origin);
}

/** CORS headers for an answer to `req`: the allow headers for an allowed origin, else only `Vary`. */
export function corsHeaders(req: Request): Record<string, string> {
  const origin = req.headers.get("origin");
  // Vary on Origin always, so a shared cache never serves one origin's answer to another.
  const headers: Record<string, string> = { Vary: "Origin" };
  if (origin && isAllowedOrigin(origin)) {
    headers["Access-Control-Allow-Origin"] = origin;
    headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS;
  }
  return headers;
}

/** The answer to an OPTIONS preflight: 204 with the allow headers, or 403 for an origin not on the list. */
export function preflight(req: Request, methods: readonly string[]): Response {
  const origin = req.headers.get("origin");
  if (!origin || !isAllowedOrigin(origin)) {
    return Response.json(
      { error: { code: "origin_not_allowed", message: "This origin may not call this API." } },
      { status: 403, headers: { Vary: "Origin" } },
    );
  }
  return new Response(null, {
    status: 204,
    headers: {
      ...corsHeaders(req),
      "Access-Control-Allow-Methods": [...methods, "OPTIONS"].join(", "),
      "Access-Control-Allow-Headers": ALLOW_HEADERS,
      "Access-Control-Max-Age": "600",
    },
  });
}
