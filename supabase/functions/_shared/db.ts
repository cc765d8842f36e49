/**
 * Postgres access for the doors: one lazily created postgres.js pool over SUPABASE_DB_URL, and a helper that
 * runs a callback in one transaction carrying the request context the engine's triggers read
 * (app.correlation_id, app.actor) and, for RLS-governed reads, the caller's role and JWT claims.
 */
import postgres from "postgres";
import { dbPoolMax, dbUrl } from "./env.ts";
import { sharedRunFromNow } from "./shared-run.ts";

/** The pool's query function. */
export type Sql = postgres.Sql;
/** A query function bound to one open transaction. */
export type Tx = postgres.TransactionSql;
/** A piece of SQL built with a query function and not run yet (an engine call expression for callOnce). */
export type Fragment = postgres.PendingQuery<postgres.Row[]>;

/** Database roles a transaction may run as; the union keeps role names out of reach of request data. */
export type DbRole = "service_role" | "authenticated" | "anon";

/** What the engine needs to know about who is acting, per transaction (docs/engine-contract.md). */
export interface TxContext {
  correlationId: string;
  /** `user:<uuid>`, `anon`, `staff:<uuid>`, `stripe`, `sumup` or `service`. */
  actor: string;
  /**
   * Role for the transaction. service_role (the default) may call the engine's entry points; authenticated/anon
   * make RLS decide, as PostgREST does.
   */
  role?: DbRole;
  /** The verified JWT claims, for auth.uid()/auth.jwt() in RLS policies. */
  claims?: Record<string, unknown>;
  /**
   * False: the commit does not wait for its WAL flush (synchronous_commit off for this transaction only). For
   * writes whose loss in a crash is harmless, such as a rate-limit counter: WAL is written in order, so the next
   * durable commit (the order itself) flushes it anyway. Default true.
   */
  durable?: boolean;
}

let pool: { url: string; sql: Sql } | null = null;

/** The shared pool, created on first use (and again if SUPABASE_DB_URL changed, as tests may do). */
export function db(): Sql {
  const url = dbUrl();
  if (pool && pool.url === url) return pool.sql;
  if (pool) void pool.sql.end({ timeout: 1 });
  const sql = postgres(url, {
    // Supavisor / PgBouncer in transaction mode cannot keep named prepared statements across transactions.
    prepare: false,
    max: dbPoolMax(),
    // Edge instances are short-lived: release idle connections early so the pooler's slots are not hoarded.
    idle_timeout: 20,
    connect_timeout: 5,
    connection: { application_name: "stockhold-functions" },
    // The engine's NOTICEs are for psql sessions, not for function logs.
    onnotice: () => {},
  });
  pool = { url, sql };
  return sql;
}

/** Closes the pool (tests, shutdown). */
export async function closeDb(): Promise<void> {
  const current = pool;
  pool = null;
  if (current) await current.sql.end({ timeout: 5 });
}

/**
 * Runs `fn` in one transaction with the request context set (transaction-local, so a pooled connection
 * carries nothing over to the next request). Commits when `fn` resolves, rolls back when it throws.
 */
export function withTx<T>(ctx: TxContext, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const role: DbRole = ctx.role ?? "service_role";
  const claims = JSON.stringify(ctx.claims ?? {});
  return db().begin(async (tx) => {
    // One round trip: set_config('role', ..) is SET LOCAL ROLE, as PostgREST does it. A durable transaction
    // leaves synchronous_commit as the database has it (which may be stricter than on, with replicas).
    const notDurable = ctx.durable === false ? tx`, set_config('synchronous_commit', 'off', true)` : tx``;
    await tx`select set_config('app.correlation_id', ${ctx.correlationId}, true),
                    set_config('app.actor', ${ctx.actor}, true),
                    set_config('request.jwt.claims', ${claims}, true),
                    set_config('role', ${role}, true)
                    ${notDurable}`;
    return await fn(tx);
  }) as Promise<T>;
}

/**
 * One engine call as one statement, which Postgres runs as a transaction of its own:
 * `select <call> as result from (select set_config(...), ...) as ctx`. The request context is set when ctx's row
 * is made, before the call in the select list is evaluated for that row. There is no BEGIN or COMMIT to send: one
 * round trip instead of four, and a row the call locks (a hot product's stock row, an address's rate-limit bucket)
 * is released by the commit that ends the statement on the server, never held while this busy event loop gets
 * round to sending COMMIT (BENCHMARKS.md: that wait was most of the time the rows were held over HTTP).
 * For a call that needs no other statement in its transaction and no RLS: Postgres checks EXECUTE as the statement
 * starts, before a role set inside it would apply, so the call runs as the functions' database login (the engine's
 * entry points are security definer); reads that RLS decides use withTx.
 */
export async function callOnce<T>(ctx: TxContext, call: (sql: Sql) => Fragment): Promise<T> {
  if (ctx.role && ctx.role !== "service_role") throw new Error("callOnce cannot take an RLS role; use withTx");
  const sql = db();
  const notDurable = ctx.durable === false ? sql`, set_config('synchronous_commit', 'off', true)` : sql``;
  const rows = await sql`select ${call(sql)} as result
                         from (select set_config('app.correlation_id', ${ctx.correlationId}, true),
                                      set_config('app.actor', ${ctx.actor}, true),
                                      set_config('request.jwt.claims', ${JSON.stringify(ctx.claims ?? {})}, true)
                                      ${notDurable}) as ctx`;
  return single<T>(rows);
}

/**
 * Early lock release: the commit does not wait for its WAL flush, so the rows the transaction locked are free as
 * soon as the commit record is written instead of after the disk has answered; then a second, tiny transaction
 * (public.wait_for_flush, shared with the requests that commit meanwhile: flushStartedFromNow) waits until that
 * commit is on disk. Resolves only then, so nothing is answered that a crash could take back. A hot product's stock
 * row is held by each buyer from its UPDATE to its commit, and a flush inside that window made every buyer queue on
 * the disk (BENCHMARKS.md). When the call throws nothing is waited for: a refusal changed nothing.
 */
export async function withTxEarlyRelease<T>(ctx: TxContext, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return await flushed(withTx({ ...ctx, durable: false }, fn));
}

/** {@link callOnce} with early lock release (see {@link withTxEarlyRelease}). */
export async function callOnceEarlyRelease<T>(ctx: TxContext, call: (sql: Sql) => Fragment): Promise<T> {
  return await flushed(callOnce<T>({ ...ctx, durable: false }, call));
}

async function flushed<T>(committed: Promise<T>): Promise<T> {
  const result = await committed;
  await flushStartedFromNow();
  return result;
}

/**
 * Flush waits are shared (sharedRunFromNow): WAL is flushed in order, so one wait_for_flush that starts after a
 * commit has returned covers it and every other commit that returned before that wait began. With many requests at
 * once this is group commit across them; the flush transaction (a round trip, WAL, a commit, the wake-up) cost about
 * a quarter of an order's CPU when every order ran its own.
 */
export const flushStartedFromNow = sharedRunFromNow(() => db()`select public.wait_for_flush()`);

/** The single value of a one-row, one-column result (`select f(...) as result`). */
export function single<T>(rows: readonly Record<string, unknown>[]): T {
  const row = rows[0];
  if (!row) throw new Error("expected one row, got none");
  return Object.values(row)[0] as T;
}
