/**
 * The API contract as a test helper: checks an answer of a function against the checked-in OpenAPI document
 * (docs/openapi.json) — the status must be documented for that path and method, the body must validate against
 * that status's schema (JSON Schema 2020-12, with ajv), documented required headers must be present and valid,
 * and a documented bodiless answer (304) must have no body.
 *
 * Adopting it in a function test:
 *
 *   import { withContract } from "./support/contract.ts";
 *   import { handler as raw } from "../orders-create/handler.ts";
 *   const handler = withContract("orders-create", raw);   // every answer is now checked; a mismatch throws
 *
 * or, for answers already in hand: `assertContract("orders-get", "GET", { status, headers, body })`.
 * Through the gateway: `contractFetch(url, init)` (the function's name is taken from /functions/v1/<name>).
 * CORS preflights (OPTIONS) are not API operations and are passed through unchecked.
 */
import Ajv2020Import from "ajv/dist/2020.js";
import addFormatsImport from "ajv-formats";

// deno-lint-ignore no-explicit-any
type Json = any;

const DOC_ID = "https://stockhold.local/openapi.json";
const docPath = new URL("../../../../docs/openapi.json", import.meta.url);

// ajv ships CommonJS: its default export arrives wrapped or not depending on the loader.
// deno-lint-ignore no-explicit-any
const Ajv2020: any = (Ajv2020Import as any).default ?? Ajv2020Import;
// deno-lint-ignore no-explicit-any
const addFormats: any = (addFormatsImport as any).default ?? addFormatsImport;

let state: { doc: Json; ajv: Json; validators: Map<string, Json> } | null = null;

/** The checked-in OpenAPI document. */
export function openApiDocument(): Json {
  return load().doc;
}

function load() {
  if (state) return state;
  const doc = JSON.parse(Deno.readTextFileSync(docPath));
  // strict: false lets OpenAPI's own keywords (example, discriminator) sit in schemas; formats are checked.
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(doc, DOC_ID);
  state = { doc, ajv, validators: new Map() };
  return state;
}

function pointer(parts: string[]): string {
  return "#/" + parts.map((p) => p.replaceAll("~", "~0").replaceAll("/", "~1")).join("/");
}

/** A validator for the schema at a JSON pointer inside the document. */
export function schemaValidator(jsonPointer: string): (value: unknown) => string[] {
  const s = load();
  let validate = s.validators.get(jsonPointer);
  if (!validate) {
    validate = s.ajv.compile({ $ref: `${DOC_ID}${jsonPointer}` });
    s.validators.set(jsonPointer, validate);
  }
  return (value: unknown) =>
    validate(value)
      ? []
      : (validate.errors ?? []).map((e: Json) =>
        `${e.instancePath || "(body)"} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ""}`
      );
}

function resolve(obj: Json): Json {
  const doc = load().doc;
  while (obj && typeof obj.$ref === "string") {
    obj = obj.$ref.slice(2).split("/").map((p: string) => p.replaceAll("~1", "/").replaceAll("~0", "~"))
      .reduce((node: Json, key: string) => node?.[key], doc);
  }
  return obj;
}

/** An answer as tests hold it. */
export interface Answer {
  status: number;
  headers: Headers | Record<string, string>;
  /** Parsed JSON, the raw text when not JSON, or null/undefined/"" when there was no body. */
  body: unknown;
}

/** The (path, method, status) answers checked so far, e.g. "POST /orders-create 201". */
export const checkedAnswers = new Set<string>();

