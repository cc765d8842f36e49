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

/** A reservation id nobody holds: the next value of open_reservations' identity (a closed reservation's id). */
async function freshReservationId(tx: postgres.TransactionSql): Promise<string> {
  const [{ id }] = await tx`select nextval(pg_get_serial_sequence('private.open_reservations', 'id')) as id`;
  return id as string;
}

test("checker: a second deduction of a paid order is reported", async (sql) => {
  const { a, ids, paid } = await shop(sql);
  const [res] = await sql`select id, location_id from private.reservations where order_id = ${paid.id}::uuid`;
  const problems = await problemsAfter(sql, ids, async (tx) => {
    // A second reservation, consumed: a closed reservation is its reserve and fulfil rows only (no open row), and
    // the stock row moved to match: stock and ledger agree, and the reservation's own story is whole, so only the
    // per-order rules can see that the order was deducted twice.
    const dup = await freshReservationId(tx);
    await tx`insert into private.stock_movements
               (product_id, location_id, delta_on_hand, delta_reserved, reason, order_id, reservation_id)
             values (${a.id}::uuid, ${res.location_id}, 0, 3, 'reserve', ${paid.id}::uuid, ${dup}),
                    (${a.id}::uuid, ${res.location_id}, -3, -3, 'fulfil', ${paid.id}::uuid, ${dup})`;
    await tx`update private.stock_levels set on_hand = on_hand - 3
             where product_id = ${a.id}::uuid and location_id = ${res.location_id}`;
  });
  assert.deepEqual(invariants(problems), ["deducted_exactly_once", "reservations_match_order"]);
  assert.match(
    problems[0].message,
    new RegExp(`order ${paid.id} \\(paid\\), product ${a.sku}: deducted 6, should be 3`),
  );
  assert.match(
    problems.find((p) => p.invariant === "reservations_match_order")!.message,
    new RegExp(`order ${paid.id} \\(paid\\), product ${a.sku}: ordered 3, active 0, consumed 6`),
  );
});

test("checker: an active reservation on a paid order is reported", async (sql) => {
  const { a, ids, paid } = await shop(sql);
  const problems = await problemsAfter(sql, ids, async (tx) => {
    // A reservation opened on the paid order as the engine opens one (open row, reserve row, reserved and
    // next_expiry raised): stock, ledger and the reservation's story agree; only the per-order rule sees it.
    const [open] = await tx`
      insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
      values (${paid.id}::uuid, ${a.id}::uuid, 1, 3, now() + interval '1 hour') returning id, expires_at`;
    await tx`insert into private.stock_movements (product_id, location_id, delta_reserved, reason, order_id, reservation_id)
             values (${a.id}::uuid, 1, 3, 'reserve', ${paid.id}::uuid, ${open.id})`;
    await tx`update private.stock_levels set reserved = reserved + 3, next_expiry = least(next_expiry, ${open.expires_at})
             where product_id = ${a.id}::uuid and location_id = 1`;
  });
  assert.deepEqual(invariants(problems), ["reservations_match_order"], JSON.stringify(problems));
  assert.match(
    problems[0].message,
    new RegExp(`order ${paid.id} \\(paid\\), product ${a.sku}: ordered 3, active 3, consumed 3`),
  );
});

test("checker: a paid order with nothing consumed is reported", async (sql) => {
  const { a, ids, awaiting } = await shop(sql);
  // The awaiting order set to paid behind the engine's back (the history trigger records the one transition):
  // it still holds its reservations and deducted nothing.
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) => tx`update public.orders set status = 'paid', paid_at = now() where id = ${awaiting.id}::uuid`,
  );
  assert.deepEqual(
    invariants(problems),
    ["deducted_exactly_once", "reservations_match_order"],
    JSON.stringify(problems),
  );
  assert.ok(
    problems.some((p) =>
      p.invariant === "reservations_match_order" &&
      new RegExp(`order ${awaiting.id} \\(paid\\), product ${a.sku}: ordered 2, active 2, consumed 0`).test(p.message)
    ),
    JSON.stringify(problems),
  );
});

