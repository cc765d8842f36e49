/** withTx: the request context every transaction carries, and what `durable: false` changes (and only there). */
import assert from "node:assert/strict";
import { closeDb, withTx } from "../_shared/db.ts";

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