/** Every way `answer` breaks the contract of `fn` (e.g. "orders-create") and `method`; empty when it keeps it. */
export function contractErrors(fn: string, method: string, answer: Answer): string[] {
  const doc = load().doc;
  const path = `/${fn}`;
  const m = method.toLowerCase();
  const item = doc.paths[path];
  if (!item) return [`${path} is not in the OpenAPI document`];
  // A method the function does not answer: the 405 is documented on each of the path's operations, alike.
  const opMethod = item[m] ? m : answer.status === 405 ? Object.keys(item)[0] : null;
  if (!opMethod) return [`${method.toUpperCase()} ${path} is not in the OpenAPI document (answered ${answer.status})`];
  const responses = item[opMethod].responses;
  const statusKey = String(answer.status) in responses
    ? String(answer.status)
    : "default" in responses
    ? "default"
    : null;
  const where = `${method.toUpperCase()} ${path} ${answer.status}`;
  if (!statusKey) {
    return [`${where}: status ${answer.status} is not documented (documented: ${Object.keys(responses).join(", ")})`];
  }
  const response = resolve(responses[statusKey]);
  const errors: string[] = [];

  const headers = answer.headers instanceof Headers ? answer.headers : new Headers(answer.headers);
  for (const [name, spec] of Object.entries(response.headers ?? {})) {
    const header = resolve(spec);
    const value = headers.get(name);
    if (value === null) {
      if (header.required) errors.push(`${where}: required header ${name} is missing`);
      continue;
    }
    if (header.schema) {
      // Header values are strings on the wire; a schema asking for an integer means its decimal form.
      const typed = header.schema.type === "integer" && /^-?\d+$/.test(value) ? Number(value) : value;
      const headerPointer = pointer(["paths", path, opMethod, "responses", statusKey, "headers", name, "schema"]);
      const viaRef = typeof (spec as Json).$ref === "string" ? `${(spec as Json).$ref}/schema` : headerPointer;
      for (const e of schemaValidator(viaRef)(typed)) errors.push(`${where}: header ${name}: ${e}`);
    }
  }

  const content = response.content?.["application/json"];
  const empty = answer.body === null || answer.body === undefined || answer.body === "";
  if (!content) {
    if (!empty) errors.push(`${where}: documented without a body, but a body came back`);
  } else if (empty) {
    errors.push(`${where}: documented with a JSON body, but none came back`);
  } else {
    const contentType = headers.get("content-type") ?? "";
    if (!contentType.includes("application/json")) errors.push(`${where}: content-type is "${contentType}", not JSON`);
    const schemaPointer = pointer([
      "paths",
      path,
      opMethod,
      "responses",
      statusKey,
      "content",
      "application/json",
      "schema",
    ]);
    for (const e of schemaValidator(schemaPointer)(answer.body)) errors.push(`${where}: body ${e}`);
  }
  if (errors.length === 0) checkedAnswers.add(`${opMethod.toUpperCase()} ${path} ${answer.status}`);
  return errors;
}

/** Throws (with every mismatch listed) when `answer` breaks the contract. */
export function assertContract(fn: string, method: string, answer: Answer): void {
  const errors = contractErrors(fn, method, answer);
  if (errors.length > 0) {
    throw new Error(
      `the answer breaks the OpenAPI contract:\n  ${errors.join("\n  ")}\nbody: ${JSON.stringify(answer.body)}`,
    );
  }
}

/** Reads a Response (without consuming it) and checks it; returns the same Response for the caller. */
export async function checkResponse(fn: string, method: string, res: Response): Promise<Response> {
  if (method.toUpperCase() === "OPTIONS") return res;
  const text = await res.clone().text();
  let body: unknown = text;
  if (text !== "") {
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON: validated as the raw text (a JSON schema will then refuse it).
    }
  }
  assertContract(fn, method, { status: res.status, headers: res.headers, body });
  return res;
}

/** Wraps a function's handler so that every answer it gives in a test is checked against the contract. */
export function withContract<H extends (req: Request, ...rest: never[]) => Promise<Response>>(
  fn: string,
  handler: H,
): H {
  return (async (req: Request, ...rest: never[]) => checkResponse(fn, req.method, await handler(req, ...rest))) as H;
}

/**
 * fetch() for calls through the gateway (`.../functions/v1/<name>`), checking the answer against the contract.
 * It has fetch's own signature, so it can also be handed to supabase-js: `createClient(url, key, { global:
 * { fetch: contractFetch } })` checks every answer `functions.invoke` receives.
 */
export async function contractFetch(input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> {
  const url = new URL(input instanceof Request ? input.url : input);
  const fn = /\/functions\/v1\/([a-z0-9_-]+)/.exec(url.pathname)?.[1];
  if (!fn) throw new Error(`${url} is not a function URL`);
  const method = init.method ?? (input instanceof Request ? input.method : "GET");
  return await checkResponse(fn, method, await fetch(input, init));
}
