/**
 * orders-create against the real database, with Stripe played by a local server that the real SDK is pointed
 * at (fakes/stripe-server.ts) and SumUp by fakes/sumup-server.ts. Every test makes its own products (unique
 * SKUs) and uses its own client address, so tests never share stock or rate-limit buckets.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { closeDb } from "../_shared/db.ts";
import { breakerState, resetProviderPolicies } from "../_shared/resilience.ts";
import { handler as rawHandler } from "../orders-create/handler.ts";
import { sessionIdempotencyKey } from "../orders-create/checkout.ts";
import { requestHash } from "../orders-create/request-hash.ts";
import { startFakeStripe } from "./fakes/stripe-server.ts";
import { startFakeSumUp } from "./fakes/sumup-server.ts";
import { ANON_KEY } from "./support/keys.ts";
import { makeProduct, movementsOf, orderRow, stockOf, testSql, userJwt } from "./support/shop.ts";
import { contractFetch, withContract } from "./support/contract.ts";

// Every answer these tests receive is checked against docs/openapi.json (a mismatch throws).
const handler = withContract("orders-create", rawHandler);

const sql = testSql();
const stripe = startFakeStripe();
const SHOP = "https://shop.example.test";

/** The configuration every test starts from; a test changes what it needs after calling this. */
function baseEnv(): void {
  const vars: Record<string, string> = {
    STRIPE_SECRET_KEY: "sk_test_stockhold_fake",
    STRIPE_API_BASE: stripe.url,
    ALLOWED_ORIGINS: SHOP,
    ALLOWED_RETURN_ORIGINS: SHOP,
    PROVIDER_TIMEOUT_MS: "2000",
    PROVIDER_RETRIES: "1",
    PROVIDER_BREAKER_THRESHOLD: "50",
    PROVIDER_BREAKER_HALF_OPEN_MS: "60000",
    ORDER_RATE_LIMIT_PER_ADDRESS: "1000",
    ORDER_RATE_LIMIT_PER_USER: "1000",
    ORDER_RATE_LIMIT_WINDOW_SECONDS: "60",
    LOG_LEVEL: Deno.env.get("TEST_LOG_LEVEL") ?? "silent",
  };
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  for (const k of ["SUMUP_API_KEY", "SUMUP_MERCHANT_CODE", "SUMUP_API_BASE", "SUMUP_WEBHOOK_URL"]) Deno.env.delete(k);
  stripe.mode = "up";
  stripe.beforeAnswer = null;
  stripe.failNext(0);
  resetProviderPolicies();
}

/** Deno.test without the per-test leak checks: the pool and the fake servers live across tests on purpose. */
function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false }, async () => {
    baseEnv();
    await fn();
  });
}

/** A client address no other test uses (a documentation-range IPv6), so rate-limit buckets never collide. */
function freshAddress(): string {
  return `2001:db8::${crypto.randomUUID().slice(0, 4)}:${crypto.randomUUID().slice(0, 4)}`;
}

