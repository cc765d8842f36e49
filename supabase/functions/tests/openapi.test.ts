/**
 * The OpenAPI document (docs/openapi.json): it is exactly what scripts/openapi.ts generates from the zod
 * schemas, it is valid OpenAPI 3.1, it covers every function, every example in it validates against its own
 * schema, and what it says agrees with the code (error codes and statuses, verify_jwt, Stripe event types,
 * the correlation id the functions accept). No database needed.
 */
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import {
  buildOpenApi,
  errorCatalogue,
  OPENAPI_PATH,
  renderOpenApi,
  STRIPE_EVENTS,
  verifyJwtByFunction,
} from "../../../scripts/openapi.ts";
import { correlationIdFrom } from "../_shared/log.ts";
import { contractErrors, openApiDocument, schemaValidator } from "./support/contract.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const functionsDir = new URL("../", import.meta.url);
const METHODS = ["get", "post", "put", "patch", "delete"];

function operationsOf(doc: Json): { path: string; method: string; op: Json }[] {
  return Object.entries(doc.paths as Record<string, Json>).flatMap(([path, item]) =>
    METHODS.filter((m) => item[m]).map((method) => ({ path, method, op: item[method] }))
  );
}

function esc(part: string): string {
  return part.replaceAll("~", "~0").replaceAll("/", "~1");
}

/** Function folders (those with a handler.ts). */
async function functionNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(functionsDir)) {
    if (!entry.isDirectory || entry.name.startsWith("_") || entry.name === "tests") continue;
    try {
      await Deno.stat(new URL(`${entry.name}/handler.ts`, functionsDir));
      names.push(entry.name);
    } catch {
      // not a function
    }
  }
  return names.sort();
}

/** The functions' sources (tests excluded), by path. */
async function sources(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  async function walk(dir: URL, rel: string) {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name === "tests") continue;
      if (entry.isDirectory) await walk(new URL(`${entry.name}/`, dir), `${rel}${entry.name}/`);
      else if (entry.name.endsWith(".ts")) {
        out.set(`${rel}${entry.name}`, await Deno.readTextFile(new URL(entry.name, dir)));
      }
    }
  }
  await walk(functionsDir, "");
  return out;
}

Deno.test("docs/openapi.json is what scripts/openapi.ts generates from the zod schemas (run `npm run openapi`)", async () => {
  const generated = await renderOpenApi();
  const checkedIn = await Deno.readTextFile(OPENAPI_PATH);
  if (generated !== checkedIn) {
    const a = generated.split("\n");
    const b = checkedIn.split("\n");
    const line = a.findIndex((l, i) => l !== b[i]);
    assert.fail(
      `docs/openapi.json differs from the generated document from line ${line + 1}:\n` +
        `  generated:  ${a[line]}\n  checked in: ${b[line]}\nRun \`npm run openapi\` and commit docs/openapi.json.`,
    );
  }
});

Deno.test("the document is valid OpenAPI 3.1", async () => {
  const result = await new Validator().validate(await buildOpenApi());
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
  assert.equal(openApiDocument().openapi, "3.1.0");
});

Deno.test("every function (folder and config.toml entry) is documented, and nothing else", async () => {
  const doc = openApiDocument();
  const folders = await functionNames();
  const configured = [...(await verifyJwtByFunction()).keys()].sort();
  const documented = Object.keys(doc.paths).map((p) => p.slice(1)).sort();
  assert.deepEqual(documented, folders, "paths vs supabase/functions/<name>/handler.ts");
  assert.deepEqual(documented, configured, "paths vs supabase/config.toml [functions.<name>]");
  for (const { path, method, op } of operationsOf(doc)) {
    const where = `${method.toUpperCase()} ${path}`;
    assert.ok(op.summary && op.description && op.operationId, `${where} has a summary, description and operationId`);
    assert.ok(Object.keys(op.responses).some((s) => /^2\d\d$/.test(s)), `${where} documents a success answer`);
    // health turns every failure into its own 503; every other function can answer 500 internal_error.
    assert.ok(Object.keys(op.responses).includes(path === "/health" ? "503" : "500"), `${where} documents failure`);
    assert.ok(
      op.parameters.some((p: Json) => p.$ref === "#/components/parameters/CorrelationId"),
      `${where} documents the x-correlation-id request header`,
    );
  }
});

