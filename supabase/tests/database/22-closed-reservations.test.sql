-- A reservation that closes leaves private.open_reservations; its story stays in the ledger ('reserve', then one
-- closing row), from which private.reservations and admin.order_timeline read it. Each way of closing (payment,
-- cancel, sweep) is checked for the row gone, the outcome the view reports, and the timeline; and the timeline of
-- one order is read through the ledger's order index, not a scan of the ledger.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(9);

\ir fixtures.psql

select pg_temp.product('T-CLOSED', 1000, 1900, 20, 0) as p \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 2)), 'sumup', 'closed-pay', 'h'))
  as paid \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 3)), 'stripe', 'closed-cancel', 'h'))
  as cancelled \gset
select pg_temp.order_id(public.create_order(jsonb_build_array(pg_temp.line(:'p', 4)), 'sumup', 'closed-lapse', 'h',
                                            '{}'::jsonb, null, now() - interval '1 hour'))
  as lapsed \gset

select is(
  (select array_agg(r.order_id::text || ':' || r.quantity order by r.quantity) from private.open_reservations r
    where r.product_id = :'p'),
  array[:'paid' || ':2', :'cancelled' || ':3', :'lapsed' || ':4'],
  'open_while_held: each order''s units are an open reservation until it closes');

select is(public.mark_paid(:'paid', 'sumup', 'TX-CLOSED', 2380, 'EUR') ->> 'result', 'paid', 'the first order is paid');
select is(public.cancel_order(:'cancelled', 'changed my mind') ->> 'result', 'cancelled', 'the second is cancelled');
select is(public.expire_reservations(now()), 1, 'the sweep releases the third');

select is(
  (select count(*) from private.open_reservations r where r.product_id = :'p'),
  0::bigint,
  'closed_rows_leave: no reservation of the product is open any more');

select is(
  (select array_agg(format('%s x%s', r.status, r.quantity) order by r.quantity) from private.reservations r
    where r.product_id = :'p'),
  array['consumed x2', 'released x3', 'expired x4'],
  'view_outcome: private.reservations reports each closed reservation with its outcome and quantity');

select is(
  (select array_agg(format('%s %s/%s', t.reason, t.delta_on_hand, t.delta_reserved) order by t.at, t.entry_id)
     from admin.order_timeline t where t.order_id = :'paid' and t.kind = 'stock'),
  array['reserve 0/2', 'fulfil -2/-2'],
  'timeline_paid: the paid order''s timeline shows its reservation opened and consumed');

select is(
  (select array_agg(t.reason order by t.at, t.entry_id)
     from admin.order_timeline t where t.order_id in (:'cancelled', :'lapsed') and t.kind = 'stock'),
  array['reserve', 'reserve', 'release', 'expire']::text[],
  'timeline_released_expired: the cancelled and the lapsed order''s timelines end in release and expire');

-- One order's timeline finds its 'reserve' rows through stock_movements_order_reserve_idx (on a large ledger a
-- scan of the whole ledger per timeline). Statistics that make the ledger look big, as it is in a shop that has run
-- for a while, so the plan is the one such a shop gets.
update pg_class set reltuples = 5000000, relpages = 60000 where oid = 'private.stock_movements'::regclass;
create function pg_temp.timeline_plan(p_order uuid) returns text language plpgsql as $f$
declare v_line text; v_plan text := '';
begin
  for v_line in execute format('explain select * from admin.order_timeline where order_id = %L', p_order) loop
    v_plan := v_plan || v_line || E'\n';
  end loop;
  return v_plan;
end $f$;
select pg_temp.timeline_plan(:'paid') as plan \gset
select ok(:'plan' like '%stock_movements_order_reserve_idx%' and :'plan' not like '%Seq Scan on stock_movements%',
  'timeline_indexed: one order''s timeline reads the ledger through its order index, not a scan');
select diag(:'plan') where :'plan' not like '%stock_movements_order_reserve_idx%';

select * from finish();
rollback;
