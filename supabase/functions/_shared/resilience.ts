/**
 * Calls to payment providers wrapped in cockatiel policies: a timeout on each attempt, retries with
 * exponential backoff only where the caller says a repeat is safe (idempotent), and one circuit breaker per
 * provider so that a provider that is down is not hammered and callers fail fast while it recovers.
 * Settings come from env.ts (PROVIDER_*) when a provider's policies are first used.
 */
import {
  BrokenCircuitError,
  circuitBreaker,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleWhen,
  type IPolicy,
  retry,
  TaskCancelledError,
  timeout,
  TimeoutStrategy,
  wrap,
} from "cockatiel";
import { providerPolicyConfig } from "./env.ts";
import { createLogger } from "./log.ts";

/** Options for {@link callProvider}. */
export interface ProviderCallOptions {
  /** True when repeating the call cannot do anything twice (e.g. Stripe with an Idempotency-Key). */
  idempotent: boolean;
}

/** Decides which of a provider's errors mean "unavailable" (count towards the breaker, may be retried). */
export type TransientTest = (err: unknown) => boolean;

interface ProviderPolicies {
  breaker: CircuitBreakerPolicy;
  withRetry: IPolicy;
  once: IPolicy;
}

const log = createLogger({ component: "resilience" });
const policies = new Map<string, ProviderPolicies>();

function build(provider: string, isTransient: TransientTest): ProviderPolicies {
  const config = providerPolicyConfig();
  // A timed-out attempt is a failure like any other; an open circuit is not retried (that is its point).
  const transient = handleWhen((err) =>
    !(err instanceof BrokenCircuitError) && (err instanceof TaskCancelledError || isTransient(err))
  );
  const breaker = circuitBreaker(transient, {
    halfOpenAfter: config.breakerHalfOpenMs,
    breaker: new ConsecutiveBreaker(Math.max(1, config.breakerThreshold)),
  });
  breaker.onBreak(() => log.warn("circuit opened", { provider }));
  breaker.onReset(() => log.info("circuit closed", { provider }));
  // Aggressive: the caller gets its answer at the deadline even if the request ignores the abort signal.
  const perAttempt = timeout(config.timeoutMs, TimeoutStrategy.Aggressive);
  const retrying = retry(transient, {
    maxAttempts: config.retries,
    backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }),
  });
  return { breaker, withRetry: wrap(retrying, breaker, perAttempt), once: wrap(breaker, perAttempt) };
}

/**
 * Runs `fn` under `provider`'s policies. `fn` receives an AbortSignal that fires at the timeout.
 * Rejects with the provider's own error, cockatiel's TaskCancelledError (timeout) or BrokenCircuitError (open).
 */
export function callProvider<T>(
  provider: string,
  isTransient: TransientTest,
  fn: (signal: AbortSignal) => Promise<T>,
  options: ProviderCallOptions,
): Promise<T> {
  let p = policies.get(provider);
  if (!p) {
    p = build(provider, isTransient);
    policies.set(provider, p);
  }
  const policy = options.idempotent ? p.withRetry : p.once;
  return policy.execute(({ signal }) => fn(signal));
}

/** The breaker state of a provider ("closed" before its first call). */
export function breakerState(provider: string): "closed" | "open" | "half-open" | "isolated" {
  const state = policies.get(provider)?.breaker.state ?? CircuitState.Closed;
  return ({
    [CircuitState.Closed]: "closed",
    [CircuitState.Open]: "open",
    [CircuitState.HalfOpen]: "half-open",
    [CircuitState.Isolated]: "isolated",
  } as const)[state];
}

/** Forgets every breaker and policy, so the next call re-reads the settings. For tests. */
export function resetProviderPolicies(): void {
  policies.clear();
}

/** True when `err` is an open circuit or a timeout from these policies. */
export function isPolicyRejection(err: unknown): boolean {
  return err instanceof BrokenCircuitError || err instanceof TaskCancelledError;
}
