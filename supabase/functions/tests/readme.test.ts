/**
 * The README's operator sections stay true to the code they describe: every configuration variable of
 * .env.example, every function, every admin view and function, every alert rule (with its severity) and every
 * Stripe event type the webhook handles is documented there.
 */
import assert from "node:assert/strict";
import { STRIPE_EVENTS } from "../../../scripts/openapi.ts";

const root = new URL("../../../", import.meta.url);
const readme = await Deno.readTextFile(new URL("README.md", root));

async function migrations(): Promise<string> {
  const dir = new URL("supabase/migrations/", root);
  const texts: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.endsWith(".sql")) texts.push(await Deno.readTextFile(new URL(e.name, dir)));
  }
  return texts.join("\n");
}

Deno.test("README: every variable of .env.example is in the configuration table", async () => {
  const env = await Deno.readTextFile(new URL(".env.example", root));
  const names = [...env.matchAll(/^([A-Z0-9_]+)=/gm)].map((m) => m[1]);
  assert.ok(names.length >= 20);
  for (const name of names) assert.ok(readme.includes(`| \`${name}\` |`), `${name} is documented`);
});

Deno.test("README: every function is in the architecture diagram", async () => {
  for await (const e of Deno.readDir(new URL("supabase/functions/", root))) {
    if (!e.isDirectory || e.name.startsWith("_") || e.name === "tests") continue;
    assert.ok(readme.includes(`["${e.name}"]`), `${e.name} in the Mermaid diagram`);
  }
  assert.equal([...readme.matchAll(/```mermaid\n/g)].length, 2, "an architecture and a state diagram");
});

Deno.test("README: every admin view and function is in the monitoring table", async () => {
  const sql = await migrations();
  const objects = [
    ...new Set([...sql.matchAll(/create (?:or replace )?(?:view|function) admin\.(\w+)/g)].map((m) => m[1])),
  ];
  assert.ok(objects.length >= 10, `found ${objects.join(", ")}`);
  for (const name of objects) assert.ok(readme.includes(`\`admin.${name}`), `admin.${name} is documented`);
});

Deno.test("README: every alert rule of admin.alerts is in the alert table, with its severity", async () => {
  const sql = await Deno.readTextFile(new URL("supabase/migrations/20261125009000_monitoring.sql", root));
  const body = sql.slice(sql.indexOf("create function admin.alerts("));
  const rules = [...body.matchAll(/select '([a-z_]+)', '(critical|warning)'/g)].map((m) => [m[1], m[2]]);
  assert.ok(rules.length >= 6, `found ${rules.length} rules`);
  for (const [alert, severity] of rules) {
    const row = readme.split("\n").find((l) => l.startsWith(`| \`${alert}\` |`));
    assert.ok(row, `${alert} has a row in the alert table`);
    assert.ok(row.includes(`| ${severity} |`), `${alert} is ${severity}`);
  }
});

Deno.test("README: the Stripe events to register are exactly those stripe-webhook handles", () => {
  const section = readme.slice(readme.indexOf("## Registering the webhooks"), readme.indexOf("**SumUp.**"));
  const listed = [...section.matchAll(/^- `([a-z_.]+)`$/gm)].map((m) => m[1]).sort();
  assert.deepEqual(listed, STRIPE_EVENTS.map((e) => e.type).sort());
});
