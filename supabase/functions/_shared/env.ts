/**
 * Configuration read from the environment at call time (never at import time), so a test can set a variable
 * and the next call sees it, and a missing secret fails the request that needs it rather than the whole module.
 * Every variable is documented in /.env.example.
 */

/** Thrown when a variable the current request needs is not set; mapped to a 500 without naming the value. */
export class ConfigError extends Error {
  constructor(readonly variable: string) {
    super(`${variable} is not configured`);
    this.name = "ConfigError";
  }
}

/** The raw value of a variable, or undefined when unset or empty. */
export function envValue(name: string): string | undefined {
  const value = Deno.env.get(name);
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** A variable the caller cannot work without. */
export function requireEnv(name: string): string {
  const value = envValue(name);
  if (value === undefined) throw new ConfigError(name);
  return value;
}

/** A positive integer variable with a default; a malformed value is a configuration error, not silently ignored. */
export function intEnv(name: string, fallback: number): number {
  const raw = envValue(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new ConfigError(name);
  return value;
}

/** A comma-separated list variable (empty items dropped). */
export function listEnv(name: string, fallback: string[] = []): string[] {
  const raw = envValue(name);
  if (raw === undefined) return fallback;
  return raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** Postgres connection string (hosted Supabase injects it; the local stack exports it). */
export function dbUrl(): string {
  return requireEnv("SUPABASE_DB_URL");
}

/**
 * The HS256 secret for legacy-signed JWTs (the anon and service_role keys, sessions of projects not yet on signing
 * keys): STOCKHOLD_JWT_SECRET, which operators set to the project's legacy JWT secret (hosted Supabase neither
 * injects it nor lets a secret start with SUPABASE_), else SUPABASE_JWT_SECRET, which the local stack exports.
 * Undefined when neither is set: there is deliberately no built-in default, since a secret in public code would let
 * anyone sign a staff token wherever the configuration is missing.
 */
export function jwtSecret(): string | undefined {
  return envValue("STOCKHOLD_JWT_SECRET") ?? envValue("SUPABASE_JWT_SECRET");
}

/**
 * The project's JSON Web Key Set as JSON text (`{"keys": [...]}` or a bare array), for JWTs signed with
 * asymmetric signing keys (ES256, RS256, EdDSA). Hosted Supabase injects it into every function; undefined
 * when unset (the local stack signs with HS256 only).
 */
export function jwksJson(): string | undefined {
  return envValue("SUPABASE_JWKS");
}

/**
 * Supabase's API keys of one kind (`sb_publishable_...` or `sb_secret_...`): SUPABASE_PUBLISHABLE_KEYS or
 * SUPABASE_SECRET_KEYS, a JSON object of name to key that Supabase injects into every function (the CLI injects
 * `{"default": <key>}`), else the single SUPABASE_PUBLISHABLE_KEY or SUPABASE_SECRET_KEY. Empty when unset; a
 * value that is not such an object is a ConfigError naming the variable (never its value).
 */
export function apiKeys(kind: "publishable" | "secret"): string[] {
  const name = kind === "publishable" ? "SUPABASE_PUBLISHABLE_KEY" : "SUPABASE_SECRET_KEY";
  const json = envValue(`${name}S`);
  if (json === undefined) {
    const single = envValue(name);
    return single === undefined ? [] : [single];
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new ConfigError(`${name}S`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ConfigError(`${name}S`);
  return Object.values(parsed).filter((key): key is string => typeof key === "string" && key !== "");
}

/** Stripe settings; the secret key is only required when a Stripe call is made. */
export function stripeConfig(): { secretKey: string; apiBase: string } {
  return {
    secretKey: requireEnv("STRIPE_SECRET_KEY"),
    apiBase: envValue("STRIPE_API_BASE") ?? "https://api.stripe.com",
  };
}

/** The Stripe webhook signing secret (whsec_...). */
export function stripeWebhookSecret(): string {
  return requireEnv("STRIPE_WEBHOOK_SECRET");
}

/** SumUp settings, or null when SumUp is not configured (in-store payments are then confirmed by staff only). */
export function sumupConfig(): { apiKey: string; merchantCode: string; apiBase: string; webhookUrl?: string } | null {
  const apiKey = envValue("SUMUP_API_KEY");
  if (apiKey === undefined) return null;
  return {
    apiKey,
    merchantCode: requireEnv("SUMUP_MERCHANT_CODE"),
    apiBase: envValue("SUMUP_API_BASE") ?? "https://api.sumup.com",
    // The sumup-webhook function's public URL, sent as each checkout's return_url (SumUp notifies it there).
    webhookUrl: envValue("SUMUP_WEBHOOK_URL"),
  };
}

/** Browser origins allowed to call the functions (CORS); "*" allows any. */
export function allowedOrigins(): string[] {
  return listEnv("ALLOWED_ORIGINS", ["http://localhost:3000", "http://127.0.0.1:3000"]);
}

/** Origins that success_url / cancel_url may point to, so the checkout cannot be used as an open redirect. */
export function allowedReturnOrigins(): string[] {
  return listEnv("ALLOWED_RETURN_ORIGINS", ["http://localhost:3000", "http://127.0.0.1:3000"]);
}

/** Timeout, retry and circuit-breaker settings for calls to payment providers. */
export function providerPolicyConfig(): {
  timeoutMs: number;
  retries: number;
  breakerThreshold: number;
  breakerHalfOpenMs: number;
} {
  return {
    timeoutMs: intEnv("PROVIDER_TIMEOUT_MS", 8000),
    retries: intEnv("PROVIDER_RETRIES", 2),
    breakerThreshold: intEnv("PROVIDER_BREAKER_THRESHOLD", 5),
    breakerHalfOpenMs: intEnv("PROVIDER_BREAKER_HALF_OPEN_MS", 30000),
  };
}

/** Order-creation rate limits, counted in Postgres so every function instance shares them. */
export function orderRateLimit(): { perAddress: number; perUser: number; windowSeconds: number } {
  return {
    perAddress: intEnv("ORDER_RATE_LIMIT_PER_ADDRESS", 30),
    perUser: intEnv("ORDER_RATE_LIMIT_PER_USER", 10),
    windowSeconds: intEnv("ORDER_RATE_LIMIT_WINDOW_SECONDS", 60),
  };
}

/** How long clients and CDNs may cache the product list (seconds). */
export function productsCacheSeconds(): number {
  return intEnv("PRODUCTS_CACHE_SECONDS", 30);
}

/** Postgres pool size per function instance. */
export function dbPoolMax(): number {
  return intEnv("DB_POOL_MAX", 5);
}

/** Minimum log level: debug | info | warn | error | silent. */
export function logLevel(): string {
  return envValue("LOG_LEVEL") ?? "info";
}
