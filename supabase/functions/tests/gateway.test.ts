/**
 * The local functions gateway behaves as Supabase's relay: a JWT signed with the project secret (or the
 * project's publishable or secret API key) is required unless config.toml sets verify_jwt = false, preflights
 * pass, and supabase-js works unchanged.
 */
import assert from "node:assert/strict";
import { jwtVerify, SignJWT } from "jose";
import { startGateway } from "../../../scripts/functions-gateway.ts";
import { ANON_KEY, JWT_SECRET, PUBLISHABLE_KEY, SECRET_KEY, SERVICE_ROLE_KEY } from "./support/keys.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;

async function withFixtureGateway(fn: (url: string) => Promise<void>) {
  const gw = await startGateway({ functionsDir: `${fixtures}functions`, configPath: `${fixtures}config.toml` });
  try {
    await fn(gw.url);
  } finally {
    await gw.shutdown();
  }
}

Deno.test("gateway refuses a missing Authorization header with 401", () =>
  withFixtureGateway(async (url) => {
    const res = await fetch(`${url}/functions/v1/closed-echo`, { method: "POST" });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).code, "missing_authorization");
  }));

Deno.test("gateway refuses a JWT signed with another secret, and an expired one, with 401", () =>
  withFixtureGateway(async (url) => {
    const forged = await new SignJWT({ role: "anon" }).setProtectedHeader({ alg: "HS256" })
      .sign(new TextEncoder().encode("not-the-project-secret-but-long-enough-to-sign"));
    const expired = await new SignJWT({ role: "anon" }).setProtectedHeader({ alg: "HS256" }).setExpirationTime(1000)
      .sign(new TextEncoder().encode(JWT_SECRET));
    for (const token of [forged, expired, "not-a-jwt"]) {
      const res = await fetch(`${url}/functions/v1/closed-echo`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 401);
      assert.equal((await res.json()).code, "invalid_jwt");
    }
  }));

Deno.test("gateway passes the anon and service_role keys, and preflights without a JWT", () =>
  withFixtureGateway(async (url) => {
    for (const key of [ANON_KEY, SERVICE_ROLE_KEY]) {
      const res = await fetch(`${url}/functions/v1/closed-echo`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}` },
      });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).function, "closed-echo");
    }
    const pre = await fetch(`${url}/functions/v1/closed-echo`, { method: "OPTIONS" });
    assert.equal(pre.status, 200);
    assert.equal((await pre.json()).method, "OPTIONS");
  }));

Deno.test("gateway passes the publishable and secret keys as supabase-js sends them, and refuses other sb_ keys", () =>
  withFixtureGateway(async (url) => {
    const call = (headers: Record<string, string>) =>
      fetch(`${url}/functions/v1/closed-echo`, { method: "POST", headers });
    for (const key of [PUBLISHABLE_KEY, SECRET_KEY]) {
      for (
        const headers of [{ apikey: key, authorization: `Bearer ${key}` }, { apikey: key }] as Record<string, string>[]
      ) {
        const res = await call(headers);
        assert.equal(res.status, 200, JSON.stringify(headers));
        assert.equal((await res.json()).function, "closed-echo");
      }
    }
    for (const apikey of ["sb_publishable_not-this-project", `${SECRET_KEY}0`]) {
      const res = await call({ apikey, authorization: `Bearer ${apikey}` });
      assert.equal(res.status, 401);
      assert.equal((await res.json()).code, "invalid_jwt");
    }
    // An sb_ key in Authorization with no apikey header is not a JWT, as for the CLI's relay.
    const bare = await call({ authorization: `Bearer ${PUBLISHABLE_KEY}` });
    assert.equal(bare.status, 401);
    assert.equal((await bare.json()).code, "invalid_jwt");
  }));

Deno.test("gateway lets a verify_jwt = false function through without a JWT and sets x-forwarded-for itself", () =>
  withFixtureGateway(async (url) => {
    const res = await fetch(`${url}/functions/v1/open-echo`, {
      method: "POST",
      headers: { "x-forwarded-for": "6.6.6.6" },
    });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.function, "open-echo");
    assert.equal(body.forwarded_for, "127.0.0.1");
  }));

Deno.test("gateway answers 404 for an unknown function", () =>
  withFixtureGateway(async (url) => {
    const res = await fetch(`${url}/functions/v1/nope`, { headers: { authorization: `Bearer ${ANON_KEY}` } });
    assert.equal(res.status, 404);
    assert.equal((await res.json()).code, "function_not_found");
  }));

Deno.test("the local anon and service_role keys are the Supabase CLI's demo keys, signed with the local secret", async () => {
  const secret = new TextEncoder().encode(JWT_SECRET);
  for (const [key, role] of [[ANON_KEY, "anon"], [SERVICE_ROLE_KEY, "service_role"]]) {
    const { payload } = await jwtVerify(key, secret, { algorithms: ["HS256"] });
    assert.deepEqual(payload, { iss: "supabase-demo", role, exp: 1983812996 });
  }
});
