/**
 * stripe-webhook: schemas for the OpenAPI document. The request body is Stripe's event, verified by signature and
 * typed by the Stripe SDK (Stripe.Event), so it is not re-validated here; only the header and the answer are ours.
 */
import { z } from "zod";

/** The `Stripe-Signature` header Stripe sends with every delivery. */
export const stripeSignatureHeader = z
  .string()
  .min(1)
  .describe("t=<unix time>,v1=<HMAC-SHA256 of `t.body` with the endpoint secret>; older than 300 s is refused.");

/** 200 answer: the event was recorded (or had been), and what it did. */
export const stripeWebhookResponse = z.object({
  received: z.literal(true),
  duplicate: z.boolean().optional().describe("The event id was seen before; nothing was done again."),
  result: z
    .string()
    .optional()
    .describe("The engine's outcome: paid, already_paid, paid_out_of_stock, amount_mismatch, cancelled, ..."),
  status: z.string().optional().describe("The order's status afterwards."),
  ignored: z
    .enum([
      "payment_pending",
      "not_our_session",
      "unhandled_type",
      "order_not_found",
      "invalid_transition",
      "invalid_request",
      "refund_already_recorded",
    ])
    .optional()
    .describe("Why the event changed nothing (it is still recorded, so Stripe's retries change nothing either)."),
  order_id: z.uuid().optional(),
  refunded_amount: z.int().optional().describe("charge.refunded: the order's refunded total, minor units."),
}).describe("Acknowledgement; Stripe stops redelivering on any 2xx.");

/** The answer, typed. */
export type StripeWebhookResponse = z.output<typeof stripeWebhookResponse>;
