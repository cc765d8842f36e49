/**
 * SumUp client for the doors: the official `@sumup/sdk` pointed at SUMUP_API_BASE (tests use a local fake),
 * every call run under the provider policies of resilience.ts (timeout, retry where safe, circuit breaker).
 *
 * Money: stockhold keeps integer minor units; SumUp's checkout `amount` is a decimal number in MAJOR units
 * (23.8 = EUR 23.80). The conversions below are exact and refuse anything that is not a whole number of minor
 * units, so a float artefact can never round an amount into a match.
 */
import SumUp, { APIError, type CheckoutSuccess, type Currency, SumUpError } from "@sumup/sdk";
import { sumupConfig } from "./env.ts";
import { AppError } from "./errors.ts";
import { createLogger } from "./log.ts";
import { callProvider, isPolicyRejection } from "./resilience.ts";

/** The states SumUp gives a checkout. */
export type SumUpCheckoutStatus = "PENDING" | "PAID" | "FAILED" | "EXPIRED";

/** A SumUp checkout as stockhold needs it, amount converted back to minor units. */
export interface SumUpCheckout {
  id: string;
  status: SumUpCheckoutStatus;
  /** The order id we gave as `checkout_reference` (null if SumUp has none). */
  checkoutReference: string | null;
  /** Integer minor units, or null when SumUp's amount is not a whole number of minor units of its currency. */
  amount: number | null;
  /** SumUp's amount as it sent it (major units), for logs and mismatch reports. */
  amountMajor: number | null;
  currency: string | null;
  merchantCode: string | null;
  /** The transaction code printed on the receipt (what staff type in), when paid. */
  transactionCode: string | null;
  /** SumUp's transaction id, when paid. */
  transactionId: string | null;
}

/** Arguments of {@link createCheckout}. */
export interface CreateCheckoutInput {
  /** Our order id; SumUp echoes it as `checkout_reference`, which is how a payment finds its order. */
  orderId: string;
  /** Integer minor units (the order's total as the database priced it). */
  amount: number;
  currency: string;
  description?: string;
  /** Where SumUp posts its `{ event_type, id }` notification; default SUMUP_WEBHOOK_URL (sumup-webhook's URL). */
  returnUrl?: string;
}

const PROVIDER = "sumup";
const log = createLogger({ component: "sumup" });
// SumUp checkout ids are UUIDs; the SDK puts the id into the URL path unescaped, so only plain ids may pass.
const CHECKOUT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** True when `id` has the shape of a SumUp checkout id (safe to put into an API path). */
export function isCheckoutId(id: string): boolean {
  return CHECKOUT_ID.test(id);
}

/** ISO 4217 exponent of a currency (EUR 2, CLP 0), from the runtime's ICU data. */
export function currencyExponent(currency: string): number {
  return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits ?? 2;
}

/** Integer minor units to SumUp's major-unit number, exactly (2380 EUR -> 23.8). */
export function toMajorUnits(minor: number, currency: string): number {
  if (!Number.isSafeInteger(minor) || minor < 0) throw new RangeError(`not an amount in minor units: ${minor}`);
  const exp = currencyExponent(currency);
  if (exp === 0) return minor;
  // Built from the decimal digits rather than divided, so the result is the double nearest the exact decimal.
  const digits = String(minor).padStart(exp + 1, "0");
  return Number(`${digits.slice(0, -exp)}.${digits.slice(-exp)}`);
}

/**
 * SumUp's major-unit number to integer minor units (23.8 EUR -> 2380); null when the number is not a whole
 * number of minor units (23.805 EUR), negative or not finite: such an amount cannot be one we asked for.
 */
export function toMinorUnits(major: number, currency: string): number | null {
  if (typeof major !== "number" || !Number.isFinite(major) || major < 0 || major >= 1e15) return null;
  const exp = currencyExponent(currency);
  const fixed = major.toFixed(exp);
  if (Number(fixed) !== major) return null;
  const minor = Number(fixed.replace(".", ""));
  return Number.isSafeInteger(minor) ? minor : null;
}

let cached: { key: string; client: SumUp } | null = null;

function client(): { sdk: SumUp; merchantCode: string; webhookUrl?: string } {
  const config = sumupConfig();
  if (!config) throw new AppError(503, "payment_provider_not_configured", "SumUp is not configured.");
  const key = `${config.apiBase}\n${config.apiKey}`;
  if (!cached || cached.key !== key) {
    // The SDK's own retries stay off: retries, timeouts and the breaker are resilience.ts's job, in one place.
    cached = { key, client: new SumUp({ apiKey: config.apiKey, host: config.apiBase, maxRetries: 0 }) };
  }
  return { sdk: cached.client, merchantCode: config.merchantCode, webhookUrl: config.webhookUrl };
}

