-- rate_limit_hit: a fixed window per bucket; requests up to the limit are let through and counted, the next ones
-- are told how many seconds remain and are not counted; a new window starts when the old one ends.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;
select plan(9);

select '2030-01-01 12:00:00+00' as t0 \gset

select is(public.rate_limit_hit('test:ip:1', 2, 60, :'t0'), 0, 'rate_limit_first: the first request is allowed');
select is(public.rate_limit_hit('test:ip:1', 2, 60, :'t0'::timestamptz + interval '1 second'), 0,
  'rate_limit_up_to_limit: requests up to the limit are allowed');
select is(public.rate_limit_hit('test:ip:1', 2, 60, :'t0'::timestamptz + interval '20 seconds'), 40,
  'rate_limit_refused: the request over the limit is told the seconds until the window resets');
select is(public.rate_limit_hit('test:ip:1', 2, 60, :'t0'::timestamptz + interval '59.5 seconds'), 1,
  'rate_limit_rounds_up: less than a second left is answered as one second');
select is((select hits::int from private.rate_limits where bucket = 'test:ip:1'), 2,
  'rate_limit_refused_not_counted: refused requests are not counted');
select is(public.rate_limit_hit('test:ip:2', 2, 60, :'t0'::timestamptz + interval '20 seconds'), 0,
  'rate_limit_per_bucket: another bucket has its own window');
select is(public.rate_limit_hit('test:ip:1', 2, 60, :'t0'::timestamptz + interval '60 seconds'), 0,
  'rate_limit_new_window: when the window ends, a new one starts with this request');
select is(
  (select format('%s %s', hits, resets_at = :'t0'::timestamptz + interval '120 seconds') from private.rate_limits
   where bucket = 'test:ip:1'),
  '1 t',
  'rate_limit_window_state: the new window counts one request and resets a full window later');
select throws_ok($$select public.rate_limit_hit('test:ip:3', 0, 60)$$, 'SH400', null,
  'rate_limit_bad_limit: a limit below 1 is refused');

select * from finish();
rollback;
