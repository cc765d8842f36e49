/**
 * Containment for a postgres.js 3.4.9 defect (porsager/postgres#1208, fix proposed in #1209, unreleased): when
 * the database ends a connection while a transaction is open on it (a restart, a failover, pg_terminate_backend, a
 * pooler reset), sql.begin() answers CONNECTION_CLOSED as it should, then sends its own ROLLBACK on the dead
 * connection. That write is flushed from a setImmediate callback onto a socket that is already null, so it throws
 * where no caller can catch it, and the uncaught TypeError ends the whole process: every function served by it
 * (the local gateway serves them all in one). The connection is left unusable too: its unsent bytes and stale
 * timer block its next start-up, so a later query on it waits for connect_timeout and fails.
 *
 * The guard recognises exactly that error, keeps the process alive and tells db.ts to retire the pool, whose
 * next use then opens fresh connections. Remove it once postgres.js ships the fix.
 */

/** True for the driver's write-after-close TypeError (thrown from nextWrite in postgres.js's connection.js). */
export function isWriteAfterClose(err: unknown): boolean {
  return err instanceof TypeError && /\bnextWrite\b/.test(err.stack ?? "") &&
    /\bpostgres\b[^\n]*\bconnection\.js/.test(err.stack ?? "");
}

let installed = false;
let onCrash: () => void = () => {};

/**
 * Installs the guard once per process; `retire` is called on every caught crash (the latest caller's wins, so a
 * reloaded db.ts keeps working). Any other uncaught error is left to the runtime, which still ends the process.
 * Returns false where the runtime refuses a global listener (some hosted edge runtimes have thrown on
 * addEventListener): the functions then run as before, without the guard, rather than failing every request.
 */
export function guardWriteAfterClose(retire: () => void): boolean {
  onCrash = retire;
  if (installed) return true;
  try {
    globalThis.addEventListener("error", (event: ErrorEvent) => {
      if (!isWriteAfterClose(event.error)) return;
      event.preventDefault();
      onCrash();
    });
  } catch {
    return false;
  }
  installed = true;
  return true;
}
