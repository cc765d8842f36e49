/**
 * orders-create: request and response schemas. Exported with descriptions so the OpenAPI document can be
 * generated from them. Shapes and types only: limits (quantities, line count, lengths), prices, stock and
 * product existence are the engine's to check, so they are stated once, in SQL.
 */
import { z } from "zod";
import { allowedReturnOrigins } from "../_shared/env.ts";
import { orderOutput } from "../_shared/order-schema.ts";

/** The `Idempotency-Key` header: any printable ASCII token, as Stripe and the IETF draft allow. */
export const idempotencyKeyHeader = z
  .string({ error: "The Idempotency-Key header is required (a unique value per order attempt, e.g. a UUID)." })
  .min(1, "The Idempotency-Key header is required (a unique value per order attempt, e.g. a UUID).")
  .max(255, "The Idempotency-Key header may be at most 255 characters.")
  .regex(/^[\x21-\x7e]+$/, "The Idempotency-Key header must be printable ASCII without spaces.")
  .describe("Client-chosen key; retrying with the same key and body returns the same order.");

/** One line of the order. */
export const orderItemInput = z.strictObject({
  product_id: z.uuid().describe("A product id from products-list."),
  quantity: z.int().positive().describe("Units wanted, 1 to 1000 (the same product twice is summed)."),
}).describe("A product and how many units.");

/** Optional buyer details, passed on to the receipt and the payment page. */
export const customerInput = z.strictObject({
  email: z.email().optional().describe("Where the receipt goes."),
  name: z.string().trim().min(1).optional().describe("Buyer's name."),
}).describe("Buyer details (optional).");

const NOT_A_RETURN_URL = "must be an absolute http(s) URL.";

// Any absolute http(s) URL, localhost and IP addresses included (z.httpUrl() insists on a domain name and so
// refused http://localhost:3000, one of ALLOWED_RETURN_ORIGINS' defaults): the allow-list is the rule that matters.
// The refine keeps out what URL parsing would repair (`http:shop.example`), so Stripe gets the URL that was checked.
const returnUrl = z
  .url({
    protocol: /^https?$/,
    abort: true,
    error: (issue) => issue.code === "invalid_format" || issue.code === "invalid_type" ? NOT_A_RETURN_URL : undefined,
  })
  .refine((url) => /^https?:\/\//i.test(url), NOT_A_RETURN_URL)
  .max(2048)
  .describe("Where Stripe sends the buyer afterwards; its origin must be on ALLOWED_RETURN_ORIGINS.");

/** True when `url` points to an origin on ALLOWED_RETURN_ORIGINS (read at call time). */
export function isAllowedReturnUrl(url: string): boolean {
  const allowed = allowedReturnOrigins();
  return allowed.includes("*") || allowed.includes(new URL(url).origin);
}

/** POST body of orders-create. */
export const orderCreateBody = z
  .strictObject({
    items: z.array(orderItemInput).min(1).describe("The lines of the order (1 to 100)."),
    payment_method: z
      .enum(["sumup", "stripe"])
      .describe("sumup: pay by card in the shop; stripe: pay online through Stripe Checkout."),
    customer: customerInput.optional(),
    success_url: returnUrl.optional().describe("Stripe only (required there): return page after payment."),
    cancel_url: returnUrl.optional().describe("Stripe only (required there): return page when the buyer gives up."),
  })
  .superRefine((body, ctx) => {
    // Return URLs matter only for Stripe; checking their origin keeps the checkout from being an open redirect.
    if (body.payment_method !== "stripe") return;
    for (const field of ["success_url", "cancel_url"] as const) {
      const url = body[field];
      if (url === undefined) {
        ctx.addIssue({ code: "custom", path: [field], message: `${field} is required for payment_method "stripe".` });
      } else if (!isAllowedReturnUrl(url)) {
        ctx.addIssue({ code: "custom", path: [field], message: `${field} must point to an allowed return origin.` });
      }
    }
  })
  .describe("A new order: its lines, how it will be paid, and for Stripe where to return.");

/** The body after validation. */
export type OrderCreateBody = z.output<typeof orderCreateBody>;

/** 201 answer of orders-create. */
export const orderCreateResponse = z.object({
  order: orderOutput,
  reservation_expires_at: z.string().nullable().describe("Until when the stock is held for this order."),
  checkout_url: z.string().optional().describe("Stripe: the Checkout page to send the buyer to."),
  sumup_checkout_id: z.string().optional().describe("SumUp: the checkout to pay on the terminal, when configured."),
}).describe("The order created (or, for a replayed Idempotency-Key, the order created the first time).");
