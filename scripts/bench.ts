/**
 * The benchmark: how close order creation on one hot product gets to the cluster's single-row UPDATE limit,
 * what uniform traffic and the HTTP path achieve, and how the expiry sweep grows. Prints a table and writes
 * bench/results/latest.json. Run through `npm run bench` (scripts/bench.sh builds the cluster).
 */
import postgres from "postgres";
import { callOnceEarlyRelease, closeDb } from "../supabase/functions/_shared/db.ts";
import { markPaidForEventCall, type MarkPaidForEventResult } from "../supabase/functions/_shared/engine.ts";

const dbUrl = Deno.env.get("SUPABASE_DB_URL")!;
const clients = Number(Deno.env.get("BENCH_CLIENTS") ?? 8);
const seconds = Number(Deno.env.get("BENCH_SECONDS") ?? 10);
const httpClients = Number(Deno.env.get("BENCH_HTTP_CLIENTS") ?? 50);
// The hot product again at one client per core (0: skip): what a connection pool sized to the machine runs.
const fewClients = Number(Deno.env.get("BENCH_FEW_CLIENTS") ?? navigator.hardwareConcurrency);
const sweepSizes = (Deno.env.get("BENCH_SWEEP_SIZES") ?? "10000,100000").split(",").map(Number);
const sweepBatch = Number(Deno.env.get("BENCH_SWEEP_BATCH") ?? 0);
// The limit and the hot product are measured in this many back-to-back pairs, and the largest sweep this many
// times: a VM's speed drifts by tens of per cent within minutes, so one pair can land on two different phases.
const rounds = Math.max(1, Number(Deno.env.get("BENCH_ROUNDS") ?? 3));
const uniformProducts = 1000;
const anonKey = Deno.env.get("SUPABASE_ANON_KEY")!;
// Clients paying earlier orders of the hot product, as the webhooks do, while its buyers run (0: skip).
const payers = Number(Deno.env.get("BENCH_PAYERS") ?? 2);

const sql = postgres(dbUrl, { max: 4, onnotice: () => {} });
const started = performance.now();
const progress = (msg: string) =>
  console.error(`[${((performance.now() - started) / 1000).toFixed(0).padStart(4)}s] ${msg}`);

interface Run {
  name: string;
  clients: number;
  count: number;
  per_second: number;
  p50_ms: number;
  p99_ms: number;
  /** Machine CPU time (all cores, busy = not idle nor iowait, /proc/stat) per counted transaction, in ms. */
  cpu_ms?: number;
}

/** Busy CPU time of the whole machine so far, in ms (Linux /proc/stat; undefined elsewhere). */
async function busyCpuMs(): Promise<number | undefined> {
  try {
    const cpu = (await Deno.readTextFile("/proc/stat")).split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, _idle, _iowait, irq, softirq, steal] = cpu;
    return (user + nice + system + irq + softirq + steal) * 10; // USER_HZ = 100 on Linux
  } catch {
    return undefined;
  }
}

/**
 * The CPU as the kernel names it, with its nominal clock (Linux /proc/cpuinfo; undefined elsewhere). These figures
 * set CPU per order against the disk's flush rate, and each new VM brings another CPU: the table says which.
 */
async function cpuModel(): Promise<string | undefined> {
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    const field = (name: string) => info.match(new RegExp(`^${name}\\s*: (.+)$`, "m"))?.[1].trim();
    const model = field("model name");
    const mhz = Number(field("cpu MHz"));
    return model && (mhz ? `${model} at ${(mhz / 1000).toFixed(1)} GHz` : model);
  } catch {
    return undefined;
  }
}

/** One back-to-back pair: the limit, then the hot product, and the hot product's ratio to that limit. */
interface Pair {
  limit: Run;
  hot: Run;
  ratio: number;
}

