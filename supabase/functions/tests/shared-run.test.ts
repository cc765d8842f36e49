// sharedRunFromNow: each caller resolves with a run that started after it asked, and callers share runs.
import assert from "node:assert/strict";
import { sharedRunFromNow } from "../_shared/shared-run.ts";

/** A run the test finishes by hand: each start pushes its resolve/reject. */
function controlled() {
  const runs: { resolve: () => void; reject: (e: Error) => void }[] = [];
  const shared = sharedRunFromNow(() =>
    new Promise<void>((resolve, reject) => {
      runs.push({ resolve, reject });
    })
  );
  return { runs, shared };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("sharedRunFromNow: the first caller starts a run; callers during it share the next, not the running one", async () => {
  const { runs, shared } = controlled();
  const settled: string[] = [];
  const a = shared().then(() => settled.push("a"));
  await tick();
  assert.equal(shared.started, 1);
  const b = shared().then(() => settled.push("b"));
  const c = shared().then(() => settled.push("c"));
  await tick();
  assert.equal(shared.started, 1, "b and c wait for the running one to end before starting theirs");

  runs[0].resolve();
  await a;
  await tick();
  assert.deepEqual(settled, ["a"], "b and c are not answered by a run that started before they asked");
  assert.equal(shared.started, 2, "one run for b and c together");

  runs[1].resolve();
  await Promise.all([b, c]);
  assert.deepEqual(settled, ["a", "b", "c"]);

  // idle again: the next caller starts a run of its own at once
  const d = shared();
  await tick();
  assert.equal(shared.started, 3);
  runs[2].resolve();
  await d;
});

Deno.test("sharedRunFromNow: a failed run rejects everyone who shared it, and the next caller starts afresh", async () => {
  const { runs, shared } = controlled();
  const a = shared();
  await tick();
  const b = shared();
  const c = shared();
  runs[0].resolve();
  await a;
  await tick();
  runs[1].reject(new Error("connection lost"));
  await assert.rejects(b, /connection lost/);
  await assert.rejects(c, /connection lost/);
  const d = shared();
  await tick();
  assert.equal(shared.started, 3);
  runs[2].resolve();
  await d;
});
