/**
 * The invariant checker itself: silent on a healthy shop, and loud on each kind of damage it exists to find.
 * Damage is done inside a transaction that is rolled back, so the shared test database is never left broken.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { checkInvariants, type Problem } from "../../../../scripts/check.ts";
import { dbTest, makeOrder, makeProduct, stockOf } from "../support/shop.ts";
import { assertInvariants } from "./support.ts";

class Rollback extends Error {}

/** Runs `damage` in a transaction, returns what the checker (scoped to `productIds`) says there, rolls back. */
async function problemsAfter(
  sql: postgres.Sql,
  productIds: string[],
  damage: (tx: postgres.TransactionSql) => Promise<unknown>,
): Promise<Problem[]> {
  let found: Problem[] = [];
  try {
    await sql.begin(async (tx) => {
      await damage(tx);
      found = await checkInvariants(tx, { productIds });
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) throw err;
  }
  return found;
}

function invariants(problems: Problem[]): string[] {
  return [...new Set(problems.map((p) => p.invariant))].sort();
}

const test = dbTest;

/** A small shop: one awaiting order, one paid, one cancelled, over two products. */
async function shop(sql: postgres.Sql) {
  const a = await makeProduct(sql, { stock: 10 });
  const b = await makeProduct(sql, { stock: 10 });
  const awaiting = await makeOrder(sql, [{ product_id: a.id, quantity: 2 }, { product_id: b.id, quantity: 1 }]);
  const paid = await makeOrder(sql, [{ product_id: a.id, quantity: 3 }], { method: "stripe" });
  await sql`select public.mark_paid(${paid.id}::uuid, 'stripe', 'pi_check', ${paid.total}::bigint, 'eur')`;
  const cancelled = await makeOrder(sql, [{ product_id: b.id, quantity: 4 }]);
  await sql`select public.cancel_order(${cancelled.id}::uuid, 'check test')`;
  return { a, b, ids: [a.id, b.id], awaiting, paid, cancelled };
}

test("checker: a healthy shop has no problems, scoped or whole database", async (sql) => {
  const { ids } = await shop(sql);
  assert.deepEqual(await checkInvariants(sql, { productIds: ids }), []);
  await assertInvariants(sql);
});

test("checker: an order paid out of stock, then given its stock by allocate_paid_order, breaks no invariant", async (sql) => {
  const p = await makeProduct(sql, { stock: 1 });
  const late = await makeOrder(sql, [{ product_id: p.id, quantity: 1 }]);
  await sql`select public.cancel_order(${late.id}::uuid, 'check test')`;
  const other = await makeOrder(sql, [{ product_id: p.id, quantity: 1 }]);
  await sql`select public.mark_paid(${other.id}::uuid, 'sumup', 'tx-other', ${other.total}::bigint, 'EUR')`;
  const [{ result }] = await sql`
    select public.mark_paid(${late.id}::uuid, 'sumup', 'tx-late', ${late.total}::bigint, 'EUR') ->> 'result' as result`;
  assert.equal(result, "paid_out_of_stock");
  assert.deepEqual(await checkInvariants(sql, { productIds: [p.id] }), []);

  await sql`select public.restock(${p.id}::uuid, 'shop', 1, 'delivery')`;
  const [{ allocated }] = await sql`
    select public.allocate_paid_order(${late.id}::uuid, 'delivery') ->> 'result' as allocated`;
  assert.equal(allocated, "allocated");
  assert.deepEqual(await checkInvariants(sql, { productIds: [p.id] }), []);
  assert.deepEqual(await stockOf(sql, p.id), { onHand: 0, reserved: 0 });
});

test("checker: cached reserved without a reservation is reported against reservations and the ledger", async (sql) => {
  const { a, ids } = await shop(sql);
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`update private.stock_levels set reserved = reserved + 1 where product_id = ${a.id}::uuid and location_id = 1`,
  );
  assert.deepEqual(invariants(problems), ["reserved_equals_active_reservations", "stock_equals_ledger"]);
  assert.match(problems[0].message, new RegExp(a.sku));
});

test("checker: a stock row whose next_expiry lies after an active reservation's expiry is reported", async (sql) => {
  const { a, ids } = await shop(sql);
  // The awaiting order holds 2 of a at the shop: a bound past its expiry would let sales skip exact expiry.
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) => tx`update private.stock_levels set next_expiry = 'infinity' where product_id = ${a.id}::uuid`,
  );
  assert.deepEqual(invariants(problems), ["next_expiry_bounds_reservations"]);
  assert.match(problems[0].message, new RegExp(`${a.sku} at shop: next_expiry infinity, but an active reservation`));
});

test("checker: on_hand that differs from the ledger is reported", async (sql) => {
  const { b, ids } = await shop(sql);
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`insert into private.stock_movements (product_id, location_id, delta_on_hand, reason, note)
       values (${b.id}::uuid, 1, 5, 'restock', 'not applied to the stock row')`,
  );
  assert.deepEqual(invariants(problems), ["stock_equals_ledger"]);
  assert.match(problems[0].message, /stored on_hand 10 \/ reserved 1, ledger sums 15 \/ 1/);
});

