import { ConfigError } from './config.js';

/**
 * Runs a process's start-up, the same way for every entry point: a bad setting (an environment
 * variable, a tenants or limits file) exits 2 with only what the operator must fix; anything else
 * that stops the start exits 1 with the whole error.
 */
export function startProcess(name: string, main: () => Promise<void> | void): void {
  Promise.resolve()
    .then(main)
    .catch((err: unknown) => {
      if (err instanceof ConfigError) {
        console.error(`${name}: bad setting: ${err.message}`);
        process.exit(2);
      }
      console.error(`${name}: failed to start:`, err);
      process.exit(1);
    });
}
