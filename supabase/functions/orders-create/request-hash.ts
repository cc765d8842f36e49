/**
 * The request hash the engine stores beside an Idempotency-Key: it tells a true retry (same hash: same answer)
 * from a different request reusing the key (other hash: 422).
 */

/** JSON with object keys sorted at every level, so equal bodies hash equally whatever their key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * sha256 (hex) of the validated body and who sent it. The caller is part of it so that one user's key,
 * replayed by someone else with the same body, is refused rather than handing them the first user's order.
 */
export async function requestHash(body: unknown, caller: string): Promise<string> {
  const text = `${caller}\n${canonicalJson(body)}`;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
