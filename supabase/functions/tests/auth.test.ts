/**
 * _shared/auth.ts: which key checks which token. Asymmetric tokens (ES256, as hosted Supabase's signing keys
 * make them) are verified against SUPABASE_JWKS; HS256 tokens against STOCKHOLD_JWT_SECRET, else
 * SUPABASE_JWT_SECRET; there is no built-in secret, so a token that no configured key can check is a 401 with a
 * warning in the log (which never holds the token). Key pairs are generated here with jose. Without a JWT, an API
 * key (publishable: anon; secret: the service role) in apikey is checked against SUPABASE_PUBLISHABLE_KEYS /
 * SUPABASE_SECRET_KEYS, else the single-key variables.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { exportJWK, generateKeyPair, type JWK, SignJWT, UnsecuredJWT } from "jose";
import type postgres from "postgres";
import { authenticate } from "../_shared/auth.ts";
import { closeDb } from "../_shared/db.ts";
import { handler as instoreHandler } from "../orders-instore/handler.ts";
import { handler as productsHandler } from "../products-list/handler.ts";
import { JWT_SECRET, PUBLISHABLE_KEY, SECRET_KEY } from "./support/keys.ts";
import { makeOrder, makeProduct, orderRow, testSql, withEnv } from "./support/shop.ts";

/** An ES256 key pair with its public half as a JWK (kid, alg, use set as in Supabase's JWKS). */
async function es256Key(kid: string): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

const signingKey = await es256Key(crypto.randomUUID());
const otherKey = await es256Key(crypto.randomUUID());
const JWKS = JSON.stringify({ keys: [signingKey.jwk] });

interface TokenOptions {
  sub?: string;
  staff?: boolean;
  role?: string;
}

function claims(opts: TokenOptions) {
  return {
    role: opts.role ?? "authenticated",
    aud: "authenticated",
    app_metadata: opts.staff ? { provider: "email", role: "staff" } : { provider: "email" },
  };
}

/** A token signed like Supabase Auth does with an asymmetric signing key (ES256, kid in the header). */
function es256Token(key: { privateKey: CryptoKey; jwk: JWK }, opts: TokenOptions & { kid?: string } = {}) {
  return new SignJWT(claims(opts))
    .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: opts.kid ?? key.jwk.kid })
    .setSubject(opts.sub ?? crypto.randomUUID())
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(key.privateKey);
}

/** A legacy HS256 token signed with `secret`. */
function hs256Token(secret: string, opts: TokenOptions = {}) {
  return new SignJWT(claims(opts))
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(opts.sub ?? crypto.randomUUID())
    .setExpirationTime("1h")
    .sign(new TextEncoder().encode(secret));
}

function bearer(token: string): Request {
  return new Request("http://local/functions/v1/anything", { headers: { authorization: `Bearer ${token}` } });
}

/** Runs `fn` with stderr lines (where warnings go) captured and returned. */
async function capturingWarnings(fn: () => Promise<void>): Promise<string[]> {
  const lines: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => lines.push(args.map(String).join(" "));
  try {
    await fn();
  } finally {
    console.error = original;
  }
  return lines;
}

/** Asserts a 401 `unauthorized` from authenticate(). */
async function assertRefused(token: string): Promise<void> {
  await assertRequestRefused(bearer(token));
}

/** Asserts a 401 `unauthorized` from authenticate() for `req`. */
async function assertRequestRefused(req: Request): Promise<void> {
  await assert.rejects(authenticate(req), (err: { status?: number; code?: string }) => {
    assert.equal(err.status, 401);
    assert.equal(err.code, "unauthorized");
    return true;
  });
}

// Every case states the key material it runs with; LOG_LEVEL warn so that the warnings can be read.
const NO_KEYS = { SUPABASE_JWKS: undefined, STOCKHOLD_JWT_SECRET: undefined, SUPABASE_JWT_SECRET: undefined };

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false }, () => withEnv({ LOG_LEVEL: "warn" }, fn));
}

// ---------------------------------------------------------------------------------------------------------------
// asymmetric signing keys (SUPABASE_JWKS)
// ---------------------------------------------------------------------------------------------------------------

