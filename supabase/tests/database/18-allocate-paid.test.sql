-- allocate_paid_order: the way out of paid_out_of_stock once stock is back. It gives the paid order its goods
-- (reserve and consume every line, deducting on_hand once through the ledger) and moves it to paid; while stock
-- is still short it changes nothing and names the short lines; it refuses orders that are not paid out of stock
-- or were refunded in full, and a second call reports already_allocated.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(15);

-- Fixtures (rolled back with the test): product, line, stock, order_id, error_of, moves from fixtures.psql.
\ir fixtures.psql

select '2030-01-01 12:00:00+00' as t0 \gset

-- An order paid after its two units went to another buyer: paid_out_of_stock (as in 07-mark-paid).
select pg_temp.product('T-ALLOC', 1000, 0, 2, 0) as p \gset
select pg_temp.product('T-ALLOC-B', 500, 0, 5, 0) as b \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2), pg_temp.line(:'b', 1)), 'sumup',
                                            'alloc-a', 'h', '{}', null, :'t0')) as a \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'alloc-x', 'h',
                                            '{}', null, :'t0'::timestamptz + interval '16 minutes')) as x \gset
select public.mark_paid(:'x', 'sumup', 'tx-x', 2000, 'EUR', :'t0'::timestamptz + interval '17 minutes') ->> 'result'
  as x_paid \gset
select is(public.mark_paid(:'a', 'sumup', 'tx-a', 2500, 'EUR', :'t0'::timestamptz + interval '18 minutes') ->> 'result',
  'paid_out_of_stock', 'fixture: the late payment left the order paid_out_of_stock');
select is((select count(*)::int from admin.active_alerts where alert = 'paid_out_of_stock' and subject = :'a'), 1,
  'fixture: its alert fires');

-- ---- still short: nothing changes ---------------------------------------------------------------------------------
select public.restock(:'p', 'shop', 1, 'one came back') is not null as one_back \gset
select is(
  pg_temp.error_of(format($$select public.allocate_paid_order(%L)$$, :'a')),
  jsonb_build_object('code', 'SH409', 'detail', jsonb_build_object('items', jsonb_build_array(jsonb_build_object(
    'product_id', :'p', 'sku', 'T-ALLOC', 'requested', 2, 'available', 1)))),
  'allocate_short: with too little stock back it raises SH409 naming the short line and what is free');
select is(
  array[(select status from public.orders where id = :'a'), pg_temp.stock(:'p', 'shop'), pg_temp.stock(:'b', 'shop')],
  array['paid_out_of_stock', '1/0', '5/0'],
  'allocate_short_changes_nothing: the order stays paid_out_of_stock and no stock moves');

-- ---- enough stock: the order gets its goods -----------------------------------------------------------------------
select public.restock(:'p', 'shop', 3, 'delivery') is not null as delivered \gset
select is(
  public.allocate_paid_order(:'a', 'delivery arrived', :'t0'::timestamptz + interval '2 days') ->> 'result',
  'allocated',
  'allocate: once stock is back the order is given its goods');
select is(
  array[(select status from public.orders where id = :'a'), pg_temp.stock(:'p', 'shop'), pg_temp.stock(:'b', 'shop')],
  array['paid', '2/0', '4/0'],
  'allocate_deducts: the order is paid and on_hand went down by its lines, nothing left reserved');
select is(
  (select array_agg(m order by m) from unnest(pg_temp.moves(:'a')) m),
  array['expire 0 -2', 'fulfil -1 -1', 'fulfil -2 -2', 'release 0 -1', 'reserve 0 1', 'reserve 0 1', 'reserve 0 2',
        'reserve 0 2'],
  'allocate_ledger: the first reservations lapsed or were handed back; now each line is reserved and consumed '
  || 'again through the ledger, one fulfil row per reservation');
select is(
  (select format('%s -> %s: %s', from_status, to_status, reason) from private.order_status_history
   where order_id = :'a' order by id desc limit 1),
  'paid_out_of_stock -> paid: delivery arrived',
  'allocate_audit: the status change is recorded with the operator''s note');
select is((select count(*)::int from admin.active_alerts where alert = 'paid_out_of_stock' and subject = :'a'), 0,
  'allocate_clears_alert: the paid_out_of_stock alert stops firing');
select is(
  public.allocate_paid_order(:'a') ->> 'result', 'already_allocated',
  'allocate_replay: a second call reports already_allocated and moves nothing');
select is(pg_temp.stock(:'p', 'shop'), '2/0', 'allocate_replay_no_move: stock unchanged by the replay');

-- ---- refused ----------------------------------------------------------------------------------------------------------
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'b', 1)), 'sumup', 'alloc-w', 'h'))
  as w \gset
select throws_ok(format($$select public.allocate_paid_order(%L)$$, :'w'), 'SH410', null,
  'allocate_unpaid: an order awaiting payment is refused (it is paid through mark_paid)');

-- refunded in full: its money went back, and so did its claim on the goods
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'alloc-r', 'h',
                                            '{}', null, :'t0')) as r \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'alloc-y', 'h',
                                            '{}', null, :'t0'::timestamptz + interval '3 days')) as y \gset
select public.mark_paid(:'r', 'sumup', 'tx-r', 2000, 'EUR', :'t0'::timestamptz + interval '3 days') ->> 'result'
  as r_paid \gset
select public.record_refund_total(:'r', 'rf-r', 2000, 'EUR') is not null as refunded \gset
select throws_ok(format($$select public.allocate_paid_order(%L)$$, :'r'), 'SH410', null,
  'allocate_refunded: an order refunded in full is refused');
-- a free order (total 0) paid out of stock has nothing to refund, so it is not "refunded in full": it can be allocated
select pg_temp.product('T-ALLOC-FREE', 0, 0, 1, 0) as f \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'f', 1)), 'sumup', 'alloc-f', 'h',
                                            '{}', null, :'t0')) as fo \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'f', 1)), 'sumup', 'alloc-g', 'h',
                                            '{}', null, :'t0'::timestamptz + interval '1 hour')) as go \gset
select public.mark_paid(:'fo', 'sumup', 'tx-f', 0, 'EUR', :'t0'::timestamptz + interval '1 hour') ->> 'result'
  as f_paid \gset
select public.restock(:'f', 'shop', 1, 'found one') is not null as found \gset
select is(public.allocate_paid_order(:'fo') ->> 'result', 'allocated',
  'allocate_free_order: a free order paid out of stock is allocated once stock is back');
select throws_ok($$select public.allocate_paid_order('00000000-0000-4000-8000-000000000000')$$, 'SH402', null,
  'allocate_unknown: an unknown order is SH402');

select * from finish();
rollback;
