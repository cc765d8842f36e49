/**
 * withTx: the request context every transaction carries, and what `durable: false` changes (and only there);
 * withTxEarlyRelease: the commit does not wait for its flush, the call does.
 */
import assert from "node:assert/strict";
import { closeDb, db, withTx, withTxEarlyRelease } from "../_shared/db.ts";

const ctx = { correlationId: "db-test", actor: "service" };

Deno.test("withTx: a transaction carries the correlation id, actor and role, and commits durably by default", async () => {
  try {
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
  } finally {
    await closeDb();
  }
});

Deno.test("withTx: durable false commits without waiting for the WAL flush, for that transaction only", async () => {
  try {
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
  } finally {
    await closeDb();
  }
});

Deno.test("withTxEarlyRelease: commits without waiting for the flush, and resolves only once the commit is on disk", async () => {
  try {
    // The test cluster's WAL writer flushes asynchronous commits at most every 10 s (PG_WAL_WRITER_DELAY in
    // scripts/test.sh) once it has flushed: so one flush now, and nothing but the barrier flushes the next commit.
    await withTx({ ...ctx, durable: false }, (tx) => tx`select pg_current_xact_id()`);
    await new Promise((r) => setTimeout(r, 100));
    // The WAL position after the transaction's last write: its commit record lies beyond it.
    const inside = await withTxEarlyRelease(
      ctx,
      async (tx) => {
        const [row] = await tx`select current_setting('synchronous_commit') as synchronous_commit,
                                      pg_current_xact_id()::text as xid, pg_current_wal_insert_lsn()::text as lsn`;
        return row;
      },
    );
    assert.equal(inside.synchronous_commit, "off");
    const [after] = await db()`select pg_current_wal_flush_lsn() >= ${inside.lsn}::pg_lsn as flushed,
                                      pg_xact_status(${inside.xid}::xid8) as status`;
    assert.deepEqual({ ...after }, { flushed: true, status: "committed" });

    // A callback that throws is passed through, with nothing waited for or committed.
    await assert.rejects(
      withTxEarlyRelease(ctx, async (tx) => {
        await tx`select 1`;
        throw new Error("refused");
      }),
      /refused/,
    );
  } finally {
    await closeDb();
  }
});
