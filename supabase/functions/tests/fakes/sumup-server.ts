/**
 * A local stand-in for SumUp's Checkouts API, for tests: a real HTTP server on 127.0.0.1:<random port> that the real
 * `@sumup/sdk` client is pointed at through `SUMUP_API_BASE`. It keeps checkouts in memory, lets a test set their
 * state (paid, failed, another amount) and can play an outage (5xx answers, slow answers, or closed).
 *
 * Only the parts of the API stockhold uses are implemented, with SumUp's field names:
 * - `POST /v0.1/checkouts` (create; 409 on a reused `checkout_reference`, as SumUp does)
 * - `GET /v0.1/checkouts/{id}` (retrieve; 404 when unknown)
 * - `GET /v0.1/checkouts?checkout_reference=` (list)
 */

/** A checkout as SumUp's API returns it (amount in MAJOR units, as SumUp sends it). */
export interface FakeCheckout {
  id: string;
  checkout_reference: string;
  amount: number;
  currency: string;
  merchant_code: string;
  description?: string;
  return_url?: string;
  status: "PENDING" | "PAID" | "FAILED" | "EXPIRED";
  date: string;
  transaction_code?: string;
  transaction_id?: string;
  transactions?: Array<Record<string, unknown>>;
}

/** A request the fake received, for assertions (headers lower-cased; body parsed when JSON). */
export interface FakeRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: unknown;
}

/** How the fake answers: `up` normally, `error` with a 503 to every request, `slow` after `delayMs`. */
export type FakeMode = "up" | "error" | "slow";

/** The handle a test holds on a running fake SumUp. */
export interface FakeSumUp {
  /** Base URL to put in `SUMUP_API_BASE`, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** The API key the fake expects as `Authorization: Bearer <key>`. */
  apiKey: string;
  /** Checkouts by id. */
  checkouts: Map<string, FakeCheckout>;
  /** Every request received, in order. */
  requests: FakeRequest[];
  /** Current behaviour; change it at any time. */
  mode: FakeMode;
  /** Delay used in `slow` mode. */
  delayMs: number;
  /** Adds a checkout directly (as if created earlier, or by another system) and returns it. */
  addCheckout(fields: Partial<FakeCheckout> & Pick<FakeCheckout, "checkout_reference" | "amount">): FakeCheckout;
  /** Marks a checkout PAID with a transaction, as a card payment on the terminal would. */
  pay(id: string, opts?: { transactionCode?: string; amount?: number }): FakeCheckout;
  /** Stops the server (connections are refused afterwards: "SumUp unreachable"). */
  close(): Promise<void>;
}

/** Options for {@link startFakeSumUp}. */
export interface FakeSumUpOptions {
  apiKey?: string;
  merchantCode?: string;
}

/** Starts a fake SumUp API server on a free port. Close it with `close()` at the end of the test. */
export function startFakeSumUp(opts: FakeSumUpOptions = {}): FakeSumUp {
  const apiKey = opts.apiKey ?? "sup_sk_test_fake";
  const merchantCode = opts.merchantCode ?? "MTEST0001";
  const checkouts = new Map<string, FakeCheckout>();
  const requests: FakeRequest[] = [];
  let closed = false;

  const fake: FakeSumUp = {
    url: "",
    apiKey,
    checkouts,
    requests,
    mode: "up",
    delayMs: 5_000,
    addCheckout(fields) {
      const checkout: FakeCheckout = {
        id: crypto.randomUUID(),
        currency: "EUR",
        merchant_code: merchantCode,
        status: "PENDING",
        date: new Date().toISOString(),
        ...fields,
      };
      checkouts.set(checkout.id, checkout);
      return checkout;
    },
    pay(id, payOpts = {}) {
      const checkout = checkouts.get(id);
      if (!checkout) throw new Error(`fake SumUp: no checkout ${id}`);
      const code = payOpts.transactionCode ?? `T${crypto.randomUUID().slice(0, 8).toUpperCase()}`;
      const txId = crypto.randomUUID();
      checkout.status = "PAID";
      if (payOpts.amount !== undefined) checkout.amount = payOpts.amount;
      checkout.transaction_code = code;
      checkout.transaction_id = txId;
      checkout.transactions = [{
        id: txId,
        transaction_code: code,
        amount: checkout.amount,
        currency: checkout.currency,
        status: "SUCCESSFUL",
        payment_type: "POS",
        timestamp: new Date().toISOString(),
      }];
      return checkout;
    },
    async close() {
      if (closed) return;
      closed = true;
      await server.shutdown();
    },
  };

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      const text = await req.text();
      let body: unknown = text;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch { /* keep the raw text */ }
      requests.push({
        method: req.method,
        path: url.pathname + url.search,
        headers: Object.fromEntries(req.headers),
        body,
      });

      if (fake.mode === "error") return problem(503, "SERVICE_UNAVAILABLE", "fake SumUp is down");
      if (fake.mode === "slow") await new Promise((r) => setTimeout(r, fake.delayMs));
      if (req.headers.get("authorization") !== `Bearer ${apiKey}`) {
        return problem(401, "INVALID_ACCESS_TOKEN", "The access token is invalid");
      }

      const one = url.pathname.match(/^\/v0\.1\/checkouts\/([^/]+)$/);
      if (req.method === "GET" && one) {
        const checkout = checkouts.get(decodeURIComponent(one[1]));
        return checkout ? json(200, checkout) : problem(404, "NOT_FOUND", "Resource not found");
      }
      if (url.pathname === "/v0.1/checkouts" && req.method === "GET") {
        const ref = url.searchParams.get("checkout_reference");
        return json(200, [...checkouts.values()].filter((c) => ref === null || c.checkout_reference === ref));
      }
      if (url.pathname === "/v0.1/checkouts" && req.method === "POST") {
        const b = (body ?? {}) as Record<string, unknown>;
        const missing = ["checkout_reference", "amount", "currency", "merchant_code"].filter((k) => b[k] === undefined);
        if (missing.length) return problem(400, "MISSING", `Validation error: missing ${missing.join(", ")}`);
        if (typeof b.amount !== "number") return problem(400, "INVALID", "amount must be a number");
        if ([...checkouts.values()].some((c) => c.checkout_reference === b.checkout_reference)) {
          return problem(
            409,
            "DUPLICATED_CHECKOUT",
            "Checkout with this checkout reference and pay to email already exists",
          );
        }
        const created = fake.addCheckout({
          checkout_reference: String(b.checkout_reference),
          amount: b.amount,
          currency: String(b.currency),
          merchant_code: String(b.merchant_code),
          description: b.description as string | undefined,
          return_url: b.return_url as string | undefined,
        });
        return json(201, created);
      }
      return problem(404, "NOT_FOUND", "Resource not found");
    },
  );
  fake.url = `http://127.0.0.1:${server.addr.port}`;
  return fake;
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

// SumUp answers errors as `{ error_code, message }` (and problem+json on newer endpoints).
function problem(status: number, code: string, message: string): Response {
  return json(status, { error_code: code, message });
}
