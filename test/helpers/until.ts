/** Polls `check` until it holds; throws naming `what` past the deadline (on the monotonic clock: tests may mock Date). */
export async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 20000, everyMs = 100): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
