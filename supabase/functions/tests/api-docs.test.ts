/**
 * The rendered API reference on the local stack: the gateway serves /docs (Redoc from its npm package) and
 * /docs/openapi.json, and headless Chromium (Debian's chromium, driven by playwright-core; no browser download)
 * renders every documented endpoint without fetching anything from another origin.
 */
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { openApiDocument } from "./support/contract.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false }, fn);
}

function operations(): { path: string; method: string; op: Json }[] {
  return Object.entries(openApiDocument().paths as Record<string, Json>).flatMap(([path, item]) =>
    Object.entries(item as Record<string, Json>).map(([method, op]) => ({ path, method, op }))
  );
}

test("the gateway serves /docs, /docs/openapi.json and Redoc's bundle, without a JWT", async () => {
  const gw = await startGateway();
  try {
    const page = await fetch(`${gw.url}/docs`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type")!, /^text\/html/);
    assert.match(page.headers.get("content-security-policy")!, /default-src 'self'/);
    const html = await page.text();
    assert.match(html, /<redoc spec-url="\/docs\/openapi.json"/);
    assert.doesNotMatch(html, /https?:\/\//, "the page references no other origin");

    const spec = await fetch(`${gw.url}/docs/openapi.json`);
    assert.equal(spec.status, 200);
    assert.deepEqual(await spec.json(), openApiDocument());

    const js = await fetch(`${gw.url}/docs/redoc.standalone.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type")!, /javascript/);
    assert.ok((await js.text()).length > 500_000, "Redoc's standalone bundle");

    const missing = await fetch(`${gw.url}/docs/nope`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const post = await fetch(`${gw.url}/docs`, { method: "POST" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
    // The functions are still behind their JWT check.
    const fn = await fetch(`${gw.url}/functions/v1/health`);
    assert.equal(fn.status, 401);
    await fn.body?.cancel();
  } finally {
    await gw.shutdown();
  }
});

test("headless Chromium renders the API reference with every endpoint, from this origin only", async () => {
  const gw = await startGateway();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    const origin = new URL(gw.url).origin;
    const foreign = new Map<string, string>();
    const problems: string[] = [];
    const isForeign = (url: string) => !url.startsWith(origin) && !url.startsWith("data:") && !url.startsWith("blob:");
    // Redoc's sidebar credit links an image on Redocly's CDN; the page's CSP must stop it before the network.
    page.on("request", (r) => {
      if (isForeign(r.url())) foreign.set(r.url(), "requested");
    });
    page.on("requestfailed", (r) => {
      if (isForeign(r.url())) foreign.set(r.url(), r.failure()?.errorText ?? "failed");
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      // The blocked credit image is reported as a CSP violation; that is the policy working.
      if (m.type() === "error" && !/Content Security Policy/.test(m.text())) {
        problems.push(`console error: ${m.text()}`);
      }
    });

    const res = await page.goto(`${gw.url}/docs`, { waitUntil: "load" });
    assert.equal(res?.status(), 200);
    await page.waitForSelector("h1", { timeout: 30_000 });
    assert.match(await page.locator("h1").first().innerText(), /stockhold API/);

    const ops = operations();
    assert.ok(ops.length >= 9);
    for (const { path, method, op } of ops) {
      // Redoc gives each operation a section `operation/<operationId>` with its summary as heading and the
      // method and path beside it.
      const section = page.locator(`[data-section-id="operation/${op.operationId}"]`);
      await section.waitFor({ state: "attached", timeout: 10_000 });
      const text = await section.innerText();
      assert.ok(text.includes(op.summary), `${method.toUpperCase()} ${path}: summary "${op.summary}" on the page`);
      assert.ok(text.toLowerCase().includes(method), `${method.toUpperCase()} ${path}: method on the page`);
      assert.ok(text.includes(path), `${method.toUpperCase()} ${path}: path on the page`);
    }
    // The generated error table made it onto the page too.
    const body = await page.locator("body").innerText();
    for (const code of ["insufficient_stock", "idempotency_key_reused", "rate_limited", "invalid_signature"]) {
      assert.ok(body.includes(code), `error code ${code} on the page`);
    }
    for (const [url, outcome] of foreign) {
      assert.match(outcome, /csp/i, `${url} must be blocked by the page's CSP, was: ${outcome}`);
    }
    assert.deepEqual(problems, [], "no script errors");
  } finally {
    await browser.close();
    await gw.shutdown();
  }
});
