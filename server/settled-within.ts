/** Resolves when `promise` settles, or after `ms`, whichever comes first; at once without one. */
export function settledWithin(promise: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!promise) return Promise.resolve();
  let timer!: NodeJS.Timeout;
  const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return Promise.race([promise.then(() => undefined, () => undefined), late]).finally(() => clearTimeout(timer));
}
