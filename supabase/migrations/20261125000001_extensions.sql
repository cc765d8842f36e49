-- Extensions the engine relies on. pg_cron schedules the reservation sweep inside the database (it must
-- be preloaded: the local stack and hosted Supabase both do); pgcrypto gives digest() for request hashes.
create extension if not exists pg_cron with schema pg_catalog;
create extension if not exists pgcrypto with schema extensions;
