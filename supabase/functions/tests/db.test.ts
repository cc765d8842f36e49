/**
 * withTx: the request context every transaction carries, and what `durable: false` changes (and only there);
 * withTxEarlyRelease and callOnceEarlyRelease: the commit does not wait for its flush, the call does; callOnce: one
 * statement carrying the request context.
 */
import assert from "node:assert/strict";
import { callOnce, callOnceEarlyRelease, db, flushStartedFromNow, withTx, withTxEarlyRelease } from "../_shared/db.ts";
import { mapError } from "../_shared/errors.ts";
import { dbTest } from "./support/shop.ts";

const ctx = { correlationId: "db-test", actor: "service" };

dbTest("withTx: a transaction carries the correlation id, actor and role, and commits durably by default", async () => {
  const [row] = await withTx(
    ctx,
    (tx) =>
      tx`select current_setting('app.correlation_id') as correlation_id, current_setting('app.actor') as actor,
              current_user as role, current_setting('synchronous_commit') as synchronous_commit`,
  );
  assert.deepEqual({ ...row }, {
    correlation_id: "db-test",
    actor: "service",
    role: "service_role",
    synchronous_commit: "on",
  });
});

dbTest("withTx: durable false commits without waiting for the WAL flush, for that transaction only", async () => {
  const [inside] = await withTx(
    { ...ctx, durable: false },
    (tx) => tx`select current_setting('synchronous_commit') as synchronous_commit, pg_backend_pid() as pid`,
  );
  assert.equal(inside.synchronous_commit, "off");
  // The next transaction on the same pooled connection is durable again (the setting was transaction-local).
  const [after] = await withTx(
    ctx,
    (tx) => tx`select current_setting('synchronous_commit') as synchronous_commit, pg_backend_pid() as pid`,
  );
  assert.equal(after.synchronous_commit, "on");
  assert.equal(after.pid, inside.pid, "expected the pool to hand back the same connection");
});

/** What a committed transaction saw: its synchronous_commit, its xid and the WAL position after its last write. */
interface Seen {
  synchronous_commit: string;
  xid: string;
  lsn: string;
}

/**
 * Runs `commit` (an early-release helper) and checks that it committed without waiting for the flush and resolved
 * only once the commit was on disk. The test cluster's WAL writer flushes asynchronous commits at most every 10 s
 * once it has flushed (PG_WAL_WRITER_DELAY in scripts/test.sh): so one flush first, and then nothing but the
 * barrier flushes the commit under test.
 */
async function assertFlushedOnReturn(commit: () => Promise<Seen>) {
  await withTx({ ...ctx, durable: false }, (tx) => tx`select pg_current_xact_id()`);
  await new Promise((r) => setTimeout(r, 100));
  const inside = await commit();
  assert.equal(inside.synchronous_commit, "off");
  const [after] = await db()`select pg_current_wal_flush_lsn() >= ${inside.lsn}::pg_lsn as flushed,
                                    pg_xact_status(${inside.xid}::xid8) as status`;
  assert.deepEqual({ ...after }, { flushed: true, status: "committed" });
}

dbTest(
  "withTxEarlyRelease: commits without waiting for the flush, and resolves only once the commit is on disk",
  async () => {
    await assertFlushedOnReturn(() =>
      withTxEarlyRelease(ctx, async (tx) => {
        const [row] = await tx`select current_setting('synchronous_commit') as synchronous_commit,
                                    pg_current_xact_id()::text as xid, pg_current_wal_insert_lsn()::text as lsn`;
        return row as unknown as Seen;
      })
    );
    // A callback that throws is passed through, with nothing waited for or committed.
    await assert.rejects(
      withTxEarlyRelease(ctx, async (tx) => {
        await tx`select 1`;
        throw new Error("refused");
      }),
      /refused/,
    );
  },
);