interface CallOptions {
  key?: string | null;
  token?: string;
  address?: string;
  origin?: string;
  method?: string;
  headers?: Record<string, string>;
  rawBody?: string;
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** Calls the handler as the gateway would; returns status, headers and the parsed body. */
async function call(body: unknown, opts: CallOptions = {}): Promise<{ status: number; headers: Headers; body: Json }> {
  const headers: Record<string, string> = {
    authorization: `Bearer ${opts.token ?? ANON_KEY}`,
    "content-type": "application/json",
    "x-forwarded-for": opts.address ?? freshAddress(),
    ...(opts.origin ? { origin: opts.origin } : {}),
    ...opts.headers,
  };
  if (opts.key !== null) headers["idempotency-key"] = opts.key ?? crypto.randomUUID();
  const res = await handler(
    new Request("http://functions.local/functions/v1/orders-create", {
      method: opts.method ?? "POST",
      headers,
      body: opts.method === "OPTIONS" || opts.method === "GET" ? undefined : opts.rawBody ?? JSON.stringify(body),
    }),
  );
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

function stripeBody(items: { product_id: string; quantity: number }[], extra: Record<string, unknown> = {}) {
  return {
    items,
    payment_method: "stripe",
    success_url: `${SHOP}/thanks`,
    cancel_url: `${SHOP}/basket`,
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Stripe: the happy path and the session's parameters
// ---------------------------------------------------------------------------------------------------------

test("stripe order: 201, stock reserved, session priced from the database", async () => {
  const mug = await makeProduct(sql, { price: 1250, taxBp: 1900, stock: 5 });
  const tee = await makeProduct(sql, { price: 1999, taxBp: 700, stock: 5 });
  const before = stripe.sessionCreates().length;
  const started = Math.floor(Date.now() / 1000);

  const res = await call(stripeBody([{ product_id: mug.id, quantity: 2 }, { product_id: tee.id, quantity: 1 }], {
    customer: { email: "buyer@example.test", name: "Buyer" },
  }));

  assert.equal(res.status, 201, JSON.stringify(res.body));
  const order = res.body.order;
  assert.equal(order.status, "awaiting_payment");
  // 2 x 1250 at 19 % = 2500 + 475; 1 x 1999 at 7 % = 1999 + 140 (139.93 rounded)
  assert.equal(order.subtotal, 4499);
  assert.equal(order.tax, 615);
  assert.equal(order.total, 5114);
  assert.equal(res.body.reservation_expires_at, order.reservation_expires_at);
  assert.match(res.body.checkout_url, /^https:\/\/checkout\.stripe\.test\/c\/pay\/cs_test_/);
  assert.equal(order.checkout_url, res.body.checkout_url);
  assert.match(order.provider_checkout_id, /^cs_test_/);
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 5, reserved: 2 });

  const creates = stripe.sessionCreates().slice(before);
  assert.equal(creates.length, 1);
  const sent = creates[0];
  assert.equal(sent.authorization, "Bearer sk_test_stockhold_fake");
  assert.equal(sent.idempotencyKey, sessionIdempotencyKey(order.id));
  const p = sent.params as Json;
  assert.equal(p.mode, "payment");
  assert.equal(p.client_reference_id, order.id);
  assert.equal(p.metadata.order_id, order.id);
  assert.equal(p.payment_intent_data.metadata.order_id, order.id);
  assert.equal(p.customer_email, "buyer@example.test");
  assert.equal(p.success_url, `${SHOP}/thanks`);
  assert.equal(p.cancel_url, `${SHOP}/basket`);
  // Net lines at the database's prices, plus one tax line: the session total is the order total.
  assert.deepEqual(
    p.line_items.map((
      l: Json,
    ) => [l.price_data.product_data.name, l.price_data.unit_amount, l.quantity, l.price_data.currency]),
    [
      [`Test ${mug.sku}`, "1250", "2", "eur"],
      [`Test ${tee.sku}`, "1999", "1", "eur"],
      ["Tax", "615", "1", "eur"],
    ],
  );
  const session = stripe.sessions.get(order.provider_checkout_id)!;
  assert.equal(session.amount_total, order.total);
  // expires_at: the reservation's end, inside Stripe's window of 30 minutes to 24 hours.
  const expiresAt = Number(p.expires_at);
  assert.equal(expiresAt, Math.floor(Date.parse(order.reservation_expires_at) / 1000));
  assert.ok(expiresAt >= started + 30 * 60, `expires_at ${expiresAt} is less than 30 min ahead`);
  assert.ok(expiresAt <= started + 24 * 3600, `expires_at ${expiresAt} is more than 24 h ahead`);
});

test("stripe order: prices sent by the client are refused, never used", async () => {
  const mug = await makeProduct(sql, { price: 1000 });
  const res = await call(stripeBody([{ product_id: mug.id, quantity: 1, unit_price: 1 } as Json]));
  assert.equal(res.status, 400);
  assert.ok(res.body.error.details.errors.some((e: Json) => e.path === "items.0"), JSON.stringify(res.body));
});

test("signed-in customer: the order carries their id and the ledger the request's correlation id", async () => {
  const mug = await makeProduct(sql, { stock: 3 });
  const { token, sub } = await userJwt();
  await sql`insert into auth.users (id, email) values (${sub}::uuid, 'c@example.test') on conflict do nothing`;
  const correlation = `test-${crypto.randomUUID()}`;
  const res = await call(stripeBody([{ product_id: mug.id, quantity: 1 }]), {
    token,
    headers: { "x-correlation-id": correlation },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(res.headers.get("x-correlation-id"), correlation);
  assert.equal(res.body.order.customer_id, sub);
  const reserve = (await movementsOf(sql, mug.id)).find((m) => m.reason === "reserve");
  assert.equal(reserve?.correlation_id, correlation);
  assert.equal(reserve?.actor, `user:${sub}`);
});

// ---------------------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------------------

test("replay: the same key and body return the same order and checkout_url, one session, stock held once", async () => {
  const mug = await makeProduct(sql, { stock: 5 });
  const key = crypto.randomUUID();
  const body = stripeBody([{ product_id: mug.id, quantity: 2 }]);
  const before = stripe.sessionCreates().length;

  const first = await call(body, { key });
  // Same body with its keys in another order: the canonical hash makes it the same request.
  const reordered = {
    cancel_url: body.cancel_url,
    success_url: body.success_url,
    payment_method: "stripe",
    items: body.items,
  };
  const second = await call(reordered, { key });

  assert.equal(first.status, 201);
  assert.equal(second.status, 201);
  assert.equal(second.headers.get("idempotent-replayed"), "true");
  assert.equal(second.body.order.id, first.body.order.id);
  assert.equal(second.body.checkout_url, first.body.checkout_url);
  assert.equal(stripe.sessionCreates().length - before, 1);
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 5, reserved: 2 });
});

test("replay after a first attempt that died before storing its session: the session is created then", async () => {
  const mug = await makeProduct(sql, { stock: 5 });
  const key = crypto.randomUUID();
  const body = stripeBody([{ product_id: mug.id, quantity: 1 }]);
  // The first attempt got as far as the engine (order + reservation) and then its instance died.
  const hash = await requestHash(body, "anon");
  const [{ result }] = await sql`select public.create_order(${sql.json(body.items)}::jsonb, 'stripe', ${key},
    ${hash}, '{}'::jsonb, null) as result`;
  assert.equal(result.order.checkout_url, null);

  const replay = await call(body, { key });
  assert.equal(replay.status, 201, JSON.stringify(replay.body));
  assert.equal(replay.body.order.id, result.order.id);
  assert.match(replay.body.checkout_url, /cs_test_/);
  assert.equal((await orderRow(sql, result.order.id)).checkout_url, replay.body.checkout_url);
});

test("a racing request whose Stripe call fails keeps the order its twin already gave a session", async () => {
  const mug = await makeProduct(sql, { stock: 5 });
  const key = crypto.randomUUID();
  const body = stripeBody([{ product_id: mug.id, quantity: 1 }]);
  const [{ result }] = await sql`select public.create_order(${sql.json(body.items)}::jsonb, 'stripe', ${key},
    ${await requestHash(body, "anon")}, '{}'::jsonb, null) as result`;
  // While this request waits for Stripe, its twin stores the session; then Stripe fails this one.
  stripe.mode = "error";
  Deno.env.set("PROVIDER_RETRIES", "0");
  const twin = `cs_test_twin_${crypto.randomUUID().replaceAll("-", "")}`;
  stripe.beforeAnswer = async () => {
    await sql`select public.attach_checkout(${result.order.id}::uuid, 'stripe', ${twin}, ${`https://checkout.test/${twin}`})`;
  };
  const res = await call(body, { key });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(res.body.checkout_url, `https://checkout.test/${twin}`);
  assert.equal((await orderRow(sql, result.order.id)).status, "awaiting_payment");
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 5, reserved: 1 });
});