/** The item whose `by` is the median (the lower middle one for an even count). */
function medianBy<T>(items: T[], by: (item: T) => number): T {
  const sorted = [...items].sort((a, b) => by(a) - by(b));
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Runs one pgbench script for `seconds` with `clients`; latencies come from pgbench's per-transaction log. */
async function pgbench(name: string, script: string, n = clients): Promise<Run> {
  progress(`${name}: pgbench, ${n} clients, ${seconds}s`);
  await sql`checkpoint`; // every timed run starts from the same state (see sweep)
  const dir = await Deno.makeTempDir({ prefix: "stockhold-bench-" });
  const cpuBefore = await busyCpuMs();
  await Deno.writeTextFile(`${dir}/script.sql`, script);
  const out = await new Deno.Command("pgbench", {
    args: [
      "-n",
      // extended protocol with prepared statements, as postgres.js (the edge functions) and PostgREST call
      "-M",
      "prepared",
      "-c",
      String(n),
      "-j",
      String(Math.min(n, 2)),
      "-T",
      String(seconds),
      "-f",
      `${dir}/script.sql`,
      "-l",
      `--log-prefix=${dir}/tx`,
      dbUrl,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const cpuAfter = await busyCpuMs();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`pgbench failed for ${name}: ${new TextDecoder().decode(out.stderr)}`);
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(text)?.[1] ?? NaN);
  const latencies: number[] = [];
  for await (const f of Deno.readDir(dir)) {
    if (!f.name.startsWith("tx")) continue;
    for (const line of (await Deno.readTextFile(`${dir}/${f.name}`)).split("\n")) {
      const cols = line.split(" ");
      if (cols.length >= 3) latencies.push(Number(cols[2]) / 1000);
    }
  }
  await Deno.remove(dir, { recursive: true });
  return summary(name, n, latencies, tps, { before: cpuBefore, after: cpuAfter });
}

/** A run's row: its throughput, the p50/p99 of its latencies (ms) and, given the machine's busy CPU ms before and
 * after, the CPU per counted transaction. */
function summary(
  name: string,
  clients: number,
  latencies: number[],
  perSecond: number,
  busyMs: { before?: number; after?: number } = {},
): Run {
  latencies.sort((a, b) => a - b);
  const run: Run = {
    name,
    clients,
    count: latencies.length,
    per_second: Math.round(perSecond),
    p50_ms: round(percentile(latencies, 50)),
    p99_ms: round(percentile(latencies, 99)),
  };
  if (busyMs.before !== undefined && busyMs.after !== undefined && run.count > 0) {
    run.cpu_ms = round((busyMs.after - busyMs.before) / run.count);
  }
  return run;
}

const round = (x: number) => Math.round(x * 100) / 100;

/** A product with plenty of stock at the shop, through the engine's restock (so the ledger stays true). */
async function product(sku: string, stock: number): Promise<string> {
  const [{ id }] = await sql`insert into public.products (sku, name, unit_price, currency, tax_rate_bp)
                             values (${sku}, ${"Bench " + sku}, 1000, 'EUR', 1900) returning id`;
  await sql`select public.restock(${id}, 'shop', ${stock}, 'bench')`;
  return id;
}

/**
 * One order as orders-create places it (withTxEarlyRelease): create_order committed without waiting for its WAL
 * flush, so the stock row is free at once, then public.wait_for_flush in a transaction of its own, so the order is
 * on disk before the client hears of it. pgbench counts the pair as one transaction. `durable` is the reference:
 * create_order in one synchronous commit, the stock row held through the flush.
 */
const orderCall = (productExpr: string, commit: "early-release" | "durable" = "early-release") => {
  const call = oneUnitOrder(productExpr);
  return commit === "durable"
    ? `select ${call};\n`
    : `select set_config('synchronous_commit', 'off', true), ${call};\nselect public.wait_for_flush();\n`;
};

/**
 * create_order for one unit of `productExpr` as SQL text (for pgbench scripts and DO blocks): in store unless
 * `method` says otherwise, request hash `hash` (so a run can find its own orders), at `now` if given.
 */
function oneUnitOrder(productExpr: string, opts: { method?: string; hash?: string; now?: string } = {}): string {
  return `public.create_order(jsonb_build_array(jsonb_build_object('product_id', ${productExpr}, 'quantity', 1)), ` +
    `'${opts.method ?? "sumup"}', gen_random_uuid()::text, '${opts.hash ?? "bench"}', '{}'::jsonb` +
    (opts.now ? `, null, ${opts.now})` : ")");
}

/**
 * Places `count` orders set up before a timed run, each `call` (SQL text that may use the loop counter i, from 0,
 * and what `declare` declares), committing every 100 (in one transaction every stock row would carry thousands of
 * row versions nobody could prune).
 */
async function placeOrders(count: number, call: string, declare = ""): Promise<void> {
  await sql.unsafe(`do $$
    ${declare}
    begin
      for i in 0 .. ${count - 1} loop
        perform ${call};
        if i % 100 = 99 then commit; end if;
      end loop;
    end $$`);
}

async function main() {
  const stamp = Date.now().toString(36);
  // The cron sweep would release the bench's lapsed reservations on its own minute; the bench times it itself.
  await sql`update cron.job set active = false where jobname = 'stockhold-expire-reservations'`;
  await sql`create schema if not exists bench`;
  await sql`create table if not exists bench.hot (id int primary key, n bigint not null)`;
  await sql`insert into bench.hot values (1, 0) on conflict do nothing`;
  await sql`create table if not exists bench.pids (n int primary key, id uuid not null)`;

  const limitScript = "update bench.hot set n = n + 1 where id = 1;\n";
  const hotId = await product(`HOT-${stamp}`, 1_000_000);
  const pairs: Pair[] = [];
  for (let i = 1; i <= rounds; i++) {
    progress(`round ${i} of ${rounds}: the limit, then the hot product`);
    const pairLimit = await pgbench("limit: UPDATE one hot row", limitScript);
    const pairHot = await pgbench("create_order, one hot product", orderCall(`'${hotId}'`));
    pairs.push({ limit: pairLimit, hot: pairHot, ratio: round(pairHot.per_second / pairLimit.per_second) });
  }
  // the pair with the median ratio stands for the run; every pair is in the JSON
  const { limit, hot } = medianBy(pairs, (p) => p.ratio);
  const hotDurable = await pgbench(
    "create_order, one hot product, lock held through the flush",
    orderCall(`'${hotId}'`, "durable"),
  );
  const lapsing = await lapsingRun(hotId);
  const paying = payers > 0 ? await payingRun(hotId) : null;
  const few = fewClients > 0 && fewClients !== clients
    ? [
      await pgbench("limit: UPDATE one hot row", limitScript, fewClients),
      await pgbench("create_order, one hot product", orderCall(`'${hotId}'`), fewClients),
    ]
    : [];

  progress(`creating ${uniformProducts} products for the uniform runs`);
  for (let i = 1; i <= uniformProducts; i++) {
    await sql`insert into bench.pids values (${i}, ${await product(`UNI-${stamp}-${i}`, 1_000_000)})`;
  }
  const uniform = await pgbench(
    `create_order, ${uniformProducts} uniform products`,
    `\\set p random(1, ${uniformProducts})\n` + orderCall("(select id from bench.pids where n = :p)"),
  );

  const http = await httpRun();
  const sweeps = [];
  for (const [i, size] of sweepSizes.entries()) {
    const last = i === sweepSizes.length - 1;
    const timed = [];
    for (let r = 1; r <= (last ? rounds : 1); r++) timed.push(await sweep(size));
    // the largest size, timed `rounds` times: its median run, with the range
    const median = medianBy(timed, (t) => t.seconds);
    const times = timed.map((t) => t.seconds);
    sweeps.push(
      timed.length > 1
        ? { ...median, rounds: timed.length, seconds_min: Math.min(...times), seconds_max: Math.max(...times) }
        : median,
    );
  }

  const result = {
    machine: [`${Deno.build.os} ${Deno.build.arch}`, `${navigator.hardwareConcurrency} cores`, await cpuModel()]
      .filter(Boolean).join(", "),
    postgres: (await sql`select version()`)[0].version,
    at: new Date().toISOString(),
    seconds_per_run: seconds,
    limit,
    // every back-to-back pair of the limit and the hot product; `limit` and the hot run are the median one
    pairs: pairs.map((p) => ({ limit: p.limit.per_second, hot: p.hot.per_second, ratio: p.ratio })),
    runs: [hot, hotDurable, lapsing, ...(paying ? [paying.buyers, paying.payments] : []), uniform, http].map((r) => ({
      ...r,
      ratio_to_limit: round(r.per_second / limit.per_second),
    })),
    // the same pair at one client per core, the ratio against the limit measured with as many clients
    few_clients: few.length
      ? { limit: few[0], hot: { ...few[1], ratio_to_limit: round(few[1].per_second / few[0].per_second) } }
      : null,
    sweeps,
  };
  print(result);
  await Deno.mkdir(new URL("../bench/results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    new URL("../bench/results/latest.json", import.meta.url),
    JSON.stringify(result, null, 2) + "\n",
  );
  progress("wrote bench/results/latest.json");
}

/**
 * The hot product while its unpaid reservations lapse one after another, as in a sale that runs longer than the
 * reservation TTL: orders placed so that, from `leadSeconds` after the first, one of their reservations lapses every
 * 5 ms for longer than the run; the run starts at the first lapse, so buyers keep meeting lapsed reservations that
 * exact expiry must release before they can buy. Afterwards an untimed sweep clears what is left, so the sweep
 * figures below count only their own reservations.
 */
async function lapsingRun(hotId: string): Promise<Run> {
  const spacingMs = 5;
  const leadSeconds = 20;
  const count = Math.ceil(((seconds + 10) * 1000) / spacingMs);
  progress(`placing ${count} orders of the hot product that lapse one every ${spacingMs} ms from ${leadSeconds}s on`);
  const [{ first }] = await sql`select clock_timestamp() + make_interval(secs => ${leadSeconds}) as first`;
  await placeOrders(
    count,
    oneUnitOrder(`'${hotId}'`, { now: `t0 + i * interval '${spacingMs} milliseconds'` }),
    `declare t0 timestamptz := '${first.toISOString()}'::timestamptz
                              - (select reservation_ttl from private.settings where payment_method = 'sumup');`,
  );
  const wait = first.getTime() - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const run = await pgbench(
    `create_order, one hot product, a reservation of it lapsing every ${spacingMs} ms`,
    orderCall(`'${hotId}'`),
  );
  await sql`call public.sweep_reservations()`;
  return run;
}

/**
 * The hot product while its earlier orders are paid, as in a sale: `payers` clients pay them one after another,
 * as fast as they can, for as long as the buyers' pgbench run lasts, committing each payment as the webhooks do
 * (`_shared/db.ts` callOnceEarlyRelease of mark_paid_for_event: the event recorded and the order paid in one
 * statement, then the shared flush wait). Each payment deducts from the hot product's stock row the buyers queue on.
 * The webhooks' HTTP and signature work is left out, as the SQL runs leave out orders-create's (the HTTP run has it).
 */
async function payingRun(hotId: string): Promise<{ buyers: Run; payments: Run }> {
  const count = 1000 * seconds;
  progress(`placing ${count} online orders of the hot product for ${payers} clients to pay`);
  await placeOrders(count, oneUnitOrder(`'${hotId}'`, { method: "stripe", hash: "bench-pay" }));
  const orders = await sql`select id, total from public.orders
                           where request_hash = 'bench-pay' and status = 'awaiting_payment' order by created_at`;
  const latencies: number[] = [];
  let next = 0, stop = false, refused = 0;
  const pay = async () => {
    while (!stop && next < orders.length) {
      const order = orders[next++];
      const t0 = performance.now();
      const paid = await callOnceEarlyRelease<MarkPaidForEventResult>(
        { correlationId: crypto.randomUUID(), actor: "stripe" },
        (q) =>
          markPaidForEventCall(q, {
            provider: "stripe",
            id: `evt_bench_${order.id}`,
            type: "checkout.session.completed",
            orderId: order.id,
            ref: `pi_bench_${order.id}`,
            amount: Number(order.total),
            currency: "EUR",
          }),
      );
      if ("result" in paid && paid.result === "paid") latencies.push(performance.now() - t0);
      else refused++;
    }
  };
  const cpuBefore = await busyCpuMs();
  const t0 = performance.now();
  const paying = Promise.all(Array.from({ length: payers }, pay));
  const buyers = await pgbench(
    `create_order, one hot product, while ${payers} clients pay its earlier orders`,
    orderCall(`'${hotId}'`),
  );
  stop = true;
  await paying;
  const elapsed = (performance.now() - t0) / 1000;
  const cpuAfter = await busyCpuMs();
  if (refused) progress(`payments: ${refused} not answered "paid"`);
  if (next >= orders.length) progress(`payments: the payers ran out of orders; raise the count`);
  // the orders left unpaid give their stock back, so the runs after this one start as before it
  await sql`select public.cancel_order(o.id, 'bench') from public.orders o
            where o.request_hash = 'bench-pay' and o.status = 'awaiting_payment'`;
  const payments = summary(
    "payments during that run (mark_paid_for_event)",
    payers,
    latencies,
    latencies.length / elapsed,
  );
  // machine CPU per committed transaction of either kind
  const cpuMs = cpuBefore !== undefined && cpuAfter !== undefined
    ? round((cpuAfter - cpuBefore) / (buyers.count + payments.count))
    : undefined;
  return { buyers: { ...buyers, cpu_ms: cpuMs }, payments: { ...payments, cpu_ms: cpuMs } };
}

/**
 * The functions gateway in a process of its own, as `npm start` serves them (the load generator in this process
 * would otherwise share the server's event loop), on a free port; resolves once it listens.
 */
async function startGatewayProcess(): Promise<{ url: string; stop(): Promise<void> }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const gateway = new URL("./functions-gateway.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", `import { startGateway } from "${gateway}"; await startGateway({ port: ${port} });`],
    env: {
      ORDER_RATE_LIMIT_PER_ADDRESS: "100000000",
      ORDER_RATE_LIMIT_PER_USER: "100000000",
      DB_POOL_MAX: String(Math.min(httpClients, 20)),
      LOG_LEVEL: "silent",
    },
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    const up = await fetch(`${url}/functions/v1/health`).then((r) => r.body?.cancel().then(() => true), () => false);
    if (up) {
      return {
        url,
        stop: async () => {
          child.kill();
          await child.status;
        },
      };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error("the functions gateway did not start");
}

/** orders-create through the gateway (its own process) with `httpClients` concurrent clients. */
async function httpRun(): Promise<Run> {
  progress(`orders-create over HTTP: ${httpClients} clients, ${seconds}s`);
  const gw = await startGatewayProcess();
  const pids = (await sql`select id from bench.pids order by n`).map((r) => r.id as string);
  const latencies: number[] = [];
  let errors = 0;
  const cpuBefore = await busyCpuMs();
  const until = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: httpClients }, async () => {
    while (performance.now() < until) {
      const t0 = performance.now();
      const res = await fetch(`${gw.url}/functions/v1/orders-create`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${anonKey}`,
          "content-type": "application/json",
          "idempotency-key": crypto.randomUUID(),
        },
        body: JSON.stringify({
          items: [{ product_id: pids[Math.floor(Math.random() * pids.length)], quantity: 1 }],
          payment_method: "sumup",
        }),
      });
      await res.body?.cancel();
      if (res.status === 201) latencies.push(performance.now() - t0);
      else errors++;
    }
  }));
  const cpuAfter = await busyCpuMs();
  await gw.stop();
  if (errors) progress(`orders-create over HTTP: ${errors} non-201 answers`);
  return summary("orders-create over HTTP", httpClients, latencies, latencies.length / seconds, {
    before: cpuBefore,
    after: cpuAfter,
  });
}

/**
 * Creates `size` reservations that lapsed an hour ago (orders of 10 lines over the uniform products, so setting up
 * 100k takes 10k create_order calls, each committed on its own as real orders are: in one transaction every stock
 * row would carry a hundred row versions nobody could prune), then times what pg_cron runs,
 * `call public.sweep_reservations()` (BENCH_SWEEP_BATCH overrides its batch size), which commits after every
 * batch, until nothing is left. The timing starts after a CHECKPOINT, as every timed run does, so each starts
 * from the same state instead of meeting a checkpoint the set-up's writes triggered.
 */
async function sweep(size: number) {
  const lines = 10;
  progress(`sweep: creating ${size} lapsed reservations (${size / lines} orders of ${lines} lines)`);
  await sql.unsafe(`do $$
    begin
      for g in 0 .. ${size / lines - 1} loop
        perform public.create_order(
          (select jsonb_agg(jsonb_build_object('product_id', p.id, 'quantity', 1))
             from bench.pids p
             where p.n between 1 + (g * ${lines}) % ${uniformProducts} and ${lines} + (g * ${lines}) % ${uniformProducts}),
          'sumup', gen_random_uuid()::text, 'bench', '{}'::jsonb, null, now() - interval '2 hours');
        commit;
      end loop;
    end $$`);
  const [{ n: lapsed }] = await sql`select count(*)::int as n from private.open_reservations
                                     where expires_at < now()`;
  await sql`vacuum analyze`;
  await sql`checkpoint`;
  progress(`sweep: releasing ${lapsed}`);
  const t0 = performance.now();
  // The procedure's own batch size (what the cron job runs) unless BENCH_SWEEP_BATCH says otherwise.
  await (sweepBatch ? sql`call public.sweep_reservations(${sweepBatch})` : sql`call public.sweep_reservations()`);
  const s = (performance.now() - t0) / 1000;
  const [{ left }] = await sql`select count(*)::int as left from private.open_reservations
                                where expires_at < now()`;
  const released = lapsed - left;
  return { reservations: lapsed, released, seconds: round(s), rows_per_second: Math.round(released / s) };
}

function print(r: Awaited<ReturnType<typeof Object>>) {
  const rows = [r.limit, ...r.runs, ...(r.few_clients ? [r.few_clients.limit, r.few_clients.hot] : [])] as (
    & Run
    & { ratio_to_limit?: number }
  )[];
  console.log(`\nstockhold bench — ${r.machine}; ${r.postgres.split(",")[0]}; ${r.seconds_per_run}s per run\n`);
  console.log("| run | clients | count | per second | p50 ms | p99 ms | CPU ms per tx | ratio to limit |");
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const x of rows) {
    console.log(
      `| ${x.name} | ${x.clients} | ${x.count} | ${x.per_second} | ${x.p50_ms} | ${x.p99_ms} | ${x.cpu_ms ?? "-"} | ${
        x.ratio_to_limit ?? 1
      } |`,
    );
  }
  const ratios = r.pairs.map((p: { ratio: number }) => p.ratio);
  if (ratios.length > 1) {
    console.log(
      `\nThe limit and the hot product at ${r.limit.clients} clients, ${ratios.length} back-to-back pairs: ratios ` +
        `${ratios.join(", ")}; the table shows the median pair.`,
    );
  }
  console.log("\n| sweep | released | seconds | rows per second |\n|---:|---:|---:|---:|");
  for (const s of r.sweeps) {
    const range = s.rounds ? ` (median of ${s.rounds}: ${s.seconds_min}–${s.seconds_max})` : "";
    console.log(`| ${s.reservations} | ${s.released} | ${s.seconds}${range} | ${s.rows_per_second} |`);
  }
}

try {
  await main();
} finally {
  await sql.end();
  await closeDb();
}