Deno.test("every example in the document validates against its schema", () => {
  const doc = openApiDocument();
  let checked = 0;
  const check = (base: string[], media: Json) => {
    for (const [name, example] of Object.entries(media.examples ?? {}) as [string, Json][]) {
      const errors = schemaValidator(`#/${[...base, "schema"].map(esc).join("/")}`)(example.value);
      assert.deepEqual(errors, [], `example "${name}" at ${base.join(" ")}`);
      checked++;
    }
  };
  for (const { path, method, op } of operationsOf(doc)) {
    const body = op.requestBody?.content?.["application/json"];
    if (body) check(["paths", path, method, "requestBody", "content", "application/json"], body);
    for (const [status, response] of Object.entries(op.responses) as [string, Json][]) {
      const media = response.content?.["application/json"];
      if (media) check(["paths", path, method, "responses", status, "content", "application/json"], media);
    }
  }
  assert.ok(checked >= 40, `only ${checked} examples checked`);
  const key = doc.components.parameters.IdempotencyKey;
  assert.deepEqual(schemaValidator("#/components/parameters/IdempotencyKey/schema")(key.example), []);
});

Deno.test("every error answer of every operation has an example for each code it lists", () => {
  for (const { path, method, op } of operationsOf(openApiDocument())) {
    for (const [status, response] of Object.entries(op.responses) as [string, Json][]) {
      if (Number(status) < 400) continue;
      const media = response.content?.["application/json"];
      assert.ok(media, `${method} ${path} ${status} has a JSON body`);
      const codes: string[] = media.schema.properties?.error?.properties?.code?.enum ??
        media.schema.anyOf?.[0]?.properties?.error?.properties?.code?.enum ?? [];
      for (const code of codes) {
        assert.ok(media.examples?.[code], `${method} ${path} ${status}: example for ${code}`);
        assert.ok(response.description.includes(`\`${code}\``), `${method} ${path} ${status}: ${code} explained`);
      }
    }
  }
});