test("422 idempotency_key_reused: the same key with another body", async () => {
  const mug = await makeProduct(sql, { stock: 5 });
  const key = crypto.randomUUID();
  const first = await call(stripeBody([{ product_id: mug.id, quantity: 1 }]), { key });
  assert.equal(first.status, 201);
  const other = await call(stripeBody([{ product_id: mug.id, quantity: 2 }]), { key });
  assert.equal(other.status, 422);
  assert.equal(other.body.error.code, "idempotency_key_reused");
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 5, reserved: 1 });
});

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

test("400 invalid_request lists every field error, the missing Idempotency-Key among them", async () => {
  const res = await call({
    items: [{ product_id: "not-a-uuid", quantity: 0 }, { quantity: 1.5 }],
    payment_method: "cash",
    customer: { email: "nope" },
    colour: "red",
  }, { key: null });
  assert.equal(res.status, 400);
  assert.equal(res.body.error.code, "invalid_request");
  const paths = res.body.error.details.errors.map((e: Json) => e.path).sort();
  assert.deepEqual(paths, [
    "(body)",
    "customer.email",
    "header:Idempotency-Key",
    "items.0.product_id",
    "items.0.quantity",
    "items.1.product_id",
    "items.1.quantity",
    "payment_method",
  ]);
  const header = res.body.error.details.errors.find((e: Json) => e.path === "header:Idempotency-Key");
  assert.match(header.message, /Idempotency-Key header is required/);
});

