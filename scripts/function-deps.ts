/**
 * Writes each edge function's own `deno.json` (supabase/functions/<name>/deno.json), the file through which
 * `supabase functions deploy` resolves the function's bare imports (`zod`, `postgres`, ...) on hosted Supabase,
 * and which Supabase recommends over a shared import map. The versions have one source, the root deno.json (which
 * local runs and tests use); each function's file holds exactly the root's mappings of the packages its module
 * graph imports (its own files and _shared/), as Deno resolves that graph (`deno info --json`), so the test-only
 * packages of the root (playwright-core, redoc, ajv, ...) never reach a function. Deno's own tools (fmt, lint)
 * take their settings from the nearest deno.json, so each function's file also carries the root's `compilerOptions`,
 * `fmt` and `lint`: a function's code is formatted and linted as the rest of the repository.
 *
 *   deno run -A scripts/function-deps.ts           writes the files           (npm run functions:deps)
 *   deno run -A scripts/function-deps.ts --check   exits 1 when a file is not what the root deno.json gives
 *
 * supabase/functions/tests/function-deps.test.ts runs the check, so a version bumped in the root deno.json, a new
 * import or a new function without its deno.json fails `npm test`.
 */

const root = new URL("..", import.meta.url);
const functionsDir = new URL("supabase/functions/", root);

/** A function folder: has an index.ts; `_shared` and `tests` are not functions. */
export async function functionNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(functionsDir)) {
    if (!entry.isDirectory || entry.name.startsWith("_") || entry.name === "tests") continue;
    try {
      await Deno.stat(new URL(`${entry.name}/index.ts`, functionsDir));
      names.push(entry.name);
    } catch {
      // Not a function folder.
    }
  }
  return names.sort();
}

// Settings of the root deno.json that Deno's tools read from the nearest deno.json of each file.
const TOOL_SETTINGS = ["compilerOptions", "fmt", "lint"] as const;

/** The root deno.json. */
async function rootConfig(): Promise<Record<string, unknown> & { imports?: Record<string, string> }> {
  return JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
}

/** The root deno.json's import map. */
export async function rootImports(): Promise<Record<string, string>> {
  return (await rootConfig()).imports ?? {};
}

/** Whether `specifier` is bare (resolved through an import map) rather than relative, absolute or a URL scheme. */
function isBare(specifier: string): boolean {
  return !/^(\.{0,2}\/|[a-z][a-z0-9+.-]*:)/i.test(specifier);
}

/** Every bare specifier in the module graph of `supabase/functions/<name>/index.ts`, as Deno resolves it. */
async function bareImports(name: string): Promise<string[]> {
  // "./" so Deno reads a path, not the npm package "supabase" that package.json names.
  const entry = `./supabase/functions/${name}/index.ts`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--no-lock", entry],
    cwd: root.pathname,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!out.success) throw new Error(`deno info ${entry} failed:\n${new TextDecoder().decode(out.stderr)}`);
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string; dependencies?: { specifier: string }[] }[];
  };
  const found = new Set<string>();
  for (const mod of graph.modules) {
    // Only our own files: what an npm package imports inside itself is npm's business, not the import map's.
    if (!mod.specifier.startsWith("file:")) continue;
    for (const dep of mod.dependencies ?? []) if (isBare(dep.specifier)) found.add(dep.specifier);
  }
  return [...found].sort();
}

/** The root import-map key that resolves `specifier` (`zod` for `zod` and for `zod/mini`), or undefined. */
function mappingKey(specifier: string, imports: Record<string, string>): string | undefined {
  if (specifier in imports) return specifier;
  return Object.keys(imports).filter((key) => specifier.startsWith(key.endsWith("/") ? key : `${key}/`))
    .sort((a, b) => b.length - a.length)[0];
}

/** The deno.json each function should have, keyed by function name, as its JSON text. */
export async function expectedFunctionConfigs(): Promise<Map<string, string>> {
  const config = await rootConfig();
  const imports = config.imports ?? {};
  const tools = Object.fromEntries(TOOL_SETTINGS.filter((k) => k in config).map((k) => [k, config[k]]));
  const configs = new Map<string, string>();
  for (const name of await functionNames()) {
    const own: Record<string, string> = {};
    for (const specifier of await bareImports(name)) {
      const key = mappingKey(specifier, imports);
      if (!key) throw new Error(`${name} imports "${specifier}", which the root deno.json does not map`);
      own[key] = imports[key];
    }
    const sorted = Object.fromEntries(Object.entries(own).sort(([a], [b]) => a.localeCompare(b)));
    configs.set(name, `${JSON.stringify({ imports: sorted, ...tools }, null, 2)}\n`);
  }
  return configs;
}

/** Where a function's deno.json lives. */
export function functionConfigPath(name: string): URL {
  return new URL(`${name}/deno.json`, functionsDir);
}

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const stale: string[] = [];
  for (const [name, text] of await expectedFunctionConfigs()) {
    const path = functionConfigPath(name);
    const current = await Deno.readTextFile(path).catch(() => "");
    if (current === text) continue;
    if (check) stale.push(name);
    else {
      await Deno.writeTextFile(path, text);
      console.error(`wrote supabase/functions/${name}/deno.json`);
    }
  }
  if (stale.length > 0) {
    console.error(`out of date: ${stale.join(", ")}: run \`npm run functions:deps\``);
    Deno.exit(1);
  }
  console.error("every function's deno.json matches the root deno.json");
}
