/**
 * Who is calling: verifies the `Authorization: Bearer <jwt>` (HS256, SUPABASE_JWT_SECRET) and turns its claims
 * into the actor string the engine records. The gateway checks the JWT too; functions check again because they
 * need the claims and must not depend on how they are deployed.
 */
import { jwtVerify } from "jose";
import type { DbRole } from "./db.ts";
import { jwtSecret } from "./env.ts";
import { AppError } from "./errors.ts";

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

/** Verifies the bearer token and describes the caller; 401 `unauthorized` when absent or invalid. */
export async function authenticate(req: Request): Promise<Caller> {
  const match = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "");
  if (!match) throw unauthorized("An Authorization: Bearer <JWT> header is required.");
  let claims: Record<string, unknown>;
  try {
    const key = new TextEncoder().encode(jwtSecret());
    ({ payload: claims } = await jwtVerify(match[1], key, { algorithms: ["HS256"] }));
  } catch {
    // Why it failed (expired, bad signature, malformed) is not the client's business beyond "invalid".
    throw unauthorized("The JWT is invalid or expired.");
  }
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

/** The caller if staff (or the service key), else 403 `forbidden`. */
export function requireStaff(caller: Caller): Caller {
  if (caller.kind === "staff" || caller.kind === "service") return caller;
  throw new AppError(403, "forbidden", "This action is for staff only.");
}