test("400: stripe needs success_url and cancel_url on an allowed origin", async () => {
  const mug = await makeProduct(sql);
  const res = await call({
    items: [{ product_id: mug.id, quantity: 1 }],
    payment_method: "stripe",
    success_url: "https://evil.example.test/phish",
  });
  assert.equal(res.status, 400);
  assert.deepEqual(
    res.body.error.details.errors.map((e: Json) => [e.path, e.message]),
    [
      ["success_url", "success_url must point to an allowed return origin."],
      ["cancel_url", 'cancel_url is required for payment_method "stripe".'],
    ],
  );
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 10, reserved: 0 });
});

test("return URLs: http://localhost:3000 and http://127.0.0.1:3000 (the default allow-list) are accepted", async () => {
  // The default ALLOWED_RETURN_ORIGINS, as a local shop front on port 3000 would use it.
  Deno.env.delete("ALLOWED_RETURN_ORIGINS");
  const mug = await makeProduct(sql, { stock: 5 });
  for (const origin of ["http://localhost:3000", "http://127.0.0.1:3000"]) {
    const before = stripe.sessionCreates().length;
    const res = await call(stripeBody([{ product_id: mug.id, quantity: 1 }], {
      success_url: `${origin}/thanks?order={CHECKOUT_SESSION_ID}`,
      cancel_url: `${origin}/basket`,
    }));
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const params = stripe.sessionCreates()[before].params as Json;
    assert.equal(params.success_url, `${origin}/thanks?order={CHECKOUT_SESSION_ID}`);
    assert.equal(params.cancel_url, `${origin}/basket`);
  }
  // Another port of localhost is another origin: the allow-list still decides.
  const other = await call(stripeBody([{ product_id: mug.id, quantity: 1 }], {
    success_url: "http://localhost:8080/thanks",
    cancel_url: "http://localhost:3000/basket",
  }));
  assert.equal(other.status, 400);
  assert.deepEqual(other.body.error.details.errors, [
    { path: "success_url", message: "success_url must point to an allowed return origin." },
  ]);
});

test("return URLs: anything but an absolute http(s) URL is a 400 naming the field", async () => {
  Deno.env.set("ALLOWED_RETURN_ORIGINS", "*");
  const mug = await makeProduct(sql, { stock: 5 });
  for (const bad of ["javascript:alert(1)", "/thanks", "ftp://shop.example.test/x", "http:shop.example.test", 42]) {
    const res = await call(stripeBody([{ product_id: mug.id, quantity: 1 }], { success_url: bad }));
    assert.equal(res.status, 400, String(bad));
    assert.deepEqual(res.body.error.details.errors, [
      { path: "success_url", message: "must be an absolute http(s) URL." },
    ], String(bad));
  }
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 5, reserved: 0 });
});

test("400: a body that is not JSON", async () => {
  const res = await call(null, { rawBody: "{not json" });
  assert.equal(res.status, 400);
  assert.equal(res.body.error.code, "invalid_request");
});

