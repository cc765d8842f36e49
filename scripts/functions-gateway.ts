/**
 * The local stand-in for Supabase's functions relay: serves every function in supabase/functions/<name>/
 * at /functions/v1/<name>, checking the JWT in Authorization (or an API key in apikey) first unless config.toml
 * sets `verify_jwt = false` for that function, as hosted Supabase and `supabase functions serve` do.
 * Each function's handler.ts is imported in-process (index.ts only wraps it in Deno.serve for hosted Supabase).
 */
import { jwtVerify } from "jose";
import { parse } from "smol-toml";
import { apiKeyKind, isApiKey } from "../supabase/functions/_shared/auth.ts";
import { serveApiDocs } from "./api-docs.ts";

/** A running gateway. */
export interface Gateway {
  url: string;
  port: number;
  functions: string[];
  shutdown(): Promise<void>;
}

/** Options for {@link startGateway}. */
export interface GatewayOptions {
  port?: number;
  hostname?: string;
  functionsDir?: string;
  configPath?: string;
  jwtSecret?: string;
  /** Log one line per request to stderr. */
  log?: boolean;
}

type Handler = (req: Request, info?: Deno.ServeHandlerInfo) => Response | Promise<Response>;

const root = new URL("..", import.meta.url);
const DEFAULT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long";

/** Reads `[functions.<name>] verify_jwt` from supabase/config.toml; Supabase's default is true. */
export async function readVerifyJwt(configPath: string): Promise<Map<string, boolean>> {
  const config = parse(await Deno.readTextFile(configPath)) as {
    functions?: Record<string, { verify_jwt?: boolean }>;
  };
  const out = new Map<string, boolean>();
  for (const [name, fn] of Object.entries(config.functions ?? {})) out.set(name, fn.verify_jwt ?? true);
  return out;
}

/** Imports the handler of every function folder (skipping _shared and tests). */
export async function loadHandlers(functionsDir: string): Promise<Map<string, Handler>> {
  const handlers = new Map<string, Handler>();
  for await (const entry of Deno.readDir(functionsDir)) {
    if (!entry.isDirectory || entry.name.startsWith("_") || entry.name === "tests") continue;
    const path = `${functionsDir}/${entry.name}/handler.ts`;
    try {
      await Deno.stat(path);
    } catch {
      continue;
    }
    const mod = await import(new URL(`file://${path}`).href);
    if (typeof mod.handler !== "function") throw new Error(`${path} does not export handler(req)`);
    handlers.set(entry.name, mod.handler);
  }
  return handlers;
}

function reject(status: number, message: string, code: string): Response {
  // Same body shape as Supabase's relay ({msg}), plus this project's machine-readable code.
  return Response.json({ code, msg: message, message }, { status });
}

/**
 * Checks a request as the Supabase CLI's relay does: the JWT in `Authorization: Bearer`, verified with HS256 and
 * the project's JWT secret. When that header is absent or holds an API key (`Bearer sb_...`, as supabase-js
 * sends a publishable or secret key), the `apikey` header decides: a configured secret or publishable key passes
 * (the CLI's relay swaps it for the service_role or anon JWT), anything else is verified as a JWT.
 */
async function checkJwt(req: Request, key: Uint8Array): Promise<Response | null> {
  const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
  const token = bearer === undefined || isApiKey(bearer) ? req.headers.get("apikey")?.trim() : bearer;
  if (!token) {
    return bearer === undefined
      ? reject(401, "Missing authorization header", "missing_authorization")
      : reject(401, "Invalid JWT", "invalid_jwt"); // an sb_ key in Authorization, and no apikey to read it from
  }
  // (only an sb_ value is looked up: a JWT is never one of the keys, and hashing every JWT against them is waste)
  if (isApiKey(token) && apiKeyKind(token) !== null) return null;
  try {
    await jwtVerify(token, key, { algorithms: ["HS256"] });
    return null;
  } catch {
    return reject(401, "Invalid JWT", "invalid_jwt");
  }
}

/** Starts the gateway; resolves once it listens. */
export async function startGateway(options: GatewayOptions = {}): Promise<Gateway> {
  const functionsDir = options.functionsDir ?? new URL("supabase/functions", root).pathname;
  const configPath = options.configPath ?? new URL("supabase/config.toml", root).pathname;
  const key = new TextEncoder().encode(options.jwtSecret ?? Deno.env.get("SUPABASE_JWT_SECRET") ?? DEFAULT_SECRET);
  const [handlers, verify] = await Promise.all([loadHandlers(functionsDir), readVerifyJwt(configPath)]);

  const serve = async (req: Request, info: Deno.ServeHandlerInfo): Promise<Response> => {
    const url = new URL(req.url);
    // The rendered API reference (/docs, /docs/openapi.json): local stack only, no JWT.
    const docs = await serveApiDocs(req);
    if (docs) return docs;
    const match = /^\/functions\/v1\/([a-z0-9_-]+)(\/.*)?$/.exec(url.pathname);
    const name = match?.[1];
    const handler = name ? handlers.get(name) : undefined;
    if (!name || !handler) return reject(404, "Function not found", "function_not_found");
    // Browsers send CORS preflights without credentials; the function itself answers them.
    if (req.method !== "OPTIONS" && (verify.get(name) ?? true)) {
      const denied = await checkJwt(req, key);
      if (denied) return denied;
    }
    // Like a real edge, the gateway (not the client) says who is calling: the socket's address.
    const headers = new Headers(req.headers);
    const remote = info.remoteAddr as Deno.NetAddr;
    headers.set("x-forwarded-for", remote.hostname);
    // A fresh Request (not `new Request(req)`) so the function does not inherit the connection's abort signal.
    const forwarded = new Request(req.url, {
      method: req.method,
      headers,
      body: req.body,
      // @ts-ignore: duplex is required by fetch for streamed bodies but missing from Deno's RequestInit type
      duplex: "half",
    });
    try {
      return await handler(forwarded, info);
    } catch (err) {
      console.error(
        JSON.stringify({ level: "error", msg: "unhandled error in function", function: name, error: String(err) }),
      );
      return reject(500, "Internal error", "internal_error");
    }
  };

  const logged = options.log
    ? async (req: Request, info: Deno.ServeHandlerInfo) => {
      const started = performance.now();
      const res = await serve(req, info);
      const ms = Math.round(performance.now() - started);
      console.error(`${req.method} ${new URL(req.url).pathname} ${res.status} ${ms}ms`);
      return res;
    }
    : serve;

  const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve(
    {
      port: options.port ?? 0,
      hostname: options.hostname ?? "127.0.0.1",
      onListen: (addr) => resolve(addr as Deno.NetAddr),
    },
    logged,
  );
  const addr = await listening;
  return {
    url: `http://${addr.hostname}:${addr.port}`,
    port: addr.port,
    functions: [...handlers.keys()].sort(),
    shutdown: () => server.shutdown(),
  };
}