test("checker: a consumed reservation open again (open, but with a closing row) is reported", async (sql) => {
  const { a, ids, paid } = await shop(sql);
  const [res] = await sql`select id, location_id, quantity, expires_at from private.reservations
                          where order_id = ${paid.id}::uuid`;
  // Its open row back, its fulfil row still in the ledger (which is append-only): what the old model's
  // "status back to active" was. The ledger says consumed, so stock_levels.reserved no longer counts it.
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`insert into private.open_reservations (id, order_id, product_id, location_id, quantity, expires_at)
         overriding system value
         values (${res.id}, ${paid.id}::uuid, ${a.id}::uuid, ${res.location_id}, ${res.quantity}, ${res.expires_at})`,
  );
  assert.deepEqual(
    invariants(problems),
    ["reservation_ledger", "reservations_match_order", "reserved_equals_active_reservations"],
    JSON.stringify(problems),
  );
  assert.match(
    problems.find((p) => p.invariant === "reservation_ledger")!.message,
    new RegExp(`^reservation ${res.id} \\(order ${paid.id}, ${a.sku}\\): open, but with 1 closing row\\(s\\)$`),
  );
});

test("checker: a reservation neither open nor closed (its open row gone without a closing row) is reported", async (sql) => {
  const { b, ids, awaiting } = await shop(sql);
  const [res] = await sql`select id, location_id, quantity from private.open_reservations
                          where order_id = ${awaiting.id}::uuid and product_id = ${b.id}::uuid`;
  // A close that lost its ledger row: the open row deleted and reserved lowered, as close_reservations does, but
  // no release row. The reserve row is left alone: the units it reserved are neither held nor given back.
  const problems = await problemsAfter(sql, ids, async (tx) => {
    await tx`delete from private.open_reservations where id = ${res.id}`;
    await tx`update private.stock_levels set reserved = reserved - ${res.quantity}
             where product_id = ${b.id}::uuid and location_id = ${res.location_id}`;
  });
  // stock_equals_ledger: the ledger still counts the units as reserved; reservations_match_order: the awaiting
  // order no longer holds (nor held until expiry) its line of b.
  assert.deepEqual(
    invariants(problems),
    ["reservation_ledger", "reservations_match_order", "stock_equals_ledger"],
    JSON.stringify(problems),
  );
  const ledger = problems.filter((p) => p.invariant === "reservation_ledger");
  assert.equal(ledger.length, 1, JSON.stringify(problems));
  assert.match(
    ledger[0].message,
    new RegExp(
      `^reservation ${res.id} \\(order ${awaiting.id}, ${b.sku}\\): neither open nor closed: its units are nowhere$`,
    ),
  );
});

/** An order with no lines but its creation row (so only order_whole has something to say about it). */
function orderWithoutLines(tx: postgres.TransactionSql) {
  return tx`with o as (
              insert into public.orders (status, payment_method, currency, subtotal, tax, total, reservation_expires_at)
              values ('awaiting_payment', 'stripe', 'EUR', 0, 0, 0, now()) returning id, status)
            insert into private.order_status_history (order_id, to_status, reason) select id, status, 'created' from o`;
}