test("400 from the engine: a quantity over the engine's limit", async () => {
  const mug = await makeProduct(sql);
  const res = await call({ items: [{ product_id: mug.id, quantity: 5000 }], payment_method: "sumup" });
  assert.equal(res.status, 400);
  assert.equal(res.body.error.code, "invalid_request");
  assert.match(res.body.error.message, /between 1 and 1000/);
});

test("404 product_not_found names the unknown product", async () => {
  const mug = await makeProduct(sql);
  const ghost = crypto.randomUUID();
  const res = await call({
    items: [{ product_id: mug.id, quantity: 1 }, { product_id: ghost, quantity: 1 }],
    payment_method: "sumup",
  });
  assert.equal(res.status, 404);
  assert.equal(res.body.error.code, "product_not_found");
  assert.deepEqual(res.body.error.details.product_ids, [ghost]);
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 10, reserved: 0 });
});

test("409 insufficient_stock names what is short and leaves nothing behind", async () => {
  const mug = await makeProduct(sql, { stock: 1 });
  const tee = await makeProduct(sql, { stock: 5 });
  const key = crypto.randomUUID();
  const res = await call(stripeBody([{ product_id: tee.id, quantity: 2 }, { product_id: mug.id, quantity: 2 }]), {
    key,
  });
  assert.equal(res.status, 409);
  assert.equal(res.body.error.code, "insufficient_stock");
  assert.deepEqual(res.body.error.details.items, [{ product_id: mug.id, sku: mug.sku, requested: 2, available: 1 }]);
  assert.deepEqual(await stockOf(sql, tee.id), { onHand: 5, reserved: 0 });
  const [{ n }] = await sql`select count(*)::int as n from public.orders where idempotency_key = ${key}`;
  assert.equal(n, 0);
});

test("401 without a JWT, 405 for GET", async () => {
  const res = await handler(
    new Request("http://functions.local/functions/v1/orders-create", { method: "POST", body: "{}" }),
  );
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, "unauthorized");
  const get = await call(null, { method: "GET" });
  assert.equal(get.status, 405);
  assert.equal(get.body.error.code, "method_not_allowed");
});

test("the 201 comes only once the order is on disk (its commit did not wait for the flush; the answer did)", async () => {
  const mug = await makeProduct(sql);
  // The test cluster's WAL writer flushes asynchronous commits at most every 10 s once it has flushed
  // (PG_WAL_WRITER_DELAY in scripts/test.sh): one flush now, so only orders-create's own wait can flush the order.
  await sql`select set_config('synchronous_commit', 'off', true), pg_current_xact_id()`;
  await new Promise((r) => setTimeout(r, 100));
  const res = await call({ items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  // Everything the order wrote is on disk. What may still be in the WAL buffers is small and not the order's: a WAL
  // page header, a background standby snapshot (~60 bytes). Without the wait the order's own records (~2.7 kB here)
  // would be.
  const [wal] = await sql`select pg_current_wal_insert_lsn() - pg_current_wal_flush_lsn() as unflushed`;
  assert.ok(Number(wal.unflushed) < 512, `${wal.unflushed} bytes of WAL not on disk after the 201`);
});

test("429 rate_limited per client address, with Retry-After", async () => {
  Deno.env.set("ORDER_RATE_LIMIT_PER_ADDRESS", "2");
  const mug = await makeProduct(sql);
  const address = freshAddress();
  const body = { items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" };
  assert.equal((await call(body, { address })).status, 201);
  assert.equal((await call(body, { address })).status, 201);
  const limited = await call(body, { address });
  assert.equal(limited.status, 429);
  assert.equal(limited.body.error.code, "rate_limited");
  const retryAfter = Number(limited.headers.get("retry-after"));
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 10, reserved: 2 });
  // Another address is not affected.
  assert.equal((await call(body)).status, 201);
});

test("429 rate_limited per signed-in user, whatever the address", async () => {
  Deno.env.set("ORDER_RATE_LIMIT_PER_USER", "1");
  const mug = await makeProduct(sql);
  const { token, sub } = await userJwt();
  await sql`insert into auth.users (id) values (${sub}::uuid) on conflict do nothing`;
  const body = { items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" };
  assert.equal((await call(body, { token })).status, 201);
  const limited = await call(body, { token });
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get("retry-after")) >= 1);
});

