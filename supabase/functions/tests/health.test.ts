/** `health` through the gateway with the real supabase-js client, as a frontend would call it. */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import postgres from "postgres";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { closeDb } from "../_shared/db.ts";
import { ANON_KEY } from "./support/keys.ts";

Deno.test("health answers through the gateway with supabase-js: database reachable, latest migration", async () => {
  const gw = await startGateway();
  try {
    const supabase = createClient(gw.url, ANON_KEY, { auth: { persistSession: false } });
    const { data, error } = await supabase.functions.invoke("health", { method: "GET" });
    assert.equal(error, null);
    const sql = postgres(Deno.env.get("SUPABASE_DB_URL")!, { max: 1 });
    const [{ version }] = await sql`select max(version) as version from supabase_migrations.schema_migrations`;
    await sql.end();
    assert.deepEqual(data, { status: "ok", database: "reachable", migration: version });
  } finally {
    await gw.shutdown();
    await closeDb();
  }
});

Deno.test("health refuses a call without a JWT, through supabase-js with a bad key", async () => {
  const gw = await startGateway();
  try {
    const supabase = createClient(gw.url, "not-a-valid-key", { auth: { persistSession: false } });
    const { error } = await supabase.functions.invoke("health", { method: "GET" });
    assert.ok(error, "expected an error");
    assert.equal((error as { context: Response }).context.status, 401);
  } finally {
    await gw.shutdown();
  }
});

Deno.test("health answers 503 when the database is unreachable", async () => {
  const saved = Deno.env.get("SUPABASE_DB_URL")!;
  Deno.env.set("SUPABASE_DB_URL", "postgresql://postgres:postgres@127.0.0.1:1/postgres");
  try {
    const { handler } = await import("../health/handler.ts");
    const res = await handler(new Request("http://local/health"));
    assert.equal(res.status, 503);
    assert.equal((await res.json()).database, "unreachable");
  } finally {
    Deno.env.set("SUPABASE_DB_URL", saved);
    await closeDb();
  }
});
