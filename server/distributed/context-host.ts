import type { ContextInfo } from '../contract/contract.js';
import type { Contexts } from '../contexts/context-service.js';
import type { Logger } from '../logger.js';
import type { OutputSink } from '../sandbox/sandbox.js';
import { answer, ChangesCollector, sourceOf, type WireAnswer, type WireCallResult, type WireContextCall, type WireContextCreate, type WireContextDelete } from './wire.js';

/**
 * A worker's side of contexts: the jobs API nodes send (a creation off the shared queue, calls and
 * deletions on this worker's own queue) done by the worker's ContextService, exactly as the
 * embedded server does them. Each answer goes out once the changes it made are in PostgreSQL, so
 * that the next request, on any API node, sees them.
 */
export class ContextHost {
  constructor(
    private readonly contexts: Contexts,
    private readonly flushed: () => Promise<void>,
    private readonly worker: string,
    /** The sink that sends an execution's output pieces to the API node that streams them. */
    private readonly outputOf: (executionId: string) => OutputSink,
    private readonly logger: Logger,
  ) {}

  create(data: WireContextCreate): Promise<WireAnswer<ContextInfo>> {
    return this.answered(() => this.contexts.create(data.request, { tenant: data.tenant }));
  }

  call(data: WireContextCall): Promise<WireAnswer<WireCallResult>> {
    return this.answered(() =>
      this.contexts.call(data.contextId, data.tenant, data.waitS, async (box, limits, endedWhy) => {
        this.logger.debug('context call started', { context_id: data.contextId, execution_id: data.executionId });
        const changes = data.wantsChanges ? new ChangesCollector() : undefined;
        const outcome = await box.run({
          executionId: data.executionId,
          mode: data.mode,
          code: data.code,
          file: data.file,
          variable: data.variable,
          // The context's own caps, with this call's timeout (as the embedded execution service gives them).
          limits: { ...limits, timeoutS: data.limits.timeoutS },
          interruptGraceS: data.interruptGraceS,
          workspace: sourceOf(data),
          changes,
          onOutput: data.streams ? this.outputOf(data.executionId) : undefined,
        });
        return { outcome: { ...outcome, worker: this.worker }, files: changes?.wire(outcome.changes) ?? [], endedWhy: endedWhy() };
      }),
    );
  }

  delete(data: WireContextDelete): Promise<WireAnswer<null>> {
    return this.answered(async () => {
      await this.contexts.delete(data.contextId, data.tenant);
      return null;
    });
  }

  private async answered<T>(work: () => Promise<T>): Promise<WireAnswer<T>> {
    const reply = await answer(work);
    await this.flushed();
    return reply;
  }
}