Deno.test("every `new AppError(status, code)` in the functions is in the error table, with that status, and documented", async () => {
  const catalogue = new Map((await errorCatalogue()).map((e) => [e.code, e]));
  const docText = JSON.stringify(openApiDocument().paths);
  const found: string[] = [];
  for (const [file, text] of await sources()) {
    for (const m of text.matchAll(/new AppError\(\s*(\d{3}),\s*"([a-z_]+)"/g)) {
      const [status, code] = [Number(m[1]), m[2]];
      found.push(code);
      assert.ok(catalogue.has(code), `${file}: ${code} is not in the error table`);
      assert.equal(catalogue.get(code)!.status, status, `${file}: ${code} is ${status} in the code`);
      assert.ok(docText.includes(`"${code}"`), `${file}: ${code} is answered by no documented operation`);
    }
  }
  for (
    const code of [
      "rate_limited",
      "payment_provider_unavailable",
      "payment_provider_refused",
      "invalid_signature",
      "unauthorized",
      "forbidden",
    ]
  ) {
    assert.ok(found.includes(code), `${code} was expected in the sources`);
  }
});

Deno.test("the error table covers every SQLSTATE the engine raises, as errors.ts maps it", async () => {
  const description: string = openApiDocument().info.description;
  const engine = (await errorCatalogue()).filter((e) => e.sqlstate);
  assert.ok(engine.length >= 5, "the engine's SQLSTATEs were found in the migrations");
  for (const e of engine) {
    for (const sqlstate of e.sqlstate!.split(", ")) {
      assert.ok(description.includes(sqlstate), `${sqlstate} in the table`);
    }
    assert.ok(description.includes(`| \`${e.code}\` | ${e.status} |`), `${e.code} row in the table`);
  }
});

Deno.test("security follows supabase/config.toml: verify_jwt functions take a bearer JWT or an API key, the webhooks neither", async () => {
  const doc = openApiDocument();
  const verify = await verifyJwtByFunction();
  const apiKey = (s: Json) => s.type === "apiKey" && s.in === "header" && s.name === "apikey";
  for (const { path, method, op } of operationsOf(doc)) {
    const schemes = op.security.flatMap((s: Json) => Object.keys(s)).map((n: string) =>
      doc.components.securitySchemes[n]
    );
    if (verify.get(path.slice(1))) {
      assert.ok(
        schemes.some((s: Json) => s.scheme === "bearer") &&
          schemes.every((s: Json) => s.scheme === "bearer" || apiKey(s)),
        `${method} ${path}: bearer JWT or API key`,
      );
      assert.ok(op.responses["401"], `${method} ${path}: 401 documented`);
    } else {
      assert.ok(schemes.every((s: Json) => s.scheme !== "bearer" && !apiKey(s)), `${method} ${path}: no JWT`);
    }
  }
  // Whoever may use the legacy anon or service_role key may use the publishable or secret key in its place.
  for (const { path, method, op } of operationsOf(doc)) {
    const names = op.security.flatMap((s: Json) => Object.keys(s));
    assert.equal(names.includes("anonKey"), names.includes("publishableKey"), `${method} ${path}: publishable`);
    assert.equal(names.includes("serviceRoleKey"), names.includes("secretKey"), `${method} ${path}: secret`);
  }
  assert.deepEqual(doc.paths["/stripe-webhook"].post.security, [{ stripeSignature: [] }]);
  assert.deepEqual(doc.paths["/sumup-webhook"].post.security, []);
});

Deno.test("the Stripe events documented are exactly those stripe-webhook handles", async () => {
  const handler = await Deno.readTextFile(new URL("stripe-webhook/handler.ts", functionsDir));
  const handled = [...handler.matchAll(/case "([a-z_.]+)":/g)].map((m) => m[1]).sort();
  assert.deepEqual(STRIPE_EVENTS.map((e) => e.type).sort(), handled);
  const description: string = openApiDocument().paths["/stripe-webhook"].post.description;
  for (const type of handled) assert.ok(description.includes(`\`${type}\``), `${type} is explained`);
});

Deno.test("the documented x-correlation-id pattern is the one the functions accept", () => {
  const pattern = new RegExp(openApiDocument().components.parameters.CorrelationId.schema.pattern);
  const samples = ["abc", "req-1.2:3_4", "x".repeat(128), "x".repeat(129), "has space", "ümlaut", "a/b", ""];
  for (const sample of samples) {
    const echoed = correlationIdFrom(new Request("http://x/", { headers: { "x-correlation-id": sample } })) === sample;
    assert.equal(
      pattern.test(sample),
      echoed,
      `"${sample.slice(0, 20)}": documented ${pattern.test(sample)}, accepted ${echoed}`,
    );
  }
});

Deno.test("the contract check refuses answers that break the document", () => {
  const headers = { "content-type": "application/json", "x-correlation-id": "abc" };
  const good = { status: 400, headers, body: { error: { code: "invalid_request", message: "no" } } };
  assert.deepEqual(contractErrors("orders-create", "POST", good), []);
  const cases: [string, string, { status: number; headers: Record<string, string>; body: unknown }, RegExp][] = [
    ["undocumented status", "POST", { ...good, status: 418 }, /status 418 is not documented/],
    [
      "code not listed for this status",
      "POST",
      { ...good, body: { error: { code: "forbidden", message: "x" } } },
      /allowed values|must be equal to one of/,
    ],
    [
      "missing correlation id",
      "POST",
      { ...good, headers: { "content-type": "application/json" } },
      /x-correlation-id is missing/,
    ],
    ["201 without the order", "POST", { status: 201, headers, body: { reservation_expires_at: null } }, /order/],
    ["unknown method", "PATCH", { ...good, status: 400 }, /not in the OpenAPI document/],
  ];
  for (const [name, method, answer, expected] of cases) {
    const errors = contractErrors("orders-create", method, answer);
    assert.ok(errors.some((e) => expected.test(e)), `${name}: ${JSON.stringify(errors)}`);
  }
  assert.ok(
    contractErrors("products-list", "GET", {
      status: 304,
      headers: { etag: '"x"', "cache-control": "public, max-age=30", "x-correlation-id": "a" },
      body: "{}",
    })
      .some((e) => /without a body/.test(e)),
    "a 304 with a body is refused",
  );
  assert.ok(contractErrors("nope", "GET", good).some((e) => /not in the OpenAPI document/.test(e)));
});
