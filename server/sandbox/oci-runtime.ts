/** The OCI runtimes a sandbox may use; runsc (gVisor) must be registered with the engine (sandbox-image/register-runsc.sh). */
export const RUNTIMES = ['runc', 'runsc'] as const;
export type Runtime = (typeof RUNTIMES)[number];