test("staff at the till are not rate-limited and are not recorded as the order's customer", async () => {
  Deno.env.set("ORDER_RATE_LIMIT_PER_ADDRESS", "1");
  Deno.env.set("ORDER_RATE_LIMIT_PER_USER", "1");
  const mug = await makeProduct(sql);
  const { token, sub } = await userJwt({ staffRole: "staff" });
  const address = freshAddress();
  const body = { items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" };
  for (let i = 0; i < 3; i++) {
    const res = await call(body, { token, address });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.order.customer_id, null);
  }
  const reserve = (await movementsOf(sql, mug.id)).find((m) => m.reason === "reserve");
  assert.equal(reserve?.actor, `staff:${sub}`);
});

// ---------------------------------------------------------------------------------------------------------
// Stripe unavailable
// ---------------------------------------------------------------------------------------------------------

test("502 payment_provider_unavailable: Stripe errors, the order is cancelled and its stock released", async () => {
  stripe.mode = "error";
  const mug = await makeProduct(sql, { stock: 4 });
  const key = crypto.randomUUID();
  const body = stripeBody([{ product_id: mug.id, quantity: 3 }]);
  const before = stripe.sessionCreates().length;

  const res = await call(body, { key });
  assert.equal(res.status, 502);
  assert.equal(res.body.error.code, "payment_provider_unavailable");
  // One retry (PROVIDER_RETRIES=1), with the same Stripe idempotency key.
  const attempts = stripe.sessionCreates().slice(before);
  assert.equal(attempts.length, 2);
  assert.equal(attempts[0].idempotencyKey, attempts[1].idempotencyKey);
  const orderId = res.body.error.details.order_id;
  assert.equal((await orderRow(sql, orderId)).status, "cancelled");
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 4, reserved: 0 });

  // The same key again gives the same answer, and no new order or session.
  stripe.mode = "up";
  const again = await call(body, { key });
  assert.equal(again.status, 502);
  assert.equal(again.body.error.details.order_id, orderId);
  assert.equal(stripe.sessionCreates().length - before, 2);
});

test("422 payment_provider_refused: Stripe refuses the session; no retry, breaker untouched, cancelled, stock back, replay alike", async () => {
  Deno.env.set("PROVIDER_BREAKER_THRESHOLD", "1");
  // 10 cents, no tax: under Stripe's minimum charge, which Stripe (the fake, as the real one) refuses with 400.
  const pin = await makeProduct(sql, { stock: 3, price: 10, taxBp: 0 });
  const key = crypto.randomUUID();
  const body = stripeBody([{ product_id: pin.id, quantity: 2 }]);
  const before = stripe.sessionCreates().length;

  const res = await call(body, { key });
  assert.equal(res.status, 422, JSON.stringify(res.body));
  assert.equal(res.body.error.code, "payment_provider_refused");
  assert.equal(res.body.error.details.provider_code, "amount_too_small");
  assert.equal(stripe.sessionCreates().length - before, 1, "a refusal is not retried");
  assert.equal(breakerState("stripe"), "closed", "a refusal is not an outage");
  const orderId = res.body.error.details.order_id;
  assert.equal((await orderRow(sql, orderId)).status, "cancelled");
  assert.deepEqual(await stockOf(sql, pin.id), { onHand: 3, reserved: 0 });

  // The same key again: the same 422 for the same order, without asking Stripe again.
  const again = await call(body, { key });
  assert.equal(again.status, 422);
  assert.equal(again.body.error.code, "payment_provider_refused");
  assert.equal(again.body.error.details.order_id, orderId);
  assert.equal(again.body.error.details.provider_code, "amount_too_small");
  assert.equal(stripe.sessionCreates().length - before, 1);

  // Orders Stripe accepts go through as before: the breaker did not open.
  const mug = await makeProduct(sql);
  assert.equal((await call(stripeBody([{ product_id: mug.id, quantity: 1 }]))).status, 201);
});

