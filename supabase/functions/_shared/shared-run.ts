/**
 * Shares the runs of an idempotent action among concurrent callers, where what a caller needs is a run that
 * STARTED after it asked (a flush wait covers only the commits before it began). A caller gets the run in flight
 * only if none is running yet; while one runs, every caller that arrives shares the next, started as soon as the
 * running one settles. A failed run rejects everyone who shared it.
 */
export interface SharedRun {
  (): Promise<void>;
  /** How many runs have started (for tests and metrics). */
  readonly started: number;
}

export function sharedRunFromNow(run: () => Promise<unknown>): SharedRun {
  let running: Promise<void> | undefined;
  let next: Promise<void> | undefined;
  let started = 0;

  const start = (): Promise<void> => {
    started++;
    running = run().then(() => {}).finally(() => {
      running = undefined;
    });
    return running;
  };

  const join = (): Promise<void> => {
    if (!running) return start();
    next ??= running.catch(() => {}).then(() => {
      next = undefined;
      return running ?? start();
    });
    return next;
  };

  return Object.defineProperty(join, "started", { get: () => started }) as SharedRun;
}
