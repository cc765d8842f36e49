/**
 * orders-get: request and response schemas, exported with descriptions for the generated OpenAPI document.
 * Whether the caller may see the order is not decided here but by row-level security in the database.
 */
import { z } from "zod";
import { orderOutput } from "../_shared/order-schema.ts";

/** `?id=<uuid>` on GET, or `{ "id": "<uuid>" }` as the POST body (supabase-js `functions.invoke` posts). */
export const orderGetInput = z.strictObject({
  // z.guid: any 8-4-4-4-12 hex id Postgres accepts, so a well-formed but unknown id is a 404, not a 400.
  id: z.guid("id must be an order id (UUID).").describe("The order's id, as orders-create returned it."),
}).describe("Which order to read.");

/** The input after validation. */
export type OrderGetInput = z.output<typeof orderGetInput>;

/** 200 answer of orders-get. */
export const orderGetResponse = z.object({
  order: orderOutput,
}).describe("The order, if the caller may see it (its customer, or staff); otherwise the answer is 404.");