test("auth_jwks: an ES256 token is verified against SUPABASE_JWKS ({keys} or a bare array)", async () => {
  for (const jwks of [JWKS, JSON.stringify([signingKey.jwk])]) {
    await withEnv({ ...NO_KEYS, SUPABASE_JWKS: jwks }, async () => {
      const sub = crypto.randomUUID();
      const staff = await authenticate(bearer(await es256Token(signingKey, { sub, staff: true })));
      assert.equal(staff.kind, "staff");
      assert.equal(staff.actor, `staff:${sub}`);
      const user = await authenticate(bearer(await es256Token(signingKey)));
      assert.equal(user.kind, "user");
    });
  }
});

test("auth_jwks: SUPABASE_JWKS and a legacy secret side by side each verify their own tokens", async () => {
  await withEnv({ ...NO_KEYS, SUPABASE_JWKS: JWKS, SUPABASE_JWT_SECRET: JWT_SECRET }, async () => {
    assert.equal((await authenticate(bearer(await es256Token(signingKey, { staff: true })))).kind, "staff");
    assert.equal((await authenticate(bearer(await hs256Token(JWT_SECRET, { role: "anon" })))).kind, "anon");
  });
});

test("auth_jwks: a token signed with another key is refused, whether its kid is known or not", async () => {
  await withEnv({ ...NO_KEYS, SUPABASE_JWKS: JWKS, SUPABASE_JWT_SECRET: JWT_SECRET }, async () => {
    // Same kid as the configured key, wrong private key: the signature check fails.
    await assertRefused(await es256Token(otherKey, { staff: true, kid: signingKey.jwk.kid }));
    // A kid the set does not hold: refused, and the operator is told (a stale SUPABASE_JWKS looks like this).
    const warnings = await capturingWarnings(async () => {
      await assertRefused(await es256Token(otherKey, { staff: true }));
    });
    assert.ok(warnings.some((l) => l.includes("no key in SUPABASE_JWKS matches")), warnings.join("\n"));
    // An HS256 token signed with another secret.
    await assertRefused(await hs256Token("not-the-project-secret-but-long-enough-to-sign", { staff: true }));
    // An HS256 token "signed" with the public key's coordinates as the secret: HS256 only ever uses the secret.
    await assertRefused(await hs256Token(JSON.stringify(signingKey.jwk), { staff: true }));
    // An unsigned token ("alg": "none"): no key checks it, and the log says so.
    const unsigned = await capturingWarnings(async () => {
      await assertRefused(new UnsecuredJWT(claims({ staff: true })).setSubject(crypto.randomUUID()).encode());
    });
    assert.ok(unsigned.some((l) => l.includes("unsupported signing algorithm")), unsigned.join("\n"));
    // A tampered payload.
    const [h, , s] = (await es256Token(signingKey)).split(".");
    const forged = btoa(JSON.stringify({ ...claims({ staff: true }), sub: crypto.randomUUID() })).replace(/=+$/, "")
      .replaceAll("+", "-").replaceAll("/", "_");
    await assertRefused(`${h}.${forged}.${s}`);
  });
});

