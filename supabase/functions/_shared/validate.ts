/** Request validation with zod: every issue is reported at once as `{ path, message }`. */
import type { z } from "zod";
import { invalidRequest } from "./errors.ts";

/** One field error. */
export interface FieldError {
  path: string;
  message: string;
}

/** zod issues as field errors with dotted paths (`items.0.quantity`). */
export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.map((issue) => ({
    path: issue.path.map(String).join(".") || "(body)",
    message: issue.message,
  }));
}

/**
 * Parses `data` with `schema`; on failure throws 400 `invalid_request` listing every field error, plus any
 * `extra` errors found outside the body (headers), so the client fixes everything in one round.
 */
export function parseOrThrow<S extends z.ZodType>(schema: S, data: unknown, extra: FieldError[] = []): z.output<S> {
  const result = schema.safeParse(data);
  const errors = [...extra, ...(result.success ? [] : fieldErrors(result.error))];
  if (errors.length > 0 || !result.success) throw invalidRequest("The request is invalid.", errors);
  return result.data;
}
