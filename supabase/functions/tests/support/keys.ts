/**
 * The local stack's JWT secret and the Supabase CLI's well-known demo keys signed with it. The functions have no
 * built-in secret (they read STOCKHOLD_JWT_SECRET, else SUPABASE_JWT_SECRET): when the runner exported neither
 * (a test file run on its own, without scripts/lib.sh), the local default is exported here, so the functions
 * under test verify what the tests sign. Tests of a missing secret unset both with withEnv.
 */
// `||`, not `??`: scripts/lib.sh exports the empty values of .env.example, and the functions treat "" as unset.
export const JWT_SECRET = Deno.env.get("STOCKHOLD_JWT_SECRET") || Deno.env.get("SUPABASE_JWT_SECRET") ||
  "super-secret-jwt-token-with-at-least-32-characters-long";
if (!Deno.env.get("STOCKHOLD_JWT_SECRET") && !Deno.env.get("SUPABASE_JWT_SECRET")) {
  Deno.env.set("SUPABASE_JWT_SECRET", JWT_SECRET);
}
export const ANON_KEY = Deno.env.get("SUPABASE_ANON_KEY") ??
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";
export const SERVICE_ROLE_KEY = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ??
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU";

/**
 * The Supabase CLI's local API keys (`supabase status`: Publishable key, Secret key), as .env.example sets them for
 * the stack; exported here too when the runner did not, so the functions under test check what the tests send.
 */
export const PUBLISHABLE_KEY = Deno.env.get("SUPABASE_PUBLISHABLE_KEY") ||
  "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH";
export const SECRET_KEY = Deno.env.get("SUPABASE_SECRET_KEY") || "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz";
if (!Deno.env.get("SUPABASE_PUBLISHABLE_KEYS") && !Deno.env.get("SUPABASE_SECRET_KEYS")) {
  Deno.env.set("SUPABASE_PUBLISHABLE_KEY", PUBLISHABLE_KEY);
  Deno.env.set("SUPABASE_SECRET_KEY", SECRET_KEY);
}
