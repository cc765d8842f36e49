/**
 * The Stripe SDK (npm `stripe`) configured for edge runtimes: fetch as its HTTP client, SubtleCrypto for
 * webhook signatures, and STRIPE_API_BASE parsed into the SDK's host/port/protocol so tests and staging can
 * point it at another server. Retries are ours (resilience.ts), so the SDK's own are off.
 */
import Stripe from "stripe";
import { providerPolicyConfig, stripeConfig, stripeWebhookSecret } from "./env.ts";
import { callProvider, type ProviderCallOptions } from "./resilience.ts";

export { Stripe };

/** Stripe's default signature tolerance: events signed longer ago than this are refused (replay protection). */
export const WEBHOOK_TOLERANCE_SECONDS = 300;

let cached: { key: string; client: Stripe } | null = null;

/** The SDK client for the current configuration (rebuilt when the key, base or timeout changes). */
export function stripeClient(): Stripe {
  const { secretKey, apiBase } = stripeConfig();
  const { timeoutMs } = providerPolicyConfig();
  const cacheKey = `${secretKey}|${apiBase}|${timeoutMs}`;
  if (cached?.key === cacheKey) return cached.client;
  const base = new URL(apiBase);
  const protocol = base.protocol === "http:" ? "http" : "https";
  const client = new Stripe(secretKey, {
    host: base.hostname,
    port: base.port || (protocol === "http" ? 80 : 443),
    protocol,
    httpClient: Stripe.createFetchHttpClient(),
    // One attempt per call here; resilience.ts decides about retries, with backoff and a breaker.
    maxNetworkRetries: 0,
    // The SDK's own timeout aborts the fetch, so a timed-out attempt leaves no request running behind it.
    timeout: timeoutMs,
    appInfo: { name: "stockhold" },
  });
  cached = { key: cacheKey, client };
  return client;
}

/** True for Stripe errors that mean "Stripe is unavailable": network, timeouts, 5xx, rate limiting, lock conflicts. */
export function isStripeTransient(err: unknown): boolean {
  if (!(err instanceof Stripe.errors.StripeError)) return false;
  if (err instanceof Stripe.errors.StripeConnectionError || err instanceof Stripe.errors.StripeAPIError) return true;
  if (err instanceof Stripe.errors.StripeRateLimitError) return true;
  const status = err.statusCode ?? 0;
  // 409 lock_timeout: a concurrent request with the same idempotency key is still running.
  return status >= 500 || status === 429 || (status === 409 && err.code === "lock_timeout");
}

/**
 * Stripe's `code` when it refused the request itself (400-class invalid_request_error, e.g. `amount_too_small`):
 * Stripe is up, and asking again will not change its answer. Null for anything else.
 */
export function stripeRefusalCode(err: unknown): string | null {
  if (!(err instanceof Stripe.errors.StripeInvalidRequestError)) return null;
  return err.code ?? "invalid_request";
}

/** Runs a Stripe call under the "stripe" timeout/retry/breaker policies. */
export function callStripe<T>(fn: (stripe: Stripe) => Promise<T>, options: ProviderCallOptions): Promise<T> {
  return callProvider("stripe", isStripeTransient, () => fn(stripeClient()), options);
}

const cryptoProvider = Stripe.createSubtleCryptoProvider();

/**
 * Verifies `Stripe-Signature` over the raw body (exactly as received: any re-serialisation breaks the HMAC)
 * and returns the event. Throws Stripe's StripeSignatureVerificationError on a bad, missing or old signature.
 */
export function verifyStripeEvent(rawBody: string, signature: string): Promise<Stripe.Event> {
  // Verification is local (HMAC with the endpoint secret), so it needs no API key and no client.
  return Stripe.webhooks.constructEventAsync(
    rawBody,
    signature,
    stripeWebhookSecret(),
    WEBHOOK_TOLERANCE_SECONDS,
    cryptoProvider,
  );
}