test("a transient Stripe failure is retried with the same idempotency key and succeeds", async () => {
  stripe.failNext(1);
  const mug = await makeProduct(sql);
  const before = stripe.sessionCreates().length;
  const res = await call(stripeBody([{ product_id: mug.id, quantity: 1 }]));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(stripe.sessionCreates().length - before, 2);
});

test("502 when Stripe hangs past PROVIDER_TIMEOUT_MS: cancelled, stock back", async () => {
  Deno.env.set("PROVIDER_TIMEOUT_MS", "300");
  Deno.env.set("PROVIDER_RETRIES", "0");
  stripe.mode = "hang";
  const mug = await makeProduct(sql, { stock: 2 });
  const started = performance.now();
  const res = await call(stripeBody([{ product_id: mug.id, quantity: 2 }]));
  assert.equal(res.status, 502);
  assert.ok(performance.now() - started < 3000, "the timeout did not cut the call short");
  assert.equal((await orderRow(sql, res.body.error.details.order_id)).status, "cancelled");
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 2, reserved: 0 });
});

test("Stripe down: the breaker opens, later orders fail fast without calling Stripe, then it recovers", async () => {
  Deno.env.set("PROVIDER_BREAKER_THRESHOLD", "2");
  Deno.env.set("PROVIDER_BREAKER_HALF_OPEN_MS", "300");
  Deno.env.set("PROVIDER_RETRIES", "0");
  stripe.mode = "error";
  const mug = await makeProduct(sql, { stock: 10 });
  const body = () => stripeBody([{ product_id: mug.id, quantity: 1 }]);
  const before = stripe.sessionCreates().length;

  assert.equal((await call(body())).status, 502);
  assert.equal((await call(body())).status, 502);
  assert.equal(breakerState("stripe"), "open");
  stripe.mode = "up"; // Stripe is back, but the breaker has not let a call through yet
  const fast = await call(body());
  assert.equal(fast.status, 502);
  assert.equal(fast.body.error.code, "payment_provider_unavailable");
  assert.equal(stripe.sessionCreates().length - before, 2, "an open breaker must not call Stripe");
  assert.equal((await orderRow(sql, fast.body.error.details.order_id)).status, "cancelled");
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 10, reserved: 0 });

  // After PROVIDER_BREAKER_HALF_OPEN_MS one trial call goes through; it succeeds and closes the breaker.
  await new Promise((r) => setTimeout(r, 350));
  const recovered = await call(body());
  assert.equal(recovered.status, 201);
  assert.equal(breakerState("stripe"), "closed");
});

// ---------------------------------------------------------------------------------------------------------
// SumUp (in store)
// ---------------------------------------------------------------------------------------------------------

