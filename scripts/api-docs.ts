/**
 * The rendered API reference for the local stack, mounted by the functions gateway under /docs:
 *   /docs                     an HTML page rendering the document with Redoc
 *   /docs/openapi.json        the checked-in OpenAPI document (docs/openapi.json)
 *   /docs/redoc.standalone.js Redoc's self-contained browser bundle, served from the npm package
 * Nothing is fetched from a CDN; the page's Content-Security-Policy allows this origin only.
 */
import redocBundle from "redoc/bundles/redoc.standalone.js" with { type: "text" };

const specUrl = new URL("../docs/openapi.json", import.meta.url);

// Redoc injects its styles at run time and renders the search index in a blob worker.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'";

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>stockhold API reference</title>
  <link rel="icon" href="data:,">
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <redoc spec-url="/docs/openapi.json" expand-responses="200,201" path-in-middle-panel="true"></redoc>
  <script src="/docs/redoc.standalone.js"></script>
</body>
</html>
`;

/** The answer for a /docs request, or null when `req` is not for /docs (the gateway then goes on). */
export async function serveApiDocs(req: Request): Promise<Response | null> {
  const { pathname } = new URL(req.url);
  if (pathname !== "/docs" && !pathname.startsWith("/docs/")) return null;
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("method not allowed", { status: 405, headers: { Allow: "GET, HEAD" } });
  }
  const head = req.method === "HEAD";
  const send = (body: string, type: string, extra: Record<string, string> = {}) =>
    new Response(head ? null : body, { headers: { "Content-Type": type, "Cache-Control": "no-cache", ...extra } });
  switch (pathname) {
    case "/docs":
    case "/docs/":
      return send(PAGE, "text/html; charset=utf-8", { "Content-Security-Policy": CSP });
    case "/docs/openapi.json":
      // Read per request, so `npm run openapi` shows up without restarting the gateway.
      return send(await Deno.readTextFile(specUrl), "application/json");
    case "/docs/redoc.standalone.js":
      return send(redocBundle, "text/javascript; charset=utf-8");
    default:
      return new Response("not found", { status: 404 });
  }
}
