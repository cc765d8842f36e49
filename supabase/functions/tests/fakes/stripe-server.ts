/**
 * A local stand-in for the Stripe API, for tests: a real HTTP server on 127.0.0.1:<random port> that the real
 * `stripe` SDK is pointed at through STRIPE_API_BASE. It records every request (form body decoded into nested
 * objects, Idempotency-Key kept), replays the first answer for a repeated idempotency key as Stripe does, and
 * can play an outage: 500 answers, or requests that hang until the client gives up.
 *
 * Implemented endpoints, with Stripe's field names:
 * - `POST /v1/checkout/sessions` (create; amount_total is the sum of the price_data lines; a total under 50 minor
 *   units is refused as Stripe refuses a charge below its minimum: 400 invalid_request_error `amount_too_small`,
 *   not remembered under the idempotency key, since Stripe keeps no result for a request it rejected up front)
 * - `GET /v1/checkout/sessions/{id}` (retrieve; 404 when unknown)
 */

/** A request the fake received, for assertions. */
export interface FakeStripeRequest {
  method: string;
  path: string;
  idempotencyKey: string | null;
  authorization: string | null;
  /** The form body decoded into nested objects (`line_items[0][quantity]` -> `{ line_items: [{ quantity }] }`). */
  params: Record<string, unknown>;
}

/** How the fake answers: normally, with 500 api_error to everything, or never (until the client aborts). */
export type FakeStripeMode = "up" | "error" | "hang";

/** The handle a test holds on a running fake Stripe. */
export interface FakeStripe {
  /** Base URL for STRIPE_API_BASE, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** Every request received, in order. */
  requests: FakeStripeRequest[];
  /** Sessions created, by id. */
  sessions: Map<string, Record<string, unknown>>;
  /** Current behaviour; change it at any time. */
  mode: FakeStripeMode;
  /** Called with each request before it is answered (e.g. to make something happen "meanwhile"). */
  beforeAnswer: ((req: FakeStripeRequest) => Promise<void>) | null;
  /** Answers the next `n` requests with 500, then behaves as `mode` says. */
  failNext(n: number): void;
  /** Requests to POST /v1/checkout/sessions. */
  sessionCreates(): FakeStripeRequest[];
  /** Stops the server; hanging requests are released first. */
  close(): Promise<void>;
}

/** Decodes Stripe's bracketed form encoding into nested objects and arrays. */
export function decodeStripeForm(body: string): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [key, value] of new URLSearchParams(body)) {
    const path = key.replace(/\]/g, "").split("[");
    let node: Record<string, unknown> = root;
    path.forEach((part, i) => {
      if (i === path.length - 1) {
        node[part] = value;
      } else {
        node[part] ??= /^\d+$/.test(path[i + 1]) ? [] : {};
        node = node[part] as Record<string, unknown>;
      }
    });
  }
  return root;
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "request-id": `req_${crypto.randomUUID().slice(0, 12)}` },
  });
}

function stripeError(status: number, type: string, message: string, code?: string): Response {
  return json(status, { error: { type, message, ...(code ? { code } : {}) } });
}

/** Stripe's smallest chargeable amount in EUR and USD, in minor units. */
const MINIMUM_AMOUNT = 50;

function sessionTotal(params: Record<string, unknown>): number {
  const lines = (params.line_items ?? []) as { quantity: string; price_data: { unit_amount: string } }[];
  return lines.reduce((sum, l) => sum + Number(l.price_data.unit_amount) * Number(l.quantity), 0);
}