test("sumup order without SumUp configured: awaiting_instore_payment, stock reserved, no checkout", async () => {
  const mug = await makeProduct(sql, { stock: 3 });
  const res = await call({ items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" });
  assert.equal(res.status, 201);
  assert.equal(res.body.order.status, "awaiting_instore_payment");
  assert.equal(res.body.checkout_url, undefined);
  assert.equal(res.body.sumup_checkout_id, undefined);
  assert.deepEqual(await stockOf(sql, mug.id), { onHand: 3, reserved: 1 });
});

test("sumup order with SumUp configured: a checkout for the order, amount in major units", async () => {
  const sumup = startFakeSumUp();
  try {
    Deno.env.set("SUMUP_API_KEY", sumup.apiKey);
    Deno.env.set("SUMUP_MERCHANT_CODE", "MTEST0001");
    Deno.env.set("SUMUP_API_BASE", sumup.url);
    const mug = await makeProduct(sql, { price: 1000, taxBp: 1900 });
    const key = crypto.randomUUID();
    const body = { items: [{ product_id: mug.id, quantity: 2 }], payment_method: "sumup" };
    const res = await call(body, { key });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const order = res.body.order;
    assert.equal(order.total, 2380);
    const checkout = sumup.checkouts.get(res.body.sumup_checkout_id)!;
    assert.ok(checkout, "the returned id is the SumUp checkout");
    assert.equal(checkout.checkout_reference, order.id);
    assert.equal(checkout.amount, 23.8);
    assert.equal(checkout.currency, "EUR");
    assert.equal(checkout.merchant_code, "MTEST0001");
    assert.equal((await orderRow(sql, order.id)).provider_checkout_id, checkout.id);
    // A replay returns the same checkout without creating another.
    const again = await call(body, { key });
    assert.equal(again.body.sumup_checkout_id, checkout.id);
    assert.equal(sumup.requests.filter((r) => r.method === "POST").length, 1);
  } finally {
    await sumup.close();
  }
});

test("sumup order while SumUp is down: still 201 (staff can confirm by hand), no checkout id", async () => {
  const sumup = startFakeSumUp();
  try {
    sumup.mode = "error";
    Deno.env.set("SUMUP_API_KEY", sumup.apiKey);
    Deno.env.set("SUMUP_MERCHANT_CODE", "MTEST0001");
    Deno.env.set("SUMUP_API_BASE", sumup.url);
    const mug = await makeProduct(sql);
    const res = await call({ items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" });
    assert.equal(res.status, 201);
    assert.equal(res.body.order.status, "awaiting_instore_payment");
    assert.equal(res.body.sumup_checkout_id, undefined);
  } finally {
    await sumup.close();
  }
});

// ---------------------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------------------

test("CORS: preflight from an allowed origin is answered early with the allow headers", async () => {
  const res = await handler(
    new Request("http://functions.local/functions/v1/orders-create", {
      method: "OPTIONS",
      headers: { origin: SHOP, "access-control-request-method": "POST" },
    }),
  );
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-origin"), SHOP);
  assert.match(res.headers.get("access-control-allow-headers") ?? "", /idempotency-key/);
  assert.match(res.headers.get("access-control-allow-methods") ?? "", /POST/);
  assert.ok(res.headers.get("x-correlation-id"));
});

test("CORS: a disallowed origin gets 403 on preflight and no allow headers on a request", async () => {
  const pre = await handler(
    new Request("http://functions.local/functions/v1/orders-create", {
      method: "OPTIONS",
      headers: { origin: "https://evil.example.test", "access-control-request-method": "POST" },
    }),
  );
  assert.equal(pre.status, 403);
  assert.equal(pre.headers.get("access-control-allow-origin"), null);
  await pre.body?.cancel();

  const mug = await makeProduct(sql);
  const res = await call({ items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" }, {
    origin: "https://evil.example.test",
  });
  assert.equal(res.headers.get("access-control-allow-origin"), null);
  const ok = await call({ items: [{ product_id: mug.id, quantity: 1 }], payment_method: "sumup" }, { origin: SHOP });
  assert.equal(ok.headers.get("access-control-allow-origin"), SHOP);
});

// ---------------------------------------------------------------------------------------------------------
// Through the gateway, as a browser app would call it
// ---------------------------------------------------------------------------------------------------------

test("gateway: supabase-js invoke with the anon key creates a Stripe order; no JWT is refused", async () => {
  const mug = await makeProduct(sql, { stock: 2 });
  const gw = await startGateway();
  try {
    const supabase = createClient(gw.url, ANON_KEY, {
      auth: { persistSession: false },
      global: { fetch: contractFetch },
    });
    const { data, error } = await supabase.functions.invoke("orders-create", {
      body: stripeBody([{ product_id: mug.id, quantity: 1 }]),
      headers: { "Idempotency-Key": crypto.randomUUID() },
    });
    assert.equal(error, null);
    assert.equal(data.order.status, "awaiting_payment");
    assert.match(data.checkout_url, /cs_test_/);
    assert.deepEqual(await stockOf(sql, mug.id), { onHand: 2, reserved: 1 });

    const bare = await contractFetch(`${gw.url}/functions/v1/orders-create`, { method: "POST", body: "{}" });
    assert.equal(bare.status, 401);
    await bare.body?.cancel();
  } finally {
    await gw.shutdown();
  }
});

test("teardown", async () => {
  await stripe.close();
  await sql.end();
  await closeDb();
});
