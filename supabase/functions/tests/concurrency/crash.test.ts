/**
 * Crash recovery: a throwaway cluster of its own (STACK_NAME=crash, a free port; never the shared test
 * database) under a concurrent load of orders, payments, cancels, restocks and sweeps has its postmaster killed
 * with SIGKILL, is restarted (crash recovery from the WAL), and must come back whole: ledger sums equal the
 * stored stock, reserved equals the active reservations, no order half-written, nothing negative, and every
 * change a client saw acknowledged is still there: orders too, which are committed as orders-create commits them
 * (without waiting for the flush, then acknowledged after public.wait_for_flush).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { checkInvariants, formatProblems } from "../../../../scripts/check.ts";

const ROOT = new URL("../../../../", import.meta.url).pathname;
const STACK = "crash";
/**
 * A free port for the cluster: CRASH_DB_PORT, else the first free one of a few, below Linux's ephemeral range
 * (32768-60999), where no client connection of the suites can be holding it when the cluster (re)starts (others'
 * stacks use 543x2).
 */
function freePort(): number {
  const wanted = Deno.env.get("CRASH_DB_PORT");
  if (wanted) return Number(wanted);
  for (const port of [24397, 24398, 24399, 24393, 24394, 24395, 24396]) {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken: try the next
    }
  }
  throw new Error("no free port for the crash cluster (set CRASH_DB_PORT)");
}
const PORT = freePort();
const URL_ = `postgresql://postgres:postgres@127.0.0.1:${PORT}/postgres`;
const WORKERS = 12;
const LOAD_MS = 2500;

