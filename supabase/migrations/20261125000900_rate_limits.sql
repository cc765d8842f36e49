-- Rate limits: a fixed-window counter per bucket, so the doors can refuse floods (order creation per IP or per
-- customer) with one call and without another service.

-- ============================================================================================================
-- rate_limits
-- ============================================================================================================
-- Why: one row per bucket (e.g. 'orders-create:ip:203.0.113.7'): how many requests were let through in the
-- current window and when that window resets. Old rows are pruned by a pg_cron job (expiry_cron migration).
-- (its single-value rules as domains: rate_limit_hit writes the table on every request; see
-- 20261125000200_catalogue.sql, Domains)
create domain private.rate_limit_bucket as text check (length(value) between 1 and 200);
create domain private.hit_count as integer check (value >= 0);

create table private.rate_limits (
  bucket private.rate_limit_bucket primary key,
  hits private.hit_count not null,
  window_started_at timestamptz not null,
  resets_at timestamptz not null,
  constraint rate_limits_window check (resets_at > window_started_at)
);
comment on table private.rate_limits is 'Fixed-window request counters per bucket (rate_limit_hit).';

create index rate_limits_resets_idx on private.rate_limits (resets_at);

alter table private.rate_limits enable row level security;
revoke all on private.rate_limits from public, anon, authenticated, service_role;

-- ============================================================================================================
-- rate_limit_hit
-- ============================================================================================================
-- Why: counts one request against p_bucket. Returns 0 when it is allowed (and counted), otherwise the whole
-- seconds until the window resets (the refused request is not counted, so a client that waits gets through).
-- The bucket row is locked for the decision, so concurrent requests cannot both take the last slot.
create function public.rate_limit_hit(
  p_bucket text,
  p_limit integer,
  p_window_seconds integer,
  p_now timestamptz default now()
)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row private.rate_limits%rowtype;
begin
  if p_bucket is null or length(p_bucket) not between 1 and 200
     or p_limit is null or p_limit < 1
     or p_window_seconds is null or p_window_seconds < 1 or p_window_seconds > 86400 * 31
     or p_now is null then
    raise exception using errcode = 'SH400',
      message = 'invalid_request: rate_limit_hit needs a bucket (1..200 chars), a limit >= 1 and a window of 1 s..31 days',
      detail = jsonb_build_object('reason', 'bad rate limit arguments')::text;
  end if;

  insert into private.rate_limits (bucket, hits, window_started_at, resets_at)
  values (p_bucket, 0, p_now, p_now + make_interval(secs => p_window_seconds))
  on conflict (bucket) do nothing;

  select * into strict v_row from private.rate_limits r where r.bucket = p_bucket for update;

  if v_row.resets_at <= p_now then
    -- the window is over: start a new one with this request
    update private.rate_limits r
    set hits = 1, window_started_at = p_now, resets_at = p_now + make_interval(secs => p_window_seconds)
    where r.bucket = p_bucket;
    return 0;
  end if;

  if v_row.hits < p_limit then
    update private.rate_limits r set hits = r.hits + 1 where r.bucket = p_bucket;
    return 0;
  end if;

  return greatest(1, ceil(extract(epoch from v_row.resets_at - p_now)))::integer;
end
$$;

revoke all on function public.rate_limit_hit(text, integer, integer, timestamptz) from public, anon, authenticated;
grant execute on function public.rate_limit_hit(text, integer, integer, timestamptz) to service_role;
