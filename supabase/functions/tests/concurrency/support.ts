/**
 * Shared by the concurrency, fault and end-to-end suites: the invariant checker as an assertion, a gateway
 * running the real functions with the environment a test needs, signed Stripe events, and small helpers for
 * running many things at once.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import Stripe from "stripe";
import { checkInvariants, type CheckOptions, formatProblems } from "../../../../scripts/check.ts";
import { type Gateway, startGateway } from "../../../../scripts/functions-gateway.ts";
import { closeDb } from "../../_shared/db.ts";
import { resetProviderPolicies } from "../../_shared/resilience.ts";
import { withEnv } from "../support/shop.ts";

export { stripeEvent } from "../support/stripe-events.ts";

export const STRIPE_WEBHOOK_SECRET = "whsec_stockhold_reliability_tests";

/** Fails with the checker's readable report unless every invariant holds. */
export async function assertInvariants(sql: postgres.Sql, options: CheckOptions = {}): Promise<void> {
  const problems = await checkInvariants(sql, options);
  assert.equal(problems.length, 0, `broken invariants:\n${formatProblems(problems)}`);
}

/** A direct connection pool of `max` connections (each concurrent query gets its own backend). */
export function pool(max: number, url = Deno.env.get("SUPABASE_DB_URL")): postgres.Sql {
  if (!url) throw new Error("SUPABASE_DB_URL must point at a database with the migrations applied");
  return postgres(url, { max, prepare: false, onnotice: () => {}, idle_timeout: 5 });
}

/**
 * Runs `fn` with a gateway serving the real functions and `env` applied (restored afterwards); closes the
 * functions' database pool and resets the provider breakers on the way out.
 */
export async function withGateway<T>(
  env: Record<string, string | undefined>,
  fn: (gw: Gateway) => Promise<T>,
): Promise<T> {
  return await withEnv({ LOG_LEVEL: "silent", ...env }, async () => {
    resetProviderPolicies();
    const gw = await startGateway();
    try {
      return await fn(gw);
    } finally {
      await gw.shutdown();
      await closeDb();
      resetProviderPolicies();
    }
  });
}

/** A completed, paid Checkout Session for an order (what Stripe sends in checkout.session.completed). */
export function paidSession(order: { id: string; total: number; currency: string }, sessionId?: string) {
  const id = sessionId ?? `cs_test_${crypto.randomUUID().replaceAll("-", "")}`;
  return {
    id,
    object: "checkout.session",
    mode: "payment",
    status: "complete",
    payment_status: "paid",
    amount_subtotal: order.total,
    amount_total: order.total,
    currency: order.currency.toLowerCase(),
    client_reference_id: order.id,
    metadata: { order_id: order.id },
    payment_intent: `pi_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`,
    livemode: false,
  };
}

/** The raw body and Stripe-Signature header of an event, signed with the SDK's test helper. */
export async function signStripe(
  event: unknown,
  secret = STRIPE_WEBHOOK_SECRET,
): Promise<{ body: string; signature: string }> {
  const body = JSON.stringify(event);
  // The async variant: in Deno the SDK signs with SubtleCrypto, which has no synchronous form.
  const signature = await Stripe.webhooks.generateTestHeaderStringAsync({ payload: body, secret });
  return { body, signature };
}

/** POSTs a signed event to stripe-webhook through the gateway (no JWT: verify_jwt = false, as Stripe calls it). */
export async function deliverStripe(gatewayUrl: string, signed: { body: string; signature: string }) {
  const res = await fetch(`${gatewayUrl}/functions/v1/stripe-webhook`, {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": signed.signature },
    body: signed.body,
  });
  return { status: res.status, body: await res.json() };
}

/** Runs every task at once after a common start signal, so they really race; results in input order. */
export async function race<T>(tasks: (() => Promise<T>)[]): Promise<PromiseSettledResult<T>[]> {
  const { promise: go, resolve } = Promise.withResolvers<void>();
  const running = tasks.map(async (task) => {
    await go;
    return await task();
  });
  resolve();
  return await Promise.allSettled(running);
}

/** Postgres error code of a rejected call, if any. */
export function pgCode(reason: unknown): string | undefined {
  return (reason as { code?: string } | null)?.code;
}
