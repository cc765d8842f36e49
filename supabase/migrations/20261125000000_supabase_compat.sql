-- What hosted Supabase already provides, created only where it is missing (the local stack's bare
-- Postgres). On hosted Supabase the auth schema exists, so this migration changes nothing there.
-- Kept in a migration rather than in the cluster bootstrap so that `supabase db reset --db-url`,
-- which drops every non-system schema, rebuilds it before the migrations that rely on it.
do $compat$
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    return;
  end if;

  create schema auth;
  grant usage on schema auth to anon, authenticated, service_role;

  -- A minimal auth.users: orders reference the signed-in customer by id.
  create table auth.users (
    id uuid primary key,
    email text,
    raw_app_meta_data jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
  );

  -- The claim readers, as Supabase defines them: PostgREST (and our edge functions) put the verified
  -- JWT's claims in request.jwt.claims for the transaction.
  create function auth.jwt() returns jsonb language sql stable as $f$
    select coalesce(
      nullif(current_setting('request.jwt.claim', true), ''),
      nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
  $f$;

  create function auth.uid() returns uuid language sql stable as $f$
    select coalesce(
      nullif(current_setting('request.jwt.claim.sub', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
  $f$;

  create function auth.role() returns text language sql stable as $f$
    select coalesce(
      nullif(current_setting('request.jwt.claim.role', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
  $f$;

  grant execute on function auth.jwt(), auth.uid(), auth.role() to anon, authenticated, service_role;
end
$compat$;
