/**
 * orders-instore: request and response schemas, exported with descriptions for the generated OpenAPI document.
 * Staff act on orders by hand: confirm a card payment seen on the SumUp terminal, cancel, or give an order paid
 * while its stock was gone its goods once stock is back.
 */
import { z } from "zod";
import { orderOutput } from "../_shared/order-schema.ts";

// z.guid: any id Postgres accepts; an unknown one is then the engine's 404, not a 400.
const orderId = z.guid("order_id must be an order id (UUID).").describe("The order's id.");

/** Confirm that the order was paid on the SumUp terminal. */
export const confirmInput = z.strictObject({
  action: z.literal("confirm"),
  order_id: orderId,
  transaction_code: z
    .string({ error: "transaction_code is required: the code on the SumUp receipt." })
    .trim()
    .min(1, "transaction_code is required: the code on the SumUp receipt.")
    .max(64)
    .regex(/^[A-Za-z0-9_-]+$/, "transaction_code may hold letters, digits, '-' and '_' only.")
    // SumUp prints its codes in capitals; one spelling per code, so a code typed in lower case is still the same
    // code when the door checks that it pays one order only.
    .toUpperCase()
    .describe(
      "The SumUp transaction code printed on the receipt (case does not matter; stored in capitals) as the " +
        "order's payment reference. A code pays one order: one that already paid another order is refused (409).",
    ),
}).describe("Mark the order paid: staff saw the card payment of the order's total succeed on the terminal.");

/** Cancel the order and release its reserved stock. */
export const cancelInput = z.strictObject({
  action: z.literal("cancel"),
  order_id: orderId,
  reason: z.string().trim().min(1).max(500).optional().describe("Why, for the order's history."),
}).describe("Cancel an unpaid order; its reserved stock goes back on sale.");

/** Give a paid_out_of_stock order its goods now that stock is back. */
export const allocateInput = z.strictObject({
  action: z.literal("allocate"),
  order_id: orderId,
  note: z.string().trim().min(1).max(500).optional().describe("What happened (e.g. the delivery), for the history."),
}).describe(
  "An order paid after its stock was gone (`paid_out_of_stock`): once restocked, deduct its goods now and make it " +
    "`paid`. 409 `insufficient_stock` (naming the short lines) while stock is still short.",
);

/** POST body of orders-instore. */
export const instoreInput = z.discriminatedUnion("action", [confirmInput, cancelInput, allocateInput], {
  error: 'action must be "confirm", "cancel" or "allocate".',
}).describe("A staff action on an order.");

/** The body after validation. */
export type InstoreInput = z.output<typeof instoreInput>;

/** 200 answer of orders-instore. */
export const instoreResponse = z.object({
  result: z
    .enum([
      "paid",
      "already_paid",
      "paid_out_of_stock",
      "amount_mismatch",
      "cancelled",
      "already_cancelled",
      "allocated",
      "already_allocated",
    ])
    .describe(
      "What happened: paid / cancelled / allocated now, already so before (nothing changed), or " +
        "paid_out_of_stock (the reservation had lapsed and the stock is gone: refund it, or restock and allocate).",
    ),
  order: orderOutput,
}).describe("The outcome and the order after it.");
