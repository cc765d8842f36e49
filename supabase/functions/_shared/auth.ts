/**
 * Who is calling: verifies the `Authorization: Bearer <jwt>` and turns its claims into the actor string the engine
 * records. The token's `alg` picks the key material, and only that material:
 * - ES256, RS256, EdDSA (the project's asymmetric JWT signing keys): the JSON Web Key Set in SUPABASE_JWKS, which
 *   hosted Supabase injects into every function;
 * - HS256 (the legacy anon and service_role keys, and sessions of projects still on the legacy secret):
 *   STOCKHOLD_JWT_SECRET, else SUPABASE_JWT_SECRET (what the local stack exports).
 * There is no built-in fallback key. A token that no configured key can check is refused (401) and a warning
 * names the missing setting, never the token. The relay may check the JWT too; functions check again because
 * they need the claims and must not depend on how they are deployed.
 *
 * A caller without a JWT may present one of Supabase's API keys instead, as supabase-js does when created with
 * one: a publishable key (`sb_publishable_...`, the anon role) or a secret key (`sb_secret_...`, the service
 * role), in the `apikey` header (supabase-js also puts it in Authorization, where an `sb_` value is not a JWT). It
 * must equal a key in SUPABASE_PUBLISHABLE_KEYS or SUPABASE_SECRET_KEYS, which Supabase injects.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";
import type { DbRole } from "./db.ts";
import { apiKeys, jwksJson, jwtSecret } from "./env.ts";
import { AppError } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";

/** The verified caller. */
export interface Caller {
  kind: "anon" | "user" | "staff" | "service";
  /** auth.users id for signed-in users and staff, else null. */
  userId: string | null;
  /** Actor string for the ledger: `anon`, `user:<uuid>`, `staff:<uuid>`, `service`. */
  actor: string;
  /** The Postgres role matching the JWT, for RLS-governed reads. */
  role: DbRole;
  claims: Record<string, unknown>;
}