/** Starts a fake Stripe API server on a free port. Close it with `close()` at the end of the test. */
export function startFakeStripe(): FakeStripe {
  const requests: FakeStripeRequest[] = [];
  const sessions = new Map<string, Record<string, unknown>>();
  const byIdempotencyKey = new Map<string, { status: number; body: unknown }>();
  const hanging = new Set<() => void>();
  let failures = 0;
  let closed = false;

  function createSession(params: Record<string, unknown>): Record<string, unknown> {
    const lines = (params.line_items ?? []) as { price_data: { currency: string } }[];
    const amount = sessionTotal(params);
    const id = `cs_test_${crypto.randomUUID().replaceAll("-", "")}`;
    const session = {
      id,
      object: "checkout.session",
      mode: params.mode,
      status: "open",
      payment_status: "unpaid",
      amount_subtotal: amount,
      amount_total: amount,
      currency: lines[0]?.price_data.currency ?? "eur",
      client_reference_id: params.client_reference_id ?? null,
      customer_email: params.customer_email ?? null,
      metadata: params.metadata ?? {},
      expires_at: Number(params.expires_at),
      success_url: params.success_url,
      cancel_url: params.cancel_url,
      payment_intent: null,
      url: `https://checkout.stripe.test/c/pay/${id}`,
      livemode: false,
      created: Math.floor(Date.now() / 1000),
    };
    sessions.set(id, session);
    return session;
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req, info) => {
    const url = new URL(req.url);
    const text = await req.text();
    const record: FakeStripeRequest = {
      method: req.method,
      path: url.pathname,
      idempotencyKey: req.headers.get("idempotency-key"),
      authorization: req.headers.get("authorization"),
      params: req.method === "GET" ? Object.fromEntries(url.searchParams) : decodeStripeForm(text),
    };
    requests.push(record);
    try {
      await fake.beforeAnswer?.(record);
    } catch (err) {
      // A failing hook is a bug in the test, not a Stripe outage: say so loudly.
      console.error("fake Stripe: beforeAnswer failed:", err);
      return stripeError(599, "test_hook_error", String(err));
    }

    if (fake.mode === "hang") {
      // Held open until the client aborts (its timeout) or the fake closes.
      await new Promise<void>((resolve) => {
        hanging.add(resolve);
        // the client gave up (its timeout): its connection is gone, so no answer can be delivered. (Not
        // req.signal: in Deno it also fires after every successful response, and reading it prints a notice.)
        info.completed.catch(() => resolve());
      });
      return stripeError(500, "api_error", "fake Stripe released a hanging request");
    }
    if (failures > 0 || fake.mode === "error") {
      if (failures > 0) failures--;
      return stripeError(500, "api_error", "fake Stripe is down");
    }

    if (req.method === "POST" && url.pathname === "/v1/checkout/sessions") {
      // Stripe answers a repeated idempotency key with its first answer.
      const key = record.idempotencyKey;
      const earlier = key ? byIdempotencyKey.get(key) : undefined;
      if (earlier) return json(earlier.status, earlier.body);
      if (sessionTotal(record.params) < MINIMUM_AMOUNT) {
        return stripeError(
          400,
          "invalid_request_error",
          `The Checkout Session's total amount due must add up to at least ${MINIMUM_AMOUNT} minor units.`,
          "amount_too_small",
        );
      }
      const session = createSession(record.params);
      if (key) byIdempotencyKey.set(key, { status: 200, body: session });
      return json(200, session);
    }
    const one = url.pathname.match(/^\/v1\/checkout\/sessions\/([^/]+)$/);
    if (req.method === "GET" && one) {
      const session = sessions.get(one[1]);
      return session ? json(200, session) : stripeError(404, "invalid_request_error", "No such checkout.session");
    }
    return stripeError(404, "invalid_request_error", `Unrecognized request URL (${req.method}: ${url.pathname})`);
  });

  const fake: FakeStripe = {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    sessions,
    mode: "up",
    beforeAnswer: null,
    failNext(n) {
      failures = n;
    },
    sessionCreates: () => requests.filter((r) => r.method === "POST" && r.path === "/v1/checkout/sessions"),
    async close() {
      if (closed) return;
      closed = true;
      for (const release of hanging) release();
      await server.shutdown();
    },
  };
  return fake;
}
