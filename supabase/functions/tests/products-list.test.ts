/**
 * products-list against the real database: the active catalogue a page at a time, with an ETag that turns a
 * repeat request into a 304 until something (a price, the stock) changes, and a configurable Cache-Control.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import type postgres from "postgres";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { handler as rawHandler, matchesIfNoneMatch } from "../products-list/handler.ts";
import { ANON_KEY } from "./support/keys.ts";
import type { ProductPage } from "../_shared/engine.ts";
import { dbTest, makeOrder, makeProduct, uniqueSku, userJwt } from "./support/shop.ts";
import { contractFetch, withContract } from "./support/contract.ts";

// Every answer these tests receive is checked against docs/openapi.json (a mismatch throws).
const handler = withContract("products-list", rawHandler);

function test(name: string, fn: (sql: postgres.Sql) => Promise<void>, env: Record<string, string> = {}): void {
  dbTest(name, fn, { PRODUCTS_CACHE_SECONDS: undefined, ...env });
}

function list(query = "", headers: Record<string, string> = {}): Promise<Response> {
  return handler(
    new Request(`http://local/functions/v1/products-list${query}`, {
      headers: { authorization: `Bearer ${ANON_KEY}`, ...headers },
    }),
  );
}

type Item = ProductPage["items"][number];

/** Walks every page from `cursor` with page size `limit`; returns the items and the number of pages. */
async function walk(limit: number): Promise<{ items: Item[]; pages: number }> {
  const items: Item[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res = await list(`?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.ok(body.items.length <= limit);
    items.push(...body.items);
    cursor = body.next_cursor;
    pages++;
  } while (cursor !== null && pages < 1000);
  return { items, pages };
}

test("products_list_pages: cursor pagination visits every active product once, in sku order", async (sql) => {
  // A prefix that sorts after any earlier test's SKUs keeps this run's products together in the walk.
  const prefix = `zz${crypto.randomUUID().slice(0, 8)}`;
  const mine = [];
  for (let i = 0; i < 5; i++) mine.push(await makeProduct(sql, { sku: `${prefix}-${i}`, price: 100 + i, stock: i }));
  const inactive = await makeProduct(sql, { sku: `${prefix}-x`, active: false, stock: 3 });

  const { items, pages } = await walk(2);
  assert.ok(pages >= 3);
  const skus = items.map((i) => i.sku);
  assert.deepEqual([...skus].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), skus, "sorted by sku");
  assert.equal(new Set(skus).size, skus.length, "no product twice");
  const found = items.filter((i) => i.sku.startsWith(prefix));
  assert.deepEqual(found.map((i) => i.sku), mine.map((p) => p.sku));
  assert.ok(!skus.includes(inactive.sku), "inactive products are not listed");
  assert.deepEqual(found[3], {
    id: mine[3].id,
    sku: `${prefix}-3`,
    name: `Test ${prefix}-3`,
    unit_price: 103,
    currency: "EUR",
    tax_rate_bp: 1900,
    available: 3,
  });
});

test("products_list_available: a live reservation lowers the available quantity", async (sql) => {
  const product = await makeProduct(sql, { sku: `zz${uniqueSku()}`, stock: 5 });
  await makeOrder(sql, [{ product_id: product.id, quantity: 2 }]);
  const { items } = await walk(100);
  assert.equal(items.find((i) => i.id === product.id)?.available, 3);
});

test("products_list_etag: same catalogue -> same ETag and 304 on If-None-Match; a change -> new ETag", async (sql) => {
  // A SKU that sorts before every other test's, so the product is on the first page however full the database is.
  const product = await makeProduct(sql, { sku: `000${uniqueSku()}`, stock: 5 });
  const first = await list("?limit=100");
  assert.equal(first.status, 200);
  const etag = first.headers.get("etag");
  assert.match(etag ?? "", /^"[0-9a-f]{32}"$/);
  assert.equal(first.headers.get("cache-control"), "public, max-age=30");
  assert.equal(first.headers.get("content-type"), "application/json");
  const body = await first.text();

  const again = await list("?limit=100");
  assert.equal(again.headers.get("etag"), etag);
  assert.equal(await again.text(), body);

  const notModified = await list("?limit=100", { "if-none-match": etag! });
  assert.equal(notModified.status, 304);
  assert.equal(notModified.headers.get("etag"), etag);
  assert.equal(notModified.headers.get("cache-control"), "public, max-age=30");
  assert.equal(await notModified.text(), "");

  // Weak form and lists match too (RFC 9110 weak comparison); another tag does not.
  assert.equal((await list("?limit=100", { "if-none-match": `"nope", W/${etag}` })).status, 304);
  const other = await list("?limit=100", { "if-none-match": '"0000"' });
  assert.equal(other.status, 200);
  await other.body?.cancel();

  // A price change alters the body, hence the ETag: the stale copy is replaced.
  await sql`update public.products set unit_price = unit_price + 1 where id = ${product.id}::uuid`;
  const changed = await list("?limit=100", { "if-none-match": etag! });
  assert.equal(changed.status, 200);
  assert.notEqual(changed.headers.get("etag"), etag);
  await changed.body?.cancel();
});

test("products_list_cache_seconds: Cache-Control max-age follows PRODUCTS_CACHE_SECONDS", async () => {
  const res = await list("?limit=1");
  assert.equal(res.headers.get("cache-control"), "public, max-age=120");
  await res.body?.cancel();
}, { PRODUCTS_CACHE_SECONDS: "120" });

test("products_list_invalid: a bad limit is 400 invalid_request naming limit", async () => {
  for (const q of ["?limit=0", "?limit=101", "?limit=abc", "?limit=2.5"]) {
    const res = await list(q);
    assert.equal(res.status, 400, q);
    const err = (await res.json()).error;
    assert.equal(err.code, "invalid_request");
    assert.deepEqual(err.details.errors.map((e: { path: string }) => e.path), ["limit"]);
  }
});

test("products_list_auth: a JWT is required (the anon key or a user's session will do)", async () => {
  const none = await handler(new Request("http://local/functions/v1/products-list"));
  assert.equal(none.status, 401);
  await none.body?.cancel();
  const user = await userJwt();
  const res = await list("?limit=1", { authorization: `Bearer ${user.token}` });
  assert.equal(res.status, 200);
  await res.body?.cancel();
});

test("products_list_gateway: supabase-js reads the catalogue with the anon key (GET and POST)", async (sql) => {
  const product = await makeProduct(sql, { sku: `zz${uniqueSku()}`, stock: 4 });
  const gw = await startGateway();
  try {
    const supabase = createClient(gw.url, ANON_KEY, {
      auth: { persistSession: false },
      global: { fetch: contractFetch },
    });
    const { data, error } = await supabase.functions.invoke("products-list?limit=100", { method: "GET" });
    assert.equal(error, null);
    assert.ok(Array.isArray(data.items));
    const viaPost = await supabase.functions.invoke("products-list", { body: { limit: 100 } });
    assert.equal(viaPost.error, null);
    assert.deepEqual(viaPost.data, data);
    // The gateway refuses a call without a valid JWT (verify_jwt = true).
    const res = await contractFetch(`${gw.url}/functions/v1/products-list`);
    assert.equal(res.status, 401);
    await res.body?.cancel();
    void product;
  } finally {
    await gw.shutdown();
  }
});

Deno.test("products_list_if_none_match: parsing of the header", () => {
  assert.equal(matchesIfNoneMatch(null, '"a"'), false);
  assert.equal(matchesIfNoneMatch('"a"', '"a"'), true);
  assert.equal(matchesIfNoneMatch('W/"a"', '"a"'), true);
  assert.equal(matchesIfNoneMatch('"b", "a"', '"a"'), true);
  assert.equal(matchesIfNoneMatch("*", '"a"'), true);
  assert.equal(matchesIfNoneMatch('"b"', '"a"'), false);
});
