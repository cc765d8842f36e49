-- Payments: webhook dedupe, the transition to paid (where stock is deducted, exactly once), refunds and
-- fulfilment.

-- ============================================================================================================
-- payment_events
-- ============================================================================================================
-- Why: providers deliver webhooks at least once. Recording (provider, event id) in the same transaction as the
-- event's effect makes a redelivery a no-op: the second insert finds the key and the door skips the effect.
-- (the event id's rule a domain, as the engine's single-value rules are: see 20261125000200_catalogue.sql)
create domain private.provider_event_id as text check (length(value) between 1 and 255);

create table private.payment_events (
  provider public.payment_method not null,
  event_id private.provider_event_id not null,
  event_type text,
  order_id uuid,
  actor text not null default private.current_actor(),
  correlation_id text default private.correlation_id(),
  received_at timestamptz not null default now(),
  primary key (provider, event_id)
);
comment on table private.payment_events is 'Webhook events already processed, keyed by (provider, event id).';

create index payment_events_order_idx on private.payment_events (order_id) where order_id is not null;

alter table private.payment_events enable row level security;
revoke all on private.payment_events from public, anon, authenticated, service_role;

-- Why: a refund or dispute webhook names the payment (Stripe's payment intent), not the order; this finds it.
create index orders_provider_payment_ref_idx
  on public.orders (payment_method, provider_payment_ref) where provider_payment_ref is not null;

-- ============================================================================================================
-- record_payment_event
-- ============================================================================================================
-- Why: the dedupe gate for webhooks. True the first time (provider, event id) is seen, false afterwards; a
-- concurrent duplicate waits on the key and then sees false, so exactly one delivery acts.
create function public.record_payment_event(
  p_provider text,
  p_event_id text,
  p_event_type text,
  p_order_id uuid default null
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_inserted integer;
begin
  if p_provider is null or p_provider not in ('sumup', 'stripe') then
    raise exception using errcode = 'SH400', message = 'invalid_request: provider must be sumup or stripe',
      detail = jsonb_build_object('reason', 'bad provider')::text;
  end if;
  if p_event_id is null or p_event_id = '' or length(p_event_id) > 255 then
    raise exception using errcode = 'SH400', message = 'invalid_request: event id is required',
      detail = jsonb_build_object('reason', 'bad event id')::text;
  end if;

  insert into private.payment_events (provider, event_id, event_type, order_id)
  values (p_provider, p_event_id, p_event_type, p_order_id)
  on conflict (provider, event_id) do nothing;
  get diagnostics v_inserted = row_count;

  return v_inserted = 1;
end
$$;

revoke all on function public.record_payment_event(text, text, text, uuid) from public, anon, authenticated;
grant execute on function public.record_payment_event(text, text, text, uuid) to service_role;

-- ============================================================================================================
-- take_order_stock
-- ============================================================================================================
-- Why: the one rule that hands a paid order its goods, for mark_paid (the payment) and allocate_paid_order (an
-- order paid when its stock was gone, once stock is back). Locks the order's open reservations, then the stock rows
-- of all its products; reserves what the open reservations do not cover (all of it after an expiry or a cancel),
-- expiring lapsed reservations of others first; then either consumes every reservation of the order (on_hand
-- deducted once per reservation, ledger 'fulfil') and returns null, or, when stock is short, releases what was
-- still held, moves no stock and returns the short lines (reserve_stock's SH409 detail). The caller has locked the
-- order row and decides its status.
create function private.take_order_stock(p_order_id uuid, p_payment_method text, p_now timestamptz)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_res_ids bigint[];
  v_product_ids uuid[];
  v_missing_ids uuid[];
  v_missing_qty integer[];
  v_short jsonb;
begin
  -- The order's own open reservations first, then the stock rows of every product of the order.
  select array_agg(r.id) into v_res_ids
  from (
    select r.id from private.open_reservations r
    where r.order_id = p_order_id
    order by r.id
    for no key update
  ) r;

  select array_agg(i.product_id order by i.product_id) into v_product_ids
  from public.order_items i where i.order_id = p_order_id;

  perform private.lock_stock(v_product_ids);

  -- What the open reservations do not cover.
  select array_agg(i.product_id order by i.line_no), array_agg(i.quantity - coalesce(h.quantity, 0) order by i.line_no)
  into v_missing_ids, v_missing_qty
  from public.order_items i
  left join (
    select r.product_id, sum(r.quantity)::integer as quantity
    from private.open_reservations r
    where r.order_id = p_order_id
    group by r.product_id
  ) h on h.product_id = i.product_id
  where i.order_id = p_order_id and i.quantity > coalesce(h.quantity, 0);

  if v_missing_ids is not null then
    perform private.expire_lapsed_on(v_missing_ids, p_now, p_order_id);
    v_short := private.reserve_stock(p_order_id, v_missing_ids, v_missing_qty, p_payment_method, p_now);
  end if;

  if v_short is null then
    -- Everything is held for this order now: consume it all, deducting on_hand once per reservation.
    perform private.close_reservations(
      array(select r.id from private.open_reservations r where r.order_id = p_order_id), 'consumed');
  else
    -- Not enough left: hand back what was still held and leave stock untouched.
    perform private.close_reservations(v_res_ids, 'released');
  end if;
  return v_short;
end
$$;

revoke all on function private.take_order_stock(uuid, text, timestamptz) from public, anon, authenticated, service_role;

-- ============================================================================================================
-- mark_paid
-- ============================================================================================================
-- Why: the moment money turns reserved stock into sold stock. A compare-and-set on the order row: the first
-- call moves it to paid, consumes its reservations and deducts on_hand (ledger 'fulfil'); a second, concurrent or
-- replayed call waits for the row, then finds it paid and reports already_paid, changing nothing. An amount or
-- currency that differs from the order's total is not accepted: it is recorded in the status history and the
-- order stays unpaid. A payment that arrives after the reservation lapsed (or after a cancel) re-reserves what is
-- missing if stock allows (take_order_stock); otherwise the order becomes paid_out_of_stock for a person to resolve
-- (refund it, or restock and allocate_paid_order), and no stock moves: never negative stock. Lock order: order
-- row, its reservations, then stock rows (lock_stock).
create function public.mark_paid(
  p_order_id uuid,
  p_provider text,
  p_provider_ref text,
  p_amount bigint,
  p_currency text,
  p_now timestamptz default now()
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
  v_result text;
begin
  if p_provider is null or p_provider not in ('sumup', 'stripe') then
    raise exception using errcode = 'SH400', message = 'invalid_request: provider must be sumup or stripe',
      detail = jsonb_build_object('reason', 'bad provider')::text;
  end if;

  v_order := private.lock_order(p_order_id);

  if p_provider <> v_order.payment_method then
    raise exception using errcode = 'SH400',
      message = format('invalid_request: order %s is paid with %s, not %s', p_order_id, v_order.payment_method, p_provider),
      detail = jsonb_build_object('reason', 'provider does not match the payment method')::text;
  end if;

  if v_order.status in ('paid', 'paid_out_of_stock', 'fulfilled') then
    return jsonb_build_object('result', 'already_paid', 'order', public.get_order(p_order_id));
  end if;

  -- Providers write currencies in lower case (Stripe: "eur"); the order keeps ISO upper case.
  if p_amount is distinct from v_order.total or upper(p_currency) is distinct from v_order.currency::text then
    insert into private.order_status_history (order_id, from_status, to_status, reason)
    values (p_order_id, v_order.status, v_order.status,
            format('amount_mismatch: expected %s %s, got %s %s (%s %s)', v_order.total, v_order.currency,
                   coalesce(p_amount::text, 'null'), coalesce(upper(p_currency), 'null'),
                   p_provider, coalesce(p_provider_ref, 'no reference')));
    return jsonb_build_object('result', 'amount_mismatch', 'order', public.get_order(p_order_id));
  end if;

  v_result := case when private.take_order_stock(p_order_id, v_order.payment_method, p_now) is null
                   then 'paid' else 'paid_out_of_stock' end;

  perform private.set_status_reason(format('payment %s %s', p_provider, coalesce(p_provider_ref, '')));
  update public.orders o
  set status = v_result, paid_at = p_now, provider_payment_ref = p_provider_ref
  where o.id = p_order_id and o.status = v_order.status;
  perform private.set_status_reason(null);

  return jsonb_build_object('result', v_result, 'order', public.get_order(p_order_id));
end
$$;

revoke all on function public.mark_paid(uuid, text, text, bigint, text, timestamptz) from public, anon, authenticated;
grant execute on function public.mark_paid(uuid, text, text, bigint, text, timestamptz) to service_role;

-- ============================================================================================================
-- mark_paid_for_event
-- ============================================================================================================
-- Why: a provider's payment event and its effect as ONE statement: record_payment_event, then mark_paid only the
-- first time the event is seen ({"duplicate": true} otherwise, changing nothing; a concurrent duplicate waits on
-- the event's key, then sees it). The doors send it as one round trip (db.ts callOnce), so the stock rows mark_paid
-- locks, a hot product's among them, are released by the commit that ends the statement, never held while the
-- function's event loop gets round to sending the next statement and COMMIT (BENCHMARKS.md: buyers of that product
-- waited on it during a sale). An error from mark_paid ends the statement: the event is not recorded either, and a
-- redelivery meets the same answer. Security invoker: it reaches nothing but the two entry points, which are
-- definers themselves, so the caller needs EXECUTE on them too (service_role has it).
create function public.mark_paid_for_event(
  p_provider text,
  p_event_id text,
  p_event_type text,
  p_order_id uuid,
  p_provider_ref text,
  p_amount bigint,
  p_currency text,
  p_now timestamptz default now()
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if not public.record_payment_event(p_provider, p_event_id, p_event_type, p_order_id) then
    return jsonb_build_object('duplicate', true);
  end if;
  return public.mark_paid(p_order_id, p_provider, p_provider_ref, p_amount, p_currency, p_now);
end
$$;

revoke all on function public.mark_paid_for_event(text, text, text, uuid, text, bigint, text, timestamptz)
  from public, anon, authenticated;
grant execute on function public.mark_paid_for_event(text, text, text, uuid, text, bigint, text, timestamptz)
  to service_role;

-- Why: the SumUp order other than p_order_id that carries p_transaction_code as its payment reference (paid by staff
-- or by sumup-webhook), or null (orders_provider_payment_ref_idx finds it). PL/pgSQL, as the engine's other
-- readers: a SQL function with SET search_path is parsed and planned again on every call.
create function private.sumup_order_paid_with(p_transaction_code text, p_order_id uuid)
returns uuid
language plpgsql
stable
set search_path = ''
as $$
begin
  return (select o.id from public.orders o
          where o.payment_method = 'sumup' and o.provider_payment_ref = p_transaction_code and o.id <> p_order_id
          limit 1);
end
$$;

revoke all on function private.sumup_order_paid_with(text, uuid) from public, anon, authenticated, service_role;

-- ============================================================================================================
-- confirm_instore_payment
-- ============================================================================================================
-- Why: staff confirming an in-store card payment by hand, with the transaction code from the SumUp receipt, as one
-- statement (orders-instore sends it with callOnce, as the webhooks send their payments). Staff attest that the
-- terminal took the order's total, so the amount is the order's own. A transaction code pays one order: SH411
-- (transaction_code_reused, naming the other order) when another SumUp order already carries it as its payment
-- reference, paid by staff or by sumup-webhook; and a payment made here claims the code as the payment event
-- ('sumup', 'txn:<code>') in the same transaction, so two confirmations racing with one code on two orders cannot
-- both commit: the second waits on the event's key, finds it taken and raises SH411, which rolls its payment back.
-- The same order confirmed again is mark_paid's already_paid and claims nothing. Security definer, as mark_paid:
-- it locks the order and reads the private lookup above.
create function public.confirm_instore_payment(
  p_order_id uuid,
  p_transaction_code text,
  p_now timestamptz default now()
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
  v_other uuid;
  v_reused boolean;
  v_paid jsonb;
begin
  -- (the door checks the code's shape for its answer; this keeps the event key within its 255 characters)
  if p_transaction_code is null or p_transaction_code = '' or length(p_transaction_code) > 200 then
    raise exception using errcode = 'SH400', message = 'invalid_request: a transaction code is required',
      detail = jsonb_build_object('reason', 'bad transaction code')::text;
  end if;

  v_order := private.lock_order(p_order_id);
  v_other := private.sumup_order_paid_with(p_transaction_code, p_order_id);
  v_reused := v_other is not null;
  if not v_reused then
    v_paid := public.mark_paid(p_order_id, 'sumup', p_transaction_code, v_order.total, v_order.currency, p_now);
    -- only a payment made here claims the code (already_paid or a mismatch changed nothing)
    if v_paid ->> 'result' in ('paid', 'paid_out_of_stock') then
      v_reused := not public.record_payment_event('sumup', 'txn:' || p_transaction_code, 'instore.confirm', p_order_id);
    end if;
    if v_reused then
      -- a confirmation of another order claimed it and has committed since: name that order
      v_other := private.sumup_order_paid_with(p_transaction_code, p_order_id);
    end if;
  end if;
  if v_reused then
    raise exception using errcode = 'SH411',
      message = 'transaction_code_reused: this SumUp transaction code already paid another order; check the receipt',
      detail = jsonb_strip_nulls(jsonb_build_object('transaction_code', p_transaction_code, 'order_id', v_other))::text;
  end if;
  return v_paid;
end
$$;

revoke all on function public.confirm_instore_payment(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function public.confirm_instore_payment(uuid, text, timestamptz) to service_role;

-- ============================================================================================================
-- cancel_order_for_event
-- ============================================================================================================
-- Why: a provider's event that cancels its order (Stripe: checkout session expired, async payment failed), as ONE
-- statement, for the reason mark_paid_for_event is one: record_payment_event, then cancel_order only the first time
-- the event is seen ({"duplicate": true} otherwise), so the stock rows the cancel releases are free at the
-- statement's own commit. An error from cancel_order ends the statement with the event unrecorded.
create function public.cancel_order_for_event(
  p_provider text,
  p_event_id text,
  p_event_type text,
  p_order_id uuid,
  p_reason text,
  p_now timestamptz default now()
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if not public.record_payment_event(p_provider, p_event_id, p_event_type, p_order_id) then
    return jsonb_build_object('duplicate', true);
  end if;
  return public.cancel_order(p_order_id, p_reason, p_now);
end
$$;

revoke all on function public.cancel_order_for_event(text, text, text, uuid, text, timestamptz)
  from public, anon, authenticated;
grant execute on function public.cancel_order_for_event(text, text, text, uuid, text, timestamptz) to service_role;

-- ============================================================================================================
-- allocate_paid_order
-- ============================================================================================================
-- Why: the other way out of paid_out_of_stock (besides a refund): once stock is back (restock), an operator gives
-- the paid order its goods. Under the order's lock, take_order_stock reserves and consumes every line (on_hand
-- deducted once, ledger 'fulfil') and the order becomes paid, which clears its alert. Still short: SH409 naming the
-- short lines, and nothing changes. Idempotent: an order already paid or fulfilled reports already_allocated. An
-- order refunded in full is refused (SH410): its money went back, so must its claim on the goods.
create function public.allocate_paid_order(p_order_id uuid, p_note text default null, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
  v_refunded boolean;
begin
  v_order := private.lock_order(p_order_id);
  if v_order.status in ('paid', 'fulfilled') then
    return jsonb_build_object('result', 'already_allocated', 'order', public.get_order(p_order_id));
  end if;
  -- (a free order, total 0, has nothing to refund: it is never "refunded in full")
  v_refunded := v_order.total > 0 and v_order.refunded_amount >= v_order.total;
  if v_order.status <> 'paid_out_of_stock' or v_refunded then
    raise exception using errcode = 'SH410',
      message = format('invalid_transition: only an order paid out of stock and not refunded in full can be given '
                       || 'its stock; this one is %s%s', v_order.status,
                       case when v_refunded then ' and refunded in full' else '' end),
      detail = jsonb_build_object('status', v_order.status)::text;
  end if;

  perform private.raise_if_short(private.take_order_stock(p_order_id, v_order.payment_method, p_now));

  perform private.set_status_reason(coalesce(nullif(p_note, ''), 'stock allocated after payment'));
  update public.orders o set status = 'paid' where o.id = p_order_id and o.status = 'paid_out_of_stock';
  perform private.set_status_reason(null);

  return jsonb_build_object('result', 'allocated', 'order', public.get_order(p_order_id));
end
$$;

revoke all on function public.allocate_paid_order(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function public.allocate_paid_order(uuid, text, timestamptz) to service_role;

-- ============================================================================================================
-- record_refund_total
-- ============================================================================================================
-- Why: keeps refunded_amount true to what the provider paid back, never more than was paid. Stripe reports a
-- charge's cumulative amount_refunded, not the increment, and its events may arrive out of order: taking the
-- total and keeping the larger of it and what is recorded makes a late or replayed event harmless without the
-- door reading the order first. Stock is not touched: returned goods come back through restock.
-- Answers {"result": "refund_recorded" | "already_recorded", "order": <order>}: already_recorded when the total is
-- not above what is recorded (nothing changed).
create function public.record_refund_total(
  p_order_id uuid,
  p_provider_ref text,
  p_refunded_total bigint,
  p_currency text
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
begin
  v_order := private.lock_order(p_order_id);
  if v_order.status not in ('paid', 'paid_out_of_stock', 'fulfilled') then
    raise exception using errcode = 'SH410',
      message = format('invalid_transition: cannot refund an order that is %s', v_order.status),
      detail = jsonb_build_object('status', v_order.status)::text;
  end if;
  if upper(p_currency) is distinct from v_order.currency::text then
    raise exception using errcode = 'SH400',
      message = format('invalid_request: refund in %s for an order in %s', coalesce(p_currency, 'null'), v_order.currency),
      detail = jsonb_build_object('reason', 'currency mismatch')::text;
  end if;
  if p_refunded_total is null or p_refunded_total < 0 or p_refunded_total > v_order.total then
    raise exception using errcode = 'SH400',
      message = format('invalid_request: refunded total %s is outside 0..%s', coalesce(p_refunded_total::text, 'null'),
                       v_order.total),
      detail = jsonb_build_object('reason', 'bad refund amount')::text;
  end if;

  if p_refunded_total <= v_order.refunded_amount then
    return jsonb_build_object('result', 'already_recorded', 'order', public.get_order(p_order_id));
  end if;
  update public.orders o set refunded_amount = p_refunded_total where o.id = p_order_id;
  insert into private.order_status_history (order_id, from_status, to_status, reason)
  values (p_order_id, v_order.status, v_order.status,
          format('refund %s %s, %s in total (%s)', p_refunded_total - v_order.refunded_amount, v_order.currency,
                 p_refunded_total, coalesce(p_provider_ref, 'no reference')));
  return jsonb_build_object('result', 'refund_recorded', 'order', public.get_order(p_order_id));
end
$$;

revoke all on function public.record_refund_total(uuid, text, bigint, text) from public, anon, authenticated;
grant execute on function public.record_refund_total(uuid, text, bigint, text) to service_role;

-- ============================================================================================================
-- record_refund_total_for_event
-- ============================================================================================================
-- Why: a provider's refund event (Stripe's charge.refunded, which reports the charge's cumulative amount_refunded)
-- and its effect as one statement, as mark_paid_for_event is for payments: record_payment_event, then
-- record_refund_total the first time the event is seen ({"duplicate": true} otherwise). The event names the order
-- in its metadata, or only the payment it refunds: p_order_id null finds the order paid with p_provider_ref
-- (orders_provider_payment_ref_idx); none is SH402. An error ends the statement with the event unrecorded.
-- Security invoker, like mark_paid_for_event: it reads orders (service_role may) and reaches private tables only
-- through the two entry points, which are definers.
create function public.record_refund_total_for_event(
  p_provider text,
  p_event_id text,
  p_event_type text,
  p_order_id uuid,
  p_provider_ref text,
  p_refunded_total bigint,
  p_currency text
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_order_id uuid := p_order_id;
begin
  if v_order_id is null then
    select o.id into v_order_id from public.orders o
    where o.payment_method = p_provider and o.provider_payment_ref = p_provider_ref
    limit 1;
  end if;
  if not public.record_payment_event(p_provider, p_event_id, p_event_type, v_order_id) then
    return jsonb_build_object('duplicate', true);
  end if;
  if v_order_id is null then
    raise exception using errcode = 'SH402',
      message = format('order_not_found: no %s order was paid with %s', p_provider, coalesce(p_provider_ref, 'null'));
  end if;
  return public.record_refund_total(v_order_id, p_provider_ref, p_refunded_total, p_currency);
end
$$;

revoke all on function public.record_refund_total_for_event(text, text, text, uuid, text, bigint, text)
  from public, anon, authenticated;
grant execute on function public.record_refund_total_for_event(text, text, text, uuid, text, bigint, text)
  to service_role;

-- ============================================================================================================
-- record_refund
-- ============================================================================================================
-- Why: a refund reported as an increment (SumUp, staff). Locks the order, adds the increment to what is recorded
-- and hands the new total to record_refund_total, the one place that checks and records refunds (its answer).
create function public.record_refund(p_order_id uuid, p_provider_ref text, p_amount bigint, p_currency text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_refunded bigint;
begin
  if p_amount is null or p_amount <= 0 then
    raise exception using errcode = 'SH400',
      message = format('invalid_request: a refund must be positive, got %s', coalesce(p_amount::text, 'null')),
      detail = jsonb_build_object('reason', 'bad refund amount')::text;
  end if;
  -- locked before reading, so two increments at once add up instead of one overwriting the other
  v_refunded := (private.lock_order(p_order_id)).refunded_amount;
  return public.record_refund_total(p_order_id, p_provider_ref, v_refunded + p_amount, p_currency);
end
$$;

revoke all on function public.record_refund(uuid, text, bigint, text) from public, anon, authenticated;
grant execute on function public.record_refund(uuid, text, bigint, text) to service_role;

-- ============================================================================================================
-- mark_fulfilled
-- ============================================================================================================
-- Why: records that a paid order left the shop (handed over or shipped). Stock was already deducted at payment,
-- so this only moves the status; idempotent like the other transitions.
create function public.mark_fulfilled(p_order_id uuid, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders%rowtype;
begin
  v_order := private.lock_order(p_order_id);
  if v_order.status = 'fulfilled' then
    return jsonb_build_object('result', 'already_fulfilled', 'order', public.get_order(p_order_id));
  end if;
  if v_order.status <> 'paid' then
    raise exception using errcode = 'SH410',
      message = format('invalid_transition: cannot fulfil an order that is %s', v_order.status),
      detail = jsonb_build_object('status', v_order.status)::text;
  end if;

  perform private.set_status_reason('fulfilled');
  update public.orders o
  set status = 'fulfilled', fulfilled_at = p_now
  where o.id = p_order_id and o.status = 'paid';
  perform private.set_status_reason(null);

  return jsonb_build_object('result', 'fulfilled', 'order', public.get_order(p_order_id));
end
$$;

revoke all on function public.mark_fulfilled(uuid, timestamptz) from public, anon, authenticated;
grant execute on function public.mark_fulfilled(uuid, timestamptz) to service_role;