test("auth_jwks: an expired ES256 token is refused", async () => {
  await withEnv({ ...NO_KEYS, SUPABASE_JWKS: JWKS }, async () => {
    const expired = await new SignJWT(claims({})).setProtectedHeader({ alg: "ES256", kid: signingKey.jwk.kid })
      .setSubject(crypto.randomUUID()).setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(
        signingKey.privateKey,
      );
    await assertRefused(expired);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// no key material: no default secret
// ---------------------------------------------------------------------------------------------------------------

test("auth_no_key: with no key configured every token is a 401, with a warning that names the setting, not the token", async () => {
  await withEnv(NO_KEYS, async () => {
    // The local demo secret, once a built-in default, now verifies nothing unless it is configured.
    const hs = await hs256Token(JWT_SECRET, { staff: true });
    const es = await es256Token(signingKey, { staff: true });
    const warnings = await capturingWarnings(async () => {
      await assertRefused(hs);
      await assertRefused(es);
    });
    const hsWarning = warnings.find((l) => l.includes('"alg":"HS256"'));
    const esWarning = warnings.find((l) => l.includes('"alg":"ES256"'));
    assert.ok(hsWarning?.includes("STOCKHOLD_JWT_SECRET"), warnings.join("\n"));
    assert.ok(esWarning?.includes("SUPABASE_JWKS"), warnings.join("\n"));
    for (const line of warnings) {
      assert.equal(JSON.parse(line).level, "warn");
      for (const token of [hs, es]) {
        for (const part of token.split(".")) assert.ok(!line.includes(part), "the token is not logged");
      }
    }
  });
});

test("auth_no_key: an unusable SUPABASE_JWKS verifies nothing and is reported", async () => {
  for (const jwks of ["not json", '{"keys": "nope"}', "{}"]) {
    await withEnv({ ...NO_KEYS, SUPABASE_JWKS: jwks }, async () => {
      const warnings = await capturingWarnings(async () => {
        await assertRefused(await es256Token(signingKey, { staff: true }));
      });
      assert.ok(warnings.some((l) => l.includes("SUPABASE_JWKS is not a JSON Web Key Set")), warnings.join("\n"));
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// the legacy HS256 secret: STOCKHOLD_JWT_SECRET first
// ---------------------------------------------------------------------------------------------------------------

test("auth_secret: STOCKHOLD_JWT_SECRET verifies HS256 tokens and takes precedence over SUPABASE_JWT_SECRET", async () => {
  const hosted = "the-projects-legacy-jwt-secret-set-with-supabase-secrets-set";
  await withEnv({ ...NO_KEYS, STOCKHOLD_JWT_SECRET: hosted }, async () => {
    assert.equal((await authenticate(bearer(await hs256Token(hosted, { staff: true })))).kind, "staff");
    await assertRefused(await hs256Token(JWT_SECRET, { staff: true }));
  });
  await withEnv({ ...NO_KEYS, STOCKHOLD_JWT_SECRET: hosted, SUPABASE_JWT_SECRET: JWT_SECRET }, async () => {
    assert.equal((await authenticate(bearer(await hs256Token(hosted)))).kind, "user");
    await assertRefused(await hs256Token(JWT_SECRET));
  });
  await withEnv({ ...NO_KEYS, SUPABASE_JWT_SECRET: JWT_SECRET }, async () => {
    assert.equal((await authenticate(bearer(await hs256Token(JWT_SECRET)))).kind, "user");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Supabase's API keys (sb_publishable_..., sb_secret_...)
// ---------------------------------------------------------------------------------------------------------------

const NO_API_KEYS = {
  SUPABASE_PUBLISHABLE_KEYS: undefined,
  SUPABASE_SECRET_KEYS: undefined,
  SUPABASE_PUBLISHABLE_KEY: undefined,
  SUPABASE_SECRET_KEY: undefined,
};
const LOCAL_API_KEYS = { ...NO_API_KEYS, SUPABASE_PUBLISHABLE_KEY: PUBLISHABLE_KEY, SUPABASE_SECRET_KEY: SECRET_KEY };

/** A request as supabase-js sends it when created with `key` and no session: the key in apikey and Authorization. */
function withKey(key: string, authorization: string | null = `Bearer ${key}`): Request {
  const headers: Record<string, string> = { apikey: key };
  if (authorization !== null) headers.authorization = authorization;
  return new Request("http://local/functions/v1/anything", { headers });
}

test("auth_api_keys: a publishable key is the anon caller, a secret key the service caller", async () => {
  await withEnv({ ...NO_KEYS, ...LOCAL_API_KEYS }, async () => {
    for (const authorization of [`Bearer ${PUBLISHABLE_KEY}`, null]) {
      const anon = await authenticate(withKey(PUBLISHABLE_KEY, authorization));
      assert.deepEqual(anon, { kind: "anon", userId: null, actor: "anon", role: "anon", claims: { role: "anon" } });
    }
    const service = await authenticate(withKey(SECRET_KEY));
    assert.equal(service.kind, "service");
    assert.equal(service.role, "service_role");
    assert.deepEqual(service.claims, { role: "service_role" });
    // A key in Authorization alone (no apikey header) is read there.
    const bare = new Request("http://local/x", { headers: { authorization: `Bearer ${SECRET_KEY}` } });
    assert.equal((await authenticate(bare)).kind, "service");
  });
});

test("auth_api_keys: a signed-in user's JWT wins over the publishable key supabase-js sends beside it", async () => {
  await withEnv({ ...NO_KEYS, ...LOCAL_API_KEYS, SUPABASE_JWT_SECRET: JWT_SECRET }, async () => {
    const sub = crypto.randomUUID();
    const token = await hs256Token(JWT_SECRET, { sub, staff: true });
    const staff = await authenticate(withKey(PUBLISHABLE_KEY, `Bearer ${token}`));
    assert.equal(staff.actor, `staff:${sub}`);
    // ...and a forged one is not rescued by the valid key.
    await assertRequestRefused(
      withKey(PUBLISHABLE_KEY, `Bearer ${await hs256Token("another-secret-long-enough-to-sign")}`),
    );
    // A legacy key in apikey alone is a JWT like any other.
    const anonJwt = await hs256Token(JWT_SECRET, { role: "anon" });
    assert.equal((await authenticate(withKey(anonJwt, null))).kind, "anon");
  });
});

test("auth_api_keys: SUPABASE_*_KEYS (name to key, as Supabase injects them) replace the single-key variables", async () => {
  const keys = {
    ...NO_KEYS,
    ...LOCAL_API_KEYS,
    SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: "sb_publishable_web", ios: "sb_publishable_ios" }),
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: "sb_secret_backend" }),
  };
  await withEnv(keys, async () => {
    assert.equal((await authenticate(withKey("sb_publishable_ios"))).kind, "anon");
    assert.equal((await authenticate(withKey("sb_publishable_web"))).kind, "anon");
    assert.equal((await authenticate(withKey("sb_secret_backend"))).kind, "service");
    // The single keys are not read once the JSON variables are set, nor does one kind stand for the other.
    await assertRequestRefused(withKey(PUBLISHABLE_KEY));
    await assertRequestRefused(withKey(SECRET_KEY));
  });
});

test("auth_api_keys: a wrong or cut-short key is a 401; with no keys configured the log names the settings, not the key", async () => {
  await withEnv({ ...NO_KEYS, ...LOCAL_API_KEYS }, async () => {
    for (const key of [`${SECRET_KEY}x`, SECRET_KEY.slice(0, -1), "sb_secret_", "sb_publishable_guess"]) {
      await assertRequestRefused(withKey(key));
    }
    await assertRequestRefused(new Request("http://local/x"));
  });
  await withEnv({ ...NO_KEYS, ...NO_API_KEYS }, async () => {
    const warnings = await capturingWarnings(() => assertRequestRefused(withKey(PUBLISHABLE_KEY)));
    const line = warnings.find((l) => l.includes("no API keys configured"));
    assert.ok(line?.includes("SUPABASE_PUBLISHABLE_KEYS"), warnings.join("\n"));
    assert.ok(warnings.every((l) => !l.includes(PUBLISHABLE_KEY)), "the key is not logged");
  });
});

test("auth_api_keys: no header a client can make out of the keys (edits, prefixes, other cases) is taken but a configured key", async () => {
  // Near misses of each configured key, and anything at all, in apikey and/or Authorization.
  const nearMiss = fc.constantFrom(PUBLISHABLE_KEY, SECRET_KEY).chain((key) =>
    fc.oneof(
      fc.nat({ max: key.length - 1 }).map((n) => key.slice(0, n)),
      fc.tuple(fc.nat({ max: key.length - 1 }), fc.string({ minLength: 1, maxLength: 1 })).map(([i, c]) =>
        key.slice(0, i) + c + key.slice(i + 1)
      ),
      fc.string({ minLength: 1, maxLength: 3 }).map((tail) => key + tail),
      fc.constant(key.toUpperCase()),
      fc.constant(` ${key}`.slice(0, -1)),
    )
  );
  const value = fc.oneof(nearMiss, fc.string({ maxLength: 60 }), fc.constant("sb_"));
  await withEnv({ ...NO_KEYS, ...LOCAL_API_KEYS }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.option(value), fc.option(value), async (apikey, bearer) => {
        const headers = new Headers();
        // (a header value Headers refuses cannot be sent either)
        try {
          if (apikey !== null) headers.set("apikey", apikey);
          if (bearer !== null) headers.set("authorization", `Bearer ${bearer}`);
        } catch {
          return;
        }
        const req = new Request("http://local/x", { headers });
        const sent = [headers.get("apikey")?.trim(), bearer?.trim()];
        const exact = sent.some((v) => v === PUBLISHABLE_KEY || v === SECRET_KEY);
        const caller = await authenticate(req).catch((err: { status?: number }) => {
          assert.equal(err.status, 401);
          return null;
        });
        if (caller !== null) assert.ok(exact, `taken: ${JSON.stringify(sent)}`);
      }),
      { numRuns: 500 },
    );
  });
});

test("auth_api_keys: SUPABASE_SECRET_KEYS that is not a JSON object is a configuration error naming the variable", async () => {
  for (const value of ["sb_secret_plain", '["sb_secret_a"]', "null"]) {
    await withEnv({ ...NO_KEYS, ...NO_API_KEYS, SUPABASE_SECRET_KEYS: value }, async () => {
      await assert.rejects(authenticate(withKey(SECRET_KEY)), (err: Error) => {
        assert.equal(err.name, "ConfigError");
        assert.equal(err.message, "SUPABASE_SECRET_KEYS is not configured");
        return true;
      });
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// through the functions, on the real database
// ---------------------------------------------------------------------------------------------------------------

async function withDb(fn: (sql: postgres.Sql) => Promise<void>): Promise<void> {
  const sql = testSql();
  try {
    await fn(sql);
  } finally {
    await sql.end();
    await closeDb();
  }
}

test("auth_functions: staff with an ES256 token confirm an in-store order; without SUPABASE_JWKS it is a 401", async () => {
  await withDb(async (sql) => {
    const product = await makeProduct(sql, { stock: 2 });
    const order = await makeOrder(sql, [{ product_id: product.id, quantity: 1 }]);
    const sub = crypto.randomUUID();
    const token = await es256Token(signingKey, { sub, staff: true });
    const confirm = () =>
      instoreHandler(
        new Request("http://local/functions/v1/orders-instore", {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ action: "confirm", order_id: order.id, transaction_code: `TES${Date.now()}` }),
        }),
      );

    await withEnv({ ...NO_KEYS, LOG_LEVEL: "silent" }, async () => {
      const refused = await confirm();
      assert.equal(refused.status, 401);
      assert.equal((await refused.json()).error.code, "unauthorized");
      assert.equal((await orderRow(sql, order.id)).status, "awaiting_instore_payment");
    });

    await withEnv({ ...NO_KEYS, SUPABASE_JWKS: JWKS, LOG_LEVEL: "silent" }, async () => {
      const res = await confirm();
      assert.equal(res.status, 200);
      assert.equal((await res.json()).result, "paid");
      const history = await sql`
        select actor from private.order_status_history where order_id = ${order.id}::uuid and to_status = 'paid'`;
      assert.equal(history[0].actor, `staff:${sub}`);
    });
  });
});

test("auth_functions: a function's warning for a missing key carries the request's correlation id", async () => {
  await withDb(async () => {
    await withEnv(NO_KEYS, async () => {
      const warnings = await capturingWarnings(async () => {
        const res = await productsHandler(
          new Request("http://local/functions/v1/products-list", {
            headers: {
              authorization: `Bearer ${await hs256Token(JWT_SECRET, { role: "anon" })}`,
              "x-correlation-id": "auth-no-key-1",
            },
          }),
        );
        assert.equal(res.status, 401);
        await res.body?.cancel();
      });
      const line = warnings.find((l) => l.includes("no key configured"));
      assert.ok(line, warnings.join("\n"));
      assert.equal(JSON.parse(line).correlation_id, "auth-no-key-1");
      assert.equal(JSON.parse(line).fn, "products-list");
    });
  });
});
