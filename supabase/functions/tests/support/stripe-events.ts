/** Stripe events for tests, shaped as Stripe's API sends them (to be signed with the SDK's test helper). */

/** A Stripe event around `object`, as Stripe's API (version of the SDK) would send it. */
export function stripeEvent(type: string, object: Record<string, unknown>, id = `evt_test_${crypto.randomUUID()}`) {
  return {
    id,
    object: "event",
    api_version: "2025-01-27.acacia",
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
    data: { object },
  };
}
