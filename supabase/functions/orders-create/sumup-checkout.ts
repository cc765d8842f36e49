/**
 * The SumUp checkout of an in-store order: created with the order id as checkout_reference, so the card
 * payment on the terminal can be matched to the order by sumup-webhook. SumUp being down does not fail the
 * order: the stock is reserved and staff can still confirm the payment by hand (orders-instore).
 */
import type { Caller } from "../_shared/auth.ts";
import { withTx } from "../_shared/db.ts";
import { attachCheckout, type Order } from "../_shared/engine.ts";
import type { RequestContext } from "../_shared/http.ts";
import { describeError } from "../_shared/log.ts";
import { createCheckout } from "../_shared/sumup.ts";

/** The order with its SumUp checkout attached, or unchanged (logged) when SumUp could not be reached. */
export async function openSumupCheckout(order: Order, caller: Caller, ctx: RequestContext): Promise<Order> {
  let checkoutId: string;
  try {
    // createCheckout converts the total to SumUp's major units exactly and, on a replay whose first attempt
    // created the checkout but never stored it, finds it again by checkout_reference.
    const checkout = await createCheckout({
      orderId: order.id,
      amount: order.total,
      currency: order.currency,
      description: `Order ${order.id}`,
    });
    checkoutId = checkout.id;
  } catch (err) {
    ctx.log.warn("no SumUp checkout for the order; staff can confirm the payment by hand", {
      order_id: order.id,
      error: describeError(err),
    });
    return order;
  }
  return await withTx(
    { correlationId: ctx.correlationId, actor: caller.actor },
    (tx) => attachCheckout(tx, order.id, { provider: "sumup", id: checkoutId }),
  );
}
