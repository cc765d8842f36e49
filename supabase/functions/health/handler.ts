/**
 * `health`: is the database reachable, and which migration is it on. For load balancers and operators;
 * answers 503 when the database cannot be reached, without saying why (the log does).
 */
import { db } from "../_shared/db.ts";

/** Answers `{ status, database, migration }`. */
export async function handler(_req: Request): Promise<Response> {
  try {
    // The Supabase CLI records each applied migration here, locally and on hosted Supabase alike.
    const rows = await db()`select max(version) as version from supabase_migrations.schema_migrations`;
    return Response.json({ status: "ok", database: "reachable", migration: rows[0]?.version ?? null });
  } catch (err) {
    console.error(JSON.stringify({ level: "error", msg: "health: database unreachable", error: String(err) }));
    return Response.json({ status: "unavailable", database: "unreachable", migration: null }, { status: 503 });
  }
}