const STAFF_ROLES = new Set(["staff", "admin"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function unauthorized(message: string): AppError {
  return new AppError(401, "unauthorized", message, { headers: { "WWW-Authenticate": "Bearer" } });
}

/** True when the claims carry `app_metadata.role` staff or admin. */
export function isStaffClaims(claims: Record<string, unknown>): boolean {
  const meta = claims.app_metadata as { role?: unknown } | undefined;
  return typeof meta?.role === "string" && STAFF_ROLES.has(meta.role);
}

// Algorithms of Supabase's asymmetric signing keys (jose names Ed25519 keys "EdDSA" or, newer, "Ed25519").
const ASYMMETRIC_ALGORITHMS = ["ES256", "RS256", "EdDSA", "Ed25519"];
const fallbackLog = createLogger({ component: "auth" });

// The key set built from SUPABASE_JWKS, rebuilt only when the variable's text changes (tests change it).
let jwks: { json: string; keys: JWTVerifyGetKey | null } | null = null;

/** The key set in SUPABASE_JWKS (`{"keys": [...]}` or a bare array), or null when unset or unusable. */
function keySet(log: Logger): JWTVerifyGetKey | null {
  const json = jwksJson();
  if (json === undefined) return null;
  if (jwks?.json === json) return jwks.keys;
  let keys: JWTVerifyGetKey | null = null;
  try {
    const parsed = JSON.parse(json);
    keys = createLocalJWKSet(Array.isArray(parsed) ? { keys: parsed } : parsed);
  } catch {
    // Public keys only, but still no need to echo the value: its shape is what is wrong.
    log.warn("SUPABASE_JWKS is not a JSON Web Key Set; asymmetrically signed JWTs cannot be verified");
  }
  jwks = { json, keys };
  return keys;
}

/** What a header field says, shortened: `alg` and `kid` come from the client and go into logs. */
function headerField(value: unknown): string | undefined {
  return typeof value === "string" ? value.slice(0, 64) : undefined;
}

/** The token's verified claims; 401 when it is malformed, forged, expired, or no configured key can check it. */
async function verifiedClaims(token: string, log: Logger): Promise<JWTPayload> {
  const invalid = () => unauthorized("The JWT is invalid or expired.");
  let alg: string | undefined;
  let kid: string | null;
  try {
    const header = decodeProtectedHeader(token);
    alg = headerField(header.alg);
    kid = headerField(header.kid) ?? null;
  } catch {
    throw invalid();
  }
  // The key is chosen by the header, but each check accepts only its own algorithms, so a token cannot talk an
  // HS256 check into using a public key as its secret, nor a key-set check into taking "none".
  let check: ((jwt: string) => Promise<{ payload: JWTPayload }>) | null = null;
  let missing: string;
  if (alg === "HS256") {
    const secret = jwtSecret();
    missing = "STOCKHOLD_JWT_SECRET (or SUPABASE_JWT_SECRET)";
    if (secret !== undefined) {
      const key = new TextEncoder().encode(secret);
      check = (jwt) => jwtVerify(jwt, key, { algorithms: ["HS256"] });
    }
  } else if (alg !== undefined && ASYMMETRIC_ALGORITHMS.includes(alg)) {
    const keys = keySet(log);
    missing = "SUPABASE_JWKS";
    if (keys !== null) check = (jwt) => jwtVerify(jwt, keys, { algorithms: ASYMMETRIC_ALGORITHMS });
  } else {
    log.warn("JWT refused: unsupported signing algorithm", { alg: alg ?? null, kid });
    throw invalid();
  }
  if (check === null) {
    // A deployment problem, not the client's: say which setting is missing (the token itself is never logged).
    log.warn("JWT refused: no key configured for its algorithm", { alg, kid, missing });
    throw invalid();
  }
  try {
    return (await check(token)).payload;
  } catch (err) {
    if (err instanceof errors.JWKSNoMatchingKey) {
      // Signed with a key the set does not hold: another project, a key rotated away, or a stale SUPABASE_JWKS.
      log.warn("JWT refused: no key in SUPABASE_JWKS matches it", { alg, kid });
    }
    // Why it failed (expired, bad signature, malformed) is not the client's business beyond "invalid".
    throw invalid();
  }
}

/**
 * Verifies the bearer token and describes the caller; 401 `unauthorized` when absent or invalid. `log` (the
 * request's logger) receives the warning when a token cannot be checked for want of configured key material.
 */
export async function authenticate(req: Request, log: Logger = fallbackLog): Promise<Caller> {
  const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
  const apikey = req.headers.get("apikey")?.trim() || undefined;
  // The JWT: the bearer token, or else a JWT in apikey (Supabase's gateway reads the legacy keys from either).
  const jwt = [bearer, apikey].find((value) => value !== undefined && !isApiKey(value));
  if (jwt === undefined) {
    const key = apikey ?? bearer;
    if (key === undefined) {
      throw unauthorized("An Authorization: Bearer <JWT> header, or an apikey header with an API key, is required.");
    }
    return keyCaller(key, log);
  }
  const claims: Record<string, unknown> = await verifiedClaims(jwt, log);
  const role = claims.role;
  if (role === "service_role") return { kind: "service", userId: null, actor: "service", role: "service_role", claims };
  if (role === "anon") return { kind: "anon", userId: null, actor: "anon", role: "anon", claims };
  if (role === "authenticated" && typeof claims.sub === "string" && UUID.test(claims.sub)) {
    const userId = claims.sub.toLowerCase();
    return isStaffClaims(claims)
      ? { kind: "staff", userId, actor: `staff:${userId}`, role: "authenticated", claims }
      : { kind: "user", userId, actor: `user:${userId}`, role: "authenticated", claims };
  }
  throw unauthorized("The JWT does not name a known role.");
}

/** True for Supabase's API keys (`sb_publishable_...`, `sb_secret_...`), which are not JWTs. */
export function isApiKey(value: string): boolean {
  return value.startsWith("sb_");
}

/**
 * Which kind of configured API key `key` is, or null for none. Compared as SHA-256 digests with timingSafeEqual:
 * equal lengths, so neither the comparison nor the keys' lengths tell a caller how much of a guess was right.
 * (Exported for the local functions gateway, which answers for the relay as Supabase's does.)
 */
export function apiKeyKind(key: string): "publishable" | "secret" | null {
  const digest = (value: string) => createHash("sha256").update(value).digest();
  const given = digest(key);
  for (const kind of ["secret", "publishable"] as const) {
    if (apiKeys(kind).some((known) => timingSafeEqual(digest(known), given))) return kind;
  }
  return null;
}

/** The caller an API key stands for: the service role for a secret key, anon for a publishable one. */
function keyCaller(key: string, log: Logger): Caller {
  switch (apiKeyKind(key)) {
    case "secret":
      return {
        kind: "service",
        userId: null,
        actor: "service",
        role: "service_role",
        claims: { role: "service_role" },
      };
    case "publishable":
      return { kind: "anon", userId: null, actor: "anon", role: "anon", claims: { role: "anon" } };
  }
  if (apiKeys("publishable").length === 0 && apiKeys("secret").length === 0) {
    // A deployment problem, not the client's: no key could have matched (the key itself is never logged).
    log.warn("API key refused: no API keys configured", { missing: "SUPABASE_PUBLISHABLE_KEYS, SUPABASE_SECRET_KEYS" });
  }
  throw unauthorized("The API key is not valid for this project.");
}

/** The caller if staff (or the service key), else 403 `forbidden`. */
export function requireStaff(caller: Caller): Caller {
  if (caller.kind === "staff" || caller.kind === "service") return caller;
  throw new AppError(403, "forbidden", "This action is for staff only.");
}