dbTest("callOnce: one statement, its own transaction, with the request context set before the call runs", async () => {
  const seen = await callOnce<Record<string, unknown>>(
    { ...ctx, claims: { sub: "u-1" } },
    (sql) =>
      sql`jsonb_build_object('correlation_id', current_setting('app.correlation_id'),
                              'actor', current_setting('app.actor'),
                              'sub', current_setting('request.jwt.claims')::jsonb ->> 'sub',
                              'synchronous_commit', current_setting('synchronous_commit'))`,
  );
  assert.deepEqual(seen, {
    correlation_id: "db-test",
    actor: "service",
    sub: "u-1",
    synchronous_commit: "on",
  });
  // The statement was its transaction: once it returned, its transaction-local settings were gone.
  const [after] = await db()`select current_setting('app.actor', true) as actor`;
  assert.ok(!after.actor, `app.actor leaked: ${after.actor}`);
  // An RLS role cannot apply to a call Postgres has already checked: refused before anything runs.
  await assert.rejects(callOnce({ ...ctx, role: "authenticated" }, (sql) => sql`1`), /RLS role/);
});

dbTest(
  "callOnceEarlyRelease: commits without waiting for the flush, and resolves only once the commit is on disk",
  async () => {
    await assertFlushedOnReturn(() =>
      callOnceEarlyRelease<Seen>(
        ctx,
        (sql) =>
          sql`jsonb_build_object('synchronous_commit', current_setting('synchronous_commit'),
                                'xid', pg_current_xact_id()::text, 'lsn', pg_current_wal_insert_lsn()::text)`,
      )
    );
    // A call that raises is passed through (and, one statement, changed nothing).
    await assert.rejects(callOnceEarlyRelease(ctx, (sql) => sql`1 / 0`), /division by zero/);
  },
);

dbTest(
  "early release at once: every call is on disk when they resolve, and the calls share their flush waits",
  async () => {
    const calls = 16;
    const before = flushStartedFromNow.started;
    const seen = await Promise.all(Array.from({ length: calls }, () =>
      callOnceEarlyRelease<Seen>(
        ctx,
        (sql) =>
          sql`jsonb_build_object('synchronous_commit', current_setting('synchronous_commit'),
                              'xid', pg_current_xact_id()::text, 'lsn', pg_current_wal_insert_lsn()::text)`,
      )));
    const waits = flushStartedFromNow.started - before;
    const [after] = await db()`select bool_and(pg_current_wal_flush_lsn() >= l::pg_lsn) as flushed,
                                    count(*) filter (where pg_xact_status(x::xid8) = 'committed')::int as committed
                             from unnest(${seen.map((s) => s.lsn)}::text[], ${
      seen.map((s) => s.xid)
    }::text[]) as c (l, x)`;
    assert.deepEqual({ ...after }, { flushed: true, committed: calls });
    assert.ok(waits >= 1 && waits < calls, `expected the ${calls} calls to share flush waits, got ${waits} waits`);
  },
);

dbTest(
  "withTx: a connection the database ends mid-transaction fails that request with a 503, and the process and the " +
    "pool carry on (postgres.js 3.4.9 wrote its ROLLBACK onto the closed socket and ended the process)",
  async (sql) => {
    let pid: number | undefined;
    // (its failure is taken at once: it may come before pg_terminate_backend's own answer does, and a rejection
    // nobody handles yet fails the test file)
    const open = withTx(ctx, async (tx) => {
      const [row] = await tx`select pg_backend_pid() as pid`;
      pid = row.pid as number;
      await tx`select pg_sleep(5)`;
    }).then(() => null, (err: unknown) => err);
    while (pid === undefined) await new Promise((r) => setTimeout(r, 20));
    await sql`select pg_terminate_backend(${pid})`;
    const err = await open;
    assert.ok(err, "the transaction on the terminated connection failed");
    assert.equal(mapError(err).status, 503);
    assert.equal(mapError(err).body.error.code, "temporarily_unavailable");
    // Let any write the driver queued for the dead connection run: postgres.js 3.4.9 wrote its ROLLBACK there from
    // a setImmediate callback, an uncaught TypeError that ended this test process (porsager/postgres#1208).
    await new Promise((r) => setTimeout(r, 50));
    // The next transactions run at once on a new connection. With a pool of one, the connection the driver left
    // unusable would be the one reopened, and would wait for connect_timeout (5 s) and fail.
    const started = performance.now();
    for (let i = 0; i < 3; i++) {
      const [row] = await withTx(ctx, (tx) => tx`select pg_backend_pid() as pid`);
      assert.notEqual(row.pid, pid);
    }
    assert.ok(performance.now() - started < 2000, `took ${Math.round(performance.now() - started)} ms`);
  },
  { DB_POOL_MAX: "1" },
);