/** Network failures, timeouts, 429 and 5xx: SumUp is (for now) unavailable; worth a retry, counted by the breaker. */
function isTransient(err: unknown): boolean {
  if (err instanceof APIError) return err.status === 429 || err.status >= 500;
  // fetch() rejects with a TypeError when the connection fails; the SDK raises a bare SumUpError on its timeout.
  return err instanceof TypeError || (err instanceof SumUpError && !(err instanceof APIError)) ||
    (err instanceof Error && err.name === "AbortError");
}

function unavailable(err: unknown, operation: string): AppError {
  const status = err instanceof APIError ? err.status : undefined;
  const errorCode = err instanceof APIError && typeof err.error === "object" && err.error
    ? (err.error as { error_code?: unknown }).error_code
    : undefined;
  // A 4xx other than 429 means SumUp refused our call (bad key, bad request): that is ours to fix, so louder.
  const level = status !== undefined && status < 500 && status !== 429 ? "error" : "warn";
  log[level]("SumUp call failed", {
    operation,
    status,
    error_code: errorCode,
    reason: isPolicyRejection(err) ? (err as Error).name : err instanceof Error ? err.name : String(err),
  });
  return new AppError(502, "payment_provider_unavailable", "The payment provider SumUp is unavailable; try again.");
}

function fromSdk(c: CheckoutSuccess): SumUpCheckout {
  const paidTx = c.transactions?.find((t) => t.status === "SUCCESSFUL") ?? c.transactions?.[0];
  const currency = c.currency ?? null;
  const amountMajor = typeof c.amount === "number" ? c.amount : null;
  return {
    id: c.id ?? "",
    status: (c.status ?? "PENDING") as SumUpCheckoutStatus,
    checkoutReference: c.checkout_reference ?? null,
    amount: amountMajor !== null && currency ? toMinorUnits(amountMajor, currency) : null,
    amountMajor,
    currency,
    merchantCode: c.merchant_code ?? null,
    transactionCode: c.transaction_code ?? paidTx?.transaction_code ?? null,
    transactionId: c.transaction_id ?? paidTx?.id ?? null,
  };
}

/**
 * Fetches a checkout by id (GET /v0.1/checkouts/{id}); null when SumUp does not know it (404).
 * Throws AppError 502 `payment_provider_unavailable` when SumUp cannot be reached, times out, or refuses us.
 */
export async function getCheckout(id: string): Promise<SumUpCheckout | null> {
  if (!isCheckoutId(id)) return null;
  const { sdk } = client();
  try {
    // A read: safe to repeat, so it gets the retrying policy.
    const checkout = await callProvider(PROVIDER, isTransient, (signal) => sdk.checkouts.get(id, { signal }), {
      idempotent: true,
    });
    return fromSdk(checkout);
  } catch (err) {
    if (err instanceof APIError && err.status === 404) return null;
    throw unavailable(err, "get_checkout");
  }
}

/**
 * Creates a checkout (POST /v0.1/checkouts) for an order, amount converted to major units exactly.
 * SumUp refuses a second checkout with the same `checkout_reference` (409); then the existing one is returned,
 * so retrying an order's creation never leaves it without its checkout.
 */
export async function createCheckout(input: CreateCheckoutInput): Promise<SumUpCheckout> {
  const { sdk, merchantCode, webhookUrl } = client();
  const returnUrl = input.returnUrl ?? webhookUrl;
  const body = {
    checkout_reference: input.orderId,
    amount: toMajorUnits(input.amount, input.currency),
    currency: input.currency as Currency,
    merchant_code: merchantCode,
    ...(input.description ? { description: input.description } : {}),
    ...(returnUrl ? { return_url: returnUrl } : {}),
  };
  try {
    // Not retried: a repeat after a lost answer would hit the 409 path below anyway, but only once, on purpose.
    const created = await callProvider(PROVIDER, isTransient, (signal) => sdk.checkouts.create(body, { signal }), {
      idempotent: false,
    });
    return fromSdk(created);
  } catch (err) {
    if (err instanceof APIError && err.status === 409) {
      const existing = await findCheckoutByReference(input.orderId);
      if (existing) return existing;
    }
    throw unavailable(err, "create_checkout");
  }
}

/** The checkout whose `checkout_reference` is `reference` (GET /v0.1/checkouts?checkout_reference=), or null. */
export async function findCheckoutByReference(reference: string): Promise<SumUpCheckout | null> {
  const { sdk } = client();
  try {
    const list = await callProvider(
      PROVIDER,
      isTransient,
      (signal) => sdk.checkouts.list({ checkout_reference: reference }, { signal }),
      { idempotent: true },
    );
    const found = list.find((c) => c.checkout_reference === reference);
    return found ? fromSdk(found) : null;
  } catch (err) {
    throw unavailable(err, "list_checkouts");
  }
}
