/**
 * sumup-webhook: the notification SumUp posts to a checkout's `return_url`, and this function's answer.
 * Exported with descriptions for the generated OpenAPI document.
 *
 * SumUp's checkout webhook is `{ "event_type": "CHECKOUT_STATUS_CHANGED", "id": "<checkout id>" }`; its newer
 * event format is `{ "id": "<event id>", "event_type": "checkout.status.updated", "payload": { "checkout_id", ... } }`.
 * Neither is signed, so nothing in it is believed except which checkout to look up.
 */
import { z } from "zod";

/** Event types that name a checkout whose status changed. */
export const CHECKOUT_EVENT_TYPES = ["CHECKOUT_STATUS_CHANGED", "checkout.status.updated"] as const;

/** The notification body. Loose: SumUp may add fields at any time, and they are ignored. */
export const sumupNotification = z.looseObject({
  event_type: z.string().min(1).max(200).describe("CHECKOUT_STATUS_CHANGED (others are acknowledged and ignored)."),
  id: z.string().min(1).max(200).describe("The checkout's id (or, in SumUp's newer format, the event's id)."),
  payload: z
    .looseObject({
      checkout_id: z.string().min(1).max(200).optional().describe("The checkout's id (newer format)."),
    })
    .optional()
    .describe("Newer format only; its status and reference are not trusted either."),
}).describe("SumUp's unsigned notification that a checkout changed.");

/** The notification after validation. */
export type SumUpNotification = z.output<typeof sumupNotification>;

/** 200 answer: the notification was taken; `outcome` says what it led to (for logs and tests, SumUp ignores it). */
export const sumupWebhookResponse = z.object({
  received: z.literal(true),
  outcome: z
    .enum([
      "ignored_event",
      "unknown_checkout",
      "not_paid",
      "foreign_merchant",
      "unknown_reference",
      "amount_mismatch",
      "duplicate",
      "paid",
      "already_paid",
      "paid_out_of_stock",
      "refused",
    ])
    .describe(
      "paid / already_paid / paid_out_of_stock / amount_mismatch: the engine's verdict on the verified checkout; " +
        "duplicate: this payment was processed before; the rest: nothing was changed.",
    ),
}).describe("Acknowledgement. Any 2xx tells SumUp to stop retrying; 502 asks it to retry later.");

/** The outcomes, typed. */
export type SumUpWebhookOutcome = z.output<typeof sumupWebhookResponse>["outcome"];