test("checker: an order without lines, and totals that are not the sum of the lines, are reported", async (sql) => {
  const { a, ids, awaiting } = await shop(sql);
  const problems = await problemsAfter(sql, ids, async (tx) => {
    await tx`update public.orders set subtotal = subtotal + 1, total = total + 1 where id = ${awaiting.id}::uuid`;
    // An order with no lines at all is found only by a whole-database check (it names no product).
    await orderWithoutLines(tx);
  });
  assert.deepEqual(invariants(problems), ["order_whole"]);
  assert.match(problems[0].message, /totals/);
  let whole: Problem[] = [];
  try {
    await sql.begin(async (tx) => {
      await orderWithoutLines(tx);
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
  // An open reservation (only open ones have a row of their own; a closed one is its ledger rows, checked as such
  // below) at a location without a stock row.
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
         values (${awaiting.id}::uuid, ${a.id}::uuid, 9, 1, now() + interval '1 hour')`,
  );
  const missing = problems.filter((p) => p.invariant === "references_exist");
  assert.equal(missing.length, 1, JSON.stringify(problems));
  assert.match(missing[0].message, new RegExp(`^reservation \\d+ names stock level ${a.id}/9`));
});

test("checker: a stock level naming a product or a location that does not exist is reported", async (sql) => {
  const { a, ids } = await shop(sql);
  // (no foreign keys: products and locations are never deleted, and this is what would show if a writer named wrong)
  const ghost = "f0000000-0000-4000-8000-00000000beef";
  const problems = await problemsAfter(
    sql,
    [...ids, ghost],
    (tx) =>
      tx`insert into private.stock_levels (product_id, location_id) values (${ghost}::uuid, 1), (${a.id}::uuid, 9)`,
  );
  const missing = problems.filter((p) => p.invariant === "references_exist").map((p) => p.message).sort();
  assert.deepEqual(
    missing,
    [
      `stock level ${a.id}/9 names location 9, which does not exist`,
      `stock level ${ghost}/1 names product ${ghost}, which does not exist`,
    ].sort(),
    JSON.stringify(problems),
  );
});

test("checker: a reservation naming an order that does not exist is reported", async (sql) => {
  const { a, ids } = await shop(sql);
  // (no foreign key: orders are never deleted, and this is what would show if a writer named the wrong one)
  const ghost = "f0000000-0000-4000-8000-00000000dead";
  const problems = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`insert into private.open_reservations (order_id, product_id, location_id, quantity, expires_at)
         select ${ghost}::uuid, ${a.id}::uuid, location_id, 1, now() + interval '1 hour'
         from private.stock_levels where product_id = ${a.id}::uuid limit 1`,
  );
  const missing = problems.filter((p) => p.invariant === "references_exist");
  assert.equal(missing.length, 1, JSON.stringify(problems));
  assert.match(missing[0].message, new RegExp(`^reservation \\d+ names order ${ghost}, which does not exist$`));
});

test("checker: a closed reservation's ledger rows naming a stock level that does not exist are reported", async (sql) => {
  const { a, ids, awaiting } = await shop(sql);
  const problems = await problemsAfter(sql, ids, async (tx) => {
    // A released reservation (reserve and release rows, no open row) at a location without a stock row.
    const id = await freshReservationId(tx);
    await tx`insert into private.stock_movements (product_id, location_id, delta_reserved, reason, order_id, reservation_id)
             values (${a.id}::uuid, 9, 1, 'reserve', ${awaiting.id}::uuid, ${id}),
                    (${a.id}::uuid, 9, -1, 'release', ${awaiting.id}::uuid, ${id})`;
  });
  const missing = problems.filter((p) => p.invariant === "references_exist");
  assert.equal(missing.length, 2, JSON.stringify(problems));
  for (const m of missing) assert.match(m.message, new RegExp(`^ledger row \\d+ names stock level ${a.id}/9`));
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

test("checker: an order whose creation is not recorded once is reported", async (sql) => {
  const { ids, awaiting } = await shop(sql);
  // A second creation row for an order the engine made ...
  const doubled = await problemsAfter(
    sql,
    ids,
    (tx) =>
      tx`insert into private.order_status_history (order_id, to_status, reason)
         values (${awaiting.id}::uuid, 'awaiting_instore_payment', 'created')`,
  );
  assert.deepEqual(invariants(doubled), ["creation_recorded"], JSON.stringify(doubled));
  assert.match(
    doubled[0].message,
    new RegExp(`^order ${awaiting.id} \\(awaiting_instore_payment\\): 2 creation row\\(s\\)$`),
  );
  // ... and an order written past create_order, with lines and totals in order but no history at all
  const bypassed = await problemsAfter(sql, ids, async (tx) => {
    const [o] = await tx`
      with l as (
        select id, sku, name, unit_price, tax_rate_bp,
               round(unit_price::numeric * tax_rate_bp / 10000)::bigint as tax from public.products where id = ${
      ids[0]
    }::uuid
      ), o as (
        insert into public.orders (status, payment_method, currency, subtotal, tax, total, reservation_expires_at)
        select 'awaiting_payment', 'stripe', 'EUR', unit_price, tax, unit_price + tax, now() + interval '1 hour' from l
        returning id
      )
      insert into public.order_items (order_id, line_no, product_id, sku, name, quantity, unit_price, tax_rate_bp,
                                      line_subtotal, line_tax, line_total)
      select o.id, 1, l.id, l.sku, l.name, 1, l.unit_price, l.tax_rate_bp, l.unit_price, l.tax, l.unit_price + l.tax
      from o, l
      returning order_id`;
    assert.ok(o.order_id);
  });
  const recorded = bypassed.filter((x) => x.invariant === "creation_recorded");
  assert.equal(recorded.length, 1, JSON.stringify(bypassed));
  assert.match(recorded[0].message, /: 0 creation row\(s\)$/);
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
