/**
 * Typed calls to the engine's entry points (docs/engine-contract.md). Some take an open transaction from db.ts's
 * withTx (reads that RLS decides, several calls in one transaction); the ones named `...Call` build the call as an
 * expression for db.ts's callOnce (one statement, one round trip: a webhook's event record and its effect).
 * No rule lives here: these only name the SQL functions and their arguments.
 */
import type { Fragment, Sql, Tx } from "./db.ts";
import { single } from "./db.ts";
import type { Order } from "./order-schema.ts";

/** The engine's order JSON (typed from the shared schema). */
export type { Order };

/** Arguments of {@link createOrder}. */
export interface CreateOrderArgs {
  items: { product_id: string; quantity: number }[];
  paymentMethod: "sumup" | "stripe";
  idempotencyKey: string;
  requestHash: string;
  customer?: { email?: string; name?: string };
  customerId?: string | null;
}

/** What create_order answers: the order, and whether it is the first answer to a replayed idempotency key. */
export interface CreatedOrder {
  order: Order;
  replayed: boolean;
}

/** Reserves stock and creates the order, or returns the first order for a replayed key: {@link CreatedOrder}. */
export function createOrderCall(sql: Sql, args: CreateOrderArgs): Fragment {
  return sql`public.create_order(
    ${sql.json(args.items)}::jsonb, ${args.paymentMethod}, ${args.idempotencyKey}, ${args.requestHash},
    ${sql.json(args.customer ?? {})}::jsonb, ${args.customerId ?? null}::uuid)`;
}

/** Stores the provider's checkout id (and URL) on the order. */
export async function attachCheckout(
  tx: Tx,
  orderId: string,
  checkout: { provider: "stripe" | "sumup"; id: string; url?: string | null },
): Promise<Order> {
  return single(
    await tx`select public.attach_checkout(${orderId}::uuid, ${checkout.provider}, ${checkout.id},
      ${checkout.url ?? null}) as result`,
  );
}

/** What mark_paid answers (through {@link markPaidForEventCall} and {@link confirmInstorePaymentCall}). */
export interface MarkPaidResult {
  result: "paid" | "already_paid" | "paid_out_of_stock" | "amount_mismatch";
  order: Order;
}

/** A provider's payment event: its id and type, and the payment it reports. */
export interface PaymentEvent {
  provider: "stripe" | "sumup";
  id: string;
  type: string;
  orderId: string;
  ref: string;
  amount: number;
  currency: string;
}

/**
 * Records the event and, the first time it is seen, marks its order paid, in one statement (mark_paid_for_event):
 * `{ duplicate: true }` for a redelivery, else {@link MarkPaidResult}. For callOnce, so the stock rows the payment
 * locks are free at the statement's own commit.
 */
export function markPaidForEventCall(sql: Sql, event: PaymentEvent): Fragment {
  return sql`public.mark_paid_for_event(${event.provider}, ${event.id}, ${event.type}, ${event.orderId}::uuid,
    ${event.ref}, ${event.amount}::bigint, ${event.currency})`;
}

/** What an `..._for_event` call answers: `{ duplicate: true }` for an event already seen, else the effect's answer. */
export type ForEvent<T> = { duplicate: true } | T;

/** What {@link markPaidForEventCall} answers. */
export type MarkPaidForEventResult = ForEvent<MarkPaidResult>;

/**
 * Staff confirm an in-store SumUp payment with the receipt's transaction code, in one statement
 * (confirm_instore_payment): the order paid with its own total, the code claimed; {@link MarkPaidResult}, or SH411
 * (`transaction_code_reused`) when the code already paid another order. For callOnce.
 */
export function confirmInstorePaymentCall(sql: Sql, orderId: string, transactionCode: string): Fragment {
  return sql`public.confirm_instore_payment(${orderId}::uuid, ${transactionCode})`;
}

/** What cancel_order answers. */
export interface CancelResult {
  result: "cancelled" | "already_cancelled" | "kept_checkout";
  order: Order;
}

/**
 * Cancels an unpaid order and releases its stock; SH410 from a paid one. `keepIfCheckout`: leave an order that
 * has a provider checkout attached as it is (result `kept_checkout`).
 */
export async function cancelOrder(
  tx: Tx,
  orderId: string,
  reason: string,
  opts: { keepIfCheckout?: boolean } = {},
): Promise<CancelResult> {
  return single(await tx`select ${cancelOrderCall(tx, orderId, reason, opts)} as result`);
}

/** The cancel_order call, for {@link cancelOrder} or as a statement of its own (callOnce: the stock rows it releases
 * are free at its own commit). */
