/**
 * products-list: query and response schemas, exported with descriptions for the generated OpenAPI document.
 */
import { z } from "zod";

/** Largest page a client may ask for. */
export const MAX_LIMIT = 100;
/** Page size when the client names none. */
export const DEFAULT_LIMIT = 50;

const LIMIT_MESSAGE = `limit must be a whole number from 1 to ${MAX_LIMIT}.`;

/** `?cursor=&limit=` (or the same fields as a POST body, for supabase-js `functions.invoke`). */
// Not strict: unknown query parameters (cache busters, tracking) are ignored rather than refused.
export const productsListQuery = z.object({
  cursor: z
    .string()
    .max(200)
    .optional()
    // An empty `?cursor=` means the first page, as a client building the URL from a null cursor sends it.
    .transform((c) => (c === "" ? undefined : c))
    .describe("The `next_cursor` of the previous page; omit for the first page."),
  limit: z
    // Query values are strings: `?limit=` (empty) means the default, anything else must be a whole number.
    .preprocess(
      (v) => (v === "" || v === undefined ? undefined : typeof v === "string" ? Number(v) : v),
      z
        .number({ error: LIMIT_MESSAGE })
        .int(LIMIT_MESSAGE)
        .min(1, LIMIT_MESSAGE)
        .max(MAX_LIMIT, LIMIT_MESSAGE)
        .default(DEFAULT_LIMIT),
    )
    .describe(`Products per page, 1 to ${MAX_LIMIT} (default ${DEFAULT_LIMIT}).`),
}).describe("Which page of the catalogue.");

/** The query after validation. */
export type ProductsListQuery = z.output<typeof productsListQuery>;

/** One product for sale. */
export const productOutput = z.object({
  id: z.uuid(),
  sku: z.string(),
  name: z.string(),
  unit_price: z.int().describe("Net unit price, minor units."),
  currency: z.string().length(3),
  tax_rate_bp: z.int().describe("Tax rate in basis points (1900 = 19 %)."),
  available: z.int().describe("Units that can be ordered now (stock on hand minus live reservations)."),
}).describe("A product for sale, with its price and what is available.");

/** 200 answer of products-list (also the body whose hash is the ETag). */
export const productsListResponse = z.object({
  items: z.array(productOutput).describe("Active products ordered by sku."),
  next_cursor: z.string().nullable().describe("Pass as `cursor` for the next page; null on the last page."),
}).describe("A page of the active catalogue.");