test("checker: negative stock is reported (with the domain's and the table's CHECKs dropped inside the transaction)", async (sql) => {
  const { a, ids } = await shop(sql);
  const problems = await problemsAfter(sql, ids, async (tx) => {
    await tx`alter domain public.unit_count drop constraint unit_count_check`;
    await tx`alter table private.stock_levels drop constraint stock_levels_reserved_within_on_hand`;
    await tx`update private.stock_levels set on_hand = -1 where product_id = ${a.id}::uuid and location_id = 1`;
  });
  assert.ok(invariants(problems).includes("stock_bounds"), JSON.stringify(problems));
  assert.match(problems.find((p) => p.invariant === "stock_bounds")!.message, /on_hand -1/);
});

test("checker: a second deduction of a paid order is reported", async (sql) => {
  const { a, ids, paid } = await shop(sql);
  const [res] = await sql`select id, location_id from private.reservations where order_id = ${paid.id}::uuid`;
  const problems = await problemsAfter(sql, ids, async (tx) => {
    // A second reservation, consumed with its own reserve and fulfil rows, and the stock row moved to match:
    // stock and ledger agree, so only the per-order rules can see that the order was deducted twice.
    const [dup] = await tx`
      insert into private.reservations (order_id, product_id, location_id, quantity, status, expires_at, closed_at)
      values (${paid.id}::uuid, ${a.id}::uuid, ${res.location_id}, 3, 'consumed', now(), now()) returning id`;
    await tx`insert into private.stock_movements
               (product_id, location_id, delta_on_hand, delta_reserved, reason, order_id, reservation_id)
             values (${a.id}::uuid, ${res.location_id}, 0, 3, 'reserve', ${paid.id}::uuid, ${dup.id}),
                    (${a.id}::uuid, ${res.location_id}, -3, -3, 'fulfil', ${paid.id}::uuid, ${dup.id})`;
    await tx`update private.stock_levels set on_hand = on_hand - 3
             where product_id = ${a.id}::uuid and location_id = ${res.location_id}`;
  });
  assert.deepEqual(invariants(problems), ["deducted_exactly_once", "reservations_match_order"]);
  assert.match(
    problems[0].message,
    new RegExp(`order ${paid.id} \\(paid\\), product ${a.sku}: deducted 6, should be 3`),
  );
});

test("checker: an active reservation on a paid order, and a paid order with nothing consumed, are reported", async (sql) => {
  const { ids, paid } = await shop(sql);
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) => tx`update private.reservations set status = 'active', closed_at = null where order_id = ${paid.id}::uuid`,
  );
  assert.ok(invariants(problems).includes("reservations_match_order"), JSON.stringify(problems));
  assert.ok(invariants(problems).includes("reservation_ledger"));
  assert.ok(invariants(problems).includes("reserved_equals_active_reservations"));
});

test("checker: an order without lines, and totals that are not the sum of the lines, are reported", async (sql) => {
  const { a, ids, awaiting } = await shop(sql);
  const problems = await problemsAfter(sql, ids, async (tx) => {
    await tx`update public.orders set subtotal = subtotal + 1, total = total + 1 where id = ${awaiting.id}::uuid`;
    // An order with no lines at all is found only by a whole-database check (it names no product).
    await tx`insert into public.orders (status, payment_method, currency, subtotal, tax, total, reservation_expires_at)
             values ('awaiting_payment', 'stripe', 'EUR', 0, 0, 0, now())`;
  });
  assert.deepEqual(invariants(problems), ["order_whole"]);
  assert.match(problems[0].message, /totals/);
  let whole: Problem[] = [];
  try {
    await sql.begin(async (tx) => {
      await tx`insert into public.orders (status, payment_method, currency, subtotal, tax, total, reservation_expires_at)
               values ('awaiting_payment', 'stripe', 'EUR', 0, 0, 0, now())`;
      whole = await checkInvariants(tx);
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) throw err;
  }
  assert.ok(whole.some((p) => p.invariant === "order_whole" && /has no items/.test(p.message)), JSON.stringify(whole));
  assert.ok(a.sku);
});

test("checker: a reservation naming a stock level that does not exist is reported", async (sql) => {
  const { a, ids, awaiting } = await shop(sql);
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`insert into private.reservations (order_id, product_id, location_id, quantity, status, expires_at, closed_at)
         values (${awaiting.id}::uuid, ${a.id}::uuid, 9, 1, 'released', now(), now())`,
  );
  const missing = problems.filter((p) => p.invariant === "references_exist");
  assert.equal(missing.length, 1, JSON.stringify(problems));
  assert.match(missing[0].message, new RegExp(`^reservation \\d+ names stock level ${a.id}/9`));
});

test("checker: an order that went to paid twice is reported", async (sql) => {
  const { ids, paid } = await shop(sql);
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`insert into private.order_status_history (order_id, from_status, to_status, reason)
       values (${paid.id}::uuid, 'awaiting_payment', 'paid', 'a second payment')`,
  );
  assert.deepEqual(invariants(problems), ["paid_at_most_once"]);
});

test("checker: an engine function granted to anon, and row-level security turned off, are reported", async (sql) => {
  let found: Problem[] = [];
  try {
    await sql.begin(async (tx) => {
      await tx`grant execute on function public.create_order(jsonb, text, text, text, jsonb, uuid, timestamptz) to anon`;
      await tx`alter table public.order_items disable row level security`;
      found = await checkInvariants(tx);
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) throw err;
  }
  const messages = found.filter((p) => p.invariant === "api_privileges").map((p) => p.message);
  assert.ok(messages.some((m) => /^anon may execute public\.create_order\(/.test(m)), JSON.stringify(found));
  assert.ok(messages.includes("row-level security is off on order_items"), JSON.stringify(found));
  assert.deepEqual(invariants(found), ["api_privileges"]);
});
