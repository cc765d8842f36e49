/**
 * Hosted deploys resolve each function's bare imports through its own deno.json (what `supabase functions deploy`
 * reads, and Supabase recommends); local runs and tests resolve them through the root deno.json. These tests keep
 * the two in step: each function's deno.json is exactly what scripts/function-deps.ts derives from the root
 * (same versions, only the packages its module graph imports), and it alone resolves the function's whole graph.
 */
import assert from "node:assert/strict";
import { parse as parseToml } from "smol-toml";
import {
  expectedFunctionConfigs,
  functionConfigPath,
  functionNames,
  rootImports,
} from "../../../scripts/function-deps.ts";

const root = new URL("../../../", import.meta.url);

// The root's packages that only tests and scripts use: a function that shipped one would be a mistake.
const TEST_ONLY = [
  "@supabase/supabase-js",
  "smol-toml",
  "fast-check",
  "ajv",
  "ajv-formats",
  "@seriousme/openapi-schema-validator",
  "playwright-core",
  "redoc",
];

Deno.test("function deps: every function's deno.json is what the root deno.json gives (npm run functions:deps)", async () => {
  const expected = await expectedFunctionConfigs();
  assert.ok(expected.size >= 7, `functions found: ${[...expected.keys()].join(", ")}`);
  for (const [name, text] of expected) {
    const current = await Deno.readTextFile(functionConfigPath(name)).catch(() => "(missing)");
    assert.equal(current, text, `supabase/functions/${name}/deno.json is out of date: run \`npm run functions:deps\``);
  }
});

Deno.test("function deps: only runtime packages, at the root's versions", async () => {
  const rootMap = await rootImports();
  for (const name of await functionNames()) {
    const { imports } = JSON.parse(await Deno.readTextFile(functionConfigPath(name)));
    assert.ok(Object.keys(imports).length > 0, `${name} imports something`);
    for (const [key, target] of Object.entries(imports)) {
      assert.equal(target, rootMap[key], `${name}: ${key}`);
      assert.ok(!TEST_ONLY.includes(key), `${name} maps the test-only package ${key}`);
    }
  }
});

Deno.test("function deps: each function's graph resolves with its own deno.json alone", async () => {
  for (const name of await functionNames()) {
    // Run from the function's folder, so Deno takes that folder's deno.json (as the deploy bundler does).
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--no-lock", "./index.ts"],
      cwd: new URL(`supabase/functions/${name}/`, root).pathname,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.ok(out.success, `${name}: ${new TextDecoder().decode(out.stderr)}`);
    const text = new TextDecoder().decode(out.stdout);
    const graph = JSON.parse(text);
    assert.equal(graph.modules.find((m: { error?: string }) => m.error)?.error, undefined, name);
    const unresolved = [...text.matchAll(/"error": "([^"\\]*(?:\\.[^"\\]*)*)"/g)].map((m) => m[1]);
    assert.deepEqual(unresolved, [], `${name} does not resolve with its own deno.json`);
  }
});

Deno.test("function deps: nothing overrides the per-function deno.json at deploy", async () => {
  // `supabase functions deploy` prefers config.toml's import_map, and falls back to the deprecated
  // supabase/functions/import_map.json only for a function without a deno.json.
  const config = parseToml(await Deno.readTextFile(new URL("supabase/config.toml", root))) as {
    functions?: Record<string, { import_map?: string }>;
  };
  const names = await functionNames();
  for (const [name, fn] of Object.entries(config.functions ?? {})) {
    assert.equal(fn.import_map, undefined, `config.toml sets import_map for ${name}`);
    assert.ok(names.includes(name), `config.toml's ${name} has a folder with index.ts`);
  }
  await assert.rejects(Deno.stat(new URL("supabase/functions/import_map.json", root)));
});