export function cancelOrderCall(
  sql: Sql | Tx,
  orderId: string,
  reason: string,
  opts: { keepIfCheckout?: boolean } = {},
): Fragment {
  return sql`public.cancel_order(${orderId}::uuid, ${reason}, now(), ${opts.keepIfCheckout ?? false})`;
}

/**
 * Records the event and, the first time it is seen, cancels its order, in one statement (cancel_order_for_event):
 * `ForEvent<CancelResult>`. For callOnce, so the stock rows the cancel releases are free at its own commit.
 */
export function cancelOrderForEventCall(
  sql: Sql,
  event: { provider: "stripe" | "sumup"; id: string; type: string; orderId: string; reason: string },
): Fragment {
  return sql`public.cancel_order_for_event(${event.provider}, ${event.id}, ${event.type}, ${event.orderId}::uuid,
    ${event.reason})`;
}

/** Gives a paid_out_of_stock order its goods once stock is back; SH409 while short, SH410 from other states. */
export async function allocatePaidOrder(
  tx: Tx,
  orderId: string,
  note: string | null,
): Promise<{ result: "allocated" | "already_allocated"; order: Order }> {
  return single(await tx`select public.allocate_paid_order(${orderId}::uuid, ${note}) as result`);
}

/** The record_payment_event call, as a statement of its own (callOnce): true the first time the event is seen. */
export function recordPaymentEventCall(
  sql: Sql | Tx,
  event: { provider: "stripe" | "sumup"; id: string; type: string; orderId?: string | null },
): Fragment {
  return sql`public.record_payment_event(${event.provider}, ${event.id}, ${event.type}, ${
    event.orderId ?? null
  }::uuid)`;
}

/** What record_refund_total answers: whether the reported total raised the refunded amount, and the order. */
export interface RefundResult {
  result: "refund_recorded" | "already_recorded";
  order: Order;
}

/**
 * Records a provider's refund event and, the first time it is seen, the refunded total it reports (Stripe's
 * cumulative amount_refunded), in one statement (record_refund_total_for_event): `{ duplicate: true }` for a
 * redelivery, else {@link RefundResult}. Without an order id the engine finds the order paid with `ref`.
 */
export function recordRefundTotalForEventCall(
  sql: Sql,
  event: {
    provider: "stripe" | "sumup";
    id: string;
    type: string;
    orderId: string | null;
    ref: string;
    refundedTotal: number;
    currency: string;
  },
): Fragment {
  return sql`public.record_refund_total_for_event(${event.provider}, ${event.id}, ${event.type},
    ${event.orderId}::uuid, ${event.ref}, ${event.refundedTotal}::bigint, ${event.currency})`;
}

/** Why the order was cancelled (the reason cancel_order recorded), or null if it never was. service_role only. */
export async function cancelReason(tx: Tx, orderId: string): Promise<string | null> {
  const rows = await tx`select t.reason from admin.order_timeline t
                        where t.order_id = ${orderId}::uuid and t.kind = 'status' and t.to_status = 'cancelled'
                        order by t.at desc limit 1`;
  return (rows[0]?.reason as string | undefined) ?? null;
}

/** The order if the transaction's role/claims may see it (RLS), else null. */
export async function getOrder(tx: Tx, orderId: string): Promise<Order | null> {
  return single(await tx`select public.get_order(${orderId}::uuid) as result`);
}

/**
 * Counts a hit in each bucket, in the order given; the call yields 0 when all allow it, else the most seconds any
 * of them asks to wait (a bucket that refuses does not count the hit).
 */
export function rateLimitCall(
  sql: Sql,
  buckets: { name: string; limit: number }[],
  windowSeconds: number,
): Fragment {
  return buckets
    .map((b) => sql`public.rate_limit_hit(${b.name}, ${b.limit}::int, ${windowSeconds}::int)`)
    .reduce((a, b) => sql`greatest(${a}, ${b})`);
}

/** A page of the active catalogue (list_products). */
export interface ProductPage {
  items: {
    id: string;
    sku: string;
    name: string;
    unit_price: number;
    currency: string;
    tax_rate_bp: number;
    available: number;
  }[];
  next_cursor: string | null;
}

/** Active products after `cursor` (by sku), `limit` of them, with what is available now. */
export async function listProducts(tx: Tx, page: { cursor?: string | null; limit: number }): Promise<ProductPage> {
  return single(await tx`select public.list_products(${page.cursor ?? null}, ${page.limit}::int) as result`);
}