/** Runs a stack script with this cluster's settings; throws with its output when it fails. */
async function stackScript(args: string[]): Promise<void> {
  const out = await new Deno.Command("bash", {
    args,
    cwd: ROOT,
    env: { STACK_NAME: STACK, DB_PORT: String(PORT), API_PORT: "0", PG_FSYNC: "on" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`bash ${args.join(" ")} failed:\n${text.slice(-3000)}`);
  }
}

async function pgdata(): Promise<string> {
  return `${await Deno.realPath(`${ROOT}.stack/${STACK}`)}/pgdata`;
}

/** The postmaster's pid: the first line of postmaster.pid. */
async function postmasterPid(): Promise<number> {
  const text = await Deno.readTextFile(`${await pgdata()}/postmaster.pid`);
  return Number(text.split("\n")[0]);
}

/** Pids of the postmaster's children (backends, checkpointer, WAL writer, ...), from /proc. */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${e.name}/stat`);
      // Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after its ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(e.name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

async function stopCluster() {
  const bin = (await Array.fromAsync(Deno.readDir("/usr/lib/postgresql"))).map((e) => e.name).sort().at(-1);
  const data = await pgdata().catch(() => null);
  if (!bin || !data) return;
  const asOwner = Deno.uid() === 0 ? ["runuser", "-u", "postgres", "--"] : [];
  await new Deno.Command(asOwner[0] ?? `/usr/lib/postgresql/${bin}/bin/pg_ctl`, {
    args: [
      ...asOwner.slice(1),
      ...(asOwner.length ? [`/usr/lib/postgresql/${bin}/bin/pg_ctl`] : []),
      "-D",
      data,
      "-m",
      "immediate",
      "stop",
    ],
    cwd: "/",
    stdout: "null",
    stderr: "null",
  }).output();
}

/** What clients were told: each acknowledged change must survive the crash. */
interface Acks {
  created: Map<string, { product_id: string; quantity: number }[]>;
  paid: Set<string>;
  cancelled: Set<string>;
  restocked: Map<string, number>;
  engineErrors: string[];
}

/** One client: create orders, pay or cancel some, restock now and then, until the database goes away. */
async function worker(sql: postgres.Sql, n: number, products: string[], acks: Acks, stop: { now: boolean }) {
  let i = 0;
  while (!stop.now) {
    i++;
    try {
      const items = [0, 1, 2].slice(0, 1 + ((n + i) % 3)).map((k) => ({
        product_id: products[(n + i + k * 2) % products.length],
        quantity: 1 + ((n * 7 + i + k) % 3),
      }));
      let order: { id: string; total: number; payment_method: string } | null = null;
      try {
        const method = (n + i) % 2 ? "sumup" : "stripe";
        // As orders-create commits it (withTxEarlyRelease): asynchronously, so the stock rows are released before
        // the WAL flush, then acknowledged only after public.wait_for_flush. Every such order must survive.
        // (one statement is its own transaction, so the transaction-local setting holds for its commit)
        const [{ r }] = await sql`select set_config('synchronous_commit', 'off', true),
                                         public.create_order(${sql.json(items)}::jsonb, ${method},
                                                             ${crypto.randomUUID()}, null) as r`;
        await sql`select public.wait_for_flush()`;
        order = r.order;
        acks.created.set(order!.id, items);
      } catch (err) {
        if ((err as { code?: string }).code !== "SH409") throw err;
      }
      if (order && i % 3 === 0) {
        const [{ r }] = await sql`select public.mark_paid(${order.id}::uuid, ${order.payment_method}, ${"ref-" + i},
                                     ${order.total}::bigint, 'EUR') as r`;
        if (r.result === "paid") acks.paid.add(order.id);
      } else if (order && i % 3 === 1) {
        await sql`select public.cancel_order(${order.id}::uuid, 'crash test')`;
        acks.cancelled.add(order.id);
      }
      if (i % 10 === 0) {
        const p = products[(n + i) % products.length];
        await sql`select public.restock(${p}::uuid, ${i % 20 ? "shop" : "warehouse"}, 5, 'crash test')`;
        acks.restocked.set(p, (acks.restocked.get(p) ?? 0) + 5);
      }
      if (n === 0 && i % 7 === 0) {
        // The sweep, at a time by which every reservation made so far has lapsed.
        await sql`select public.expire_reservations(now() + interval '40 minutes', 50)`;
      }
    } catch (err) {
      const code = (err as { code?: string }).code ?? "";
      // The crash: the connection breaks, or the server says it is going down / in recovery.
      if (stop.now || /^(ECONN|EPIPE|CONNECT|CONNECTION_)/.test(code) || /^57P0|^08/.test(code)) return;
      acks.engineErrors.push(`${code} ${String(err).slice(0, 200)}`);
      return;
    }
  }
}

Deno.test({
  name: "crash: kill -9 of the postmaster under concurrent load; after restart every invariant holds and " +
    "every acknowledged change survived",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await stackScript(["scripts/db-up.sh", "--fresh"]);
    let sql: postgres.Sql | null = null;
    let passed = false;
    try {
      sql = postgres(URL_, {
        max: WORKERS + 2,
        prepare: false,
        onnotice: () => {},
        connect_timeout: 3,
        idle_timeout: 2,
      });
      const products: string[] = [];
      for (let i = 0; i < 6; i++) {
        const [p] = await sql`insert into public.products (sku, name, unit_price, tax_rate_bp)
                              values (${`CRASH-${i}`}, ${`Crash ${i}`}, ${500 + i * 250}, 1900) returning id`;
        await sql`select public.restock(${p.id}::uuid, 'shop', 40, 'crash seed'),
                         public.restock(${p.id}::uuid, 'warehouse', 40, 'crash seed')`;
        products.push(p.id);
      }

      const acks: Acks = {
        created: new Map(),
        paid: new Set(),
        cancelled: new Set(),
        restocked: new Map(),
        engineErrors: [],
      };
      const stop = { now: false };
      const workers = Array.from({ length: WORKERS }, (_, n) => worker(sql!, n, products, acks, stop));
      await new Promise((r) => setTimeout(r, LOAD_MS));

      // The crash: SIGKILL to the postmaster only, mid-load, as an OOM killer would do it.
      const pid = await postmasterPid();
      const children = await childrenOf(pid);
      const createdBefore = acks.created.size;
      Deno.kill(pid, "SIGKILL");
      const loadOutcome = await Promise.race([
        Promise.all(workers).then(() => "stopped"),
        new Promise((r) => setTimeout(() => r("still running"), 15_000)),
      ]);
      stop.now = true;
      await Promise.all(workers);
      await sql.end({ timeout: 1 }).catch(() => {});
      sql = null;
      assert.ok(createdBefore > 20, `the load made only ${createdBefore} orders before the crash`);
      assert.deepEqual(acks.engineErrors, [], "engine calls failed for a reason other than the crash");

      // Orphaned backends notice the dead postmaster and exit; shared memory is free only once they have.
      const deadline = Date.now() + 20_000;
      while (children.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      for (const child of children.filter(alive)) Deno.kill(child, "SIGKILL");
      while (children.some(alive)) await new Promise((r) => setTimeout(r, 50));

      // Restart through the project's own script: pg_ctl start replays the WAL (crash recovery).
      const logPath = `${await pgdata()}/../postgres.log`;
      const logBefore = (await Deno.readTextFile(logPath).catch(() => "")).length;
      await stackScript(["scripts/db-up.sh"]);
      assert.notEqual(await postmasterPid(), pid, "a new postmaster runs");
      const log = (await Deno.readTextFile(logPath)).slice(logBefore);
      assert.match(
        log,
        /database system was (interrupted|not properly shut down)/,
        "the restart went through crash recovery",
      );

      sql = postgres(URL_, { max: 2, prepare: false, onnotice: () => {} });
      const problems = await checkInvariants(sql);
      assert.equal(problems.length, 0, `after the crash:\n${formatProblems(problems)}`);

      // Durability: what clients were told happened, happened.
      const ids = [...acks.created.keys()];
      const rows = await sql`select o.id, o.status, count(i.*)::int as lines from public.orders o
                             left join public.order_items i on i.order_id = o.id
                             where o.id = any (${ids}::uuid[]) group by o.id, o.status`;
      const byId = new Map(rows.map((r) => [r.id as string, r]));
      const lost = ids.filter((id) => !byId.has(id));
      assert.deepEqual(lost, [], "acknowledged orders missing after the crash");
      for (const [id, items] of acks.created) {
        assert.equal(byId.get(id)!.lines, new Set(items.map((i) => i.product_id)).size, `order ${id} lines`);
      }
      for (const id of acks.paid) assert.equal(byId.get(id)!.status, "paid", `acknowledged payment of ${id}`);
      for (const id of acks.cancelled) {
        assert.ok(["cancelled", "paid"].includes(byId.get(id)!.status), `acknowledged cancel of ${id}`);
      }
      const restocks = await sql`select product_id, sum(delta_on_hand)::int as q from private.stock_movements
                                 where reason = 'restock' and note = 'crash test' group by 1`;
      for (const [p, q] of acks.restocked) {
        const got = restocks.find((r) => r.product_id === p)?.q ?? 0;
        assert.ok(got >= q, `restocks of ${p}: ${got} recorded, ${q} acknowledged`);
      }

      // And the shop takes stock and sells again.
      await sql`select public.restock(${products[0]}::uuid, 'shop', 1, 'after the crash')`;
      const [{ r }] = await sql`select public.create_order(${
        sql.json([{ product_id: products[0], quantity: 1 }])
      }::jsonb,
                                   'sumup', ${crypto.randomUUID()}, null) as r`;
      assert.equal(r.order.status, "awaiting_instore_payment");
      assert.deepEqual(await checkInvariants(sql), []);
      if (Deno.env.get("RACE_DEBUG")) {
        console.log(
          `load ${loadOutcome}; ${acks.created.size} orders acknowledged (${createdBefore} before the kill), ` +
            `${acks.paid.size} paid, ${acks.cancelled.size} cancelled; ${children.length} children`,
        );
      }
      passed = true;
    } finally {
      await sql?.end({ timeout: 1 }).catch(() => {});
      await stopCluster();
      // A failed run keeps its data directory and log for a post-mortem; a passed one frees the disk.
      if (passed) await Deno.remove(await pgdata(), { recursive: true }).catch(() => {});
    }
  },
});
