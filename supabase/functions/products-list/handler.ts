/**
 * products-list: the active catalogue with prices and available quantities, a page at a time (list_products,
 * keyset cursor by sku). Prices change rarely and the list is the same for everyone, so answers carry
 * `Cache-Control: public, max-age=PRODUCTS_CACHE_SECONDS` and a strong `ETag` (hash of the body); a client that
 * sends it back in `If-None-Match` gets a bodiless 304 while nothing changed.
 */
import { authenticate } from "../_shared/auth.ts";
import { withTx } from "../_shared/db.ts";
import { listProducts } from "../_shared/engine.ts";
import { productsCacheSeconds } from "../_shared/env.ts";
import { readJson, serve } from "../_shared/http.ts";
import { parseOrThrow } from "../_shared/validate.ts";
import { productsListQuery } from "./schema.ts";

/** A strong ETag for `body`: the first 128 bits of its SHA-256, hex. */
export async function etagOf(body: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body)));
  return `"${Array.from(digest.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("")}"`;
}

/** True when an `If-None-Match` header value matches `etag` (`*`, a list, weak `W/` forms included). */
export function matchesIfNoneMatch(header: string | null, etag: string): boolean {
  if (!header) return false;
  // RFC 9110: If-None-Match uses the weak comparison, so W/"x" matches "x".
  return header.split(",").map((t) => t.trim()).some((t) => t === "*" || t.replace(/^W\//, "") === etag);
}

const framed = serve({ name: "products-list", methods: ["GET", "POST"] }, async (req, ctx) => {
  // Any valid JWT will do (the anon key included); checked here too so the function is safe however deployed.
  const caller = await authenticate(req, ctx.log);
  const raw = req.method === "GET" ? Object.fromEntries(new URL(req.url).searchParams) : await readJsonOrEmpty(req);
  const query = parseOrThrow(productsListQuery, raw);

  const page = await withTx(
    { correlationId: ctx.correlationId, actor: caller.actor, role: caller.role, claims: caller.claims },
    (tx) => listProducts(tx, query),
  );

  const body = JSON.stringify(page);
  const etag = await etagOf(body);
  const headers = {
    ETag: etag,
    "Cache-Control": `public, max-age=${productsCacheSeconds()}`,
  };
  if (matchesIfNoneMatch(req.headers.get("if-none-match"), etag)) {
    return new Response(null, { status: 304, headers });
  }
  return new Response(body, { status: 200, headers: { ...headers, "Content-Type": "application/json" } });
});

// supabase-js `functions.invoke` posts an empty body when given none: that means the first page.
async function readJsonOrEmpty(req: Request): Promise<unknown> {
  const text = await req.clone().text();
  return text.trim() === "" ? {} : await readJson(req);
}

/** Answers GET `?cursor=&limit=` (or POST with those fields) with `{ items, next_cursor }`, or 304. */
export async function handler(req: Request): Promise<Response> {
  return await framed(req);
}
