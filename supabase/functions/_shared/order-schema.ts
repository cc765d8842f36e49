/**
 * The order JSON every engine entry point returns (docs/engine-contract.md, "Order JSON"), as zod schemas with
 * descriptions for the OpenAPI document. Shared so that the functions answering with an order describe it once.
 */
import { z } from "zod";

/** An order line as the engine priced it (integer minor units). */
export const orderItemOutput = z.object({
  product_id: z.uuid(),
  sku: z.string(),
  name: z.string(),
  quantity: z.int(),
  unit_price: z.int().describe("Net unit price, minor units."),
  tax_rate_bp: z.int().describe("Tax rate in basis points (1900 = 19 %)."),
  line_subtotal: z.int(),
  line_tax: z.int(),
  line_total: z.int(),
}).describe("An order line, priced by the database.");

/** Order statuses (engine contract). */
export const orderStatus = z.enum([
  "awaiting_instore_payment",
  "awaiting_payment",
  "paid",
  "paid_out_of_stock",
  "fulfilled",
  "cancelled",
  "expired",
]).describe("Where the order stands; paid_out_of_stock is a late payment a person must resolve.");

/** The order as the engine returns it. */
export const orderOutput = z.object({
  id: z.uuid(),
  status: orderStatus,
  payment_method: z.enum(["sumup", "stripe"]),
  currency: z.string().length(3).describe("ISO 4217 code of every amount in the order."),
  subtotal: z.int().describe("Net total, minor units."),
  tax: z.int().describe("Tax total, minor units."),
  total: z.int().describe("What the buyer pays, minor units."),
  refunded_amount: z.int().describe("Refunded so far, minor units."),
  customer_id: z.uuid().nullable(),
  customer_email: z.string().nullable(),
  customer_name: z.string().nullable(),
  provider_checkout_id: z.string().nullable().describe("The Stripe session or SumUp checkout of the order."),
  checkout_url: z.string().nullable(),
  provider_payment_ref: z.string().nullable().describe("The provider's payment reference once paid."),
  created_at: z.string(),
  paid_at: z.string().nullable(),
  cancelled_at: z.string().nullable().optional(),
  expired_at: z.string().nullable().optional(),
  fulfilled_at: z.string().nullable().optional(),
  reservation_expires_at: z.string().nullable(),
  items: z.array(orderItemOutput),
}).describe("An order.");

/** Engine order JSON, typed. */
export type Order = z.output<typeof orderOutput>;
