/**
 * `npm start` as a developer runs it: a cluster of its own from nothing, migrations and seed through the Supabase
 * CLI, the status block, the functions served (reached with supabase-js); a second start says the stack is already
 * running; `npm run db:reset` rebuilds it from migrations and seed; `npm run stop` stops the database. Uses its own stack name and ports, so it never touches the dev stack.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import postgres from "postgres";
import { ANON_KEY, PUBLISHABLE_KEY } from "./support/keys.ts";

const root = new URL("../../../", import.meta.url).pathname;
// Ports below Linux's ephemeral range (32768-60999): this test binds them after the suites before it have opened
// thousands of client connections, and a client socket that had taken 54422 as its own port, still in TIME_WAIT,
// once kept Postgres from listening there ("Address already in use").
const env = { STACK_NAME: "starttest", DB_PORT: "24422", API_PORT: "24421", NO_COLOR: "1" };

// The API keys are left to the stack's own settings (.env.example), not inherited from the test runner's.
const unset = ["SUPABASE_PUBLISHABLE_KEYS", "SUPABASE_SECRET_KEYS", "SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY"];

function script(name: string) {
  return new Deno.Command("env", {
    args: [...unset.flatMap((v) => ["-u", v]), "bash", `scripts/${name}.sh`],
    cwd: root,
    env,
    stdout: "piped",
    stderr: "piped",
  });
}

async function readUntil(stream: ReadableStream<Uint8Array>, marker: string, timeoutMs: number): Promise<string> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + timeoutMs;
  try {
    while (!seen.includes(marker)) {
      if (Date.now() > deadline) throw new Error(`no "${marker}" within ${timeoutMs} ms; output so far:\n${seen}`);
      const { value, done } = await reader.read();
      if (done) throw new Error(`the process ended before "${marker}"; output:\n${seen}`);
      seen += value;
    }
    return seen;
  } finally {
    reader.releaseLock();
  }
}

Deno.test({
  name:
    "npm start brings the stack up from nothing, db:reset rebuilds it, a second start is refused, npm run stop stops it",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // (a stack an interrupted earlier run left behind is stopped first, or this start would find it running)
    await script("stop").output();
    await Deno.remove(`${root}.stack/starttest`, { recursive: true }).catch(() => {});
    const first = script("start").spawn();
    try {
      // The status block goes to stdout, progress and the gateway's line to stderr.
      const [status] = await Promise.all([
        readUntil(first.stdout, "SumUp webhook", 180_000),
        readUntil(first.stderr, "functions served at", 180_000),
      ]);
      for (
        const line of [
          "API URL: http://127.0.0.1:24421",
          "DB URL: postgresql://postgres:postgres@127.0.0.1:24422/postgres",
          `anon key: ${ANON_KEY}`,
          "service_role key:",
          `Publishable key: ${PUBLISHABLE_KEY}`,
          "Secret key: sb_secret_",
        ]
      ) {
        assert.ok(status.includes(line), `status block shows "${line}"`);
      }

      const supabase = createClient("http://127.0.0.1:24421", ANON_KEY, { auth: { persistSession: false } });
      const { data, error } = await supabase.functions.invoke("health", { method: "GET" });
      assert.equal(error, null);
      assert.equal(data.database, "reachable");
      const products = await supabase.functions.invoke("products-list", { method: "GET" });
      assert.ok(products.data.items.length > 0, "the seed's catalogue is served");
      // The publishable key the status block prints opens the same doors (the stack's own settings, not a test's).
      const keyed = createClient("http://127.0.0.1:24421", PUBLISHABLE_KEY, { auth: { persistSession: false } });
      const viaKey = await keyed.functions.invoke("products-list", { method: "GET" });
      assert.equal(viaKey.error, null);
      assert.ok(viaKey.data.items.length > 0, "the catalogue is served to the publishable key");

      // npm run db:reset: back to migrations + seed (supabase db reset --db-url), while the stack runs.
      const sql = postgres("postgresql://postgres:postgres@127.0.0.1:24422/postgres", { max: 1, onnotice: () => {} });
      try {
        await sql`insert into public.products (sku, name, unit_price) values ('RESET-ME', 'Gone after reset', 100)`;
        const reset = await script("db-reset").output();
        assert.ok(reset.success, new TextDecoder().decode(reset.stderr));
        const [{ gone, seeded }] = await sql`
          select not exists (select 1 from public.products where sku = 'RESET-ME') as gone,
                 (select count(*)::int from public.products) as seeded`;
        assert.equal(gone, true);
        assert.ok(seeded > 0, "the seed is applied again");
      } finally {
        await sql.end();
      }

      const second = await script("start").output();
      assert.equal(second.success, false);
      assert.match(new TextDecoder().decode(second.stderr), /already running/);
    } finally {
      // (a start that failed has ended already; the database it started is stopped all the same)
      try {
        first.kill("SIGTERM");
      } catch {
        // it has ended
      }
      await first.status;
      const stop = await script("stop").output();
      assert.match(new TextDecoder().decode(stop.stderr), /stopped the starttest database/);
      await Deno.remove(`${root}.stack/starttest`, { recursive: true }).catch(() => {});
    }
    const again = await script("stop").output();
    assert.match(new TextDecoder().decode(again.stderr), /not running/);
  },
});
